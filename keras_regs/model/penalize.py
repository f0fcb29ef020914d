"""Attaching penalties in place: select the slots, plan, then apply atomically."""

import fnmatch
import warnings

import keras

from keras_regs import _schedule
from keras_regs.model.graph import inserted_by, walk
from keras_regs.model.slots import (
    BIAS,
    KERNEL,
    NORMALIZATION,
    ActivitySlot,
    activity_slots,
    returns_sequences,
    unsupported_weights,
    weight_slots,
)
from keras_regs.regularizers._sequence import SequencePenalty
from keras_regs.regularizers.penalties import Penalties


def _matches(pattern, *names):
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


def _layer_matches(pattern, info):
    """By the layer's name, or its path through nested models (`inner/dense`)."""
    return _matches(pattern, info.layer.name, info.path)


def _weight_matches(pattern, info, path):
    """By the variable's path, also prefixed with the nested models' names
    (Keras leaves the nested Functional model's name out of its variables' paths)."""
    full = path if path.startswith(info.prefix) else info.prefix + path
    return _matches(pattern, path, full)


def _select_weights(infos, slots_of, request, include_bias):
    """The weight slots a weight penalty goes on, and the weights it cannot reach."""
    kinds = {KERNEL, BIAS} if include_bias else {KERNEL}
    selected, unreachable = [], []
    for info in infos:
        slots = slots_of[id(info.layer)]
        if slots is None:
            for variable in unsupported_weights(info.layer):
                if request.pattern is None or (
                    _weight_matches(request.pattern, info, variable.path)
                    or _layer_matches(request.pattern, info)
                ):
                    unreachable.append((info.layer, variable))
            continue
        for slot in slots:
            if request.pattern is None:
                chosen = slot.kind in kinds
            else:
                by_path = _weight_matches(request.pattern, info, slot.path)
                by_layer = _layer_matches(request.pattern, info) and (
                    slot.kind in kinds or slot.kind == NORMALIZATION
                )
                chosen = by_path or by_layer
            if chosen:
                selected.append(slot)
    return selected, unreachable


def _returns_state(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    return bool(getattr(layer, "return_state", False))


def _sequence_slots(layer, request):
    """Where a sequence penalty goes on `layer`: each direction of a Bidirectional."""
    if _returns_state(layer):
        raise ValueError(
            f"Invalid value for argument `{request.argument}`: layer '{layer.name}' "
            "has return_state=True, and Keras applies an activity regularizer to "
            f"every output, its 2-D states too, which {request.cls.__name__} cannot "
            "take. Put the penalty on a layer without return_state."
        )
    if returns_sequences(layer):
        slots = activity_slots(layer)
        return slots[1:] if len(slots) > 1 else slots
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):  # shared or never called: cannot tell
        shape = None
    if shape is not None and len(shape) == 3:
        return [ActivitySlot(layer)]
    raise ValueError(
        f"Invalid value for argument `{request.argument}`: {request.cls.__name__} "
        "needs a (batch, time, units) sequence output, and layer "
        f"'{layer.name}' ({type(layer).__name__}) outputs shape {shape}. Select "
        "recurrent layers with return_sequences=True."
    )


def _select_sequences(infos, request):
    infos = [i for i in infos if inserted_by(i.layer) is None]
    if request.pattern is not None:
        layers = [i.layer for i in infos if _layer_matches(request.pattern, i)]
    else:
        layers = [
            i.layer
            for i in infos
            if returns_sequences(i.layer) and not _returns_state(i.layer)
        ]
        if not layers:
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: the model has no "
                "recurrent layer that returns sequences (return_sequences=True), "
                f"which {request.cls.__name__} applies to. "
                f"Received: {request.argument}={request.value!r}"
            )
    return [slot for layer in layers for slot in _sequence_slots(layer, request)]


def _select_activity(infos, slots_of, request):
    if issubclass(request.cls, SequencePenalty):
        return _select_sequences(infos, request)
    infos = [i for i in infos if inserted_by(i.layer) is None]
    if request.pattern is not None:
        return [
            ActivitySlot(i.layer) for i in infos if _layer_matches(request.pattern, i)
        ]
    if any(info.is_output is None for info in infos):
        raise ValueError(
            f"Invalid value for argument `{request.argument}`: a subclassed model has "
            "no graph, so its hidden layers cannot be told from its output layers. "
            f"Give a pattern: {request.argument}={{'strength': "
            f"{request.strength}, 'pattern': 'dense_*'}}."
        )
    hidden = []
    for info in infos:
        slots = slots_of[id(info.layer)] or []
        owns_kernel = any(s.kind == KERNEL for s in slots) or unsupported_weights(
            info.layer
        )
        if owns_kernel and not info.is_output:
            hidden.append(ActivitySlot(info.layer))
    return hidden


def _check_groups(request, selected, groups):
    """MultiHeadAttention saves one penalty for its four projections: all or none."""
    picked = {}
    for slot in selected:
        picked.setdefault(slot.group, []).append(slot)
    for key, chosen in picked.items():
        group = groups[key]
        if len(chosen) != len(group):
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: layer "
                f"'{group[0].layer.name}' ({type(group[0].layer).__name__}) saves one "
                f"penalty for {', '.join(s.path for s in group)}; the pattern "
                f"{request.pattern!r} selects only "
                f"{', '.join(s.path for s in chosen)}, which could not be saved. "
                "Select all of them or none."
            )


