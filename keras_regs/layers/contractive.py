"""Contractive: a layer wrapper that penalizes the Jacobian of the layer's output."""

import inspect
import math

import keras
from keras import ops

from keras_regs import _backend, _keras, _schedule, _terms
from keras_regs._validation import (
    check_inserted_by,
    check_non_negative,
    check_reduction,
)

_SELU_SCALE = 1.0507009873554805
_SELU_ALPHA = 1.6732632423543772


def _sigmoid_slope(z):
    s = ops.sigmoid(z)
    return s * (1 - s)


def _gelu_slope(z):  # exact gelu: Phi(z) + z * phi(z)
    cdf = 0.5 * (1 + ops.erf(z / math.sqrt(2.0)))
    pdf = ops.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _silu_slope(z):
    s = ops.sigmoid(z)
    return s * (1 + z * (1 - s))


# The derivative of each elementwise activation, from the pre-activation z (the
# activation's default arguments, which is what a layer's string name gives).
SLOPES = {
    "linear": lambda z: ops.ones_like(z),
    "relu": lambda z: ops.cast(z > 0, z.dtype),
    "sigmoid": _sigmoid_slope,
    "tanh": lambda z: 1 - ops.square(ops.tanh(z)),
    "softplus": ops.sigmoid,
    "elu": lambda z: ops.where(z > 0, ops.ones_like(z), ops.exp(z)),
    "selu": lambda z: (
        _SELU_SCALE * ops.where(z > 0, ops.ones_like(z), _SELU_ALPHA * ops.exp(z))
    ),
    "gelu": _gelu_slope,
    "silu": _silu_slope,
    "leaky_relu": lambda z: ops.where(z > 0, ops.ones_like(z), 0.2 * ops.ones_like(z)),
    "exponential": ops.exp,
}

# How many input coordinates one jvp call of the fallback handles.
_CHUNK = 64


