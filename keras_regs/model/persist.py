"""Keeping regularize_model's work in models whose config does not list layers.

A KerasHub backbone or task writes its constructor arguments as its config and
builds its layers anew from them when loaded; so does a subclassed model, and a
composite layer builds its sublayers in `build`. Loading then gives the weights
back (they are read by path) but no penalty, noise or dropout that
`regularize_model` put on those layers: nothing in their configs says so.

`keep(model, call)` records each `regularize_model` call in the model's config,
under the key `"keras_regs"`, beside the original class's own entries. So that
Keras hands that config to keras_regs when loading, the model's class becomes a
subclass of its own class (same name, same methods and attributes: `isinstance`
holds, `backbone`, `preprocessor` and `generate` stay), registered as
`"keras_regs>Regularized"`. Loading (`keras.saving.load_model` after `import
keras_regs`) then builds the original class from its own config, exactly as
Keras would, and replays the recorded calls on it before the weights are read,
so that inserted layers and their random state find their saved values.
`forget(model)` (called by `strip_regularization`) gives the model its class
back. See <https://keras-regs.readthedocs.io/en/latest/kerashub.html>.
"""

import warnings

import keras

from keras_regs import _keras
from keras_regs._validation import KerasRegsWarning
from keras_regs.model.graph import has_graph
from keras_regs.model.spec import canonical_penalties

KEY = "keras_regs"
REGISTERED = "keras_regs>Regularized"
_CALLS = "_keras_regs_calls"  # the recorded calls, in order
_PENDING = "_keras_regs_pending"  # calls to replay once the model is built
_LOGS = "_keras_regs_logs"  # the log_penalties switch (model/logs.py)
_SUBCLASSES = {}  # original class -> its Regularized subclass
MIXIN_SPECS = "_keras_regs_specs"  # RegularizationMixin: the calls, in order
MIXIN_PENDING = _PENDING  # RegularizationMixin: its calls to replay (own record)


def original_class(model_or_class):
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    return getattr(cls, "_keras_regs_original", cls)