def slot_groups(model):
    """The walked layers, each layer's weight slots, and every slot by group."""
    infos = walk(model)
    slots_of = {id(info.layer): weight_slots(info.layer) for info in infos}
    groups = {}
    for info in infos:
        for slot in [*(slots_of[id(info.layer)] or []), *activity_slots(info.layer)]:
            groups.setdefault(slot.group, []).append(slot)
    return infos, slots_of, groups


def plan(model, requests, include_bias):
    """Return `(changes, notes)`: the new regularizer of every slot group that changes.

    Nothing is modified. `changes` is a list of `(slots, new_regularizer)`, one per
    group of slots saved by one attribute; notes are the warnings to give once the
    changes are applied.
    """
    infos, slots_of, groups = slot_groups(model)
    state = {key: group[0].get() for key, group in groups.items()}
    notes = []
    for request in requests:
        activity = request.cls.target == "activity"
        if activity:
            selected = _select_activity(infos, slots_of, request)
            unreachable = []
        else:
            selected, unreachable = _select_weights(
                infos, slots_of, request, include_bias
            )
            _check_groups(request, selected, groups)
        if not selected and not unreachable:
            raise ValueError(
                f"Invalid value for argument `{request.argument}`: "
                + (
                    f"the pattern {request.pattern!r} matches no layer name or weight "
                    "path of the model."
                    if request.pattern is not None
                    else "the model has no layer it applies to."
                )
                + f" Received: {request.argument}={request.value!r}"
            )
        notes.extend(_notes(request, selected, unreachable))
        strength = request.strength
        if request.reduction == "mean":
            strength = _schedule.divided(strength, len(selected))
        wanted = {slot.group for slot in selected}
        for key in wanted:
            _check_keepable(request, groups[key][0], state[key])
        for key, current in state.items():
            had = (
                isinstance(current, Penalties) and request.keyword in current.penalties
            )
            if key in wanted:
                penalty = request.cls(strength, reduction=request.reduction)
                state[key] = _with(current, request.keyword, penalty)
            elif had:
                state[key] = _with(current, request.keyword, None)
    changes = [
        (groups[key], new)
        for key, new in state.items()
        if _differs(new, groups[key][0].get())
    ]
    return changes, notes


def _check_keepable(request, slot, current):
    """A slot's own regularizer must be a Regularizer object to be kept and saved."""
    if current is None or isinstance(current, keras.regularizers.Regularizer):
        return
    where = getattr(slot, "target", None) or slot.path
    raise ValueError(
        f"Invalid value for argument `{request.argument}`: layer "
        f"'{slot.layer.name}' has a regularizer on {where} that is a plain "
        f"callable ({current!r}), not a keras.regularizers.Regularizer, so "
        "regularize_model cannot keep it beside its own penalty and save both. "
        "Make it a Regularizer subclass, or remove it first."
    )


def _notes(request, selected, unreachable):
    if unreachable:
        names = ", ".join(
            f"{v.path} ({type(layer).__name__})" for layer, v in unreachable
        )
        yield (
            f"keras_regs: `{request.argument}` was not attached to {names}: the "
            "layer class has no config attribute that would save a penalty on "
            "that weight. Regularize it by hand, or add the layer to "
            "keras_regs.model.slots.TABLE."
        )
    dropped = [s.owner.name for s in selected if not getattr(s, "saved", True)]
    if dropped:
        yield (
            f"keras_regs: `{request.argument}` on {', '.join(dropped)} counts in "
            "training but is lost on save: SimpleRNN's config drops "
            "`activity_regularizer`."
        )
    frozen = sorted({s.layer.name for s in selected if not s.layer.trainable})
    if frozen:
        yield (
            f"keras_regs: `{request.argument}` is attached to frozen layers "
            f"({', '.join(frozen)}); Keras adds no penalty for a layer with "
            "trainable=False until it is unfrozen."
        )


def _differs(new, old):
    if new is old:
        return False
    if new is None or old is None:
        return True
    return keras.regularizers.serialize(new) != keras.regularizers.serialize(old)


def _with(current, keyword, penalty):
    """`current` with `keyword`'s penalty replaced (removed if `penalty` is None)."""
    if isinstance(current, Penalties):
        penalties, base = dict(current.penalties), current.base
    else:
        penalties, base = {}, current
    penalties.pop(keyword, None)
    if penalty is not None:
        penalties[keyword] = penalty
    return Penalties(penalties, base) if penalties else base


def apply(changes):
    """Set every change; on any error, put every slot back and re-raise."""
    done = []
    try:
        for slots, regularizer in changes:
            for slot in slots:
                done.append((slot, slot.get()))
                slot.set(regularizer)
    except BaseException:
        for slot, previous in reversed(done):
            slot.set(previous)
        raise


def strip_changes(model):
    """The changes that put back every slot's regularizer from before keras_regs."""
    _, _, groups = slot_groups(model)
    return [
        (group, group[0].get().base)
        for group in groups.values()
        if isinstance(group[0].get(), Penalties)
    ]


def warn(notes):
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
