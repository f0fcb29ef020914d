"""plot_penalties: a History's loss drawn as the data term plus each penalty.

matplotlib is an optional dependency: `pip install "keras_regs[plot]"`.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import keras

from keras_regs.model.logs import DATA

if TYPE_CHECKING:  # an optional dependency
    import matplotlib.axes


def _logs(history):
    """`history.history`, or the dict itself, checked."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(
            "Invalid type for argument `history`. Expected a keras.callbacks.History "
            "(what fit returns) or its `history` dict. "
            f"Received: history={history!r} (of type {type(history).__name__})"
        )
    return logs


def _series(logs, key):
    values = logs[key]
    if not isinstance(values, list | tuple) or not all(
        isinstance(v, numbers.Real) for v in values
    ):
        raise TypeError(
            f"Invalid value for `history[{key!r}]`. Expected a list of numbers, one "
            f"per epoch. Received: {values!r}"
        )
    return [float(v) for v in values]


def _terms_of(history, validation=False):
    """The terms of a History's loss, in the order `plot_penalties` stacks them.

    Returns:
        A dict `{name: [value per epoch]}`: `data_loss` first, then each penalty
        entry that `keras_regs.log_penalties` logged, then `loss` (their sum).
    """
    logs = _logs(history)
    prefix = "val_" if validation else ""
    missing = [prefix + key for key in (DATA, "loss") if prefix + key not in logs]
    if missing:
        raise ValueError(
            "Invalid value for argument `history`: it has no "
            + " and no ".join(f"`{key}`" for key in missing)
            + " entry. Train a model that `keras_regs.regularize_model` "
            "or `keras_regs.log_penalties` prepared (and pass validation data for "
            f"validation=True). Received entries: {sorted(logs)}"
        )
    names = [DATA]
    from keras_regs.regularizers.base import keywords

    known = set(keywords()) | {"contractive", "other_penalties"}
    names += [
        key[len(prefix) :]
        for key in logs
        if key.startswith(prefix)
        and key[len(prefix) :] in known
        and (validation or not key.startswith("val_"))
    ]
    terms = {name: _series(logs, prefix + name) for name in names}
    terms["loss"] = _series(logs, prefix + "loss")
    return terms


def plot_penalties(
    history: keras.callbacks.History | dict[str, list[float]],
    ax: matplotlib.axes.Axes | None = None,
    validation: bool = False,
    title: str | None = None,
) -> matplotlib.axes.Axes:
    """Draw a History's loss split into the data term and each penalty term.

    The terms are stacked per epoch: `data_loss` at the bottom, each keyword's
    term (`weight_l2`, `hidden_l1`, ...) on top of it, and the logged `loss` as a
    line over them, which the stack meets (the terms add up to the loss). The
    History comes from `fit` on a model that `keras_regs.regularize_model` (or
    `keras_regs.log_penalties`) prepared.

    Needs matplotlib (`pip install "keras_regs[plot]"`).

    Args:
        history: the `keras.callbacks.History` that `fit` returns, or its
            `history` dict.
        ax: the matplotlib `Axes` to draw on; a new figure's by default.
        validation: draw the `val_` entries instead.
        title: the axes' title; by default none.

    Returns:
        The `Axes`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_l1=1e-3)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.random.rand(64, 8), np.random.randint(0, 3, 64)
    history = model.fit(x, y, epochs=5, verbose=0)
    keras_regs.plot_penalties(history).figure.savefig("terms.png")
    ```
    """
    terms = _terms_of(history, validation=validation)
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "keras_regs.plot_penalties needs matplotlib, an optional dependency: "
            'pip install "keras_regs[plot]"'
        ) from error
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    loss = terms.pop("loss")
    epochs = list(range(1, len(loss) + 1))
    lower = [0.0] * len(loss)
    for name, values in terms.items():
        upper = [a + b for a, b in zip(lower, values, strict=True)]
        ax.fill_between(epochs, lower, upper, label=name, alpha=0.7, linewidth=0)
        lower = upper
    prefix = "val_" if validation else ""
    ax.plot(epochs, loss, color="black", linewidth=1.2, label=f"{prefix}loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{prefix}loss")
    ax.legend(loc="upper right", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax
