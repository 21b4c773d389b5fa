"""measure_inference on generative models: Wh per 1,000 queries, J per output token, prefill
and decode, recorded on the version and its run.

Real parts: a tiny GPT-2 text-generation pipeline (tests/tiny_llm.py, no download) logged
once per module with ``mlflow.transformers`` into a SQLite registry; a scripted generative
pyfunc whose work is time on the scripted GPU. The hardware is the only stand-in: the NVML
fake (``fake_nvml``) and a powercap tree whose counters never move (CPU and RAM draw 0 J),
so the energy of a window is known exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.tracking import fluent
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)

from mlflow_green.registry._generation import chunks, count_queries
from mlflow_green.registry._tokens import GenerateRecorder, count_tokens
from mlflow_green.registry.inference import (
    DEFAULT_MAX_NEW_TOKENS,
    INFERENCE_J_PER_TOKEN_METRIC,
    INFERENCE_J_PER_TOKEN_TAG,
    INFERENCE_METRIC,
    INFERENCE_SETTINGS_TAG,
    INFERENCE_TAG,
    measure_inference,
)
from tests.mlflow_server import sqlite_db_copy
from tests.tiny_llm import build_pipeline, log_tiny_gpt2

PROMPTS = ["Energy per token", "The graphics card draws", "Prefill reads", "A tiny model"]
GPU_UUID = "GPU-inference-0"
GPU_NAME = "NVIDIA H100 80GB HBM3"
#: Variables of an outer MLflow run that must not leak into the module's store.
OUTER_RUN_VARIABLES = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")
# The scripted models are logged without an input example: their signature is explicit.
pytestmark = pytest.mark.filterwarnings("ignore:.*input example was not provided:UserWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, MlflowClient]]:
    """A SQLite tracking store and registry holding ``tiny-gpt2`` version 1 (logged once)."""
    folder = tmp_path_factory.mktemp("generative")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("MLFLOW_GREEN_") or name in (
                "MLFLOW_RUN_ID",
                "MLFLOW_EXPERIMENT_ID",
            ):
                mp.delenv(name)
        mp.chdir(folder)
        uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(uri)
        mp.setattr(fluent, "_active_experiment_id", None)
        try:
            yield log_tiny_gpt2("tiny-gpt2"), MlflowClient(uri, registry_uri=uri)
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture
def quiet_cpu(fake_powercap) -> None:
    """CPU and RAM through RAPL counters that never move: they add exactly 0 J."""
    fake_powercap.add_package(0, energy_uj=5_000_000, dram=True)


def prompt_tokens(prompts: list[str]) -> int:
    tokenizer = build_pipeline().tokenizer
    return sum(len(tokenizer(p)["input_ids"]) for p in prompts)


# -- Must show 1: the tiny GPT-2 on this machine, whatever meters it has -----------------------


def test_tiny_gpt2_gets_wh_per_1k_j_per_token_prefill_decode_and_version_tags(tiny) -> None:
    uri, client = tiny
    result = measure_inference(uri, PROMPTS, repeats=2, max_new_tokens=4, batch_size=2)

    queries = len(PROMPTS) * 2
    assert (result.predictions, result.repeats, result.warmup) == (queries, 2, 1)
    assert (result.batch_size, result.max_new_tokens) == (2, 4)
    assert result.token_source == "transformers-generate"
    # The model's own tokenizer: prompts without padding, once per repeat.
    assert result.input_tokens == 2 * prompt_tokens(PROMPTS)
    assert 0 < result.output_tokens <= queries * 4

    report = result.report
    assert report.energy_kwh > 0  # on a CPU-only machine: the labelled estimates
    assert result.wh_per_1k == pytest.approx(report.energy_kwh * 1e6 / queries, rel=1e-12)
    assert result.j_per_output_token == pytest.approx(
        report.device_energy_j / result.output_tokens, rel=1e-12
    )
    prefill = result.prefill_report
    assert prefill is not None and prefill.device_energy_j > 0
    assert result.prefill_j_per_query == pytest.approx(prefill.device_energy_j / queries)
    per_query_decode_tokens = (result.output_tokens - queries) / queries  # 1 token in prefill
    assert result.decode_j_per_token == pytest.approx(
        (report.device_energy_j / queries - result.prefill_j_per_query) / per_query_decode_tokens
    )
    for figure, spread in (
        (result.wh_per_1k, result.wh_per_1k_spread),
        (result.j_per_output_token, result.j_per_output_token_spread),
    ):
        assert spread is not None and spread.min <= figure <= spread.max and spread.sd >= 0

    mv = client.get_model_version("tiny-gpt2", "1")
    assert float(mv.tags[INFERENCE_TAG]) == result.wh_per_1k
    assert float(mv.tags[INFERENCE_J_PER_TOKEN_TAG]) == result.j_per_output_token
    settings = json.loads(mv.tags[INFERENCE_SETTINGS_TAG])
    assert settings == json.loads(json.dumps(result.settings()))
    expected = {"batch_size": 2, "max_new_tokens": 4, "repeats": 2, "warmup": 1, "queries": 4}
    assert expected.items() <= settings.items()
    assert settings["methods"] == report.methods
    assert settings["hardware"] and settings["hardware"].items() <= report.hardware.items()
    assert settings["prefill_j_per_query"] == result.prefill_j_per_query
    run = client.get_run(mv.run_id)
    assert run.data.metrics[INFERENCE_METRIC] == result.wh_per_1k
    assert run.data.metrics[INFERENCE_J_PER_TOKEN_METRIC] == result.j_per_output_token
    assert json.loads(run.data.tags[INFERENCE_SETTINGS_TAG]) == settings


# -- Exact figures on the scripted GPU -------------------------------------------------------

#: The scripted GPU's clock runs this much faster than real time, so that its energy counter
#: (100 ms steps of its own time, whole millijoules) moves every 0.1 ms of real time. It draws
#: POWER_W / SPEEDUP per second of its time: POWER_W in real time.
SPEEDUP = 1000.0
POWER_W = 300.0
#: How far a difference of two counter readings can be from POWER_W x the real time between
#: them: one 100 ms step of the GPU's clock and one millijoule, at each end.
COUNTER_J = 2 * (POWER_W * 0.1 / SPEEDUP + 1e-3)


@contextlib.contextmanager
def forward_spans(model_class: str) -> Iterator[list[tuple[float, float]]]:
    """``(start, end)`` on ``time.monotonic`` of every forward pass of a ``model_class``.

    Torch's global module hooks: they see the model that ``measure_inference`` loads. A
    forward starts and ends where the hooks run, so a meter reading made after one forward
    and before another falls between their stamps, however loaded the machine is.
    """
    spans: list[tuple[float, float]] = []
    started: list[float] = []

    def before(module: Any, args: Any) -> None:
        if type(module).__name__ == model_class:
            started.append(time.monotonic())

    def after(module: Any, args: Any, output: Any) -> None:
        if type(module).__name__ == model_class:
            spans.append((started.pop(), time.monotonic()))

    hooks = [register_module_forward_pre_hook(before), register_module_forward_hook(after)]
    try:
        yield spans
    finally:
        for hook in hooks:
            hook.remove()


def test_j_per_token_on_a_constant_power_gpu_is_power_x_time_over_tokens(
    tiny, fake_nvml, quiet_cpu
) -> None:
    fake_nvml.pynvml.set_clock(lambda: time.monotonic() * SPEEDUP)
    fake_nvml.configure(
        [{"uuid": GPU_UUID, "name": GPU_NAME, "profile": [[0.0, POWER_W / SPEEDUP]]}]
    )
    uri, client = tiny
    with forward_spans("GPT2LMHeadModel") as spans:
        result = measure_inference(uri, PROMPTS, repeats=3, max_new_tokens=4, batch_size=1)
        returned = time.monotonic()

    report, prefill = result.report, result.prefill_report
    assert prefill is not None
    assert report.methods["gpu"] == "nvml-energy-counter"
    assert report.energy_j_by_domain["cpu"] == report.energy_j_by_domain["ram"] == 0.0
    queries = 3 * len(PROMPTS)
    # The tiny model never stops early on these prompts (it repeats a token), so every
    # query yields the full limit: the number of tokens is known too.
    tokens = queries * 4
    assert result.output_tokens == tokens

    # The figures are the windows' energies over queries and tokens, exactly.
    main_j, prefill_j = report.device_energy_j, prefill.device_energy_j
    assert report.pue == 1.0
    assert result.j_per_output_token == pytest.approx(main_j / tokens, rel=1e-12)
    assert result.wh_per_1k == pytest.approx(main_j / 3.6 / queries, rel=1e-12)
    assert result.prefill_j_per_query == pytest.approx(prefill_j / queries, rel=1e-12)
    # 4 tokens against 1: 3 more per query.
    decode_j = (main_j - prefill_j) / (queries * 3)
    assert result.decode_j_per_token == pytest.approx(decode_j, rel=1e-9)

    # The windows' energies are the GPU's power x the time of the repeats and nothing else:
    # one forward pass per token, a warm-up pass then 3 repeats, at 4 tokens then at 1.
    # Each window opened after its warm-up's last forward and closed before the next
    # forward that is not its own; it held every forward of its repeats. These bounds
    # hold on a loaded machine; a warm-up inside a window, or another unit, breaks them.
    per_pass = len(PROMPTS) * 4
    assert len(spans) == 4 * per_pass + 4 * len(PROMPTS)
    main, at_1 = spans[per_pass : 4 * per_pass], spans[4 * per_pass :]
    warm_end, next_start = spans[per_pass - 1][1], at_1[0][0]
    assert POWER_W * (main[-1][1] - main[0][0]) - COUNTER_J <= main_j
    assert main_j <= POWER_W * (next_start - warm_end) + COUNTER_J
    repeats_1 = at_1[len(PROMPTS) :]
    assert POWER_W * (repeats_1[-1][1] - repeats_1[0][0]) - COUNTER_J <= prefill_j
    assert prefill_j <= POWER_W * (returned - at_1[len(PROMPTS) - 1][1]) + COUNTER_J

    tags = client.get_model_version("tiny-gpt2", "1").tags
    assert json.loads(tags[INFERENCE_SETTINGS_TAG])["hardware"]["gpu"] == f"{GPU_NAME} x1"
    assert json.loads(tags[INFERENCE_SETTINGS_TAG])["methods"]["gpu"] == "nvml-energy-counter"


#: The scripted generator: a query costs PREFILL_S of GPU time for its first token and
#: DECODE_S for each further one (multiples of the counter's 0.1 s: no rounding).
PREFILL_S, DECODE_S = 0.5, 0.2
GPU: list[Any] = []  # the test's FakeNvml, for the model's predict to advance
CALLS: list[tuple[int, int]] = []  # (rows, max_new_tokens) of each predict call


class ScriptedGenerator(mlflow.pyfunc.PythonModel):
    """Writes ``max_new_tokens`` words per prompt; its work is time on the scripted GPU."""

    # No type hints: MLflow would derive a signature from them in place of the explicit one,
    # dropping the params (it warns about their absence once, when this class is created).
    def predict(self, context, model_input, params=None):  # type: ignore[override]
        n = int((params or {}).get("max_new_tokens", 8))
        prompts = list(model_input.iloc[:, 0]) if hasattr(model_input, "iloc") else model_input
        CALLS.append((len(prompts), n))
        GPU[0].advance(len(prompts) * (PREFILL_S + DECODE_S * (n - 1)))
        return [" ".join(["tok"] * n) for _ in prompts]


def words(prediction: list[str]) -> int:
    """The token counter of the scripted generator: one word is one token."""
    return sum(len(text.split()) for text in prediction)


@pytest.fixture
def scripted(tiny, fake_nvml, quiet_cpu) -> Iterator[str]:
    """``scripted`` version 1 on a 100 W scripted GPU whose clock moves only in predict."""
    fake_nvml.configure([{"uuid": GPU_UUID, "name": GPU_NAME, "profile": [[0.0, 100.0]]}])
    GPU[:] = [fake_nvml]
    CALLS.clear()
    signature = infer_signature(["a prompt"], ["an answer"], params={"max_new_tokens": 8})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ScriptedGenerator(),
            signature=signature,
            pip_requirements=[],
            registered_model_name="scripted",
        )
    yield f"models:/scripted/{info.registered_model_version}"
    GPU.clear()


def test_token_counter_figures_are_exact_and_the_warmup_is_not_measured(tiny, scripted) -> None:
    _, client = tiny
    result = measure_inference(
        scripted, PROMPTS[:3], repeats=4, warmup=2, max_new_tokens=5, batch_size=2,
        token_counter=words, carbon_intensity=500, embodied_co2eq_kg=1000, lifetime_years=4,
    )  # fmt: skip

    # Each pass is a batch of 2 prompts and one of 1: warm-up, repeats, then the same at 1
    # token for the prefill figure.
    assert CALLS == [(2, 5), (1, 5)] * (2 + 4) + [(2, 1), (1, 1)] * (2 + 4)
    per_query_j = 100.0 * (PREFILL_S + DECODE_S * 4)
    report = result.report
    # Only the 4 repeats are in the window: the 2 warm-up passes would add half as much.
    assert report.device_energy_j == pytest.approx(4 * 3 * per_query_j, abs=1e-6)
    assert result.output_tokens == 4 * 3 * 5 and result.input_tokens is None
    assert result.token_source == "token_counter"
    assert result.j_per_output_token == pytest.approx(per_query_j / 5, abs=1e-9)
    assert result.prefill_j_per_query == pytest.approx(100.0 * PREFILL_S, abs=1e-9)
    assert result.decode_j_per_token == pytest.approx(100.0 * DECODE_S, abs=1e-9)
    assert result.wh_per_1k == pytest.approx(per_query_j / 3600 * 1000, abs=1e-9)
    # Every repeat did the same work: no spread.
    assert result.wh_per_1k_spread.sd == pytest.approx(0.0, abs=1e-9)
    assert result.j_per_output_token_spread.min == pytest.approx(per_query_j / 5, abs=1e-9)
    assert result.j_per_output_token_spread.max == pytest.approx(per_query_j / 5, abs=1e-9)

    tags = client.get_model_version("scripted", scripted.rsplit("/", 1)[1]).tags
    assert float(tags[INFERENCE_J_PER_TOKEN_TAG]) == result.j_per_output_token
    settings = json.loads(tags[INFERENCE_SETTINGS_TAG])
    assert settings["token_source"] == "token_counter" and settings["batch_size"] == 2
    assert settings["decode_j_per_token"] == result.decode_j_per_token
    # SCI, (E x I + M) / R: the window's CO2eq and embodied share per 1,000 queries, per token.
    grams = (report.energy_kwh * 500 / 1000 + report.embodied_co2eq_kg) * 1000
    sci = settings["sci"]
    assert sci["per_1k_queries"]["sci_g"] == pytest.approx(grams / (12 / 1000), rel=1e-9)
    assert sci["per_output_token"]["sci_g"] == pytest.approx(grams / 60, rel=1e-9)
    assert sci["per_output_token"]["unit"] == "output token"


def test_without_a_limit_a_counted_pyfunc_gets_no_prefill_split(tiny, scripted) -> None:
    result = measure_inference(scripted, PROMPTS, repeats=2, token_counter=words, record=False)
    assert CALLS == [(4, 8)] * 3  # its own default limit, one call for all rows
    assert result.max_new_tokens is None and result.prefill_report is None
    assert result.prefill_j_per_query is None and result.decode_j_per_token is None
    assert result.j_per_output_token == pytest.approx(100.0 * (PREFILL_S + DECODE_S * 7) / 8)


def test_a_row_model_keeps_its_figure_and_gets_no_token_figures(tiny, scripted) -> None:
    _, client = tiny
    result = measure_inference(scripted, PROMPTS, repeats=3, batch_size=3)
    assert CALLS == [(3, 8), (1, 8)] * 4
    assert result.wh_per_1k == pytest.approx(100.0 * (PREFILL_S + DECODE_S * 7) / 3.6)
    assert result.j_per_output_token is None and result.output_tokens is None
    tags = client.get_model_version("scripted", scripted.rsplit("/", 1)[1]).tags
    assert float(tags[INFERENCE_TAG]) == result.wh_per_1k
    assert INFERENCE_J_PER_TOKEN_TAG not in tags
    assert json.loads(tags[INFERENCE_SETTINGS_TAG])["max_new_tokens"] is None


# -- Counting tokens ---------------------------------------------------------------------------


def test_tokens_are_counted_per_prompt_through_padding_and_early_stops() -> None:
    pipe = build_pipeline()
    # Make some prompts stop early: take tokens they produce as end-of-text tokens.
    free = {p: pipe(p, max_new_tokens=6, return_tensors=True)[0] for p in PROMPTS}
    lengths = {p: len(pipe.tokenizer(p)["input_ids"]) for p in PROMPTS}
    stops = [free[PROMPTS[2]]["generated_token_ids"][lengths[PROMPTS[2]]]]  # its first token
    stops.append(free[PROMPTS[3]]["generated_token_ids"][lengths[PROMPTS[3]] + 3])  # its 4th
    pipe.model.generation_config.eos_token_id = stops

    # Alone, a prompt's sequence ends where it stopped: no padding, no counting rule.
    alone = 0
    for p in PROMPTS:
        sequence = pipe(p, max_new_tokens=6, return_tensors=True)[0]["generated_token_ids"]
        alone += len(sequence) - lengths[p]
    assert alone < 6 * len(PROMPTS)  # some stopped early

    with GenerateRecorder(pipe.model) as recorder:
        pipe(PROMPTS, max_new_tokens=6, batch_size=4)  # one left-padded batch
        counted = count_tokens(recorder.take())
    assert counted.output_tokens == alone
    assert counted.input_tokens == sum(lengths.values())
    assert "generate" not in pipe.model.__dict__  # the instance is left as it was


# -- Bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"repeats": 0}, "repeats"),
        ({"repeats": True}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"token_counter": 3}, "token_counter"),
        ({"pue": 0.5}, "pue"),
    ],
)
def test_bad_arguments_fail_at_the_call_naming_them(kwargs, named) -> None:
    # Nothing is loaded: the URI does not even exist.
    with pytest.raises(ValueError, match=named) as info:
        measure_inference("models:/no-such-model/1", PROMPTS, **kwargs)
    value = next(iter(kwargs.values()))
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_empty_data_fails_at_the_call() -> None:
    with pytest.raises(ValueError, match="data"):
        measure_inference("models:/no-such-model/1", [])
    with pytest.raises(ValueError, match="data has no rows"):
        measure_inference("models:/no-such-model/1", {"prompt": []})


@pytest.mark.parametrize("data", [None, 5, np.float32(3), True, np.array(3.0)])
def test_data_that_is_not_queries_fails_at_the_call_naming_it(data) -> None:
    # Nothing is loaded: the URI does not even exist.
    with pytest.raises(ValueError, match=r"\(argument data\)") as info:
        measure_inference("models:/no-such-model/1", data)
    message = str(info.value)
    assert repr(data) in message and type(data).__name__ in message
    assert "DataFrame" in message and "dict" in message  # what is accepted


MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Energy per token?"},
    {"role": "assistant", "content": "It depends."},
]


@pytest.mark.parametrize(
    ("data", "queries", "batches_of_2"),
    [
        ({"prompt": "hello world"}, 1, [{"prompt": "hello world"}]),
        ({"messages": MESSAGES}, 1, [{"messages": MESSAGES}]),
        ({"messages": MESSAGES, "max_tokens": 8}, 1, [{"messages": MESSAGES, "max_tokens": 8}]),
        ({"a": [1, 2, 3], "b": [4, 5]}, 1, [{"a": [1, 2, 3], "b": [4, 5]}]),  # not columns
        (
            {"prompt": ["a", "b", "c"], "n": (1, 2, 3)},
            3,
            [{"prompt": ["a", "b"], "n": (1, 2)}, {"prompt": ["c"], "n": (3,)}],
        ),
        ({"prompt": "hello world", "n": [1, 2]}, 1, [{"prompt": "hello world", "n": [1, 2]}]),
        ("hello world", 1, ["hello world"]),
        (["a", "b", "c"], 3, [["a", "b"], ["c"]]),
    ],
)
def test_a_dict_is_columns_of_one_length_or_else_one_query(data, queries, batches_of_2) -> None:
    assert count_queries(data) == queries
    assert chunks(data, 2) == batches_of_2


def test_a_columnar_dict_of_arrays_and_series_is_cut_by_position() -> None:
    data = {"x": np.arange(5), "y": pd.Series(list("abcde"), index=[10, 11, 12, 13, 14])}
    assert count_queries(data) == 5
    batches = chunks(data, 2)
    assert [list(b["x"]) for b in batches] == [[0, 1], [2, 3], [4]]
    assert [list(b["y"]) for b in batches] == [["a", "b"], ["c", "d"], ["e"]]
    objects = np.empty(2, dtype=object)
    objects[:] = [{"role": "user"}, {"role": "user"}]
    assert count_queries({"messages": objects}) == 1  # mappings: one request's field


def test_limits_a_model_cannot_take_are_refused_before_measuring(tiny, scripted) -> None:
    _, client = tiny
    with pytest.raises(ValueError, match=r"max_new_tokens=4.*token_counter"):
        measure_inference(scripted, PROMPTS, max_new_tokens=4)
    no_params = infer_signature(["a prompt"], ["an answer"])
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ScriptedGenerator(), signature=no_params,
            pip_requirements=[],
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"declares no 'max_new_tokens' param"):
        measure_inference(info.model_uri, PROMPTS, max_new_tokens=4, token_counter=words)
    assert CALLS == []  # refused before any prediction
    with pytest.raises(ValueError, match=r"non-negative int.*'many'"):
        measure_inference(scripted, PROMPTS, token_counter=lambda prediction: "many")
    assert len(CALLS) == 1  # the first warm-up call, before any window
    assert (
        INFERENCE_TAG not in client.get_model_version("scripted", scripted.rsplit("/", 1)[1]).tags
    )


def test_a_token_counter_may_return_a_numpy_integer(tiny, scripted) -> None:
    """``len(ids)`` of an array or ``np.sum(...)`` is a count too (numpy integer types)."""
    import numpy as np

    def numpy_words(prediction) -> np.int64:
        return np.int64(words(prediction))

    result = measure_inference(
        scripted, PROMPTS[:2], repeats=1, warmup=0, token_counter=numpy_words, record=False
    )
    plain = measure_inference(
        scripted, PROMPTS[:2], repeats=1, warmup=0, token_counter=words, record=False
    )
    assert result.output_tokens == plain.output_tokens > 0
    assert type(result.output_tokens) is int


def test_a_bad_token_counter_fails_after_the_first_pass_without_warmup(tiny, scripted) -> None:
    _, client = tiny
    with pytest.raises(ValueError, match=r"non-negative int.*-1"):
        measure_inference(scripted, PROMPTS, repeats=5, warmup=0, token_counter=lambda p: -1)
    assert CALLS == [(4, 8)]  # the first repeat only, not 5 of them and the window's close
    version = scripted.rsplit("/", 1)[1]
    assert INFERENCE_TAG not in client.get_model_version("scripted", version).tags


def test_a_transformers_model_without_params_in_its_signature_still_gets_the_limit(tiny) -> None:
    # MLflow would drop params its signature does not declare, and the tiny model would
    # generate up to its own default length (20 tokens in all).
    uri = log_tiny_gpt2(params_in_signature=False)
    result = measure_inference(uri, PROMPTS[:2], repeats=1, max_new_tokens=3, record=False)
    assert result.output_tokens == 2 * 3


def test_default_limit_is_recorded_for_a_transformers_model(tiny) -> None:
    uri, _ = tiny
    result = measure_inference(uri, PROMPTS[:1], repeats=1, warmup=0, record=False)
    assert result.max_new_tokens == DEFAULT_MAX_NEW_TOKENS and result.batch_size == 1
    assert math.isfinite(result.j_per_output_token)
