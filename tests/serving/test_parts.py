"""The serving meter's parts without a server: settings, counting, tokens, the host lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_green.serving import settings as serving_settings
from mlflow_green.serving.counting import (
    PROMPT_EXCLUDED,
    WORDS,
    TokenCounter,
    WorkerCounts,
    continuations,
    prompts,
    rows,
    texts,
)
from mlflow_green.serving.shared import HostLock, SessionFolder
from tests.mlflow_server import sqlite_db_copy
from tests.serving.served import poll


@pytest.mark.parametrize("value", ["http", "0", "70000", "80.5", " 1_0"])
def test_a_bad_prometheus_port_is_one_warning_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_PROMETHEUS_PORT", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert serving_settings.prometheus_port() is None
    [warning] = caught
    assert f"MLFLOW_GREEN_PROMETHEUS_PORT={value!r}" in str(warning.message)
    assert "1 to 65535" in str(warning.message)


def test_a_good_port_and_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_PROMETHEUS_PORT", " 9464 ")
    monkeypatch.setenv("MLFLOW_GREEN_SERVING_DIR", str(tmp_path))
    monkeypatch.setenv(serving_settings.MODEL_URI_ENV, "models:/m/2")
    monkeypatch.setenv(serving_settings.PORT_ENV, "5001")
    monkeypatch.setenv(serving_settings.SESSION_ENV, "abc")
    monkeypatch.delenv("MLFLOW_GREEN_SERVING_EXPERIMENT", raising=False)
    monkeypatch.delenv("MLFLOW_GREEN_SCOPE", raising=False)
    got = serving_settings.from_env()
    assert got is not None
    assert got.prometheus_port == 9464
    assert got.experiment == "mlflow-green-serving"
    assert got.measure.scope == "machine"
    assert got.folder.parent == got.key_folder and got.folder.name == "abc"
    assert got.key_folder.is_relative_to(tmp_path)


def test_a_bad_measuring_setting_turns_metering_off_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_FLUSH_INTERVAL_S", "soon")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert serving_settings.from_env() is None
    [warning] = caught
    assert "MLFLOW_GREEN_FLUSH_INTERVAL_S='soon'" in str(warning.message)
    assert "serving goes on" in str(warning.message)


def test_rows_and_texts_of_the_outputs_mlflow_serves() -> None:
    frame = pd.DataFrame({"a": ["x y", "z"], "b": [1, 2]})
    assert rows(frame) == 2 and rows(["a", "b", "c"]) == 3 and rows("one") == 1
    assert rows({"a": [1, 2], "b": [3, 4]}) == 2 and rows(None) == 0
    assert list(texts(frame)) == ["x y", "z"]
    nested = [{"generated_text": "a b"}, {"generated_text": "c"}]
    assert list(texts(nested)) == ["a b", "c"]
    assert list(texts([1.0, 2.0])) == []
    # Columns of arrays or Series count like lists.
    assert rows({"a": np.arange(5), "b": np.arange(5)}) == 5
    assert rows({"a": pd.Series(["x", "y", "z"])}) == 3 and rows({"a": np.arange(2), "b": 1}) == 1


def test_only_the_generated_text_of_a_dict_output_counts() -> None:
    completion = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello there"},
                "finish_reason": "stop",
            }
        ],
    }
    assert list(texts(completion)) == ["hello there"]
    parts = {"content": [{"type": "text", "text": "a b"}], "role": "assistant"}
    assert list(texts(parts)) == ["a b"]
    assert list(texts([{"summary_text": "s", "label": "x"}, {"translation_text": "t"}])) == [
        "s",
        "t",
    ]
    counts = WorkerCounts()
    counts.answered(None, completion)
    total = counts.drain()
    assert (total.predictions, total.tokens) == (1, 2)


def test_words_are_the_fallback_and_counting_waits_for_drain() -> None:
    counts = WorkerCounts()
    counts.answered(object(), ["echo a b done", "echo c done"])
    counts.failed()
    assert counts.token_method == "none"  # nothing counted on the request path
    total = counts.drain()
    assert (total.requests, total.errors, total.predictions, total.tokens) == (2, 1, 2, 7)
    assert counts.token_method == WORDS


def test_a_transformers_model_counts_with_its_own_tokenizer(tmp_path: Path) -> None:
    from tests.tiny_llm import log_tiny_gpt2

    uri = f"sqlite:///{sqlite_db_copy(tmp_path / 'mlflow.db')}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("m", artifact_location=(tmp_path / "a").as_uri())
        model = mlflow.pyfunc.load_model(log_tiny_gpt2(experiment_id=experiment))
    finally:
        mlflow.set_tracking_uri(previous)
    prompts = ["the model", "energy of"]
    outputs = model.predict(prompts, params={"max_new_tokens": 5})
    # MLflow's text-generation output repeats the prompt; only the continuation is generated.
    assert all(o.startswith(p) for o, p in zip(outputs, prompts, strict=True))
    tokenizer = model._model_impl.pipeline.tokenizer

    def n(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    expected = sum(n(o) - n(p) for o, p in zip(outputs, prompts, strict=True))
    counts = WorkerCounts()
    counts.answered(model, outputs, json.dumps({"inputs": prompts, "params": {"x": "the"}}))
    total = counts.drain()
    assert counts.token_method == f"tokenizer:{type(tokenizer).__name__}{PROMPT_EXCLUDED}"
    assert total.tokens == expected and total.predictions == 2
    assert 0 < expected < sum(n(o) for o in outputs)  # neither nothing nor the prompts too
    assert TokenCounter().count(["a b", "c"]) == 3


def test_prompts_of_each_request_format_and_the_outputs_that_repeat_them() -> None:
    split = {"dataframe_split": {"columns": ["text"], "data": [["a b"], ["c"]]}}
    assert prompts(json.dumps(split).encode()) == ["a b", "c"]  # not the column name
    assert prompts(json.dumps({"dataframe_records": [{"text": "x"}]})) == ["x"]
    assert prompts(json.dumps({"inputs": "p", "params": {"k": "v"}})) == ["p"]
    assert prompts(b"text\na b\n") == [] and prompts(None) == []
    # Paired by position; an output that does not repeat its prompt is counted whole.
    assert continuations(["a b c", "z"], ["a b", "c"]) == ["a b", ""]
    counts = WorkerCounts()
    counts.answered(None, ["a b c d", "echo c done"], json.dumps(split))
    assert counts.drain().tokens == 2 + 3 and counts.token_method == WORDS + PROMPT_EXCLUDED
    counts.answered(None, ["echo a b done"], json.dumps({"inputs": ["a b"]}))
    assert counts.drain().tokens == 5 + 4 and counts.token_method == WORDS
    # An output identical to its input is generated text (an echo), not a repeated prompt.
    assert continuations(["a b"], ["a b"]) == [""]
    counts.answered(None, ["a b"], json.dumps({"inputs": ["a b"]}))
    assert counts.drain().tokens == 9 + 2 and counts.token_method == WORDS


_HOLD = """
import sys, time
from pathlib import Path
from mlflow_green.serving.shared import HostLock
assert HostLock(Path(sys.argv[1])).try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_the_host_lock_has_one_holder_and_is_freed_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "host.lock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mine = HostLock(path)
        assert not mine.try_acquire()
        holder.kill()  # no clean-up runs: the kernel drops the lock
        holder.wait(30)
        assert poll(mine.try_acquire, 30, "the lock after its holder died")
        assert path.read_text().split() == [str(os.getpid())]
        mine.release()
    finally:
        holder.kill()
        holder.wait(30)


