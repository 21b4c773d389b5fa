"""A served model stops promptly when its tracking server is gone or stopped answering.

MLflow retries a request for minutes (and waits up to 120 s for each answer); the
serving meter must not hand that wait to ``mlflow models serve``'s shutdown. Here
the tracking URI is a real TCP endpoint that either accepts connections and never
answers (a hung server) or refuses them (a server that is down), and the whole
process group must be gone well within a minute of SIGTERM.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import mlflow.pyfunc
import pytest

from tests.mlflow_server import Forwarder, free_port
from tests.serving.served import Echo, Served, gpu_scenario, poll, texts_request

#: Generous: the meter's own bound is about 30 s; before, the stop took minutes.
STOP_BOUND_S = 90.0


def _group_alive(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies excluded)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


@pytest.mark.parametrize("outage", ["hung", "refused"])
def test_the_server_stops_in_bounded_time_when_tracking_does_not_answer(
    outage: str, tmp_path: Path
) -> None:
    model = tmp_path / "echo"
    mlflow.pyfunc.save_model(str(model), python_model=Echo())
    tracking = Forwarder(free_port()).start()  # its target never listens
    if outage == "hung":
        tracking.hang()
    else:
        tracking.stop()
    served = Served(
        tmp_path,
        str(model),
        tracking.url,
        FAKE_NVML_SCENARIO=str(gpu_scenario(tmp_path, 100.0)),
        MLFLOW_GREEN_FLUSH_INTERVAL_S="1",
        MLFLOW_GREEN_SERVING_DIR=str(tmp_path / "shared"),
    )
    served.start(workers=2)
    try:
        served.wait_ready()
        assert served.invoke(texts_request(["a b"]))[0] == 200
        if outage == "hung":  # the meter has reached the server (and is stuck, or probing)
            poll(lambda: tracking._conns, 60, "a connection to the hung tracking server")
        else:  # a worker has become the host meter and met the outage (on a busy machine
            # that takes a few ticks: a SIGTERM before would find no meter to stop)
            poll(lambda: "unreachable" in served.tail(), 60, "the host meter's first flush")
        assert served.proc is not None
        pgid = served.proc.pid
        os.killpg(pgid, signal.SIGTERM)
        poll(
            lambda: not _group_alive(pgid),
            STOP_BOUND_S,
            f"the serving process group to stop after SIGTERM\n{served.tail()}",
            every_s=0.5,
        )
        assert "tracking server" in served.tail() and "unreachable" in served.tail()
    finally:
        served.kill_group()
        tracking.stop()
