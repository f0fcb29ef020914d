"""Names used in keras_regs' type annotations.

Keras has no tensor type of its own: a tensor is the backend's (`tf.Tensor`,
`jax.Array`, `torch.Tensor`), a NumPy array, or a symbolic `keras.KerasTensor`,
so `Tensor` is `Any` for type checkers and reads as what it means.
"""

from typing import Any, TypeAlias

Tensor: TypeAlias = Any
