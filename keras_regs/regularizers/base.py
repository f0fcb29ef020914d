"""The base class of every keras_regs penalty, and the keyword registry."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, Self

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _schedule, _terms
from keras_regs._types import Tensor
from keras_regs._validation import (
    check_config_keys,
    check_non_negative,
    check_reduction,
)

TARGETS = ("weights", "activity")
# The strength of a penalty made without one, as Keras' `L1()` and `L2()` (and
# `keras.regularizers.get(cls)`, which calls the class with no argument).
DEFAULT_STRENGTH = 0.01

# keyword -> class; filled by `Regularizer.__init_subclass__`.
_REGISTRY = {}


def snake_case(name):
    """`WeightL2` -> `weight_l2`, `KLDivergence` -> `kl_divergence`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _register(cls):
    names = [snake_case(cls.__name__), *cls.__dict__.get("aliases", ())]
    for keyword in names:
        if not isinstance(keyword, str) or not keyword.isidentifier():
            raise ValueError(
                f"Invalid value for `{cls.__name__}.aliases`. Expected Python "
                f"identifiers. Received: {keyword!r}"
            )
        known = _REGISTRY.get(keyword)
        same_class = known is not None and (
            (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
        )
        if known is not None and not same_class:
            raise ValueError(
                f"The keyword `{keyword}` of `{cls.__module__}.{cls.__qualname__}` "
                f"is already taken by `{known.__module__}.{known.__qualname__}`. "
                "Rename the class or change its `aliases`."
            )
    for keyword in names:
        _REGISTRY[keyword] = cls
    _terms.register_name(snake_case(cls.__name__))  # its entry in the logs


def keywords() -> dict[str, type[Regularizer]]:
    """All registered penalty keywords, mapped to their classes.

    Every concrete subclass of `keras_regs.Regularizer` registers itself under its
    class name in snake_case plus the `aliases` it declares; these are the keywords
    that `keras_regs.regularize_model` accepts for penalties.

    Returns:
        A new dict `{keyword: class}`, sorted by keyword.

    Example:

    >>> keywords = keras_regs.regularizers.keywords()
    >>> keywords["weight_l2"] is keywords["weight_decay"] is keras_regs.WeightL2
    True
    """
    return dict(sorted(_REGISTRY.items()))


def lookup(keyword: str) -> type[Regularizer]:
    """Return the penalty class registered under `keyword`.

    Args:
        keyword: a penalty keyword (`"weight_l2"`) or an alias of one
            (`"weight_decay"`), as `keras_regs.regularizers.keywords()` lists them.

    Returns:
        The `keras_regs.Regularizer` subclass registered under `keyword`.

    Raises:
        TypeError: `keyword` is not a string.
        ValueError: no penalty is registered under `keyword`; the message suggests
            the closest keywords.

    Example:

    >>> keras_regs.regularizers.lookup("weight_decay")
    <class 'keras_regs.regularizers.weight_l2.WeightL2'>
    """
    if not isinstance(keyword, str):
        raise TypeError(
            "Invalid type for argument `keyword`. Expected a string. "
            f"Received: keyword={keyword!r} (of type {type(keyword).__name__})"
        )
    if keyword in _REGISTRY:
        return _REGISTRY[keyword]
    close = difflib.get_close_matches(keyword, _REGISTRY, n=3)
    hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown penalty keyword: {keyword!r}.{hint} "
        f"Known keywords: {', '.join(sorted(_REGISTRY))}."
    )


