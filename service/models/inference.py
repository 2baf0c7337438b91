"""Infer a fitted estimator's input schema by walking it the way data flows through it.

The rules (docs/api.md repeats them for users):
- Columns and their order are `feature_names_in_` (fitted on a DataFrame: `frame`), else
  `x0..x{n-1}` for `n_features_in_` (fitted on an array).
- A Pipeline is followed step by step; a ColumnTransformer branch by branch, each branch on the
  columns it selected when fitted (names, indices, masks, and selectors resolved at fit).
- A column's type is set by the first step that tells: a OneHot/Ordinal/Target encoder gives
  its `categories_` (strings -> string, integers -> integer, floats -> number, booleans ->
  boolean); any other scikit-learn transformer or estimator takes numbers; HistGradientBoosting,
  LightGBM and XGBoost give their categorical columns' categories. Steps that keep columns
  one-to-one (imputers, scalers, passthrough) are looked through.
- A column is nullable when every path it takes accepts NaN: an imputer, an encoder that knows
  missing values or ignores unknown ones, or steps whose `allow_nan` tag holds up to the end.
- A column consumed only by a FunctionTransformer with a function, or by a transformer not from
  scikit-learn, has no inferable type: an input example must give it (`merge`); unless the
  model was fitted on an array, which held numbers (as every model's input did before types).
- Columns a ColumnTransformer drops are `ignored`: accepted from clients, not handed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.core.errors import ModelLoadError
from service.models import estimators
from service.models.schema import Column, ColumnType, InputSchema


@dataclass
class Facts:
    """What the walk learnt about one input column."""

    type: ColumnType | None = None
    categories: tuple[Any, ...] | None = None
    dtype: str | None = None
    na: str = "nan"
    nan_paths: list[bool] = field(default_factory=list)  # per path: does NaN get through?
    unknown: str | None = None  # the step whose input type cannot be inferred
    used: bool = False

    def column(self, name: str) -> Column:
        assert self.type is not None
        return Column(name, self.type, bool(self.nan_paths) and all(self.nan_paths),
                      self.categories, dtype=self.dtype, na=self.na)


@dataclass(frozen=True)
class Inferred:
    """The walk's result: every column's facts, in order; `undetermined` names the columns
    (and the step that consumed each) whose type only an example can give."""

    names: list[str]
    facts: dict[str, Facts]
    frame: bool

    @property
    def undetermined(self) -> dict[str, str]:
        return {n: f.unknown or "unknown" for n, f in self.facts.items()
                if f.used and f.type is None}

    @property
    def ignored(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if not self.facts[n].used)

    def schema(self) -> InputSchema:
        """The schema, if every used column's type is known (else ModelLoadError); a model
        fitted on an array was fitted on numbers, so its unknown columns are numbers."""
        if not self.frame:
            for name in self.undetermined:
                self.facts[name].type = ColumnType.NUMBER
        if self.undetermined:
            raise undetermined_error(self.undetermined)
        return InputSchema(tuple(self.facts[n].column(n) for n in self.names
                                 if self.facts[n].used), self.frame, self.ignored)


def undetermined_error(columns: dict[str, str]) -> ModelLoadError:
    listed = ", ".join(f"{name!r} (read by {step})" for name, step in list(columns.items())[:5])
    more = f" and {len(columns) - 5} more" if len(columns) > 5 else ""
    return ModelLoadError(
        f"cannot determine the input type of column(s) {listed}{more}: give an input example "
        "(predq models add FILE --example rows.parquet|csv|json) with a few rows as the model "
        "was fitted on")


def infer(estimator: Any) -> Inferred:
    """Walk a fitted estimator from its input columns to its final step (see module doc)."""
    names = getattr(estimator, "feature_names_in_", None)
    count = getattr(estimator, "n_features_in_", None)
    if names is None and count is None:
        raise ModelLoadError(f"{type(estimator).__name__} is not fitted (no n_features_in_)")
    frame = names is not None
    columns = [str(n) for n in names] if names is not None else [
        f"x{i}" for i in range(int(count))]  # type: ignore[arg-type]
    facts = {name: Facts() for name in columns}
    walker = _Walker([facts[name] for name in columns])
    walker.walk(estimator, [_Src(i) for i in range(len(columns))], _END)
    return Inferred(columns, facts, frame)


@dataclass(frozen=True)
class _Src:
    """An input column feeding a step's input feature; `clean` once an imputer filled NaN."""

    col: int
    clean: bool = False


Mapping = list[_Src | None]  # per input feature of a step: the input column it is, if any


class _Next:
    """What follows a step: walked with that step's output, and asked whether it takes NaN."""

    def walk(self, walker: _Walker, outputs: Mapping) -> None:
        pass

    def nan_ok(self) -> bool:
        return True

    def is_end(self) -> bool:
        """Nothing follows: the step walked is the model itself."""
        return True


_END = _Next()


