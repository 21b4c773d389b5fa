"""Drivers and measured passes of ``measure_inference``: how a model's queries are run.

:func:`~mlflow_green.registry.inference.measure_inference` counts the queries in its data
(:func:`count_queries`), cuts them into batches (:func:`chunks`) and runs them through one
driver per kind of model (rows, transformers text generation, pyfunc with a token counter);
:func:`measure_pass` makes the passes: warm-up outside the window, repeats inside it, a
reading after each.

What is one query: a string (or bytes) is one prompt; a list or tuple, a numpy array or a
pandas DataFrame/Series has one query per row (its first dimension); a ``dict`` whose
values are all columns of the same length (lists, tuples, arrays, Series; not lists of
dicts such as chat ``messages``) is columnar, one query per row of those columns, and is
batched by slicing every column; any other ``dict`` (a chat request, a record of scalars)
is one query and is never sliced. Anything else (``None``, a number) is refused.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import numbers
import reprlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlflow_green.registry._tokens import GenerateRecorder, TokenCount, count_tokens

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from mlflow_green.measure.report import EnergyReport
    from mlflow_green.measure.tracker import Tracker

#: Pipeline tasks measured as text generation (transformers 4.x has the text2text ones).
GENERATIVE_TASKS = frozenset(
    {"text-generation", "text2text-generation", "summarization", "translation"}
)
#: How tokens were counted, as recorded.
TOKENS_FROM_MODEL = "transformers-generate"
TOKENS_FROM_COUNTER = "token_counter"


#: What ``data`` may be, as said in errors.
ACCEPTED_DATA = (
    "a pandas DataFrame or Series, a numpy array (one dimension or more), a list or tuple "
    "of rows, a dict (columns of equal length, or one record) or a string (one prompt)"
)


def _column_length(value: Any) -> int | None:
    """Rows of ``value`` as a column of a columnar dict, ``None`` if it is not a column.

    A list of mappings (chat ``messages``) is one field of one request, not a column.
    """
    if isinstance(value, (str, bytes, Mapping)):
        return None
    if isinstance(value, (list, tuple)):
        items: Any = value
    else:
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0 or not hasattr(value, "__getitem__"):
            return None
        # Only an object array can hold mappings; iterating a numeric one is not needed.
        items = value if getattr(getattr(value, "dtype", None), "kind", "") == "O" else ()
    if any(isinstance(item, Mapping) for item in items):
        return None
    return len(value)


def _columns(data: Mapping[Any, Any]) -> int | None:
    """Rows of a columnar dict (every value a column, all of one length), else ``None``."""
    lengths = {_column_length(v) for v in data.values()}
    if len(lengths) != 1 or None in lengths:
        return None if data else 0  # an empty dict has no rows
    return lengths.pop()


def count_queries(data: Any) -> int:
    """Queries (rows) in ``data``: see the module's docstring for what one query is.

    Raises ``ValueError`` naming ``data`` for anything that holds no rows to predict.
    """
    if isinstance(data, (str, bytes)):
        return 1
    if isinstance(data, Mapping):
        rows = _columns(data)
        return 1 if rows is None else rows
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if isinstance(data, (list, tuple)):
        return len(data)
    raise ValueError(
        f"data must be the queries to predict: {ACCEPTED_DATA}; got {reprlib.repr(data)} "
        f"of type {type(data).__name__} (argument data)"
    )


def chunks(data: Any, size: int | None) -> list[Any]:
    """``data`` cut into batches of ``size`` rows (``None``: one batch of everything).

    A string and a dict that is one query are never cut; a columnar dict is cut column
    by column.
    """
    rows = count_queries(data)
    if size is None or size >= rows or isinstance(data, (str, bytes)):
        return [data]
    starts = range(0, rows, size)
    if hasattr(data, "iloc"):
        return [data.iloc[i : i + size] for i in starts]
    if isinstance(data, Mapping):  # columnar: a one-query dict has 1 row, returned above
        return [{k: _rows_of(v, i, i + size) for k, v in data.items()} for i in starts]
    return [data[i : i + size] for i in starts]


def _rows_of(column: Any, start: int, stop: int) -> Any:
    # By position: a pandas Series indexed by labels would slice by label with [].
    return column.iloc[start:stop] if hasattr(column, "iloc") else column[start:stop]


def transformers_pipeline(model: PyFuncModel) -> Any | None:
    """The text-generation pipeline behind a ``transformers``-flavor model, else ``None``."""
    if "transformers" not in model.metadata.flavors:
        return None
    try:
        pipeline = model.get_raw_model()
    except Exception:  # a flavor version without it: not measured as generation
        return None
    task = str(getattr(pipeline, "task", ""))
    generative = task in GENERATIVE_TASKS or task.startswith("translation")
    if not generative or not hasattr(getattr(pipeline, "model", None), "generate"):
        return None
    return pipeline


def param_names(model: PyFuncModel) -> set[str]:
    """Names of the inference params the model's signature declares."""
    schema = model.metadata.get_params_schema()
    return {p.name for p in schema.params} if schema is not None else set()


