"""keras_regs quickstart: per-layer regularization, trained, saved, reloaded.

A small classifier on synthetic data (ten classes of noisy points in 64
dimensions, made with NumPy: nothing is downloaded), with keras_regs penalties on
its layers and keras_regs noise and dropout between them. It trains a few epochs,
saves to a `.keras` file, reloads it with nothing but `import keras_regs`, and
checks that predictions and penalties are identical.

It needs only keras_regs' base dependencies (`pip install keras_regs`). Run it with
`python examples/quickstart.py [--epochs N]`; `make test` runs it from the built
wheel, installed into a fresh environment.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_regs  # noqa: E402


def make_data(n=1800, features=64, classes=10, seed=0):
    """Ten classes of noisy points around random centres, from NumPy alone."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = centres[y] + 1.5 * rng.normal(size=(n, features))
    return x.astype("float32"), y.astype("int32")


def build_model():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras_regs.layers.GaussianNoise(0.1, seed=13, name="input_noise"),
            keras.layers.Dense(
                128,
                activation="relu",
                kernel_regularizer=keras_regs.WeightL2(1e-4),
                activity_regularizer=keras_regs.HiddenL1(1e-4),
                name="hidden",
            ),
            keras_regs.layers.BernoulliDropout(0.3, seed=13, name="hidden_dropout"),
            keras.layers.Dense(
                10,
                activation="softmax",
                kernel_regularizer=keras_regs.WeightL1(1e-5),
                name="output",
            ),
        ]
    )


def penalty_values(model, x):
    """Every penalty as a `(where, repr, value)` row, computed from its layer."""
    rows, h = [], keras.ops.convert_to_tensor(x)
    for layer in model.layers:
        for weight in ("kernel", "bias"):
            penalty = getattr(layer, f"{weight}_regularizer", None)
            if penalty is not None:
                value = penalty(getattr(layer, weight))
                rows.append((f"{layer.name}.{weight}", penalty, value))
        h = layer(h, training=False)
        if layer.activity_regularizer is not None:
            # Keras divides an activity penalty by the batch size.
            value = layer.activity_regularizer(h) / x.shape[0]
            rows.append((f"{layer.name} output", layer.activity_regularizer, value))
    return [(w, repr(p), float(keras.ops.convert_to_numpy(v))) for w, p, v in rows]


def total_penalty(model, x):
    model(x, training=False)  # activity penalties are recorded on a call
    return sum(float(keras.ops.convert_to_numpy(p)) for p in model.losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(13)
    x, y = make_data()
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    model = build_model()
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(x_test, y_test),
        verbose=1,
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\ntest accuracy: {accuracy:.3f}")
    rows = penalty_values(model, x_test)
    print("penalties on the test set:")
    for where, penalty, value in rows:
        print(f"  {where:<16} {penalty:<44} {value:.6f}")
    total = total_penalty(model, x_test)
    print(f"  {'sum':<16} {'(the sum of model.losses)':<44} {total:.6f}")
    if not np.isclose(sum(v for _, _, v in rows), total, rtol=1e-5):
        print("the penalties do not add up to model.losses")
        return 1

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "quickstart.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)  # no custom_objects needed
        same_predictions = np.array_equal(
            model.predict(x_test, verbose=0), reloaded.predict(x_test, verbose=0)
        )
        same_penalties = penalty_values(reloaded, x_test) == rows
    print(f"\nsaved and reloaded {os.path.basename(path)}:")
    print(f"  predictions identical: {same_predictions}")
    print(f"  penalties identical:   {same_penalties}")
    return 0 if same_predictions and same_penalties else 1


if __name__ == "__main__":
    sys.exit(main())
