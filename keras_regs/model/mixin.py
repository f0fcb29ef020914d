"""RegularizationMixin: subclassed models that keep regularize_model's penalties.

A Functional or Sequential model's config lists its layers, each with its
regularizers, so the penalties `regularize_model` attaches are saved with it. A
subclassed model's config holds only its constructor arguments: loading calls
the constructor, which creates the layers anew, without the penalties. The mixin
adds the `regularize_model` calls to the config and replays them once the loaded
model is built.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_regs.model.logs import connect, connected, holds_any
from keras_regs.model.persist import MIXIN_PENDING as _PENDING
from keras_regs.model.persist import MIXIN_SPECS as _SPECS
from keras_regs.model.persist import logs_enabled, set_logs
from keras_regs.model.regularize import regularize_model
from keras_regs.model.spec import read_spec

CONFIG_KEY = "keras_regs"
_FUNCTIONS = ("train_function", "test_function", "predict_function")


class RegularizationMixin:
    """Keep `regularize_model`'s penalties in a subclassed model's config.

    Put it before `keras.Model` in the bases of a subclassed model. Every
    `keras_regs.regularize_model` call on the model is then written into its
    config (under the key `"keras_regs"`), and replayed when the model is rebuilt
    from that config: by `keras.saving.load_model` as soon as Keras builds the
    loaded model (before the weights are read), and by `from_config` or
    `keras.models.clone_model` at the model's first call. `strip_regularization`
    clears the record. The calls are stored in canonical form (each keyword as
    `{"strength", "pattern", "reduction"}`), so the file holds plain JSON.

    Without the mixin, `regularize_model` on a subclassed model warns that its
    penalties will not survive a save.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class Net(keras_regs.RegularizationMixin, keras.Model):
        def __init__(self, units=32, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(units, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, x):
            return self.out(self.hidden(x))

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    model = Net()
    model(np.zeros((1, 8)))  # build it
    keras_regs.regularize_model(model, weight_l2=1e-4)
    model.save("net.keras")
    keras.saving.load_model("net.keras").losses  # the same penalties
    ```
    """

    # What `persist.records_spec` looks for (regularize_model writes its calls
    # here instead of through the `Regularized` subclass).
    _keras_regs_mixin = True

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        specs = [dict(spec) for spec in getattr(self, _SPECS, None) or []]
        logs = logs_enabled(self)
        if specs and logs:
            config[CONFIG_KEY] = specs
        elif specs or (connected(self) and holds_any(self)):
            # logs turned off, or connected by log_penalties/bind_schedules
            # alone: said, so that the loaded model is connected as it was
            config[CONFIG_KEY] = {"calls": specs, "logs": logs}
        return config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The record arrives with the rest of the config, through the
        # constructor's **kwargs: whatever `from_config` the class uses (its own,
        # or Keras' `cls(**config)`) passes it on.
        record = kwargs.pop(CONFIG_KEY, None)
        specs, logs = check_specs([] if record is None else record)
        super().__init__(*args, **kwargs)
        if logs is not None:
            set_logs(self, logs)
        # an empty list still connects the loaded model (logs, schedules)
        setattr(self, _PENDING, None if record is None else specs)

    def build_from_config(self, config: dict[str, Any]) -> None:
        super().build_from_config(config)
        # Keras builds a subclassed model here by tracing `call`, which builds
        # its layers, and marks the model built only after this returns.
        if not self.built and self.layers and all(x.built for x in self.layers):
            self.built = True
        self._replay_regularization()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, _PENDING, None) and not self.built and args:
            # Build first (as loading does), so that the penalties are attached
            # before this call computes its losses, and before `fit` traces.
            shapes = keras.tree.map_structure(lambda x: tuple(x.shape), args[0])
            self.build_from_config({"input_shape": shapes})
        self._replay_regularization()
        outputs = super().__call__(*args, **kwargs)
        # Where Keras could not build the model ahead (several positional
        # inputs, a call inside `fit`'s symbolic build), this first call built
        # it: attach now, before `fit` traces its train step.
        self._replay_regularization()
        return outputs

    def _replay_regularization(self):
        specs = getattr(self, _PENDING, None)
        if specs is None or not self.built:
            return
        recorded = list(getattr(self, _SPECS, None) or [])
        # TensorFlow may build a subclassed model only in the first traced
        # train step: the penalties are attached before the layers run in this
        # trace, so the function being traced includes them and must be kept.
        functions = {name: getattr(self, name, None) for name in _FUNCTIONS}
        try:
            for spec in specs:
                regularize_model(self, **spec)
            connect(self)  # also with no call to replay (log_penalties alone)
        except Exception:
            setattr(self, _SPECS, recorded)  # keep the record to retry
            raise
        finally:
            for name, function in functions.items():
                setattr(self, name, function)
        setattr(self, _PENDING, None)


def check_specs(record):
    """The recorded calls of a config and its logs switch (`None`: not said),
    validated before anything is built. The record is the list of calls, or
    `{"calls": [...], "logs": bool}`."""
    specs, logs = record, None
    if isinstance(record, dict) and set(record) == {"calls", "logs"}:
        specs, logs = record["calls"], record["logs"]
    if (
        not isinstance(specs, list)
        or not all(isinstance(s, dict) for s in specs)
        or not isinstance(logs, bool | None)
    ):
        raise TypeError(
            f"Invalid type for config key `{CONFIG_KEY}`. Expected a list of "
            "regularize_model keyword dicts, or a dict with keys 'calls' (that "
            f"list) and 'logs' (a bool). Received: {CONFIG_KEY}={record!r}"
        )
    for spec in specs:
        read_spec(**spec)
    return specs, logs