class Regularized:
    """The base of the classes `keep` gives a model (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        # Only a model built by calling this class gets here (`keep` and `load`
        # set the class of a model that exists): `keras.models.clone_model`
        # does, for a copy of a regularized Functional model. Connect it as
        # the model it copies was.
        super().__init__(*args, **kwargs)
        if self.built:
            from keras_regs.model.logs import connect

            connect(self)

    def __reduce__(self):
        # Keras pickles a model as its `.keras` bytes and a classmethod of its
        # class; this class is made at run time, so name the base's instead.
        reduced = super().__reduce__()
        if getattr(reduced[0], "__name__", None) == _keras.UNPICKLE_MODEL.__name__:
            return (_keras.UNPICKLE_MODEL, *reduced[1:])
        return reduced

    def get_config(self):
        config = dict(super().get_config())
        identity = self.__dict__.get("_keras_regs_class")
        if identity is None:  # built by `clone_model` as this class: nothing
            identity = _class_identity(original_class(self))  # recorded on it
        if KEY in config:
            raise ValueError(
                f"{type(self).__name__}'s config already has a key {KEY!r}; "
                "keras_regs cannot record its calls beside it."
            )
        record = {
            "class": identity,
            "calls": list(calls(self)),
            "logs": logs_enabled(self),
        }
        if not has_graph(self) and self.built:
            build = self.get_build_config()
            if build is not None:
                record["build_config"] = build
        config[KEY] = record
        return config

    @classmethod
    def from_config(cls, config):
        return load(config)

    def build_from_config(self, config):
        super().build_from_config(config)
        if not self.built and self.layers and all(x.built for x in self.layers):
            self.built = True
        _replay_pending(self)

    def __call__(self, *args, **kwargs):
        _replay_pending(self)
        outputs = super().__call__(*args, **kwargs)
        _replay_pending(self)
        return outputs


keras.saving.register_keras_serializable(package="keras_regs", name="Regularized")(
    Regularized
)


def logs_enabled(model):
    """Whether `model` logs its terms: `log_penalties` unless turned off (also
    what a loaded model's record said)."""
    return model.__dict__.get(_LOGS, True)


def set_logs(model, enabled):
    object.__setattr__(model, _LOGS, enabled)


def calls(model):
    return getattr(model, _CALLS, None) or []


def _subclass(cls):
    if cls not in _SUBCLASSES:
        subclass = type(
            cls.__name__,
            (Regularized, cls),
            {
                "__module__": __name__,
                "__qualname__": cls.__qualname__,
                "_keras_regs_original": cls,
                "__doc__": cls.__doc__,
            },
        )
        # Saved under "keras_regs>Regularized", which loads through `Regularized`
        # (registering the subclass also points that name at it: set it back).
        keras.saving.register_keras_serializable(
            package="keras_regs", name="Regularized"
        )(subclass)
        keras.saving.get_custom_objects()[REGISTERED] = Regularized
        _SUBCLASSES[cls] = subclass
    return _SUBCLASSES[cls]


def _identity(model):
    """How Keras names the model's own class in a saved config."""
    serialized = keras.saving.serialize_keras_object(model)
    identity = {
        key: serialized.get(key) for key in ("module", "class_name", "registered_name")
    }
    identity["config"] = serialized.get("config")  # popped by `keep`
    return identity


def _class_identity(cls):
    return {
        "module": cls.__module__,
        "class_name": cls.__name__,
        "registered_name": keras.saving.get_registered_name(cls),
    }


def _adopt(model, warn):
    """Give `model` the `Regularized` subclass of its own class (once).

    Returns whether it has it; where Keras cannot serialize the model, or its
    config already uses the record's key, it keeps its class (and `warn` says
    what is then not saved)."""
    if "_keras_regs_class" in model.__dict__:
        return True
    # (a model rebuilt by clone_model may already have the subclass)
    own = original_class(model)
    model.__class__ = own
    try:
        identity = _identity(model)
    except Exception as error:  # noqa: BLE001 - said, not hidden
        if warn:
            _cannot_keep(model, f"Keras cannot serialize it ({error})")
        return False
    if KEY in (identity.pop("config", None) or {}):
        if warn:
            _cannot_keep(model, f"its own config already has a key {KEY!r}")
        return False
    model.__class__ = _subclass(own)
    object.__setattr__(model, "_keras_regs_class", identity)
    return True


def keep(model, call, earlier=()):
    """Record `call` (canonical keyword dict) in `model`'s config, after the
    `earlier` calls (those recorded on the model it was rebuilt from)."""
    recorded = list(calls(model)) or list(earlier)
    if not _adopt(model, warn=True):
        return False
    if not recorded or recorded[-1] != call:
        recorded.append(call)
    object.__setattr__(model, _CALLS, recorded)
    return True


def mark(model):
    """Make `model` come back from a save with its logs and schedules connected
    (model/logs.py `connect`): its config records that, even where its layer
    configs hold every penalty (a Functional or Sequential model) and no call
    needs replaying. A RegularizationMixin model replays its own calls, which
    connect it; a model Keras cannot serialize is left as it is (saving it
    fails on its own)."""
    if getattr(type(model), "_keras_regs_mixin", False):
        return False
    return _adopt(model, warn=False)


def _cannot_keep(model, reason):
    warnings.warn(
        f"keras_regs: what regularize_model attached to {model.name!r} "
        f"({type(model).__name__}) counts in training but cannot be saved with "
        f"it: {reason}. A copy loaded from a save gets the weights without these "
        "penalties or inserted layers.",
        KerasRegsWarning,
        stacklevel=4,
    )


def forget_all(model):
    """`forget` the model and every model or layer inside it that has a record."""
    for layer in _keras.flatten_layers(model, include_self=True):
        forget(layer)


def forget(model):
    """Drop the record and give the model its own class back."""
    if isinstance(model, Regularized):
        model.__class__ = original_class(model)
        for name in (_CALLS, _PENDING, "_keras_regs_class"):
            if name in model.__dict__:
                object.__delattr__(model, name)


def check_record(record):
    if (
        not isinstance(record, dict)
        or set(record) - {"class", "calls", "build_config", "logs"}
        or not isinstance(record.get("logs", True), bool)
        or not isinstance(record.get("class"), dict)
        or not isinstance(record.get("calls"), list)
        or not all(isinstance(c, dict) for c in record["calls"])
    ):
        raise TypeError(
            f"Invalid value for config key `{KEY}`. Expected a dict with keys "
            "'class' (the model's class), 'calls' (the regularize_model calls "
            "made on it) and optionally 'logs' (a bool: whether log_penalties "
            f"is on). Received: {KEY}={record!r}"
        )
    identity = record["class"]
    if set(identity) != {"module", "class_name", "registered_name"} or not all(
        isinstance(v, str | None) for v in identity.values()
    ):
        raise TypeError(
            f"Invalid value for config key `{KEY}['class']`. Expected the keys "
            f"module, class_name, registered_name. Received: {identity!r}"
        )
    from keras_regs.model.spec import read_call

    for call in record["calls"]:
        read_call(call)
    return record


def load(config):
    """Build the original class from its config, then replay the calls."""
    config = dict(config)
    if KEY not in config:
        raise TypeError(
            f"Invalid config for a keras_regs-regularized model: no key {KEY!r}. "
            f"Received keys: {sorted(config)}"
        )
    record = check_record(config.pop(KEY))
    entry = {**record["class"], "config": config}
    if "build_config" in record:
        entry["build_config"] = record["build_config"]
    model = keras.saving.deserialize_keras_object(entry)
    if not isinstance(model, keras.layers.Layer) or isinstance(model, Regularized):
        raise TypeError(
            f"Invalid value for config key `{KEY}['class']`: it names "
            f"{type(model).__name__}, not a Keras model or layer of its own. "
            f"Received: {record['class']!r}"
        )
    set_logs(model, record.get("logs", True))
    if not model.built:  # replayed once built (at its first call)
        model.__class__ = _subclass(type(model))
        object.__setattr__(model, "_keras_regs_class", record["class"])
        object.__setattr__(model, _PENDING, list(record["calls"]))
        return model
    return _replay(model, record["calls"])


def _replay(model, recorded):
    # regularize.py imports this module; the replay needs it back, at load time.
    from keras_regs.model.logs import connect
    from keras_regs.model.regularize import regularize_model

    # The functions traced before (a first call inside `fit`) must be kept.
    functions = {
        name: getattr(model, name, None)
        for name in ("train_function", "test_function", "predict_function")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said when the calls were first made
        for call in recorded:
            model = regularize_model(model, **call)
    connect(model)  # logs (as saved) and schedules, also with no call to replay
    mark(model)
    for name, function in functions.items():
        if function is not None:
            setattr(model, name, function)
    return model


def _replay_pending(model):
    recorded = model.__dict__.get(_PENDING)
    if recorded is not None and model.built:
        object.__delattr__(model, _PENDING)
        _replay(model, recorded)


# RegularizationMixin models keep their calls in their own config (model/mixin.py)


def mixin_records(model):
    """Whether `regularize_model` writes its calls into `model`'s config."""
    return getattr(type(model), "_keras_regs_mixin", False) and not has_graph(model)


def canonical_spec(penalties, include_bias):
    """One `regularize_model` call as plain JSON: penalty requests only (a
    subclassed model has no graph to insert layers into)."""
    return {"include_bias": include_bias, **canonical_penalties(penalties)}


def mixin_record(model, penalties, include_bias):
    specs = list(getattr(model, MIXIN_SPECS, None) or [])
    spec = canonical_spec(penalties, include_bias)
    if not specs or specs[-1] != spec:
        specs.append(spec)
    setattr(model, MIXIN_SPECS, specs)


def mixin_forget(model):
    setattr(model, MIXIN_SPECS, [])
    setattr(model, MIXIN_PENDING, None)