def test_worker_counts_files_sum_and_half_written_files_are_never_read(tmp_path: Path) -> None:
    a, b = SessionFolder(tmp_path), SessionFolder(tmp_path)
    counts = WorkerCounts()
    counts.answered(None, ["x"])
    a.publish(counts.drain(), "none")
    counts.answered(None, ["y z"])
    b.publish(counts.drain(), WORDS)
    (tmp_path / "counts" / ".partial.json.tmp").write_text('{"requests": 10')
    total, method = a.total()
    assert (total.requests, total.predictions, total.tokens) == (3, 3, 4)
    assert method == WORDS


_WORKER = """
import sys
from pathlib import Path
from mlflow_green.serving.counting import Counts
from mlflow_green.serving.shared import SessionFolder
folder = SessionFolder(Path(sys.argv[1]))
folder.publish(Counts(requests=1), "none")
print("published", flush=True)
if sys.stdin.readline().strip() == "final":
    folder.publish(Counts(requests=2), "none", final=True)
    print("final", flush=True)
    sys.stdin.readline()
"""


def _worker(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(folder)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "published"
    return proc


def test_the_meter_waits_for_live_workers_until_their_counts_are_final(tmp_path: Path) -> None:
    meter = SessionFolder(tmp_path)
    meter.publish(WorkerCounts().drain(), "none")  # its own file is never waited for
    finishing, killed = _worker(tmp_path), _worker(tmp_path)
    try:
        assert sorted(meter.unfinished()) == sorted([finishing.pid, killed.pid])
        assert finishing.stdin is not None and finishing.stdout is not None
        finishing.stdin.write("final\n")
        finishing.stdin.flush()
        assert finishing.stdout.readline().strip() == "final"
        assert meter.unfinished() == [killed.pid]  # final, though still alive
        killed.kill()  # gone without a final file: nothing more can come from it
        killed.wait(30)
        assert meter.unfinished() == []
        assert meter.total()[0].requests == 3
    finally:
        for proc in (finishing, killed):
            proc.kill()
            proc.wait(30)


# -- the serving run's footprint and SCI: absent when unknown, never 0 -------------------------


def _serving_metrics(
    footprint: dict, intensity: float | None = 100.0, predictions: int = 2000, tokens: int = 0
) -> dict[str, float]:
    from mlflow_green.measure.footprint import Footprint
    from mlflow_green.measure.report import EnergyReport
    from mlflow_green.serving.counting import Counts
    from mlflow_green.serving.host import _metrics

    report = EnergyReport(
        name="serving",
        start_time_s=1_700_000_000.0,
        duration_s=60.0,
        energy_j_by_domain={"gpu": 0.0},
        energy_j_by_device={"gpu": {}},
        methods={"gpu": "nvml-energy-counter"},
        hardware={},
        scope="machine",
        pue=1.5,
        carbon_intensity_g_per_kwh=intensity,
        intensity_source="user-supplied",
        country=None,
        region=None,
        footprint=Footprint.parse(footprint),
    )
    counts = Counts(requests=predictions, predictions=predictions, tokens=tokens)
    # 3.6 MJ over the session so far (a takeover carries earlier meters' joules and time).
    return _metrics(report, {"gpu": 3.6e6}, 3600.0, counts)


def test_serving_footprint_figures_follow_the_formulas_with_the_pue() -> None:
    m = _serving_metrics(
        {
            "price_per_kwh": 0.2,
            "wue_l_per_kwh": 2.0,
            "embodied_co2eq_kg": 876.6,
            "lifetime_years": 1,
        },
        tokens=500,
    )
    assert m["green/energy_kwh"] == pytest.approx(1.5)
    assert m["green/cost"] == pytest.approx(1.5 * 0.2)
    assert m["green/water_l"] == pytest.approx(1.0 * 2.0)  # on-site WUE: the devices' kWh
    embodied = 876.6 * 3600 / (365.25 * 86400)
    assert m["green/embodied_co2eq_kg"] == pytest.approx(embodied)
    emitted_g = (1.5 * 100 / 1000 + embodied) * 1000
    assert m["green/serving/sci_g_per_1k"] == pytest.approx(emitted_g / 2)
    assert m["green/serving/sci_g_per_token"] == pytest.approx(emitted_g / 500)


@pytest.mark.parametrize(
    "footprint, intensity, tokens, absent",
    [
        ({}, 100.0, 5, ["green/cost", "green/water_l", "green/embodied_co2eq_kg", "sci"]),
        ({"embodied_co2eq_kg": 100.0, "lifetime_years": 4}, None, 5, ["sci"]),
        ({"embodied_co2eq_kg": 100.0, "lifetime_years": 4}, 100.0, 0, ["sci_g_per_token"]),
    ],
)
def test_serving_figures_that_are_unknown_are_absent(footprint, intensity, tokens, absent) -> None:
    m = _serving_metrics(footprint, intensity, tokens=tokens)
    for part in absent:
        assert not [k for k in m if part in k], (part, m)
    assert all(v > 0 for k, v in m.items() if "sci" in k or k == "green/embodied_co2eq_kg")
