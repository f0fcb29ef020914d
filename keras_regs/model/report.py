"""summary and preview: what is (or would be) attached where, with its value.

`summary` and `preview` print, as `model.summary()` does (a `rich` table, to
stdout or through `print_fn`), and return None; `summary_rows` and
`preview_rows` return the same rows, as dicts, for code that reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import rich.console
import rich.markup
import rich.table
from absl import logging
from keras import config, ops

from keras_regs import _schedule, _terms
from keras_regs._types import Tensor
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.contractive import Contractive
from keras_regs.model import insert, penalize
from keras_regs.model.graph import anchor_of, check_model, walk
from keras_regs.model.slots import BIAS, KERNEL, NORMALIZATION, ActivitySlot
from keras_regs.model.spec import read_spec
from keras_regs.regularizers.penalties import Penalties

# The keys of each row (a dict), but "skipped" (see `summary_rows`).
COLUMNS = ("layer", "target", "keyword", "class", "strength", "reduction", "value")
OWN = "(own)"  # set by hand, not by regularize_model

# Why a trainable weight holds no penalty, by its kind (see slots.py, and the
# selection rules in penalize.py `_select_weights`).
SKIPPED = {
    KERNEL: "no weight penalty selects it",
    BIAS: "a bias: weight keywords skip biases unless include_bias=True",
    NORMALIZATION: "a normalization weight: only a pattern that names it "
    "('*/gamma', or the layer's name) penalizes it",
}
NOT_KERNEL = "not kernel-like: only a pattern that names it penalizes it"
NOT_REACHED = "in no layer that regularize_model reaches"


def _float(x):
    return float(ops.convert_to_numpy(x))


def _entries(regularizer):
    """`(keyword, penalty)` pairs: each keyword of a Penalties, and its base."""
    if isinstance(regularizer, Penalties):
        pairs = list(regularizer.penalties.items())
        return pairs + (
            [(OWN, regularizer.base)] if regularizer.base is not None else []
        )
    return [(OWN, regularizer)]


def _row(layer, target, keyword, penalty, value):
    return {
        "layer": layer.name,
        "target": target,
        "keyword": keyword,
        "class": type(penalty).__name__,
        "strength": getattr(penalty, "strength", None),
        "reduction": getattr(penalty, "reduction", None),
        "value": value,
        "skipped": None,
    }


class _Recorder:
    """Stands in for an activity regularizer during one eager call: records each
    entry's value as it reaches the loss (divided by the batch size)."""

    def __init__(self, regularizer):
        self.regularizer, self.values = regularizer, {}

    def __call__(self, output):
        if _terms.is_aside():  # run again inside a Jacobian: not the call's value
            return self.regularizer(output)
        batch = ops.shape(output)[0] if len(output.shape) else 1
        for keyword, penalty in _entries(self.regularizer):
            value = _float(penalty(output)) / batch
            self.values[keyword] = self.values.get(keyword, 0.0) + value
        return self.regularizer(output)


def _activity_values(model, slots, x):
    """Per slot, `{keyword: value}` from one eager call on `x` (or {} without x).

    The recorders go on the layers' attribute itself, not through `slot.set`,
    which also gives a SimpleRNN the class that saves its penalty (slots.py)."""
    if x is None:
        return {}
    recorders = {}
    try:
        for slot in slots:
            recorders[id(slot)] = _Recorder(slot.get())
            slot.owner.activity_regularizer = recorders[id(slot)]
        model(x, training=False)
    finally:
        for slot in slots:
            if id(slot) in recorders:
                slot.owner.activity_regularizer = recorders[id(slot)].regularizer
    return {key: recorder.values for key, recorder in recorders.items()}