def _activation_name(layer):
    try:
        name = keras.activations.serialize(layer.activation)
    except (ValueError, TypeError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def differentiable_input(layer):
    """Whether the layer's (first) input is floating point: a Jacobian needs one."""
    if isinstance(layer, keras.layers.Embedding):
        return False
    nodes = _keras.inbound_nodes(layer)  # the first call's input
    if not nodes or not nodes[0].input_tensors:
        return True
    return "float" in str(nodes[0].input_tensors[0].dtype)


def closed_form_applies(layer):
    """Dense and EinsumDense (not LoRA, not quantized) with a known activation."""
    if type(layer) not in (keras.layers.Dense, keras.layers.EinsumDense):
        return False
    if getattr(layer, "lora_enabled", False) or layer.dtype_policy.quantization_mode:
        return False
    return _activation_name(layer) in SLOPES


@keras.saving.register_keras_serializable(package="keras_regs")
class Contractive(keras.layers.Wrapper):
    """Adds the squared Frobenius norm of the layer's Jacobian to the loss.

    The contractive penalty of contractive auto-encoders (Rifai et al., 2011): for
    each example, `||d layer(x) / d x||_F**2`, the sum of the squared derivatives of
    every output element with respect to every input element. With strength `s`
    and a batch of `B` examples:

    - `reduction="sum"`: `s * sum over the batch of ||J||_F**2 / B`;
    - `reduction="mean"`: `s * mean over the batch and over every Jacobian entry
      of (d h_j / d x_i)**2`.

    The penalty is added with `add_loss` at every call (so it is in `fit` and in
    `evaluate`); the wrapped layer's output is returned unchanged. The wrapper
    owns no weights of its own: it shares the wrapped layer's.

    How it is computed:

    - `Dense` and `EinsumDense` with an elementwise activation (linear, relu,
      sigmoid, tanh, softplus, elu, selu, gelu, silu, leaky_relu, exponential):
      in closed form, `J = diag(f'(z)) W`, so `||J||_F**2 = sum_j f'(z_j)**2 *
      sum_i W_ij**2`, from the pre-activation `z` (one forward pass).
    - Any other layer: exactly, through `keras.ops.jvp` (one Jacobian-vector
      product per input coordinate, batched 64 coordinates at a time). This
      assumes the layer treats the examples of a batch independently.

    theanets' implementation squared the gradient of `h.mean()` instead of the
    Jacobian; this is the published penalty.

    Args:
        layer: the `keras.layers.Layer` to wrap.
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
        reduction: `"sum"` (default) or `"mean"`.
        inserted_by: `None`, or the `regularize_model` keyword that wrapped the
            layer (saved, so `strip_regularization` finds it).
        **kwargs: passed to `keras.layers.Wrapper` (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((64,))
    code = keras_regs.layers.Contractive(
        keras.layers.Dense(32, activation="sigmoid"), strength=0.1
    )(inputs)
    ```

    References:
        Rifai, Vincent, Muller, Glorot and Bengio, "Contractive auto-encoders:
        explicit invariance during feature extraction", ICML 2011.
    """

    def __init__(self, layer, strength, reduction="sum", inserted_by=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Invalid type for argument `layer`. Expected a keras.layers.Layer. "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        super().__init__(layer, **kwargs)
        self.supports_masking = True
        self.strength = _schedule.check(strength, "strength", check_non_negative)
        self.reduction = check_reduction(reduction)
        self.inserted_by = check_inserted_by(inserted_by)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    @property
    def closed_form(self):
        """Whether the penalty is computed in closed form (else through jvp)."""
        return closed_form_applies(self.layer)

    def _call_kwargs(self, training, mask):
        """The keyword arguments the wrapped layer's `call` accepts."""
        parameters = inspect.signature(self.layer.call).parameters
        kwargs = {}
        if "training" in parameters:
            kwargs["training"] = training
        if "mask" in parameters and mask is not None:
            kwargs["mask"] = mask
        return kwargs

    def call(self, inputs, training=None, mask=None):
        if self.closed_form:
            outputs, squared = self._closed_form(inputs)
            regularizer = self.layer.activity_regularizer
            if regularizer is not None:  # what the layer's own __call__ would add
                loss = regularizer(outputs)
                batch = ops.cast(ops.shape(outputs)[0], loss.dtype)
                self.add_loss(ops.divide_no_nan(loss, batch))
        else:
            outputs = self.layer(inputs, **self._call_kwargs(training, mask))
            squared = self._through_jvp(inputs, training, mask)
        penalty = self._reduce(squared, inputs, outputs)
        _terms.record("contractive", penalty, inputs, "layer", self)
        self.add_loss(penalty)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def _closed_form(self, inputs):
        """The layer's own computation, and each example's squared norm."""
        layer, kernel = self.layer, self.layer.kernel
        if isinstance(layer, keras.layers.Dense):
            z = ops.matmul(inputs, kernel)
            columns = ops.sum(ops.square(ops.cast(kernel, "float32")), axis=0)
        else:
            z = ops.einsum(layer.equation, inputs, kernel)
            ones = ops.ones_like(ops.cast(inputs[:1], "float32"))
            columns = ops.einsum(
                layer.equation, ones, ops.square(ops.cast(kernel, "float32"))
            )
        if layer.bias is not None:
            z = ops.add(z, layer.bias)
        outputs = layer.activation(z)
        slope = SLOPES[_activation_name(layer)](ops.cast(z, "float32"))
        per_element = ops.square(slope) * columns
        return outputs, ops.sum(ops.reshape(per_element, (ops.shape(z)[0], -1)), axis=1)

    def _through_jvp(self, inputs, training, mask=None):
        if not _backend.has_jvp():
            raise NotImplementedError(
                f"Contractive({type(self.layer).__name__}) needs keras.ops.jvp, which "
                f"this Keras has not for the {keras.backend.backend()} backend. "
                "Dense and EinsumDense with an elementwise activation need no jvp."
            )
        shape = ops.shape(inputs)
        batch = shape[0]
        size = math.prod(inputs.shape[1:])
        squared = ops.zeros((batch,), "float32")
        for start in range(0, size, _CHUNK):
            count = min(_CHUNK, size - start)
            # rows start..start+count of the identity (not ops.eye(count, size, k):
            # TensorFlow's returns the wrong shape when count + k < size)
            eye = ops.one_hot(
                ops.arange(start, start + count), size, dtype=inputs.dtype
            )
            tangents = ops.reshape(
                ops.broadcast_to(eye[:, None, :], (count, batch, size)),
                (count * batch, *inputs.shape[1:]),
            )
            primals = ops.tile(inputs, (count,) + (1,) * (len(inputs.shape) - 1))
            tiled_mask = None
            if mask is not None:
                tiled_mask = ops.tile(mask, (count,) + (1,) * (len(mask.shape) - 1))
            kwargs = self._call_kwargs(training, tiled_mask)

            def forward(x, kwargs=kwargs):
                # `call`, not `__call__`: no activity penalty or add_loss inside jvp
                return self.layer.call(x, **kwargs)

            try:
                _, columns = ops.jvp(forward, (primals,), (tangents,))
            except NotImplementedError as error:
                raise NotImplementedError(
                    f"Contractive({type(self.layer).__name__}) needs keras.ops.jvp, "
                    f"which the {keras.backend.backend()} backend does not provide. "
                    "Dense and EinsumDense with an elementwise activation need none."
                ) from error
            columns = ops.reshape(ops.cast(columns, "float32"), (count, batch, -1))
            squared = squared + ops.sum(ops.square(columns), axis=(0, 2))
        return squared

    def _reduce(self, squared, inputs, outputs):
        """Each example's squared norm -> the scalar added to the loss."""
        batch = ops.cast(ops.shape(squared)[0], "float32")
        value = ops.divide_no_nan(ops.sum(squared), batch)
        if self.reduction == "mean":
            entries = math.prod(inputs.shape[1:]) * math.prod(outputs.shape[1:])
            value = value / entries
        return value * _schedule.value(self.strength, self, "strength")

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "strength": _schedule.to_config(self.strength),
                "reduction": self.reduction,
            }
        )
        if self.inserted_by is not None:
            config["inserted_by"] = self.inserted_by
        return config
