"""Reading `regularize_model`'s keywords into requests, with errors that help."""

import dataclasses
import difflib

from keras_regs import _schedule
from keras_regs._validation import (
    check_estimator,
    check_noise_shape,
    check_non_negative,
    check_rate,
    check_reduction,
    check_samples,
    check_seed,
    check_wrt,
)
from keras_regs.regularizers.base import keywords as penalty_keywords
from keras_regs.regularizers.base import snake_case

ROLES = ("input", "hidden", "output")
LAYER_KEYWORDS = {
    f"{role}_{kind}": (kind, role) for role in ROLES for kind in ("noise", "dropout")
}
OPTIONS = ("reduction", "include_bias", "seed", "noise", "dropout", "wrt")
WRAP_KEYWORDS = ("contractive",)
# The options of the contractive keyword's dict beside strength, pattern and
# reduction: what it differentiates with respect to (each wrapped layer's own
# input, or the input of the model it is in: theanets'), and how.
WRAP_OPTIONS = ("wrt", "estimator", "samples")


@dataclasses.dataclass
class PenaltyRequest:
    """One penalty keyword: attach `cls(strength, reduction)` where `pattern` says."""

    argument: str  # as the user wrote it: "weight_decay"
    keyword: str  # canonical: "weight_l2"
    cls: type
    strength: float
    pattern: str | None
    reduction: str
    value: object  # as the user gave it, for error messages


@dataclasses.dataclass
class LayerRequest:
    """Insert a noise or dropout layer after the inputs or layers selected."""

    argument: str  # "hidden_dropout", or "dropout" for the pattern form
    kind: str  # "noise", "dropout" or "contractive" (a wrapper, not a new layer)
    role: str | None  # "input", "hidden", "output", or None with a pattern
    value: float  # the stddev, rate or strength
    pattern: str | None
    reduction: str = "sum"  # contractive only
    noise_shape: tuple | None = None  # dropout only: the mask's shape
    wrt: str = "layer"  # contractive only: "layer" or "input"
    estimator: str = "exact"  # contractive only
    samples: int = 1  # contractive only: "hutchinson"'s random vectors


def check_options(reduction, include_bias, seed):
    """Validate the options of regularize_model; return `(reduction, seed)`."""
    reduction = check_reduction(reduction)
    if not isinstance(include_bias, bool):
        raise TypeError(
            "Invalid type for argument `include_bias`. Expected a bool. "
            f"Received: include_bias={include_bias!r} "
            f"(of type {type(include_bias).__name__})"
        )
    seed = check_seed(seed)
    if seed is None:
        raise TypeError(
            "Invalid type for argument `seed`. Expected a non-negative integer. "
            "Received: seed=None"
        )
    return reduction, seed


def canonical_keyword(cls):
    return snake_case(cls.__name__)


def _check_pattern(pattern, argument):
    if pattern is not None and (not isinstance(pattern, str) or not pattern):
        raise TypeError(
            f"Invalid type for argument `{argument}['pattern']`. Expected a "
            f"non-empty glob string such as 'dense_*'. Received: pattern={pattern!r}"
        )
    return pattern


def _unpack(argument, value, value_keys, allow_reduction, options=(), pattern=True):
    """A number, or a dict {strength (or weight, rate, stddev), pattern, reduction}
    (and the keys in `options`, returned in a dict of their own; no `pattern`
    where the pattern is the dict's key)."""
    if not isinstance(value, dict):
        return value, None, None, {}
    allowed = {
        *value_keys,
        *(("pattern",) if pattern else ()),
        *(("reduction",) if allow_reduction else ()),
        *options,
    }
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid value for argument `{argument}`: unknown key {unknown[0]!r}. "
            f"Expected keys among {sorted(allowed)}. Received: {argument}={value!r}"
        )
    given = [key for key in value_keys if key in value]
    if len(given) != 1:
        raise ValueError(
            f"Invalid value for argument `{argument}`: give exactly one of "
            f"{list(value_keys)}. Received: {argument}={value!r}"
        )
    return (
        value[given[0]],
        _check_pattern(value.get("pattern"), argument),
        value.get("reduction"),
        {key: value[key] for key in options if key in value},
    )


def _dropout_options(argument, options):
    """The dropout options of a keyword's dict: the mask's `noise_shape`."""
    return check_noise_shape(options.get("noise_shape"), f"{argument}['noise_shape']")


def _unknown_keyword(argument):
    known = sorted({*penalty_keywords(), *LAYER_KEYWORDS, *WRAP_KEYWORDS, *OPTIONS})
    close = difflib.get_close_matches(argument, known, n=3)
    hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
    return ValueError(
        f"Unknown keyword argument `{argument}` for regularize_model.{hint} "
        f"Known keywords: {', '.join(known)}."
    )


