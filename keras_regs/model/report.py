"""summary and preview: what is (or would be) attached where, with its value."""

from keras import ops

from keras_regs import _schedule
from keras_regs.layers._seeded import SeededLayer
from keras_regs.layers.contractive import Contractive
from keras_regs.model import insert, penalize
from keras_regs.model.graph import anchor_of, check_model, walk
from keras_regs.model.slots import ActivitySlot
from keras_regs.model.spec import read_spec
from keras_regs.regularizers.penalties import Penalties

COLUMNS = ("layer", "target", "keyword", "class", "strength", "reduction", "value")
OWN = "(own)"  # set by hand, not by regularize_model


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
    }


class _Recorder:
    """Stands in for an activity regularizer during one eager call: records each
    entry's value as it reaches the loss (divided by the batch size)."""

    def __init__(self, regularizer):
        self.regularizer, self.values = regularizer, {}

    def __call__(self, output):
        batch = ops.shape(output)[0] if len(output.shape) else 1
        for keyword, penalty in _entries(self.regularizer):
            value = _float(penalty(output)) / batch
            self.values[keyword] = self.values.get(keyword, 0.0) + value
        return self.regularizer(output)


def _activity_values(model, slots, x):
    """Per slot, `{keyword: value}` from one eager call on `x` (or {} without x)."""
    if x is None:
        return {}
    recorders = {}
    try:
        for slot in slots:
            recorders[id(slot)] = _Recorder(slot.get())
            slot.set(recorders[id(slot)])
        model(x, training=False)
    finally:
        for slot in slots:
            if id(slot) in recorders:
                slot.set(recorders[id(slot)].regularizer)
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


def describe(model, x=None):
    """The rows of `summary`, as a list of dicts (see `COLUMNS`)."""
    check_model(model)
    _, _, groups = penalize.slot_groups(model)
    state = {key: group[0].get() for key, group in groups.items()}
    activity = [g[0] for g in groups.values() if isinstance(g[0], ActivitySlot)]
    activity = [slot for slot in activity if slot.get() is not None]
    with _schedule.stepping(lambda: _schedule.model_step(model)):
        values = _activity_values(model, activity, x)
        trainable = {id(v) for v in model.trainable_weights}
        rows = _penalty_rows(groups, state, values, trainable)
        return rows + _layer_rows(model)


def format_rows(rows):
    def cell(row, column):
        value = row[column]
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.6g}"
        if _schedule.is_schedule(value):
            return f"{type(value).__name__}(step)"
        return str(value)

    table = [COLUMNS] + [tuple(cell(row, c) for c in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(no regularization attached)")
    return "\n".join(line.rstrip() for line in lines)


def summary(model, x=None, print_fn=print):
    """Print what is attached where: penalties, their values, inserted layers.

    One row per penalty and keyword: the layer, the weight paths it is on (or
    `activity`), the keyword that attached it (`(own)` for regularizers set by
    hand), its class, strength and reduction, and its current value as it reaches
    the loss. Weight penalties are evaluated on the current weights; activity
    penalties only when `x` is given (one eager call, `training=False`). A
    scheduled strength shows as its schedule's class, and its value at the step
    of the model's optimizer.
    Inserted noise and dropout layers follow, with their stddev or rate.

    Args:
        model: a built `keras.Model`.
        x: optional input data to evaluate activity penalties on.
        print_fn: where the table goes (`print` by default).

    Returns:
        The rows, a list of dicts with keys `layer`, `target`, `keyword`,
        `class`, `strength`, `reduction`, `value`.

    Example:

    ```python
    model = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_dropout=0.3)
    keras_regs.summary(model)
    ```
    """
    rows = describe(model, x)
    print_fn(format_rows(rows))
    return rows


def preview(model, *, print_fn=print, **spec):
    """Print what `regularize_model` would attach, without changing the model.

    Takes `regularize_model`'s keyword arguments (`**spec`) and raises the same
    errors. One row per
    slot that would change (the penalty it would then hold, valued on the current
    weights) and per layer that would be inserted (`after <anchor>`).

    Returns:
        The rows, as `summary` returns them.

    Example:

    ```python
    keras_regs.preview(model, weight_l2=1e-4, hidden_dropout=0.3)
    ```
    """
    check_model(model)
    penalties, layers, include_bias, seed = read_spec(**spec)
    changes, _ = penalize.plan(model, penalties, include_bias)
    groups = {id(slots[0]): slots for slots, _ in changes}
    state = {id(slots[0]): regularizer for slots, regularizer in changes}
    with _schedule.stepping(lambda: _schedule.model_step(model)):
        trainable = {id(v) for v in model.trainable_weights}
        rows = _penalty_rows(groups, state, {}, trainable)
    if layers:
        rows += _insertion_rows(model, *insert.insert(model, layers, seed))
    print_fn(format_rows(rows))
    return rows
