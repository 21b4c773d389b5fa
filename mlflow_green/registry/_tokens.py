"""Token counts of text generation: what a transformers model's ``generate`` read and wrote.

:class:`GenerateRecorder` wraps ``generate`` on one loaded model instance (never the
class) and keeps, for every call, the token ids it was given and returned; counting
happens later, outside any energy window, with :func:`count_tokens`. Counting the ids
the model produced is exact: decoding them to text and tokenizing that text again can
give another number (a byte-level BPE model may produce a non-canonical split).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class TokenCount:
    """Tokens read (the prompts, padding excluded) and generated."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True)
class GenerateCall:
    """One ``generate`` call: its prompt ids and mask, the ids it returned, its stop ids."""

    input_ids: Any
    attention_mask: Any
    sequences: Any
    eos_ids: frozenset[int]
    pad_id: int | None
    encoder_decoder: bool


def _ids(value: Any) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, int):
        return frozenset([value])
    return frozenset(int(v) for v in value)


class GenerateRecorder:
    """While entered, records every ``model.generate`` call of ``model`` (one instance).

    >>> with GenerateRecorder(pipeline.model) as recorder:
    ...     pipeline(prompts, max_new_tokens=8)
    ...     calls = recorder.take()
    >>> count_tokens(calls)
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._calls: list[GenerateCall] = []
        self._saved: Any = _MISSING

    def take(self) -> list[GenerateCall]:
        """The calls recorded since the last ``take`` (cheap: no counting here)."""
        calls, self._calls = self._calls, []
        return calls

    def __enter__(self) -> GenerateRecorder:
        model = self._model
        original = model.generate
        config = getattr(model, "config", None)
        encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))

        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            generation = kwargs.get("generation_config") or getattr(
                model, "generation_config", None
            )
            eos = kwargs.get("eos_token_id", getattr(generation, "eos_token_id", None))
            pad = kwargs.get("pad_token_id", getattr(generation, "pad_token_id", None))
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self._calls.append(
                GenerateCall(
                    input_ids=input_ids,
                    attention_mask=kwargs.get("attention_mask"),
                    sequences=getattr(output, "sequences", output),
                    eos_ids=_ids(eos),
                    pad_id=None if pad is None else int(pad),
                    encoder_decoder=encoder_decoder,
                )
            )
            return output

        # An instance attribute shadows the class's method for this model only; whatever
        # the instance held before (another wrapper) is put back on exit.
        self._saved = model.__dict__.get("generate", _MISSING)
        model.__dict__["generate"] = generate
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is _MISSING:
            self._model.__dict__.pop("generate", None)
        else:
            self._model.__dict__["generate"] = self._saved
        self._saved = _MISSING


def _rows(tensor: Any) -> list[list[int]]:
    return tensor.detach().cpu().tolist() if hasattr(tensor, "detach") else list(tensor)


def _generated(row: list[int], call: GenerateCall) -> int:
    """Tokens the model produced in one returned row: up to and including the first stop
    token; padding after a row finished (without a stop token) is not counted."""
    for i, token in enumerate(row):
        if token in call.eos_ids:
            return i + 1
    n = len(row)
    if call.pad_id is not None and call.pad_id not in call.eos_ids:
        while n and row[n - 1] == call.pad_id:
            n -= 1
    return n


def count_call(call: GenerateCall) -> TokenCount:
    """Input tokens (mask ones, else all prompt ids) and generated tokens of one call."""
    if call.input_ids is None:
        prompt_len, input_tokens = 0, 0
    else:
        prompt_len = int(call.input_ids.shape[-1])
        mask = call.attention_mask
        input_tokens = int(mask.sum()) if mask is not None else int(call.input_ids.numel())
    # An encoder-decoder returns decoder ids behind one start token; a decoder-only model
    # returns the prompt followed by what it generated.
    skip = 1 if call.encoder_decoder else prompt_len
    output_tokens = sum(_generated(row[skip:], call) for row in _rows(call.sequences))
    return TokenCount(input_tokens, output_tokens)


def count_tokens(calls: Iterable[GenerateCall]) -> TokenCount:
    """Total :class:`TokenCount` of recorded ``generate`` calls."""
    return sum((count_call(c) for c in calls), TokenCount())
