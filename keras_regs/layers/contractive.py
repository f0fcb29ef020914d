"""Contractive: a layer wrapper that penalizes the Jacobian of the layer's output."""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any, Literal

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

from keras_regs import _backend, _keras, _schedule, _terms
from keras_regs._types import Tensor
from keras_regs._validation import (
    ArgumentTypeError,
    check_estimator,
    check_inserted_by,
    check_non_negative,
    check_reduction,
    check_samples,
    check_seed,
    check_wrt,
)
from keras_regs.layers._prefix import Prefix, replay, variables_of
from keras_regs.layers._seeded import read_saved, save_variables

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

# The layers with a closed form (exact types: a subclass may change `call`).
_DENSE = (keras.layers.Dense, keras.layers.EinsumDense)
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)

_NEEDS_NO_JVP = (
    "Dense, EinsumDense and convolutions with an elementwise activation need none "
    '(with estimator="exact").'
)


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
    """Dense, EinsumDense, Conv1D/2D/3D and DepthwiseConv1D/2D (not LoRA, not
    quantized) with a known activation."""
    if type(layer) not in _DENSE + _CONVOLUTIONS + _DEPTHWISE:
        return False
    if getattr(layer, "lora_enabled", False) or layer.dtype_policy.quantization_mode:
        return False
    return _activation_name(layer) in SLOPES


def _dense(layer, inputs):
    """Dense's or EinsumDense's pre-activation `z`, and each output's sum of
    squared weights."""
    kernel = layer.kernel
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
    return z, columns


def _tile(x, count):
    """`count` copies of the batch `x` (None stays None), one after the other."""
    if x is None:
        return None
    return ops.tile(x, (count,) + (1,) * (len(x.shape) - 1))