@contextlib.contextmanager
def quiet_mlflow_transformers() -> Iterator[None]:
    # MLflow's transformers wrapper logs a warning on every predict call given params; a
    # benchmark makes hundreds of them.
    logger = logging.getLogger("mlflow.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class Driver:
    """Runs one pass over the data; subclasses know about tokens."""

    #: How tokens are counted (``None``: they are not); whether input tokens are too.
    token_source: str | None = None
    counts_input = False

    def __init__(self, model: PyFuncModel, data: Any, batch_size: int | None) -> None:
        self.model, self.data = model, data
        self.batch_size = batch_size
        self._batches = chunks(data, batch_size)

    def run(self, max_new_tokens: int | None) -> None:
        """Predict every query once."""
        for batch in self._batches:
            self.model.predict(batch)

    def take(self) -> Any:
        """What the last passes left to count (cheap; counted after the window)."""
        return None

    def count(self, taken: Any) -> TokenCount | None:
        """Tokens of what :meth:`take` returned."""
        return None

    def check(self, taken: Any) -> None:
        """Fail early on what a pass left, before more passes are made (once is enough)."""

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Around all passes."""
        yield


class CounterDriver(Driver):
    """Any pyfunc; the caller's ``token_counter(prediction) -> output tokens`` counts."""

    token_source = TOKENS_FROM_COUNTER

    def __init__(
        self,
        model: PyFuncModel,
        data: Any,
        batch_size: int | None,
        token_counter: Callable[[Any], int],
    ) -> None:
        super().__init__(model, data, batch_size)
        self._counter = token_counter
        self._outputs: list[Any] = []
        self._checked = False

    def run(self, max_new_tokens: int | None) -> None:
        params = None if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        for batch in self._batches:
            self._outputs.append(self.model.predict(batch, params=params))

    def take(self) -> list[Any]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def count(self, taken: list[Any]) -> TokenCount:
        total = 0
        for output in taken:
            n = self._counter(output)
            # Any integer type (a numpy count from ``len(ids)`` or ``np.sum``), never a bool.
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(
                    f"token_counter must return a non-negative int (output tokens of one "
                    f"prediction), got {n!r} from {self._counter!r}"
                )
            total += int(n)
        return TokenCount(0, total)

    def check(self, taken: list[Any]) -> None:
        # The caller's counter, on the first pass made (warm-up or measured): a bad one
        # fails after one pass, not after the whole measurement.
        if not self._checked:
            self.count(taken)
            self._checked = True


class GenerationDriver(Driver):
    """A transformers text-generation pipeline: tokens counted from ``generate``'s ids."""

    token_source = TOKENS_FROM_MODEL
    counts_input = True

    def __init__(self, model: PyFuncModel, data: Any, batch_size: int, pipeline: Any) -> None:
        super().__init__(model, data, batch_size)
        self._batches = [data]  # the pipeline batches, with padding, by itself
        self._recorder = GenerateRecorder(pipeline.model)
        # The model's own predict (its saved inference config and prompt template apply)
        # when its signature takes the params; otherwise the transformers flavor's
        # wrapper beneath it, the same predict without the signature's check, which would
        # drop the params with a warning and generate up to the model's own limit.
        if {"max_new_tokens", "batch_size"} <= param_names(model):
            self._predict = model.predict
        else:
            self._predict = model._model_impl.predict

    def run(self, max_new_tokens: int | None) -> None:
        params = {"max_new_tokens": max_new_tokens, "batch_size": self.batch_size}
        self._predict(self.data, params=params)

    def take(self) -> Any:
        return self._recorder.take()

    def count(self, taken: Any) -> TokenCount:
        return count_tokens(taken)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with quiet_mlflow_transformers(), self._recorder:
            yield


@dataclass(frozen=True)
class Pass:
    """One measured setting: the window's report and what each repeat took."""

    max_new_tokens: int | None
    report: EnergyReport
    repeat_energy_j: tuple[float, ...]
    """Device joules (no PUE) of each repeat; they add up to the window's."""
    repeat_tokens: tuple[TokenCount, ...] | None

    @property
    def tokens(self) -> TokenCount | None:
        """Tokens over all repeats, if counted."""
        if self.repeat_tokens is None:
            return None
        return sum(self.repeat_tokens, TokenCount())


def measure_pass(
    driver: Driver,
    max_new_tokens: int | None,
    repeats: int,
    warmup: int,
    tracker: Tracker,
) -> Pass:
    """Warm up outside the window, then ``repeats`` passes inside ``tracker``'s window.

    The window covers only the repeats (steady state); a live reading after each repeat
    splits its energy per repeat. Tokens are counted after the window closes; the first
    pass made (the first warm-up, else the first repeat) is checked at once
    (:meth:`Driver.check`), so a bad ``token_counter`` fails after one pass.
    """
    for _ in range(warmup):
        driver.run(max_new_tokens)
        driver.check(driver.take())
    taken_per_repeat: list[Any] = []
    marks = [0.0]
    with tracker:
        for _ in range(repeats):
            driver.run(max_new_tokens)
            taken_per_repeat.append(driver.take())
            marks.append(tracker.report.device_energy_j)
            # Only does something with warmup=0 (no warm-up pass checked the counter yet):
            # one count of the first repeat, after its reading, costs the window that once.
            driver.check(taken_per_repeat[-1])
    report = tracker.report
    marks[-1] = max(report.device_energy_j, marks[-2])  # the close reads once more
    energy = tuple(b - a for a, b in itertools.pairwise(marks))
    counts = [driver.count(t) for t in taken_per_repeat]
    tokens = None if any(c is None for c in counts) else tuple(counts)  # type: ignore[arg-type]
    return Pass(max_new_tokens, report, energy, tokens)
