"""A contractive auto-encoder on scikit-learn's bundled digits (no download).

Trains the same auto-encoder twice, plainly and with the contractive penalty of
`keras_regs.layers.Contractive` on its encoder, and prints a table: the
reconstruction error on held-out digits and the mean squared Frobenius norm of the
encoder's Jacobian there. The contractive code is less sensitive to its input at a
similar reconstruction error (the script exits 1 if not: a smaller Jacobian
norm, and a reconstruction error within 1.25 x the plain one).

It needs the `demo` extra, for scikit-learn's digits: `pip install
"keras_regs[demo]"`. Run it with `python examples/contractive_autoencoder.py
[--epochs N]`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_regs  # noqa: E402


def autoencoder(strength, seed=13):
    """64 -> 32 (sigmoid) -> 64 (sigmoid); the encoder wrapped when strength > 0."""
    init = keras.initializers.GlorotUniform(seed=seed)
    encoder = keras.layers.Dense(32, activation="sigmoid", kernel_initializer=init)
    inputs = keras.Input((64,))
    wrapped = keras_regs.layers.Contractive(encoder, strength) if strength else encoder
    code = wrapped(inputs)
    decoded = keras.layers.Dense(64, activation="sigmoid", kernel_initializer=init)(
        code
    )
    return keras.Model(inputs, decoded), encoder


def jacobian_norm(encoder, x):
    """Mean over examples of ||d code / d x||_F**2, in closed form, in NumPy."""
    kernel = keras.ops.convert_to_numpy(encoder.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(encoder.bias).astype("float64")
    code = 1 / (1 + np.exp(-(x.astype("float64") @ kernel + bias)))
    slope = code * (1 - code)
    return float(np.mean((slope**2) @ np.sum(kernel**2, axis=0)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--strength", type=float, default=5e-4)
    args = parser.parse_args(argv)

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test = x[:1400], x[1400:]

    rows = []
    for name, strength in (
        ("plain", 0.0),
        (f"contractive {args.strength:g}", args.strength),
    ):
        keras.utils.set_random_seed(13)
        model, encoder = autoencoder(strength)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        model.fit(x_train, x_train, epochs=args.epochs, batch_size=64, verbose=0)
        error = float(np.mean((model.predict(x_test, verbose=0) - x_test) ** 2))
        rows.append((name, error, jacobian_norm(encoder, x_test)))

    print(
        f"{'auto-encoder':<20} {'test reconstruction MSE':>24} {'mean ||J||_F^2':>16}"
    )
    for name, error, norm in rows:
        print(f"{name:<20} {error:>24.4f} {norm:>16.3f}")
    (_, plain_error, plain_norm), (_, error, norm) = rows
    print(
        f"\nthe contractive encoder's Jacobian norm is {norm / plain_norm:.2f} x the "
        f"plain one's, at {error / plain_error:.2f} x its reconstruction error"
    )
    # the claim: a less sensitive code at a similar reconstruction error
    return 0 if norm < plain_norm and error < 1.25 * plain_error else 1


if __name__ == "__main__":
    sys.exit(main())