def _convolution(layer, inputs):
    """A convolution's pre-activation `z`, computed as the layer's `call` does,
    and `N`: at each output element, the sum of the squared kernel taps that
    reach an input element, the same convolution (no bias) of ones shaped like
    one example with the squared kernel (zero padding contributes nothing)."""
    ones = ops.ones_like(ops.cast(inputs[:1], "float32"))
    padding = layer.padding
    if padding == "causal":  # Conv1D's call pads the input on the left
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        pad = [[0, 0], [left, 0], [0, 0]]
        if layer.data_format == "channels_first":
            pad = [[0, 0], [0, 0], [left, 0]]
        inputs, ones, padding = ops.pad(inputs, pad), ops.pad(ones, pad), "valid"

    def convolve(x, kernel):
        if isinstance(layer, _DEPTHWISE):
            return ops.depthwise_conv(
                x,
                kernel,
                strides=layer.strides,
                padding=padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )
        # groups: ops.conv reads them from the kernel's input channels
        return ops.conv(
            x,
            kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    z = convolve(inputs, layer.kernel)
    if layer.bias is not None:
        if layer.data_format == "channels_last":
            shape = (1,) * (layer.rank + 1) + (-1,)
        else:
            shape = (1, -1) + (1,) * layer.rank
        z = ops.add(z, ops.reshape(layer.bias, shape))
    return z, convolve(ones, ops.square(ops.cast(layer.kernel, "float32")))


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
    owns no weights of its own: it shares the wrapped layer's (with
    `estimator="hutchinson"` it holds the state of its random generator, saved
    with the model).

    How it is computed, with `estimator="exact"`:

    - `Dense` and `EinsumDense` with an elementwise activation (linear, relu,
      sigmoid, tanh, softplus, elu, selu, gelu, silu, leaky_relu, exponential):
      in closed form, `J = diag(f'(z)) W`, so `||J||_F**2 = sum_j f'(z_j)**2 *
      sum_i W_ij**2`, from the pre-activation `z` (one forward pass).
    - `Conv1D`, `Conv2D`, `Conv3D`, `DepthwiseConv1D` and `DepthwiseConv2D` with
      such an activation: in closed form, `||J||_F**2 = sum_p,o f'(z_po)**2 *
      N_po`, where `N = conv(ones, K**2)` is the same convolution (strides,
      padding, dilation, groups, data format; no bias) of ones shaped like one
      example with the squared kernel: each output element's sum of the squared
      kernel taps that reach an input element.
    - Any other layer (a subclass of those included: it may change `call`):
      exactly, through `keras.ops.jvp` (one Jacobian-vector product per input
      coordinate, batched 64 coordinates at a time). This assumes the layer
      treats the examples of a batch independently.

    With `estimator="hutchinson"`, for any layer (also one with a closed form):
    an unbiased estimate, `mean over k samples of ||J v||**2` for random sign
    vectors `v` (`E[v v^T] = I`, so `E ||J v||**2 = ||J||_F**2`), drawn for
    each example and sample; `k = samples`, all in one jvp on the batch tiled
    `k` times. Its variance is `2 / k * sum_{i != j} (J^T J)_ij**2` per example.
    It costs about one jvp pass per sample, where the exact fallback costs one
    per input coordinate: for layers without a closed form and with large
    inputs. On TensorFlow, XLA compiles a step through `keras.ops.jvp` anew at
    every step: a wrapper on a jvp path sets `supports_jit = False` there, so
    that `jit_compile="auto"` picks no XLA; do not pass `jit_compile=True`.

    With `wrt="input"` (theanets' definition), the Jacobian is that of the
    layer's output with respect to the input `x` of the model it is in,
    `||d h / d x||_F**2`, through every layer between them. The wrapper is then
    called with that input as `source=` (`wrapper(h_prev, source=x)`, in a
    Functional model: `regularize_model(..., wrt="input")` does it), reads the
    path from `x` to its input off the graph, and differentiates it with
    `keras.ops.jvp` (exactly, one product per coordinate of `x`, or with
    `"hutchinson"`). The path runs at inference (no dropout or noise in it,
    batch statistics from the moving averages); the wrapped layer in the mode
    of the call. `reduction="mean"` then counts the entries of that Jacobian.

    theanets' implementation squared the gradient of `h.mean()` instead of the
    Jacobian; this is the published penalty.

    Args:
        layer: the `keras.layers.Layer` to wrap.
        strength: the coefficient `s`, a finite number >= 0, or a schedule of
            the training step (`keras.optimizers.schedules.LearningRateSchedule`).
        reduction: `"sum"` (default) or `"mean"`.
        wrt: `"layer"` (default: the Jacobian with respect to the layer's own
            input) or `"input"` (with respect to the model's input, passed as
            `source=`; theanets' definition).
        estimator: `"exact"` (default: the closed form where it applies, else
            exact through jvp) or `"hutchinson"` (the random estimate, also
            where a closed form applies).
        samples: the number `k >= 1` of random vectors per example of
            `"hutchinson"` (default 1: the batch mean already averages one
            estimate per example; each sample adds a jvp). Unused by `"exact"`.
        seed: `None` or an integer: the seed of the `"hutchinson"` random
            sequence. Unused by `"exact"`.
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

    def __init__(
        self,
        layer: keras.layers.Layer,
        strength: float | LearningRateSchedule,
        reduction: Literal["sum", "mean"] = "sum",
        wrt: Literal["layer", "input"] = "layer",
        estimator: Literal["exact", "hutchinson"] = "exact",
        samples: int = 1,
        seed: int | None = None,
        inserted_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise ArgumentTypeError(
                "Invalid type for argument `layer`. Expected a keras.layers.Layer. "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        super().__init__(layer, **kwargs)
        self.supports_masking = True
        self.strength = _schedule.check(strength, "strength", check_non_negative)
        self.reduction = check_reduction(reduction)
        self.wrt = check_wrt(wrt)
        self._prefix = None  # wrt="input": the path from the input (`Prefix`)
        self._source = None  # and a weak reference to the input it starts at
        if self.wrt == "input":  # `source=` stays the graph's own input tensor
            _keras.keep_inputs_as_given(self)
        self.estimator = check_estimator(estimator)
        self.samples = check_samples(samples)
        self.seed = check_seed(seed)
        self.inserted_by = check_inserted_by(inserted_by)
        # Only the estimator draws: an exact wrapper saves no state of its own.
        self.seed_generator = None
        if self.estimator == "hutchinson":
            self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def supports_jit(self) -> bool:
        """False on TensorFlow while the wrapper takes a jvp path: TensorFlow's
        XLA compiles a step through keras.ops.jvp anew at every step (16 steps
        of a Dense wrapper: 4.8 s against 0.12 s), and `jit_compile="auto"`
        (XLA where there is a GPU) then picks none. Read at `compile`, so a
        layer's LoRA enabled after wrapping counts."""
        if keras.backend.backend() == "tensorflow" and not self.closed_form:
            return False
        return self._supports_jit

    @supports_jit.setter
    def supports_jit(self, value: bool) -> None:
        self._supports_jit = value

    def build(self, input_shape: tuple[int | None, ...] | None = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    @property
    def closed_form(self) -> bool:
        """Whether the penalty is computed in closed form (else through jvp):
        `estimator="exact"`, `wrt="layer"`, on a layer `closed_form_applies` to."""
        return (
            self.estimator == "exact"
            and self.wrt == "layer"
            and closed_form_applies(self.layer)
        )

    def _call_kwargs(self, training, mask):
        """The keyword arguments the wrapped layer's `call` accepts."""
        parameters = inspect.signature(self.layer.call).parameters
        kwargs = {}
        if "training" in parameters:
            kwargs["training"] = training
        if "mask" in parameters and mask is not None:
            kwargs["mask"] = mask
        return kwargs

    def compute_output_spec(
        self,
        inputs: keras.KerasTensor,
        *args: Any,
        source: keras.KerasTensor | None = None,
        **kwargs: Any,
    ) -> keras.KerasTensor:
        self._check_source(source)
        if self.wrt == "input" and isinstance(source, keras.KerasTensor):
            # the path from the model's input to this call's input, read off
            # the graph being built (also when a saved model loads)
            earlier = None if self._source is None else self._source()
            if earlier is source:
                raise ValueError(
                    f"Contractive layer '{self.name}' has wrt='input' and is "
                    "called twice on paths from the same input: it holds one path. "
                    "Use one wrapper per call."
                )
            self._prefix = Prefix(source, inputs)
            self._source = weakref.ref(source)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def _check_source(self, source):
        if self.wrt == "input" and source is None:
            raise ValueError(
                f"Contractive layer '{self.name}' has wrt='input': call it with the "
                "model's input as `source=` (`wrapper(h, source=inputs)`), or use "
                "regularize_model(..., wrt='input'), which does."
            )
        if self.wrt == "layer" and source is not None:
            raise ValueError(
                f"Contractive layer '{self.name}' has wrt='layer' (the Jacobian "
                "with respect to its own input) and was given `source=`: pass "
                "wrt='input' for the Jacobian with respect to `source`."
            )

    def call(
        self,
        inputs: Tensor,
        training: bool | None = None,
        mask: Tensor | None = None,
        source: Tensor | None = None,
    ) -> Tensor:
        point = inputs  # what the Jacobian is taken with respect to
        self._check_source(source)
        if self.wrt == "input":
            if mask is None:  # with `source=`, Keras passes no mask itself
                mask = _keras.keras_mask(inputs)
            if self._prefix is None:
                raise ValueError(
                    f"Contractive layer '{self.name}' has wrt='input' and reads the "
                    "path from `source` to its input off a graph: call it on "
                    "symbolic tensors (build a Functional model) before calling it "
                    "on data."
                )
            point = source
        if self.closed_form:
            outputs, squared = self._closed_form(inputs)
            regularizer = self.layer.activity_regularizer
            if regularizer is not None:  # what the layer's own __call__ would add
                loss = regularizer(outputs)
                batch = ops.cast(ops.shape(outputs)[0], loss.dtype)
                self.add_loss(ops.divide_no_nan(loss, batch))
        else:
            outputs = self.layer(inputs, **self._call_kwargs(training, mask))
            if self.estimator == "hutchinson":
                squared = self._hutchinson(point, training, mask)
            else:
                squared = self._through_jvp(point, training, mask)
        penalty = self._reduce(squared, point, outputs)
        _terms.record("contractive", penalty, inputs, "layer", self)
        self.add_loss(penalty)
        return outputs

    def compute_mask(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor | None:
        return self.layer.compute_mask(inputs, mask)

    def _closed_form(self, inputs):
        """The layer's own computation, and each example's squared norm."""
        layer = self.layer
        pre_activation = _dense if isinstance(layer, _DENSE) else _convolution
        z, columns = pre_activation(layer, inputs)
        outputs = layer.activation(z)
        slope = SLOPES[_activation_name(layer)](ops.cast(z, "float32"))
        per_element = ops.square(slope) * columns
        return outputs, ops.sum(ops.reshape(per_element, (ops.shape(z)[0], -1)), axis=1)

    def _check_jvp(self):
        if not _backend.has_jvp():
            raise NotImplementedError(
                f"Contractive({type(self.layer).__name__}) needs keras.ops.jvp, which "
                f"this Keras has not for the {keras.backend.backend()} backend. "
                + _NEEDS_NO_JVP
            )

    def _jvp(self, primals, tangents, training, mask):
        """The wrapped layer's Jacobian at each row of `primals` times that row
        of `tangents`."""
        kwargs = self._call_kwargs(training, mask)

        prefix = self._prefix if self.wrt == "input" else None
        layers = [self.layer] + ([] if prefix is None else prefix.layers)

        def forward(x):
            # the layers run again add no loss, term or update (`replay`)
            with replay(variables_of(layers)):
                if prefix is not None:  # from the model's input to the layer's
                    x = prefix.run(x)
                # `call`, not `__call__`: not the layer's own activity penalty
                return self.layer.call(x, **kwargs)

        try:
            _, products = ops.jvp(forward, (primals,), (tangents,))
        except NotImplementedError as error:
            raise NotImplementedError(
                f"Contractive({type(self.layer).__name__}) needs keras.ops.jvp, "
                f"which the {keras.backend.backend()} backend does not provide. "
                + _NEEDS_NO_JVP
            ) from error
        return products

    def _through_jvp(self, inputs, training, mask=None):
        self._check_jvp()
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
            primals = _tile(inputs, count)
            columns = self._jvp(primals, tangents, training, _tile(mask, count))
            columns = ops.reshape(ops.cast(columns, "float32"), (count, batch, -1))
            squared = squared + ops.sum(ops.square(columns), axis=(0, 2))
        return squared

    def _hutchinson(self, inputs, training, mask=None):
        """Each example's unbiased estimate of its squared norm: the mean of
        `||J v||**2` over `samples` random sign vectors `v` (Rademacher: for the
        same mean, a lower variance than Gaussian vectors), in one jvp."""
        self._check_jvp()
        batch = ops.shape(inputs)[0]
        primals = _tile(inputs, self.samples)
        signs = keras.random.randint(ops.shape(primals), 0, 2, seed=self.seed_generator)
        tangents = ops.cast(2 * signs - 1, inputs.dtype)
        products = self._jvp(primals, tangents, training, _tile(mask, self.samples))
        products = ops.reshape(ops.cast(products, "float32"), (self.samples, batch, -1))
        return ops.mean(ops.sum(ops.square(products), axis=2), axis=0)

    def _reduce(self, squared, inputs, outputs):
        """Each example's squared norm -> the scalar added to the loss."""
        batch = ops.cast(ops.shape(squared)[0], "float32")
        value = ops.divide_no_nan(ops.sum(squared), batch)
        if self.reduction == "mean":
            entries = math.prod(inputs.shape[1:]) * math.prod(outputs.shape[1:])
            value = value / entries
        return value * _schedule.value(self.strength, self, "strength")

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return self.layer.compute_output_shape(input_shape)

    def _stateful_variables(self):
        """What the wrapper saves itself (the wrapped layer saves its own
        weights): the random state of `"hutchinson"`, so that a reloaded model
        continues the same sequence; nothing for `"exact"`."""
        state = [] if self.seed_generator is None else [self.seed_generator.state]
        return _keras.own_variables(self) + state

    def save_own_variables(self, store: dict[str, Any]) -> None:
        save_variables(store, self._stateful_variables())

    def load_own_variables(self, store: dict[str, Any]) -> None:
        variables = self._stateful_variables()
        what = f"estimator={self.estimator!r}: " + (
            "the random state" if variables else "none"
        )
        values = read_saved(self, store, variables, what)
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "strength": _schedule.to_config(self.strength),
                "reduction": self.reduction,
                "wrt": self.wrt,
                "estimator": self.estimator,
                "samples": self.samples,
            }
        )
        if self.seed is not None:
            config["seed"] = self.seed
        if self.inserted_by is not None:
            config["inserted_by"] = self.inserted_by
        return config