class Regularizer(keras.regularizers.Regularizer):
    """Base class of keras_regs penalties: validation, reduction, float32, config.

    A subclass sets the class attribute `target` (`"weights"` for kernel and bias
    penalties, `"activity"` for penalties on a layer's output) and implements
    `call(x)`, which returns the penalty's terms as a tensor of any shape. The base
    class then

    1. casts the input to float32 (so half-precision outputs under mixed precision
       neither overflow nor break the float32 loss),
    2. reduces the terms: `"sum"` adds them, `"mean"` averages them,
    3. multiplies by `strength` and returns a float32 scalar.

    Keras divides what an activity regularizer returns by the batch size. With
    `reduction="sum"` that turns the sum over the batch into a per-example figure,
    exactly as Keras' built-ins do. With `reduction="mean"` an activity penalty
    multiplies its mean by the batch size first, so that after Keras' division the
    loss holds the plain mean over all elements. Either way the penalty does not
    depend on the batch size. (Calling a penalty yourself returns the value before
    Keras' division.)

    Every concrete subclass is registered under a keyword, its class name in
    snake_case plus the names in its class attribute `aliases`, which
    `keras_regs.regularize_model` accepts (`WeightInverse` -> `weight_inverse`).
    Register the class with `keras.saving.register_keras_serializable` as well so
    that saved models load it back. Extra constructor arguments must be added to
    `get_config`.

    Args:
        strength: the penalty's coefficient, a finite number >= 0, or a
            `keras.optimizers.schedules.LearningRateSchedule` of the training
            step (evaluated at the optimizer's step inside the compiled step;
            see `keras_regs.log_penalties`). Defaults to 0.01, as Keras' `L1()`
            and `L2()`; `None` means that default.
        reduction: `"sum"` (default, the same value as Keras' built-in `L1`/`L2`)
            or `"mean"` (theanets' normalisation, the mean over elements).

    Example:

    ```python
    from keras import ops

    @keras.saving.register_keras_serializable(package="my_project")
    class WeightInverse(keras_regs.Regularizer):
        target = "weights"

        def call(self, x):
            return 1 / ops.sum(x * x, axis=0)

    layer = keras.layers.Dense(8, kernel_regularizer=WeightInverse(1e-3))
    ```
    """

    target: str = "weights"  # or "activity"
    aliases: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.target not in TARGETS:
            raise ValueError(
                f"Invalid value for `{cls.__name__}.target`. Expected one of "
                f'"weights", "activity". Received: target={cls.target!r}'
            )
        if isinstance(cls.__dict__.get("aliases", ()), str):
            raise TypeError(
                f"Invalid type for `{cls.__name__}.aliases`. Expected a tuple of "
                f"strings. Received: aliases={cls.aliases!r}"
            )
        if cls.call is not Regularizer.call:
            _register(cls)

    def __init__(
        self,
        strength: float | LearningRateSchedule | None = 0.01,  # DEFAULT_STRENGTH
        reduction: Literal["sum", "mean"] = "sum",
    ) -> None:
        if strength is None:  # as Keras' L1(None), L2(None)
            strength = DEFAULT_STRENGTH
        self.strength = _schedule.check(strength, "strength", check_non_negative)
        self.reduction = check_reduction(reduction)

    def mask(self, x: Tensor) -> Tensor | None:
        """Which terms count: `None` (all of them, the default) or a 0/1 float32
        tensor that broadcasts against `call(x)`'s terms. Masked terms are left
        out of the sum, and out of the count that `"mean"` divides by."""
        return None

    def call(self, x: Tensor) -> Tensor:
        """Return the penalty's terms for `x` (already cast to float32)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(self, x)`, returning the "
            "penalty's terms as a tensor."
        )

    def __call__(self, x: Tensor) -> Tensor:
        received = x
        x = ops.cast(x, "float32")
        terms = ops.cast(self.call(x), "float32")
        mask = self.mask(x)
        if mask is not None:
            mask = ops.broadcast_to(ops.cast(mask, "float32"), ops.shape(terms))
            terms = terms * mask
        if self.reduction == "sum":
            value = ops.sum(terms)
        else:
            count = ops.size(terms) if mask is None else ops.sum(mask)
            value = ops.divide_no_nan(ops.sum(terms), ops.cast(count, "float32"))
            if self.target == "activity" and len(x.shape) > 0:
                # Undo Keras' division by the batch size: the loss gets the mean.
                value = value * ops.cast(ops.shape(x)[0], "float32")
        value = value * _schedule.value(self.strength, self, "strength")
        _terms.record(
            lambda: snake_case(type(self).__name__),
            value,
            received,
            self.target,
            self,
        )
        return value

    def get_config(self) -> dict[str, Any]:
        return {
            "strength": _schedule.to_config(self.strength),
            "reduction": self.reduction,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        check_config_keys(cls, config)
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
