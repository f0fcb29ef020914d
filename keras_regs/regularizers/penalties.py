"""Penalties: what `regularize_model` attaches to a weight or a layer's output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import keras
from keras import ops

from keras_regs._types import Tensor
from keras_regs._validation import check_config_keys


@keras.saving.register_keras_serializable(package="keras_regs")
class Penalties(keras.regularizers.Regularizer):
    """The sum of the penalties attached to one tensor, by keyword.

    `keras_regs.regularize_model` puts one `Penalties` in each regularizer slot it
    touches (`kernel_regularizer`, `activity_regularizer`, ...). It keeps each
    keyword's penalty apart, so that a later call replaces a keyword's penalty
    instead of stacking a second one, and keeps the regularizer the slot held
    before (`base`, for example a hand-set `keras.regularizers.L2`), which
    `keras_regs.strip_regularization` puts back. The sum is computed in float32.

    Args:
        penalties: a dict `{keyword: regularizer}`, in the order they were
            attached; a regularizer may also be given as its serialized config
            (as `get_config` writes it). (Typed as a `Mapping`, so that a
            `dict[str, keras_regs.WeightL2]` type-checks; another mapping type
            than `dict` raises `TypeError`.)
        base: the regularizer that was in the slot before (or its config), or
            `None`.

    Example:

    >>> model = keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(2, name="out")]
    ... )
    >>> model = keras_regs.regularize_model(model, weight_l2=1e-4)
    >>> model.get_layer("out").kernel_regularizer
    Penalties(weight_l2=WeightL2(strength=0.0001, reduction='sum'))
    """

    def __init__(
        self,
        penalties: Mapping[str, keras.regularizers.Regularizer | dict[str, Any]],
        base: keras.regularizers.Regularizer | dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(penalties, dict):
            raise TypeError(
                "Invalid type for argument `penalties`. Expected a dict "
                f"{{keyword: regularizer}}. Received: penalties={penalties!r} "
                f"(of type {type(penalties).__name__})"
            )
        self.penalties = {
            keyword: _regularizer(penalty, f"penalties[{keyword!r}]")
            for keyword, penalty in penalties.items()
        }
        self.base = None if base is None else _regularizer(base, "base")

    def __call__(self, x: Tensor) -> Tensor:
        terms = [self.base, *self.penalties.values()]
        values = [ops.cast(term(x), "float32") for term in terms if term is not None]
        if not values:
            return ops.zeros((), "float32")
        return values[0] if len(values) == 1 else ops.sum(ops.stack(values))

    def get_config(self) -> dict[str, Any]:
        return {
            "penalties": {
                keyword: keras.regularizers.serialize(penalty)
                for keyword, penalty in self.penalties.items()
            },
            "base": None
            if self.base is None
            else keras.regularizers.serialize(self.base),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        check_config_keys(cls, config)
        return cls(**config)

    def __repr__(self) -> str:
        parts = [
            f"{keyword}={penalty!r}" for keyword, penalty in self.penalties.items()
        ]
        if self.base is not None:
            parts.append(f"base={self.base!r}")
        return f"Penalties({', '.join(parts)})"


def _regularizer(value, name):
    """A regularizer object from an instance or a serialized config.

    A config that names a function, a lambda or an unknown class is refused:
    Keras' `deserialize` hands back the function (or the bare class name), which
    is not a `Regularizer` instance.
    """
    received = value
    problem = None
    if isinstance(value, dict):
        try:
            value = keras.regularizers.deserialize(value)
        except KeyError as error:  # a malformed config: Keras looks up a key
            value, problem = None, error
    if not isinstance(value, keras.regularizers.Regularizer):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a "
            "keras.regularizers.Regularizer or its config. "
            f"Received: {name}={received!r} (of type {type(received).__name__})"
        ) from problem
    return value