def _penalty_rows(groups, state, activity_values, trainable):
    """`trainable`: the ids of the model's trainable weights, the only ones Keras
    adds a penalty for (a frozen weight's penalty is shown, valued 0)."""
    rows = []
    for key, group in groups.items():
        regularizer = state[key]
        if regularizer is None:
            continue
        first = group[0]
        if isinstance(first, ActivitySlot):
            values = activity_values.get(id(first), {})
            for keyword, penalty in _entries(regularizer):
                value = values.get(keyword)
                rows.append(_row(first.layer, first.target, keyword, penalty, value))
            continue
        counted = [slot for slot in group if id(slot.variable) in trainable]
        target = ", ".join(slot.path for slot in group)
        if not counted:
            target += " (frozen: not counted)"
        for keyword, penalty in _entries(regularizer):
            value = sum(_float(penalty(slot.variable)) for slot in counted)
            rows.append(_row(first.layer, target, keyword, penalty, value))
    return rows


def _skipped_row(layer_name, path, why):
    return {
        **dict.fromkeys(COLUMNS),
        "layer": layer_name,
        "target": path,
        "skipped": why,
    }


def _skipped_rows(model, groups, state):
    """A row for each trainable weight that no penalty covers, with why."""
    covered, rows = set(), []
    trainable = {id(v) for v in model.trainable_weights}
    for key, group in groups.items():
        if isinstance(group[0], ActivitySlot):
            continue
        for slot in group:
            covered.add(id(slot.variable))
            held = state[key] is not None or slot.variable.regularizer is not None
            if held or id(slot.variable) not in trainable:
                continue
            why = SKIPPED.get(slot.kind, NOT_KERNEL)
            rows.append(_skipped_row(slot.layer.name, slot.path, why))
    for variable in model.trainable_weights:
        if id(variable) not in covered and variable.regularizer is None:
            owner = variable.path.rpartition("/")[0] or "-"
            rows.append(_skipped_row(owner, variable.path, NOT_REACHED))
    return rows


def _inserted(model):
    """The noise and dropout layers and the Contractive wrappers of the model."""
    infos = walk(model)
    seeded = [i.layer for i in infos if isinstance(i.layer, SeededLayer)]
    return seeded + [i.wrapper for i in infos if i.wrapper is not None]


def _layer_row(layer, amount=None):
    if isinstance(layer, Contractive):
        where, reduction = f"wraps {layer.layer.name}", layer.reduction
        amount = layer.strength if amount is None else amount
    else:
        reduction = None
        anchor = anchor_of(layer) if layer.inserted_by is not None else None
        where = f"after {anchor.name}" if anchor is not None else "layer"
        amount = layer._held_value if amount is None else amount
    return {
        "layer": layer.name,
        "target": where,
        "keyword": layer.inserted_by or OWN,
        "class": type(layer).__name__,
        "strength": amount,
        "reduction": reduction,
        "value": None,
        "skipped": None,
    }


def _layer_rows(model):
    return [_layer_row(layer) for layer in _inserted(model)]


def _insertion_rows(model, new_model, pending):
    """What rebuilding `model` into `new_model` inserts, changes and removes.

    The rebuilt graph is built but not applied: the original model is unchanged
    (a model that keeps its class gets its new graph only while it is read).
    """
    before = {id(layer) for layer in _inserted(model)}
    old = _inserted(model)
    changed = {id(layer): attributes for layer, attributes in pending.attributes}
    graphs = insert.Pending(graphs=pending.graphs)
    graphs.apply()
    try:
        new = _inserted(new_model)
    finally:
        graphs.undo()
    rows = []
    for layer in new:
        if layer.inserted_by is None:
            continue
        if id(layer) in before and id(layer) not in changed:
            continue
        attributes = changed.get(id(layer), {})
        amount = attributes.get("strength", attributes.get(getattr(layer, "held", "")))
        rows.append(_layer_row(layer, amount))
    kept = {id(layer) for layer in new}
    for layer in old:
        if id(layer) not in kept:
            row = _layer_row(layer)
            rows.append({**row, "target": f"removed ({row['target']})"})
    return rows


