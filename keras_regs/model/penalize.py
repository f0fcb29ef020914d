"""Attaching penalties in place: select the slots, plan, then apply atomically."""

import fnmatch
import warnings

import keras

from keras_regs import _schedule
from keras_regs._validation import KerasRegsWarning
from keras_regs.model.graph import hidden_ends, inserted_by, walk
from keras_regs.model.slots import (
    BIAS,
    KERNEL,
    NORMALIZATION,
    ActivitySlot,
    activity_slots,
    returns_sequences,
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


def _has_glob(text):
    return any(c in text for c in "*?[")


def _names_weight(pattern):
    """Whether the pattern ends in a weight's own name (`*/gamma`, `bn/beta`)."""
    return "/" in pattern and not _has_glob(pattern.rsplit("/", 1)[1])


def _slot_matches(pattern, info, slot):
    """By the variable's path, or by the name or path of the layer that owns it
    (a sublayer of a composite layer) or of the walked layer."""
    layer = slot.layer
    return (
        _weight_matches(pattern, info, slot.path)
        or _layer_matches(pattern, info)
        or _matches(
            pattern, layer.name, layer.path or "", info.prefix + (layer.path or "")
        )
    )


def _select_weights(infos, slots_of, request, include_bias, trainable):
    """The weight slots a weight penalty goes on, the frozen weights it would
    have reached (skipped: Keras adds no penalty for them), and the layers its
    pattern names that have no weight it applies to."""
    kinds = {KERNEL, BIAS} if include_bias else {KERNEL}
    selected, frozen, named = [], [], []
    for info in infos:
        for slot in slots_of[id(info.layer)]:
            if request.pattern is None:
                chosen = slot.kind in kinds
            else:
                by_path = _weight_matches(request.pattern, info, slot.path)
                by_layer = _slot_matches(request.pattern, info, slot)
                if by_layer and not by_path:
                    named.append(slot.layer)
                # a pattern narrows where; the kinds stay kernels (biases with
                # include_bias), unless it names the weight ("*/gamma") or names
                # a normalization layer exactly ("bn")
                chosen = (by_path or by_layer) and (
                    slot.kind in kinds
                    or (by_path and _names_weight(request.pattern))
                    or (
                        slot.kind == NORMALIZATION
                        and request.pattern in (slot.layer.name, slot.layer.path)
                    )
                )
            if not chosen:
                continue
            if id(slot.variable) in trainable:
                selected.append(slot)
            else:
                frozen.append(slot)
        if request.pattern is not None and _layer_matches(request.pattern, info):
            named.append(info.layer)
    return selected, frozen, named


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
            ActivitySlot(i.layer, listed=i.listed)
            for i in infos
            if _layer_matches(request.pattern, i)
        ]
    if any(info.is_output is None for info in infos):
        raise ValueError(
            f"Invalid value for argument `{request.argument}`: a subclassed model has "
            "no graph, so its hidden layers cannot be told from its output layers. "
            f"Give a pattern: {request.argument}={{'strength': "
            f"{request.strength}, 'pattern': 'dense_*'}}."
        )
    hidden, ends = [], hidden_ends(infos)
    for info in infos:
        slots = slots_of[id(info.layer)]
        owns_kernel = any(s.kind == KERNEL for s in slots)
        end = ends[id(info.layer)]  # the block's output: after its BN and ReLU
        if owns_kernel and not end.is_output:
            if all(slot.layer is not end.layer for slot in hidden):
                hidden.append(ActivitySlot(end.layer, listed=end.listed))
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
    slots_of = {id(info.layer): weight_slots(info.layer, info.listed) for info in infos}
    groups = {}
    for info in infos:
        activity = activity_slots(info.layer, info.listed)
        for slot in [*slots_of[id(info.layer)], *activity]:
            groups.setdefault(slot.group, []).append(slot)
    return infos, slots_of, groups


