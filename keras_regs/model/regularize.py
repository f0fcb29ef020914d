"""regularize_model and strip_regularization: one spec for a whole model."""

import warnings

from keras_regs import _keras
from keras_regs._validation import KerasRegsWarning
from keras_regs.model import insert, logs, nodes, penalize, persist
from keras_regs.model.graph import check_model
from keras_regs.model.spec import canonical_call, read_spec


def regularize_model(
    model,
    *,
    reduction="sum",
    include_bias=False,
    seed=13,
    noise=None,
    dropout=None,
    wrt=None,
    **keywords,
):
    """Attach one regularization spec to every matching layer of a model.

    The model-level counterpart of per-layer regularizers (theanets'
    `net.train(..., weight_l2=1e-4, hidden_l1=0.1)`). Penalties are attached in
    place, on each layer's config attribute and on its variable, so they count in
    the next `fit` (also of a model already compiled and trained: its cached train
    function is reset) and are saved with the model.

    Penalty keywords (a value is a strength, or a dict with `strength` (or
    theanets' `weight`), `pattern` and `reduction`):

    - `weight_l1` (`weight_sparsity`), `weight_l2` (`weight_decay`): on every
      trainable kernel-like weight (kernels, recurrent kernels, depthwise and
      pointwise kernels, attention projections, embeddings); biases too with
      `include_bias=True`; normalization weights only when a pattern names them.
    - `hidden_l1` (`hidden_sparsity`), `hidden_l2`: on the output of every hidden
      layer (a layer that owns a kernel-like weight and produces no model output).
    - the keyword of any registered `keras_regs.Regularizer` subclass.

    Layer keywords (inserted noise and dropout layers, in the returned model):

    - `input_noise`, `hidden_noise`, `output_noise` (a stddev, or a dict with
      `stddev` and `pattern`): a `keras_regs.layers.GaussianNoise` after the
      inputs, after each hidden block, after each output layer;
    - `input_dropout`, `hidden_dropout`, `output_dropout` (a rate, or a dict with
      `rate`, `pattern` and `noise_shape`, the mask's shape as in
      `keras.layers.Dropout`): a `keras_regs.layers.BernoulliDropout` there;
    - `contractive` (a strength, or a dict with `strength`, `pattern`,
      `reduction`, `wrt`, `estimator` and `samples`): each hidden layer wrapped
      in `keras_regs.layers.Contractive`, the squared Frobenius norm of its
      Jacobian.

    `pattern` is a shell-style glob matched against layer names and variable paths
    (`"dense_[12]"`, `"*/recurrent_kernel"`); nested models are walked and a shared
    layer counts once. A second call replaces what an earlier call attached for the
    same keyword; nothing is stacked twice. A regularizer the layer had before is
    kept beside (`keras_regs.regularizers.Penalties.base`). `fit` and `evaluate`
    then log `data_loss` and each keyword's term beside `loss`
    (`keras_regs.log_penalties`; `evaluate` returns a list, or a dict with
    `return_dict=True`).

    Args:
        model: a built `keras.Model` (Sequential, Functional or subclassed).
        reduction: `"sum"` (Keras' built-ins) or `"mean"`: with `"mean"`, each of
            the |Omega| tensors a keyword selects gets strength `s / |Omega|`, so
            the whole term is theanets' `s / |Omega| * sum_i mean(f(W_i))`.
        include_bias: whether weight penalties also go on biases.
        seed: the seed of inserted noise and dropout layers.
        noise: `{pattern: stddev}`: a noise layer after each layer matched.
        dropout: `{pattern: rate}` (or `{pattern: {"rate": r, "noise_shape":
            shape}}`): a dropout layer after each layer matched.
        wrt: what `contractive` differentiates with respect to: `"layer"` (each
            wrapped layer's own input, the default) or `"input"` (the model's
            input, theanets' definition; Functional models).
        **keywords: the penalties and layer keywords, as above.

    Returns:
        The model, regularized.

    Raises:
        TypeError: `model` is not a Keras model, or a value has the wrong type.
        ValueError: an unknown keyword (with a suggestion), a bad value, or a
            pattern that matches nothing. The model is then left exactly as it was.

    Example:

    ```python
    model = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_l1=1e-3)
    model.fit(x, y)
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
        "see docs/weight-decay.md.",
        KerasRegsWarning,
        stacklevel=3,
    )


def strip_regularization(model):
    """Remove everything `regularize_model` attached; keep what was there before.

    Every slot holding a `keras_regs.regularizers.Penalties` gets back its `base`
    (the regularizer the layer had before, often `None`). Weights are untouched.

    Args:
        model: a built `keras.Model`.

    Returns:
        The model, without keras_regs' model-level regularization.
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