class _Steps(_Next):
    def __init__(self, steps: list[Any], then: _Next) -> None:
        self.steps, self.then = steps, then

    def walk(self, walker: _Walker, outputs: Mapping) -> None:
        if not self.steps:
            return self.then.walk(walker, outputs)
        walker.walk(self.steps[0], outputs, _Steps(self.steps[1:], self.then))

    def nan_ok(self) -> bool:
        for step in self.steps:
            if estimators.stops_nan(step):
                return True
            if not estimators.allows_nan(step):
                return False
        return self.then.nan_ok()

    def is_end(self) -> bool:
        return not self.steps and self.then.is_end()


class _IntoColumns(_Next):
    """A ColumnTransformer branch's output, placed at its slice of the transformer's output."""

    def __init__(self, width: int, place: slice | None, then: _Next) -> None:
        self.width, self.place, self.then = width, place, then

    def walk(self, walker: _Walker, outputs: Mapping) -> None:
        if self.place is None or self.place.stop - self.place.start != len(outputs):
            return
        full: Mapping = [None] * self.width
        full[self.place] = outputs
        self.then.walk(walker, full)

    def nan_ok(self) -> bool:
        return self.then.nan_ok()

    def is_end(self) -> bool:
        return False


class _Walker:
    def __init__(self, facts: list[Facts]) -> None:
        self.facts = facts

    def walk(self, step: Any, inputs: Mapping, then: _Next) -> None:
        live = [s for s in inputs if s is not None]
        if not live:
            return
        if not estimators.is_composite(step):
            for src in live:
                self.facts[src.col].used = True
        if estimators.is_identity(step):
            then.walk(self, inputs)
        elif estimators.is_pipeline(step):
            steps = [s for _, s in step.steps]
            self.walk(steps[0], inputs, _Steps(steps[1:], then))
        elif estimators.is_column_transformer(step):
            self._branches(step, inputs, then)
        elif estimators.is_imputer(step):
            self._imputer(step, inputs, then)
        elif estimators.is_encoder(step):
            self._encoder(step, inputs, then)
        elif estimators.is_text_vectorizer(step):
            for src in live:
                self._type(src, ColumnType.STRING)
                self.facts[src.col].nan_paths.append(src.clean)
        elif estimators.reads_anything(step):
            self._unknown(step, live)
        else:
            self._numeric(step, inputs, then)

    def _branches(self, ct: Any, inputs: Mapping, then: _Next) -> None:
        width = sum(s.stop - s.start for s in getattr(ct, "output_indices_", {}).values())
        for name, trans, positions in estimators.branches(ct, len(inputs)):
            if positions is None:  # a callable selector not resolved at fit
                self._unknown(ct, [s for s in inputs if s is not None])
                continue
            picked = [inputs[p] for p in positions]
            if estimators.is_drop(trans):
                continue  # columns used by no branch end up `ignored`
            place = getattr(ct, "output_indices_", {}).get(name)
            self.walk(trans, picked, _IntoColumns(width, place, then))

    def _imputer(self, imputer: Any, inputs: Mapping, then: _Next) -> None:
        for src in inputs:
            if src is not None and not src.clean:
                self.facts[src.col].nan_paths.append(True)
        then.walk(self, [None if s is None else _Src(s.col, True) for s in inputs])
        if estimators.imputes_strings(imputer):  # unless a later encoder said more
            for src in inputs:
                if src is not None:
                    self._type(src, ColumnType.STRING)

    def _encoder(self, encoder: Any, inputs: Mapping, then: _Next) -> None:
        for j, src in enumerate(inputs):
            if src is None:
                continue
            found = estimators.categories_of(encoder, j)
            if found is not None:
                self._categories(src, found)
            if not src.clean:
                self.facts[src.col].nan_paths.append(
                    estimators.encoder_takes_nan(encoder, j, then.nan_ok()))

    def _numeric(self, step: Any, inputs: Mapping, then: _Next) -> None:
        """Any other scikit-learn step (or a LightGBM/XGBoost model) reads numbers, except
        the columns a model treats as categorical."""
        final = then.is_end() or not hasattr(step, "transform")
        own = estimators.model_categories(step, len(inputs)) if final else {}
        for j, src in enumerate(inputs):
            if src is None:
                continue
            if j in own:
                self._categories(src, own[j])
            else:
                self._type(src, ColumnType.NUMBER)
            if not src.clean and not estimators.allows_nan(step):
                self.facts[src.col].nan_paths.append(False)
            elif not src.clean and (final or not estimators.one_to_one(step)):
                self.facts[src.col].nan_paths.append(final or then.nan_ok())
        if not final and estimators.one_to_one(step):
            then.walk(self, inputs)  # NaN that got through is judged by what follows

    def _categories(self, src: _Src, found: estimators.Categories) -> None:
        facts = self.facts[src.col]
        if facts.type is None:
            facts.type, facts.categories = found.type, found.values
            facts.dtype = found.dtype or facts.dtype
            facts.na = found.na

    def _type(self, src: _Src, kind: ColumnType) -> None:
        if self.facts[src.col].type is None:
            self.facts[src.col].type = kind

    def _unknown(self, step: Any, live: list[_Src]) -> None:
        for src in live:
            self.facts[src.col].used = True
            self.facts[src.col].unknown = self.facts[src.col].unknown or type(step).__name__