def _summary(model, x):
    """The rows of `summary`: `(penalties, inserted layers, skipped weights)`."""
    check_model(model)
    _, _, groups = penalize.slot_groups(model)
    state = {key: group[0].get() for key, group in groups.items()}
    activity = [g[0] for g in groups.values() if isinstance(g[0], ActivitySlot)]
    activity = [slot for slot in activity if slot.get() is not None]
    with _schedule.stepping(lambda: _schedule.model_step(model)):
        values = _activity_values(model, activity, x)
        trainable = {id(v) for v in model.trainable_weights}
        penalties = _penalty_rows(groups, state, values, trainable)
        layers = _layer_rows(model)
    return penalties, layers, _skipped_rows(model, groups, state)


def summary_rows(model: keras.Model, x: Tensor | None = None) -> list[dict[str, Any]]:
    """What `summary` prints, as a list of dicts, for code that reads it.

    One dict per row of the table (a penalty and keyword, or an inserted layer),
    then one per trainable weight that no penalty covers, each with the keys
    `layer`, `target`, `keyword`, `class`, `strength`, `reduction`, `value` and
    `skipped`. A penalty's `value` is what it adds to the loss now (`None` for
    an activity penalty without `x`, and for inserted layers, whose `strength`
    holds their stddev or rate); `skipped` is `None`. A skipped weight has its
    path as `target`, `None` in the other columns, and in `skipped` why no
    penalty covers it. The totals `summary` prints are the sums of the
    penalties' `value` by `keyword`.

    Args:
        model: a built `keras.Model`.
        x: optional input data to evaluate activity penalties on (one eager
            call, `training=False`).

    Returns:
        A list of dicts, as above.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    model = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_l1=1e-3)
    rows = keras_regs.summary_rows(model, x=np.random.rand(4, 8))
    weight_l2 = sum(r["value"] for r in rows if r["keyword"] == "weight_l2")
    ```
    """
    penalties, layers, skipped = _summary(model, x)
    return penalties + layers + skipped


def _preview(model, **spec):
    """The rows of `preview`, and the penalty keywords of the call."""
    check_model(model)
    penalties, layers, include_bias, seed = read_spec(**spec)
    changes, _ = penalize.plan(model, penalties, include_bias)
    groups = {id(slots[0]): slots for slots, _ in changes}
    state = {id(slots[0]): regularizer for slots, regularizer in changes}
    with _schedule.stepping(lambda: _schedule.model_step(model)):
        trainable = {id(v) for v in model.trainable_weights}
        rows = _penalty_rows(groups, state, {}, trainable)
    if layers:
        with insert.trial(model, layers, seed) as (result, pending):
            rows += _insertion_rows(model, result, pending)
    return rows, [request.keyword for request in penalties]


def preview_rows(model: keras.Model, **spec: Any) -> list[dict[str, Any]]:
    """What `preview` prints, as a list of dicts, for code that reads it.

    Takes `regularize_model`'s keyword arguments and raises its errors; changes
    nothing. One dict per slot that would change (the penalty it would then hold,
    valued on the current weights) and per layer that would be inserted
    (`after <anchor>`) or removed, with the keys of `summary_rows`' rows.

    Args:
        model: a built `keras.Model`.
        **spec: `regularize_model`'s keyword arguments (its options and
            keywords).

    Returns:
        A list of dicts, with the keys of `summary_rows`' rows.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    rows = keras_regs.preview_rows(model, weight_l2=1e-4, hidden_dropout=0.3)
    classes = [row["class"] for row in rows]  # what would be attached
    assert classes == ["WeightL2", "WeightL2", "BernoulliDropout"]
    ```
    """
    return _preview(model, **spec)[0]


