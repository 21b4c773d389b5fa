"""Energy accuracy on scripted hardware profiles: each tool's error against the exact integral.

One fake GPU (``tests/fakes/pynvml.py``: energy counter updated every 100 ms,
1 s-average power readings) and one fake RAPL package (``tests/fakes/powercap.py``,
moved every 5 ms, wrapping at ``max_energy_range_uj``) follow a scripted power
profile in real time (see ``bench/_fake_hw.py``). In the same window, measured by
all at once:

* mlflow-green: an MLflow run under ``mlflow_green.autolog()``, its
  ``green/energy/gpu_kwh`` and ``green/energy/cpu_kwh`` metrics;
* CodeCarbon ``OfflineEmissionsTracker``, ``measure_power_secs=1`` and its default
  (15 s): ``gpu_energy`` and ``cpu_energy``;
* MLflow system metrics at a 1 s interval: GPU energy derived from the logged
  ``system/gpu_0_power_usage_watts`` (sum x interval); no CPU energy (they log
  utilisation only).

The AMD rows put an AMD GPU in the NVIDIA GPU's place: the stand-in ``amdsmi``
(``tests/fakes/amdsmi.py``: an Instinct MI300X whose energy accumulator counts 15.3 µJ
and updates every 1 ms, 64 or 32 bits wide), read by mlflow-green
(``amdsmi-energy-counter``) and by CodeCarbon's AMD support (``codecarbon/core/
gpu_amd.py``, which reads the same accumulator and falls back to ``average_socket_power``
x time when it goes down). MLflow's system metrics read AMD GPUs through ``pyrsmi``
(ROCm SMI), not AMD SMI: they see no GPU there (n/a).

Ground truth: the exact integral of the profile over the window.

    python bench/accuracy.py            # 8 s per profile
    python bench/accuracy.py --quick    # 3 s per profile
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import _common
import _fake_hw as hw
from _fake_hw import Profile

AMD_UUID = "74a1ff00-0000-1000-8000-5647505500a0"
AMD_NAME = "AMD Instinct MI300X"
#: Microjoules per count of the AMD accumulator, as AMD SMI reports it (a C float).
AMD_RESOLUTION_UJ = 15.300000190734863


def spikes(base: float, peak: float, seconds: float, period: float = 0.7) -> list[list[float]]:
    """``base`` watts with 100 ms spikes to ``peak`` every ``period`` s (no 1 s alignment)."""
    points, t = [[0.0, base]], 0.23
    while t + 0.1 < seconds + 1:
        points += [[t, base], [t, peak], [t + 0.1, peak], [t + 0.1, base]]
        t += period
    return points


def profiles(seconds: float) -> list[Profile]:
    """The scripted machines, each ``seconds`` long."""
    half = seconds / 2
    return [
        Profile("steady", [[0, 300]], [[0, 80]], "GPU 300 W, CPU 80 W"),
        Profile(
            "100 ms spikes",
            spikes(80, 600, seconds),
            spikes(30, 120, seconds),
            "GPU 80 W with 100 ms spikes to 600 W every 0.7 s; CPU 30 W, spikes to 120 W",
        ),
        Profile(
            "ramps",
            [[0, 50], [half, 450], [seconds, 50]],
            [[0, 20], [half, 100], [seconds, 20]],
            "GPU 50 -> 450 -> 50 W, CPU 20 -> 100 -> 20 W, linear",
        ),
        Profile(
            "counter wrap (CPU)",
            [[0, 250]],
            [[0, 80]],
            "RAPL counter starts 40 J below max_energy_range_uj: wraps after 0.5 s",
            rapl_start_below_wrap_j=40.0,
        ),
        Profile(
            "counter reset (GPU)",
            [[0, 300]],
            [[0, 80]],
            f"GPU energy counter restarts from 0 at {seconds * 0.55:.2f} s (driver reload)",
            gpu_reset_at_s=seconds * 0.55,
            gpu_counter_start_mj=5_000_000_000,
        ),
        Profile(
            "spikes, GPU without counter",
            spikes(80, 600, seconds),
            [[0, 80]],
            "pre-Volta GPU (no energy counter, instantaneous power); same spikes as above",
            gpu_counter=False,
        ),
    ]


@dataclass(frozen=True)
class AmdProfile(Profile):
    """A scripted machine whose GPU is an AMD one, read through the stand-in ``amdsmi``."""

    bits: int = 64  # width of the energy accumulator
    counter_start: int = 987_654_321_000  # accumulator (counts) at t = 0

    def device(self) -> dict[str, Any]:
        """The GPU as the stand-in ``amdsmi`` takes it (``tests/fakes/amdsmi.py``)."""
        dev = {"uuid": AMD_UUID, "name": AMD_NAME, "profile": self.gpu, "bits": self.bits}
        dev["counter_start"] = self.counter_start
        if self.gpu_reset_at_s is not None:
            dev["reset_at_s"] = self.gpu_reset_at_s
        return dev


def amd_profiles(seconds: float) -> list[AmdProfile]:
    """The AMD rows: the NVIDIA rows' GPU profiles, plus a 32-bit accumulator's wrap."""
    half = seconds / 2
    below_wrap = round(100.0 / (AMD_RESOLUTION_UJ * 1e-6))  # 100 J of counts
    return [
        AmdProfile("AMD steady", [[0, 300]], [[0, 80]], "AMD GPU 300 W, CPU 80 W"),
        AmdProfile(
            "AMD 100 ms spikes",
            spikes(80, 600, seconds),
            spikes(30, 120, seconds),
            "AMD GPU 80 W with 100 ms spikes to 600 W every 0.7 s; CPU as above",
        ),
        AmdProfile(
            "AMD ramps",
            [[0, 50], [half, 450], [seconds, 50]],
            [[0, 20], [half, 100], [seconds, 20]],
            "AMD GPU 50 -> 450 -> 50 W, CPU 20 -> 100 -> 20 W, linear",
        ),
        AmdProfile(
            "AMD counter wrap (GPU)",
            [[0, 300]],
            [[0, 80]],
            "32-bit AMD accumulator (firmware with a uint32_t counter) starting 100 J below "
            "2**32 counts: wraps after 0.33 s",
            bits=32,
            counter_start=2**32 - below_wrap,
        ),
        AmdProfile(
            "AMD counter reset (GPU)",
            [[0, 300]],
            [[0, 80]],
            f"AMD accumulator restarts from 0 at {seconds * 0.55:.2f} s (driver reload)",
            gpu_reset_at_s=seconds * 0.55,
        ),
    ]


def load_fake_amdsmi() -> ModuleType:
    """Import ``tests/fakes/amdsmi.py`` as ``amdsmi`` (once), with the extra calls tools make."""
    module = sys.modules.get("amdsmi")
    if module is not None and getattr(module, "__file__", "") == str(_common.FAKES / "amdsmi.py"):
        return module
    spec = importlib.util.spec_from_file_location("amdsmi", _common.FAKES / "amdsmi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["amdsmi"] = module  # before exec: its dataclasses look their module up
    spec.loader.exec_module(module)

    def constant(value: Any) -> Any:
        """A call answering ``value`` after the stand-in's checks (initialised, valid handle)."""

        def call(handle: Any, *args: Any, **kwargs: Any) -> Any:
            module._gpu(handle)
            return value

        return call

    mb = 192 * 1024  # an MI300X's 192 GB, in MB as amdsmi_get_gpu_vram_usage gives them
    extra: dict[str, Any] = {  # what CodeCarbon asks besides energy and power, as constants
        "AmdSmiTemperatureType": SimpleNamespace(HOTSPOT=1, EDGE=0),
        "AmdSmiTemperatureMetric": SimpleNamespace(CURRENT=0),
        "amdsmi_get_power_cap_info": constant({"power_cap": 750_000_000}),  # µW
        "amdsmi_get_gpu_vram_usage": constant({"vram_total": mb, "vram_used": mb // 4}),
        "amdsmi_get_temp_metric": constant(50_000),  # millidegrees
        "amdsmi_get_gpu_activity": constant({"gfx_activity": 100, "umc_activity": 50}),
        "amdsmi_get_gpu_process_list": constant([]),
        "amdsmi_get_gpu_metrics_info": constant({}),  # only read when the counter is 0
    }
    for name, value in extra.items():
        setattr(module, name, value)
    return module


class AmdMachine(hw.FakeMachine):
    """The scripted machine, whose GPU is NVIDIA's or, for an :class:`AmdProfile`, AMD's."""

    def __init__(self) -> None:
        self.amd = load_fake_amdsmi()  # before any tool imports amdsmi
        self._is_amd = False
        super().__init__()
        self.amd.set_clock(self.clock)

    def load(self, profile: Profile) -> None:
        """Make ``profile`` the machine's power from now on (t = 0), on one vendor's GPU."""
        self._is_amd = isinstance(profile, AmdProfile)
        super().load(profile)  # the clock is held: every stand-in's epoch is this instant
        if self._is_amd:
            self.nvml.configure({"devices": []})
            self.amd.configure({"driver": True, "devices": [profile.device()]})
        else:
            self.amd.configure(None)  # no AMD GPU: amdsmi_init fails, driver not loaded

    def truth_j(self, t0: float, t1: float) -> dict[str, float]:
        if not self._is_amd:
            return super().truth_j(t0, t1)
        return {"gpu": self.amd.integral_j(AMD_UUID, t0, t1), "cpu": self._cpu.integral_j(t0, t1)}


def main() -> None:
    """Measure every profile with every tool; print and save the error table."""
    parser = _common.parser(__doc__, "3 s per profile")
    parser.add_argument("--seconds", type=float, default=None, help="length of each profile")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    _common.begin(args)

    rows: list[dict[str, Any]] = []
    with hw.session((1.0,), AmdMachine) as (machine, tools):
        # MLflow's system metrics read AMD GPUs through pyrsmi, not AMD SMI: not in AMD rows.
        amd_tools = [t for t in tools if not t.name.startswith("MLflow system metrics")]
        for profile in [*profiles(seconds), *amd_profiles(seconds)]:
            used = amd_tools if isinstance(profile, AmdProfile) else tools
            result = hw.measure(machine, profile, seconds, used)
            row = {"profile": profile.name, "note": profile.note, **result, "error_pct": {}}
            for tool, energy in result["tools"].items():
                row["error_pct"][tool] = {
                    d: hw.error_pct(energy.get(d), result["truth"][d]) for d in ("gpu", "cpu")
                }
            rows.append(row)
            hw.print_errors(f"{profile.name} ({result['seconds']} s):", row["error_pct"])
    _common.save("accuracy", args, {"seconds": seconds, "profiles": rows})


if __name__ == "__main__":
    main()
