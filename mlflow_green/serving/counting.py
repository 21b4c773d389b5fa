"""What a worker counts: requests, failed requests, predictions (rows) and tokens of text outputs.

The request path only appends the raw predictions to a queue (microseconds);
the worker's agent thread turns them into rows and tokens later, so that
tokenizing never adds to a response's latency.

Tokens: the output text of a ``transformers``-flavor model is counted with the
model's own tokenizer (no special tokens); for any other model, text outputs are
counted as whitespace-separated words (``green.serving_token_counter`` says which);
outputs with no text count no tokens. Of a dict output (a chat completion) only the
generated-text fields count (:data:`GENERATED_KEYS`), not its ids, roles or finish reasons.

Only generated text counts: a text-generation pipeline answers with the prompt
followed by its continuation (MLflow's default), so an output that starts with
its request's prompt and goes on counts the output's tokens minus the prompt's, and the
counter tag says so (``"<counter>, prompt excluded"``); an output that does not
repeat a prompt of its request is counted whole (the tag is then the counter alone).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

_log = logging.getLogger(__name__)
WORDS = "whitespace-words"
#: Outputs held for counting at most; beyond it (a stalled agent) rows are counted
#: at once and tokens of the oldest are dropped, so memory stays bounded.
MAX_PENDING = 10_000
#: Appended to the counter's name in ``green.serving_token_counter`` when prompts were excluded.
PROMPT_EXCLUDED = ", prompt excluded"


@dataclass
class Counts:
    """Cumulative counts of one worker (or, summed, of a whole serving session)."""

    requests: int = 0
    errors: int = 0
    predictions: int = 0
    tokens: int = 0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.predictions += other.predictions
        self.tokens += other.tokens

    def to_dict(self) -> dict[str, int]:
        """The counts by name, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        """Counts from :meth:`to_dict`'s output; unknown or bad fields are ignored."""
        fields = ("requests", "errors", "predictions", "tokens")
        return cls(**{k: int(data[k]) for k in fields if isinstance(data.get(k), int)})


#: The keys of a dict output that hold generated text (chat messages and choices, pipelines'
#: outputs); a dict's other strings (ids, roles, finish reasons) are not generated text.
GENERATED_KEYS = frozenset(
    {"content", "text", "generated_text", "summary_text", "translation_text"}
)


def _length(column: Any) -> int | None:
    """Rows of one column of a dict output: a list, tuple, array or Series; else None."""
    if isinstance(column, (list, tuple)):
        return len(column)
    shape = getattr(column, "shape", None)
    return int(shape[0]) if isinstance(shape, tuple) and shape else None


def rows(raw: Any) -> int:
    """How many predictions ``raw`` holds: rows of a frame or array, items of a list, else 1."""
    if raw is None:
        return 0
    shape = getattr(raw, "shape", None)
    if isinstance(shape, tuple):
        return int(shape[0]) if shape else 1
    if isinstance(raw, (list, tuple)):
        return len(raw)
    if isinstance(raw, dict):
        # A dict of columns (lists, arrays, Series) holds as many predictions as its columns
        # have rows; any other dict (a chat completion) is one prediction.
        lengths = [_length(v) for v in raw.values()]
        if raw and None not in lengths:
            return max(n for n in lengths if n is not None)
        return 1
    return 1


def texts(raw: Any) -> Iterator[str]:
    """The generated text of an output, in order: its strings (a frame's cells, nested lists),
    but of a dict only the strings under :data:`GENERATED_KEYS`, at any depth."""
    yield from _walk(raw, 0, generated_only=True, counted=True)


def _strings(raw: Any) -> Iterator[str]:
    """Every string in ``raw`` (a request's inputs, dict values included), in order."""
    yield from _walk(raw, 0, generated_only=False, counted=True)


def _walk(raw: Any, depth: int, generated_only: bool, counted: bool) -> Iterator[str]:
    # ``counted``: whether strings here are yielded; in a dict of an output, only under a
    # generated-text key (a chat completion's id, role and finish reason are not generated).
    if depth > 8:
        return
    if isinstance(raw, str):
        if counted:
            yield raw
    elif isinstance(raw, dict):
        for key, value in raw.items():
            inside = key in GENERATED_KEYS or not generated_only
            yield from _walk(value, depth + 1, generated_only, inside)
    elif isinstance(raw, (list, tuple)):
        for value in raw:
            yield from _walk(value, depth + 1, generated_only, counted)
    elif hasattr(raw, "to_numpy") and hasattr(raw, "dtypes"):  # pandas frame or series
        yield from _walk(raw.to_numpy().ravel().tolist(), depth + 1, generated_only, counted)
    elif hasattr(raw, "dtype") and getattr(raw.dtype, "kind", "") in "OUS":  # numpy of text
        yield from _walk(raw.ravel().tolist(), depth + 1, generated_only, counted)