def _check_printing(print_fn, line_length):
    if print_fn is not None and not callable(print_fn):
        raise TypeError(
            "Invalid type for argument `print_fn`. Expected a callable that takes "
            f"a string, or None. Received: print_fn={print_fn!r} "
            f"(of type {type(print_fn).__name__})"
        )
    if line_length is None:
        return
    if isinstance(line_length, bool) or not isinstance(line_length, int):
        raise TypeError(
            "Invalid type for argument `line_length`. Expected a positive int or "
            f"None. Received: line_length={line_length!r} "
            f"(of type {type(line_length).__name__})"
        )
    if line_length < 1:
        raise ValueError(
            "Invalid value for argument `line_length`. Expected a positive int or "
            f"None. Received: line_length={line_length!r}"
        )


def _number(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if _schedule.is_schedule(value):
        return f"{type(value).__name__}(step)"
    return str(value)


def _penalty_cell(row):
    """`WeightL2(0.1)`, `WeightL2(0.1, reduction="mean")`, `GaussianNoise(0.2)`:
    the class, with the strength (stddev, rate) and a reduction other than sum."""
    arguments = [] if row["strength"] is None else [_number(row["strength"])]
    if row["reduction"] not in (None, "sum"):
        arguments.append(f'reduction="{row["reduction"]}"')
    text = row["class"] + (f"({', '.join(arguments)})" if arguments else "")
    return rich.markup.escape(text)


def _cells(row):
    value = "-" if row["value"] is None else _number(row["value"])
    return [
        rich.markup.escape(str(row["layer"])),
        rich.markup.escape(str(row["target"])),
        rich.markup.escape(str(row["keyword"])),
        _penalty_cell(row),
        value,
    ]


# The printed columns: the class, strength and reduction in one (`_penalty_cell`)
HEADERS = ("Layer", "Target", "Keyword", "Penalty", "Value")


def _table(headers, rows, right=()):
    columns = [  # a long name or path wraps, and is never cut
        rich.table.Column(
            header, justify="right" if header in right else "left", overflow="fold"
        )
        for header in headers
    ]
    table = rich.table.Table(*columns, show_lines=True)
    for row in rows:
        table.add_row(*row)
    return table


def _totals(penalties, keywords):
    """`(label, total, complete)` for each keyword (in order), then overall: the
    sum of the values of the penalties' rows (None if none was evaluated);
    `complete` is False where some value was not (an activity penalty without x)."""
    totals = []
    for keyword in [*keywords, None]:
        values = [
            row["value"]
            for row in penalties
            if keyword is None or row["keyword"] == keyword
        ]
        done = [value for value in values if value is not None]
        label = "Total" if keyword is None else f"Total {keyword}"
        total = sum(done) if done else None
        totals.append((label, total, len(done) == len(values)))
    return totals


def _bold(text):
    return f"[bold]{rich.markup.escape(text)}[/]"


def _print(title, rows, totals, skipped, print_fn, line_length, missing):
    """Print the table, the totals and the skipped weights, as Keras' `summary`
    does: through `print_fn` (once, the whole text, without colors), else to
    stdout (or to absl's log when Keras' interactive logging is off)."""
    parts = [_bold(title)]
    if rows:
        cells = [_cells(row) for row in rows]
        parts.append(_table(HEADERS, cells, right=("Value",)))
    else:
        parts.append(" (no regularization attached)")
    for label, total, complete in totals:
        value = "-" if total is None else f"{total:.6g}"
        note = "" if complete else f" (activity penalties not evaluated: {missing})"
        parts.append(f" {_bold(label + ':')} {value}{note}")
    if skipped:
        names = {}  # (the path the weights share, why) -> the weights' names
        for row in skipped:
            owner, _, name = row["target"].rpartition("/")
            names.setdefault((owner or row["layer"], row["skipped"]), []).append(name)
        cells = [
            [rich.markup.escape(text) for text in (layer, ", ".join(weights), why)]
            for (layer, why), weights in names.items()
        ]
        parts.append(_bold(" Not penalized (trainable weights no penalty covers):"))
        parts.append(_table(["Layer", "Weights", "Why"], cells))
    if print_fn is None and not config.is_interactive_logging_enabled():
        print_fn = logging.info
    if print_fn is None:
        console = rich.console.Console(highlight=False, width=line_length)
        for part in parts:
            console.print(part)
        return
    # captured for print_fn: no colors, and no wrapping unless line_length says
    console = rich.console.Console(
        highlight=False,
        force_terminal=False,
        color_system=None,
        width=line_length or 100_000,
    )
    console.begin_capture()
    for part in parts:
        console.print(part)
    print_fn(console.end_capture().rstrip("\n"))


def _keywords(penalties):
    """The keywords of the penalties' rows, in order of first appearance."""
    return list(dict.fromkeys(row["keyword"] for row in penalties))


def summary(
    model: keras.Model,
    x: Tensor | None = None,
    print_fn: Callable[[str], Any] | None = None,
    line_length: int | None = None,
) -> None:
    """Print what is attached where: penalties, their values, inserted layers.

    Printed as `model.summary()` prints: a table, then the totals, then the
    trainable weights that no penalty covers. One row per penalty and keyword:
    the layer, the weight paths it is on (or `activity`), the keyword that
    attached it (`(own)` for regularizers set by hand), the penalty (its class,
    strength and a reduction other than sum: `WeightL2(0.0001)`), and its
    current value as it reaches the loss. Weight penalties are evaluated on the
    current weights; activity penalties only when `x` is given (one eager call,
    `training=False`). A scheduled strength shows as its schedule's class, and
    its value at the step of the model's optimizer.
    Inserted noise and dropout layers follow, with their stddev or rate. Then
    each keyword's total (the sum of its values) and the overall total, what the
    penalties add to the loss; then each trainable weight that no penalty covers,
    with why (a bias without `include_bias=True`, a normalization weight no
    pattern names, a kernel no keyword selects).

    Args:
        model: a built `keras.Model`.
        x: optional input data to evaluate activity penalties on.
        print_fn: a function that takes the whole summary as one string,
            without colors (as `model.summary`'s does); by default it goes to
            stdout, or to absl's log after
            `keras.config.disable_interactive_logging()`.
        line_length: the width of the printed lines (cells wrap to fit); by
            default the terminal's width, or with `print_fn`, the table's own.

    Returns:
        None, as `model.summary()` does (`keras_regs.summary_rows` returns the
            rows instead).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    model = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_dropout=0.3)
    keras_regs.summary(model)
    ```
    """
    _check_printing(print_fn, line_length)
    penalties, layers, skipped = _summary(model, x)
    totals = _totals(penalties, _keywords(penalties)) if penalties else []
    title = f'Regularization of "{model.name}"'
    missing = "pass x"
    _print(title, penalties + layers, totals, skipped, print_fn, line_length, missing)


def preview(
    model: keras.Model,
    *,
    print_fn: Callable[[str], Any] | None = None,
    line_length: int | None = None,
    **spec: Any,
) -> None:
    """Print what `regularize_model` would attach, without changing the model.

    Takes `regularize_model`'s keyword arguments (`**spec`) and raises the same
    errors. One row per slot that would change (the penalty it would then hold,
    valued on the current weights) and per layer that would be inserted
    (`after <anchor>`), printed as `summary` prints them, then the total that
    each penalty keyword of the call would add, and the overall total.

    Args:
        model: a built `keras.Model`.
        print_fn: as in `summary`.
        line_length: as in `summary`.
        **spec: `regularize_model`'s keyword arguments (its options and
            keywords).

    Returns:
        None (`keras_regs.preview_rows` returns the rows instead).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ])
    keras_regs.preview(model, weight_l2=1e-4, hidden_dropout=0.3)
    ```
    """
    _check_printing(print_fn, line_length)
    rows, keywords = _preview(model, **spec)
    penalties = [row for row in rows if row["keyword"] in keywords]
    totals = _totals(penalties, keywords) if keywords else []
    title = f'Preview of regularize_model on "{model.name}"'
    missing = "summary(model, x) values them once attached"
    _print(title, rows, totals, [], print_fn, line_length, missing)