def plan(model, requests, include_bias):
    """Return `(changes, notes)`: the new regularizer of every slot group that changes.

    Nothing is modified. `changes` is a list of `(slots, new_regularizer)`, one per
    group of slots saved by one attribute; notes are the warnings to give once the
    changes are applied.
    """
    infos, slots_of, groups = slot_groups(model)
    trainable = {id(v) for v in model.trainable_weights}
    state = {key: group[0].get() for key, group in groups.items()}
    notes = []
    for request in requests:
        activity = request.cls.target == "activity"
        frozen = []
        if activity:
            selected = _select_activity(infos, slots_of, request)
        else:
            selected, frozen, named = _select_weights(
                infos, slots_of, request, include_bias, trainable
            )
            _check_reachable(request, selected, frozen, named)
            _check_groups(request, selected, groups)
        if not selected:
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
        notes.extend(_notes(request, selected, frozen))
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


def _check_reachable(request, selected, frozen, named):
    """A spec that reaches only frozen weights, or a pattern that names only
    layers without a weight it applies to, is refused, naming the layers."""
    if selected:
        return
    if frozen:
        layers = sorted({slot.layer.path or slot.layer.name for slot in frozen})
        raise ValueError(
            f"Invalid value for argument `{request.argument}`: it would reach only "
            f"frozen weights (trainable=False), which Keras adds no penalty for, "
            f"in layer(s) {', '.join(repr(n) for n in layers)}. Unfreeze them, or "
            f"select trainable weights. Received: {request.argument}="
            f"{request.value!r}"
        )
    if named:
        layers = sorted({f"{layer.name!r} ({type(layer).__name__})" for layer in named})
        raise ValueError(
            f"Invalid value for argument `{request.argument}`: the pattern "
            f"{request.pattern!r} matches layer(s) {', '.join(layers)}, which have "
            f"no trainable weight that {request.cls.__name__} applies to (kernels; "
            "biases with include_bias=True). Received: "
            f"{request.argument}={request.value!r}"
        )


def _notes(request, selected, frozen):
    undeclared = {}
    for slot in selected:
        if getattr(slot, "undeclared", False):
            undeclared.setdefault(slot.layer, []).append(slot.variable.name)
    if undeclared:
        lines = "\n".join(
            f"  {layer.name} ({type(layer).__name__}): {', '.join(names)}"
            for layer, names in undeclared.items()
        )
        yield (
            f"keras_regs: `{request.argument}` is on weights of layer classes "
            "keras_regs does not know; it counts, and the model keeps it through "
            "the record regularize_model writes into the model's config (load "
            "after `import keras_regs`). To save it in the layer's own config "
            "instead, declare the class with keras_regs.register_layer(cls, "
            f"{{variable name: config attribute}}):\n{lines}"
        )
    if frozen:
        by_layer = {}
        for slot in frozen:
            name = slot.layer.path or slot.layer.name
            by_layer.setdefault(name, []).append(slot.variable.name)
        lines = "\n".join(
            f"  {layer}: {', '.join(names)}" for layer, names in by_layer.items()
        )
        yield (
            f"keras_regs: `{request.argument}` skipped {len(frozen)} frozen "
            "weight(s) (trainable=False: Keras adds no penalty for them; a LoRA "
            f"base kernel is one):\n{lines}"
        )
    frozen_layers = sorted(
        {
            s.layer.name
            for s in selected
            if isinstance(s, ActivitySlot) and not s.layer.trainable
        }
    )
    if frozen_layers:
        yield (
            f"keras_regs: `{request.argument}` is attached to frozen layers "
            f"({', '.join(frozen_layers)}); Keras adds no penalty for a layer with "
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
    """Set every change; on any error, put every slot back and re-raise.
    Returns what `undo` needs to put them back later."""
    done = []
    try:
        for slots, regularizer in changes:
            for slot in slots:
                done.append((slot, slot.get()))
                slot.set(regularizer)
    except BaseException:
        undo(done)
        raise
    return done


def undo(done):
    for slot, previous in reversed(done):
        slot.set(previous)


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
        warnings.warn(note, KerasRegsWarning, stacklevel=3)