def prompts(request: Any) -> list[str]:
    """The text inputs of an ``/invocations`` JSON body, in order (not column names nor params).

    Any body that is not JSON (CSV) or not one of MLflow's input formats gives none.
    """
    if isinstance(request, (bytes, bytearray)):
        request = request.decode("utf-8", errors="replace")
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            return []
    if not isinstance(request, dict):
        return []
    split = request.get("dataframe_split")
    if isinstance(split, dict):
        return list(_strings(split.get("data")))
    for key in ("dataframe_records", "inputs", "instances"):
        if key in request:
            return list(_strings(request[key]))
    return []


def continuations(outputs: list[str], inputs: list[str]) -> list[str]:
    """For each output, the prompt it repeats ("" when none): by position when there are
    as many outputs as prompts, else the longest prompt of the request it repeats.

    An output repeats a prompt only when it starts with it and goes on (is longer): an
    output identical to an input is generated text (an echo, a translation), counted whole.
    """

    def repeats(output: str, prompt: str) -> bool:
        return bool(prompt) and len(output) > len(prompt) and output.startswith(prompt)

    if len(outputs) == len(inputs):
        return [p if repeats(o, p) else "" for o, p in zip(outputs, inputs, strict=True)]
    ordered = sorted({p for p in inputs if p}, key=len, reverse=True)
    return [next((p for p in ordered if repeats(o, p)), "") for o in outputs]


class TokenCounter:
    """Counts tokens of output text: the model's tokenizer if it has one, else words."""

    def __init__(self, tokenizer: Any = None) -> None:
        self._tokenizer = tokenizer
        self.method = f"tokenizer:{type(tokenizer).__name__}" if tokenizer is not None else WORDS

    def count(self, strings: list[str]) -> int:
        """Tokens in ``strings`` together."""
        if not strings:
            return 0
        if self._tokenizer is not None:
            try:
                ids = self._tokenizer(strings, add_special_tokens=False)["input_ids"]
                return sum(len(i) for i in ids)
            except Exception as exc:  # a tokenizer that refuses a batch: say so, use words
                _log.debug("mlflow-green: tokenizer failed (%r); counting words", exc)
                self._tokenizer, self.method = None, WORDS
        return sum(len(s.split()) for s in strings)


def token_counter_for(model: Any) -> TokenCounter:
    """The token counter of a served ``PyFuncModel``: its pipeline's tokenizer, else words."""
    try:
        flavors = getattr(getattr(model, "metadata", None), "flavors", {}) or {}
        if "transformers" in flavors:
            pipeline = getattr(model._model_impl, "pipeline", None)
            tokenizer = getattr(pipeline, "tokenizer", None)
            if tokenizer is not None:
                return TokenCounter(tokenizer)
    except Exception as exc:
        _log.debug("mlflow-green: no tokenizer found: %r", exc)
    return TokenCounter()


class WorkerCounts:
    """This worker's counts; requests land in a queue, :meth:`drain` counts them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()
        self._pending: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        self._counters: dict[int, TokenCounter] = {}
        self.token_method = "none"

    def answered(self, model: Any, raw: Any, request: Any = None) -> None:
        """A request (body ``request``) answered with predictions ``raw``; called on the
        request path, so it only queues them."""
        with self._lock:
            self._counts.requests += 1
            if len(self._pending) >= MAX_PENDING:
                _, old_raw, _ = self._pending.popleft()
                self._counts.predictions += rows(old_raw)
            self._pending.append((model, raw, request))

    def failed(self) -> None:
        """A request that got no predictions (an error response)."""
        with self._lock:
            self._counts.requests += 1
            self._counts.errors += 1

    def drain(self) -> Counts:
        """Count the queued outputs (rows, tokens); returns a copy of the cumulative counts."""
        while True:
            with self._lock:
                if not self._pending:
                    return Counts(**self._counts.to_dict())
                model, raw, request = self._pending.popleft()
            n_rows, n_tokens = self._count(model, raw, request)
            with self._lock:
                self._counts.predictions += n_rows
                self._counts.tokens += n_tokens

    def _count(self, model: Any, raw: Any, request: Any = None) -> tuple[int, int]:
        try:
            counter = self._counters.get(id(model))
            if counter is None:
                counter = self._counters[id(model)] = token_counter_for(model)
            strings = list(texts(raw))
            if not strings:
                return rows(raw), 0
            repeated = [p for p in continuations(strings, prompts(request)) if p]
            tokens = counter.count(strings)
            if repeated:  # the output repeats the prompt: count the continuation only
                tokens = max(0, tokens - counter.count(repeated))
            self.token_method = counter.method + (PROMPT_EXCLUDED if repeated else "")
            return rows(raw), tokens
        except Exception as exc:  # an output we cannot read: count the request only
            _log.debug("mlflow-green: could not count an output: %r", exc)
            return 0, 0