def parse(spec, reduction, noise, dropout, wrt=None):
    """Turn the keyword arguments into penalty and layer requests (validated)."""
    if wrt is not None:
        wrt = check_wrt(wrt)
        if not any(spec.get(k) is not None for k in WRAP_KEYWORDS):
            raise ValueError(
                "Invalid value for argument `wrt`: it says what the contractive "
                "penalty differentiates with respect to, and `contractive` is not "
                f"given. Received: wrt={wrt!r}"
            )
    registry = penalty_keywords()
    penalties, layers, seen = [], [], {}
    for argument, value in spec.items():
        if value is None:
            continue
        if argument in LAYER_KEYWORDS:
            kind, role = LAYER_KEYWORDS[argument]
            keys = ("rate",) if kind == "dropout" else ("stddev",)
            options = ("noise_shape",) if kind == "dropout" else ()
            amount, pattern, _, given = _unpack(argument, value, keys, False, options)
            check = check_rate if kind == "dropout" else check_non_negative
            layers.append(
                LayerRequest(
                    argument,
                    kind,
                    role,
                    _schedule.check(amount, argument, check),
                    pattern,
                    noise_shape=_dropout_options(argument, given),
                )
            )
            continue
        if argument in WRAP_KEYWORDS:
            keys = ("strength", "weight")
            strength, pattern, own, given = _unpack(
                argument, value, keys, True, WRAP_OPTIONS
            )
            if "wrt" in given:
                own_wrt = check_wrt(given["wrt"], f"{argument}['wrt']")
            else:
                own_wrt = "layer" if wrt is None else wrt
            layers.append(
                LayerRequest(
                    argument,
                    argument,
                    "hidden",
                    _schedule.check(strength, argument, check_non_negative),
                    pattern,
                    check_reduction(own or reduction, f"{argument}['reduction']"),
                    wrt=own_wrt,
                    estimator=check_estimator(
                        given.get("estimator", "exact"), f"{argument}['estimator']"
                    ),
                    samples=check_samples(
                        given.get("samples", 1), f"{argument}['samples']"
                    ),
                )
            )
            continue
        if argument not in registry:
            raise _unknown_keyword(argument)
        cls = registry[argument]
        keyword = canonical_keyword(cls)
        if keyword in seen:
            raise ValueError(
                f"Invalid keyword arguments: `{seen[keyword]}` and `{argument}` are "
                f"the same penalty ({cls.__name__}); give it once."
            )
        seen[keyword] = argument
        strength, pattern, own_reduction, _ = _unpack(
            argument, value, ("strength", "weight"), True
        )
        penalties.append(
            PenaltyRequest(
                argument,
                keyword,
                cls,
                _schedule.check(strength, argument, check_non_negative),
                pattern,
                check_reduction(own_reduction or reduction, f"{argument}['reduction']"),
                value,
            )
        )
    for argument, mapping in (("noise", noise), ("dropout", dropout)):
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise TypeError(
                f"Invalid type for argument `{argument}`. Expected a dict "
                f"{{pattern: value}}. Received: {argument}={mapping!r} "
                f"(of type {type(mapping).__name__})"
            )
        check = check_rate if argument == "dropout" else check_non_negative
        for pattern, amount in mapping.items():
            _check_pattern(pattern, argument)
            name = f"{argument}[{pattern!r}]"
            noise_shape = None
            if argument == "dropout" and isinstance(amount, dict) and "rate" in amount:
                # {pattern: {"rate": r, "noise_shape": ...}} (a dict without
                # "rate" is a schedule's config)
                amount, _, _, given = _unpack(
                    name, amount, ("rate",), False, ("noise_shape",), pattern=False
                )
                noise_shape = _dropout_options(name, given)
            value = _schedule.check(amount, name, check)
            layers.append(
                LayerRequest(
                    argument, argument, None, value, pattern, noise_shape=noise_shape
                )
            )
    return penalties, layers


def read_spec(
    reduction="sum",
    include_bias=False,
    seed=13,
    noise=None,
    dropout=None,
    wrt=None,
    **keywords,
):
    """regularize_model's arguments, validated: `(penalties, layers, include_bias,
    seed)`, the penalty and layer requests plus the checked options."""
    reduction, seed = check_options(reduction, include_bias, seed)
    penalties, layers = parse(keywords, reduction, noise, dropout, wrt)
    return penalties, layers, include_bias, seed


def canonical_penalties(penalties):
    """`{argument: {strength, reduction[, pattern]}}`: the penalty keywords of a
    call as plain JSON (a schedule as its config)."""
    from keras_regs import _schedule

    keywords = {}
    for request in penalties:
        value = {
            "strength": _schedule.to_config(request.strength),
            "reduction": request.reduction,
        }
        if request.pattern is not None:
            value["pattern"] = request.pattern
        keywords[request.argument] = value
    return keywords


def canonical_call(penalties, layers, reduction, include_bias, seed):
    """One `regularize_model` call as plain JSON keywords (`read_call` reads it):
    each keyword as `{strength (or rate, stddev), pattern, reduction}`."""
    from keras_regs import _schedule

    call = {"include_bias": include_bias, "seed": seed, "reduction": reduction}
    call.update(canonical_penalties(penalties))
    maps = {}
    for request in layers:
        amount = _schedule.to_config(request.value)
        if request.role is None:  # noise={pattern: value}, dropout={...}
            if request.noise_shape is not None:
                amount = {"rate": amount, "noise_shape": list(request.noise_shape)}
            maps.setdefault(request.argument, {})[request.pattern] = amount
            continue
        if request.kind == "contractive":
            value = {"strength": amount, "reduction": request.reduction}
            if request.wrt != "layer":
                value["wrt"] = request.wrt
            if request.estimator != "exact":
                value["estimator"] = request.estimator
                value["samples"] = request.samples
        else:
            value = {"rate" if request.kind == "dropout" else "stddev": amount}
        if request.noise_shape is not None:
            value["noise_shape"] = list(request.noise_shape)
        if request.pattern is not None:
            value["pattern"] = request.pattern
        call[request.argument] = value
    call.update(maps)
    return call


def read_call(call):
    """A recorded call, validated as `regularize_model` validates its keywords."""
    return read_spec(**call)
