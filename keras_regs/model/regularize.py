"""regularize_model and strip_regularization: one spec for a whole model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import keras
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _keras
from keras_regs._validation import KerasRegsWarning
from keras_regs.model import insert, logs, nodes, penalize, persist
from keras_regs.model.graph import check_model
from keras_regs.model.spec import canonical_call, read_spec


def regularize_model(
    model: keras.Model,
    *,
    reduction: Literal["sum", "mean"] = "sum",
    include_bias: bool = False,
    seed: int = 13,
    noise: Mapping[str, float | LearningRateSchedule | dict[str, Any]] | None = None,
    dropout: Mapping[str, float | LearningRateSchedule | dict[str, Any]] | None = None,
    wrt: Literal["layer", "input"] | None = None,
    **keywords: float | LearningRateSchedule | dict[str, Any] | None,
) -> keras.Model:
    """Attach one regularization spec to every matching layer of a model.

    The model-level counterpart of per-layer regularizers (theanets'
    `net.train(..., weight_l2=1e-4, hidden_l1=0.1)`). Penalties are attached in
    place, on each layer's config attribute and on its variable, so they count in
    the next `fit` (also of a model already compiled and trained: its cached train
    function is reset) and are saved with the model. Noise and dropout layers and
    contractive wrappers are inserted into the returned model, a new model over
    the very same layers and weights (a model whose class builds its own graph,
    such as a KerasHub model, gets them in place and is itself returned).

    Each keyword (listed below, after the arguments) takes one of these values:

    - a number: the penalty's strength, the noise's stddev or the dropout rate;
    - a `keras.optimizers.schedules.LearningRateSchedule` of the training step
      in place of the number (or its config), evaluated at the optimizer's step;
    - a dict, with the keys that each keyword lists: the number (or schedule)
      under `strength` (or theanets' `weight`), `stddev` or `rate`, and
      optionally `pattern`, which replaces the keyword's default selection;
    - `None` (the same as not giving the keyword).

    `pattern` is a shell-style glob matched against layer names and variable
    paths (`"dense_[12]"`, `"*/recurrent_kernel"`); nested models are walked and
    a shared layer counts once. A second call replaces what an earlier call
    attached for the same keyword; nothing is stacked twice. A regularizer the
    layer had before is kept beside (`keras_regs.regularizers.Penalties.base`).
    `fit` and `evaluate` then log `data_loss` and each keyword's term beside
    `loss` (`keras_regs.log_penalties`; `evaluate` returns a list, or a dict with
    `return_dict=True`).

    Args:
        model: a built `keras.Model` (Sequential, Functional or subclassed;
            noise, dropout and `contractive` need a Functional or Sequential
            model, or a subclass of one).
        reduction: `"sum"` (Keras' built-ins) or `"mean"`: with `"mean"`, each of
            the |Omega| tensors a keyword selects gets strength `s / |Omega|`, so
            the whole term is theanets' `s / |Omega| * sum_i mean(f(W_i))`. A
            keyword's dict may set its own `reduction`.
        include_bias: whether weight penalties also go on biases.
        seed: the seed of the inserted noise and dropout layers (each layer's
            own seed is derived from it and the layer's name).
        noise: a dict `{pattern: stddev}`: a `keras_regs.layers.GaussianNoise`
            after each layer (or input) whose name matches `pattern`. (Typed as
            a `Mapping`, so that a `dict[str, float]` type-checks; another
            mapping type than `dict` raises `TypeError`.)
        dropout: a dict `{pattern: rate}`, or `{pattern: {"rate": rate,
            "noise_shape": shape}}` (the mask's shape, as in
            `keras.layers.Dropout`): a `keras_regs.layers.BernoulliDropout` after
            each layer (or input) whose name matches `pattern`. (A `Mapping`,
            as `noise`.)
        wrt: what `contractive` differentiates with respect to: `"layer"` (each
            wrapped layer's own input, the default) or `"input"` (the model's
            input, theanets' definition; Functional models). Only with
            `contractive`; its dict's own `wrt` takes precedence.
        **keywords: the penalty and layer keywords listed below, and the
            keyword (or an alias) of any registered `keras_regs.Regularizer`
            subclass (`keras_regs.regularizers.keywords()` lists them), which
            takes the values of `weight_l1` and goes where its `target` says:
            every kernel-like weight, or every hidden layer's output.

    Keyword Args:
        weight_l1 (float | LearningRateSchedule | dict | None): a
            `keras_regs.WeightL1` on every trainable kernel-like weight (kernels,
            recurrent kernels, depthwise and pointwise kernels, attention
            projections, embeddings); biases too with `include_bias=True`;
            normalization weights only when a pattern names them. A dict takes
            `strength` (or `weight`), `pattern` and `reduction`.
        weight_sparsity (float | LearningRateSchedule | dict | None): `weight_l1`
            by its theanets name.
        weight_l2 (float | LearningRateSchedule | dict | None): a
            `keras_regs.WeightL2` on the weights `weight_l1` selects (an L2
            penalty in the loss, not an optimizer's decoupled weight decay).
            The dict as for `weight_l1`.
        weight_decay (float | LearningRateSchedule | dict | None): `weight_l2` by
            its theanets name.
        hidden_l1 (float | LearningRateSchedule | dict | None): a
            `keras_regs.HiddenL1` on the output of every hidden layer (a layer
            that owns a kernel-like weight and whose block produces no model
            output), where its block ends (after Conv -> BatchNormalization ->
            ReLU). The dict as for `weight_l1`; a subclassed model needs a
            `pattern`.
        hidden_sparsity (float | LearningRateSchedule | dict | None):
            `hidden_l1` by its theanets name.
        hidden_l2 (float | LearningRateSchedule | dict | None): a
            `keras_regs.HiddenL2` where `hidden_l1` goes.
        recurrent_norm (float | LearningRateSchedule | dict | None): a
            `keras_regs.RecurrentNorm` on every recurrent layer with
            `return_sequences=True` (each direction of a Bidirectional). The
            dict as for `weight_l1`.
        recurrent_state (float | LearningRateSchedule | dict | None): a
            `keras_regs.RecurrentState` where `recurrent_norm` goes.
        input_noise (float | LearningRateSchedule | dict | None): a
            `keras_regs.layers.GaussianNoise` of that stddev after each input of
            the model. A dict takes `stddev` and `pattern`.
        hidden_noise (float | LearningRateSchedule | dict | None): a
            `GaussianNoise` after each hidden layer (where its block ends).
        output_noise (float | LearningRateSchedule | dict | None): a
            `GaussianNoise` after each layer that produces a model output.
        input_dropout (float | LearningRateSchedule | dict | None): a
            `keras_regs.layers.BernoulliDropout` of that rate after each input
            of the model. A dict takes `rate`, `pattern` and `noise_shape` (the
            mask's shape, as in `keras.layers.Dropout`).
        hidden_dropout (float | LearningRateSchedule | dict | None): a
            `BernoulliDropout` after each hidden layer (where its block ends).
        output_dropout (float | LearningRateSchedule | dict | None): a
            `BernoulliDropout` after each layer that produces a model output.
        contractive (float | LearningRateSchedule | dict | None): each hidden
            layer wrapped in `keras_regs.layers.Contractive`, the squared
            Frobenius norm of its Jacobian, of that strength. A dict takes
            `strength` (or `weight`), `pattern`, `reduction`, `wrt` (as the
            argument `wrt`), `estimator` (`"exact"` or `"hutchinson"`) and
            `samples` (the estimator's random vectors per example).

    Returns:
        The regularized model: `model` itself when only penalties change (or
            its class builds its own graph), else a new model over the same
            layers and weights, with the noise, dropout and wrappers inserted.
            Train the returned model.

    Raises:
        TypeError: `model` is not a Keras model, or a value has the wrong type.
        ValueError: an unknown keyword (with a suggestion), a bad value, or a
            pattern that matches nothing. The model is then left exactly as it was.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    model = keras_regs.regularize_model(
        model,
        weight_l2=1e-4,                                   # every kernel
        hidden_l1={"strength": 1e-3, "pattern": "hidden"},
        input_noise=0.1,                                  # after the input
        hidden_dropout={"rate": 0.3, "noise_shape": (None, 64)},
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.random.rand(64, 20), np.random.randint(0, 3, 64)
    history = model.fit(x, y, epochs=2, verbose=0)
    assert sorted(history.history) == ["data_loss", "hidden_l1", "loss", "weight_l2"]
    ```
    """
    check_model(model)
    penalties, layers, include_bias, seed = read_spec(
        reduction, include_bias, seed, noise, dropout, wrt, **keywords
    )
    # A JAX fit holds the variables' values in its own state: put them back
    # first when called from a callback (the change is read from the next step).
    _keras.sync_state(model)
    # Everything that can fail happens before the first change to the model.
    changes, notes = penalize.plan(model, penalties, include_bias)
    result, pending = (model, insert.Pending())
    try:
        with nodes.recording(model):
            if layers:
                result, pending = insert.insert(model, layers, seed)
        done = penalize.apply(changes)
        try:
            pending.apply()
        except BaseException:
            penalize.undo(done)
            raise
    except BaseException:
        if result is not model:  # the graph built is let go: no node stays
            nodes.discard(result, model)
        nodes.tidy()
        raise
    pending.commit()
    if result is not model and _own_config(result) == _own_config(model):
        nodes.discard(result, model)
        result = model  # the same spec again: nothing changed
    if changes or pending:
        # What `compile` does: the step functions traced before the change
        # (without these penalties) are made anew, also during `fit`.
        _keras.retrace(model)
        _keras.retrace(result)
    # Logs and schedules, also when nothing changed (a loaded model, the same
    # spec again): cheap when they are already up to date.
    logs.connect(result)
    penalize.warn(notes)
    _warn_double_decay(model, penalties)
    if persist.mixin_records(model):
        persist.mixin_record(model, penalties, include_bias)
    elif (
        persist.calls(model) or persist.calls(result) or _needs_record(changes, pending)
    ):
        call = canonical_call(penalties, layers, reduction, include_bias, seed)
        persist.keep(result, call, earlier=persist.calls(model))
    else:
        persist.mark(result)  # logs and schedules connected again when loaded
    # The nodes of dropped graphs go; the returned model's calls come first, so
    # that `layer.output` is the returned model's (see `nodes`).
    nodes.know(model)
    nodes.tidy(front=result)
    return result


def _own_config(model):
    config = dict(model.get_config())
    config.pop(persist.KEY, None)
    return config


def _needs_record(changes, pending):
    """Whether the model's layer configs alone would not save this call: a
    penalty on a weight or output that no saved layer config holds, or new nodes
    in a model that builds its own graph (KerasHub)."""
    if pending.graphs:
        return True
    return any(
        new is not None and not slot.native for slots, new in changes for slot in slots
    )


def _warn_double_decay(model, penalties):
    """weight_l2 on a model whose optimizer already applies weight decay."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
    decay = getattr(optimizer, "weight_decay", None)
    if not decay or not any(r.keyword == "weight_l2" for r in penalties):
        return
    name = type(optimizer).__name__
    warnings.warn(
        f"regularize_model(weight_l2=...) on a model compiled with {name}"
        f"(weight_decay={decay}): the optimizer already shrinks every weight by "
        f"learning_rate * {decay} * w each step (decoupled weight decay), and "
        "weight_l2 adds an L2 penalty to the loss on top of it. With SGD the two "
        "are the same thing (weight_l2=s equals weight_decay=2*s), so the weights "
        "decay twice; with Adam-type optimizers they differ (the penalty's "
        "gradient is rescaled by the adaptive step, the decay is not). Keep one: "
        "see https://keras-regs.readthedocs.io/en/latest/weight-decay.html",
        KerasRegsWarning,
        stacklevel=3,
    )


def strip_regularization(model: keras.Model) -> keras.Model:
    """Remove everything `regularize_model` attached; keep what was there before.

    Every slot holding a `keras_regs.regularizers.Penalties` gets back its `base`
    (the regularizer the layer had before, often `None`). Weights are untouched.

    Args:
        model: a built `keras.Model`.

    Returns:
        The model without keras_regs' model-level regularization: `model`
            itself when only penalties change, else a new model over the same
            layers and weights without the inserted layers and wrappers.

    Example:

    ```python
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model = keras_regs.regularize_model(model, weight_l2=1e-4, input_dropout=0.2)
    model = keras_regs.strip_regularization(model)
    assert not model.losses and len(model.layers) == 1
    ```
    """
    check_model(model)
    nodes.know(model)
    result = insert.strip(model)
    changes = penalize.strip_changes(result)
    penalize.apply(changes)
    if persist.mixin_records(result):
        persist.mixin_forget(result)
    persist.forget_all(model)
    persist.forget_all(result)
    if changes:
        _keras.retrace(model)
        _keras.retrace(result)
    if logs.connected(result):
        logs.connect(result)  # the entries of the keywords removed go
    nodes.tidy(front=result)
    return result
