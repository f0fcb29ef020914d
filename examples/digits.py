"""The main job: does regularization close an over-fitted MLP's generalization gap?

scikit-learn's 8x8 digits (they ship inside the package: nothing is downloaded).
An MLP far larger than its training subset is trained three ways, over three
seeds each:

- plain: no regularization;
- Keras built-ins: `L2` kernel and `L1` activity regularizers on each layer, and
  `GaussianNoise` and `Dropout` layers placed by hand;
- regularize_model: the plain model, then one `keras_regs.regularize_model(...)`
  call with the same numbers.

It prints a table (train and test accuracy, their gap, and each penalty term at
the end of training), saves a regularized model, reloads it in a fresh Python
process and checks that its predictions are identical, and writes a PNG of the
learning curves and the per-term penalties.

Run it with `make demo`, or `python examples/digits.py [--short] [--out DIR]`.
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_regs  # noqa: E402

TRAIN = 150  # training examples: few enough for the MLP below to over-fit
HIDDEN = (256, 256)
BATCH = 32
# One spec, the same numbers for Keras' built-ins and for regularize_model.
SPEC = {"weight_l2": 3e-4, "hidden_l1": 1e-4, "input_noise": 0.2, "hidden_dropout": 0.3}
VARIANTS = ("plain", "Keras built-ins", "regularize_model")


def data():
    """A fixed split (the same for every seed): TRAIN examples to train on, the
    remaining ones to test on, pixel values scaled to [0, 1]."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype("float32")
    y = digits.target[order].astype("int32")
    return (x[:TRAIN], y[:TRAIN]), (x[TRAIN:], y[TRAIN:])


def plain_model(seed):
    inputs = keras.Input((64,), name="pixels")
    x = inputs
    for i, units in enumerate(HIDDEN):
        x = keras.layers.Dense(
            units,
            activation="relu",
            name=f"hidden_{i}",
            kernel_initializer=keras.initializers.HeNormal(seed=seed + i),
        )(x)
    outputs = keras.layers.Dense(
        10,
        activation="softmax",
        name="digit",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
    )(x)
    return keras.Model(inputs, outputs, name="mlp")


def builtins_model(seed):
    """The same MLP, regularized layer by layer with Keras' own classes."""
    inputs = keras.Input((64,), name="pixels")
    x = keras.layers.GaussianNoise(SPEC["input_noise"], seed=seed)(inputs)
    for i, units in enumerate(HIDDEN):
        x = keras.layers.Dense(
            units,
            activation="relu",
            name=f"hidden_{i}",
            kernel_initializer=keras.initializers.HeNormal(seed=seed + i),
            kernel_regularizer=keras.regularizers.L2(SPEC["weight_l2"]),
            activity_regularizer=keras.regularizers.L1(SPEC["hidden_l1"]),
        )(x)
        x = keras.layers.Dropout(SPEC["hidden_dropout"], seed=seed)(x)
    outputs = keras.layers.Dense(
        10,
        activation="softmax",
        name="digit",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
        kernel_regularizer=keras.regularizers.L2(SPEC["weight_l2"]),
    )(x)
    return keras.Model(inputs, outputs, name="mlp_builtins")


def build(variant, seed):
    if variant == "plain":
        return plain_model(seed)
    if variant == "Keras built-ins":
        # log_penalties shows Keras' own penalties as `other_penalties`
        return keras_regs.log_penalties(builtins_model(seed))
    return keras_regs.regularize_model(plain_model(seed), seed=seed, **SPEC)


def run(variant, seed, epochs, train, test):
    keras.utils.set_random_seed(seed)
    model = build(variant, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        *train,
        batch_size=BATCH,
        epochs=epochs,
        validation_data=test,
        verbose=0,
    ).history
    scores = {
        "train": model.evaluate(*train, verbose=0, return_dict=True)["accuracy"],
        "test": model.evaluate(*test, verbose=0, return_dict=True)["accuracy"],
    }
    terms = {
        name: values[-1]
        for name, values in history.items()
        if name in ("weight_l2", "hidden_l1", "other_penalties")
    }
    return model, history, scores, terms


def table(results):
    """One row per variant: mean +/- std over seeds."""
    lines = [
        f"{'variant':<18}{'train acc':>18}{'test acc':>18}{'gap':>18}   "
        "penalty terms at the end (mean)"
    ]

    def cell(values):
        return f"{np.mean(values):.3f} +/- {np.std(values):.3f}"

    for variant in VARIANTS:
        runs = results[variant]
        train = [r["scores"]["train"] for r in runs]
        test = [r["scores"]["test"] for r in runs]
        gap = np.subtract(train, test)
        names = sorted({name for r in runs for name in r["terms"]})
        terms = ", ".join(
            f"{name} {np.mean([r['terms'][name] for r in runs]):.4f}" for name in names
        )
        lines.append(
            f"{variant:<18}{cell(train):>18}{cell(test):>18}{cell(gap):>18}   "
            f"{terms or '-'}"
        )
    return "\n".join(lines)


def reload_check(model, x, out):
    """Save `model`, load it in a new Python process, compare predictions."""
    path = os.path.join(out, "digits_regularized.keras")
    inputs = os.path.join(out, "digits_test_inputs.npy")
    predictions = os.path.join(out, "digits_reloaded_predictions.npy")
    model.save(path)
    np.save(inputs, x)
    script = (
        "import sys, numpy as np, keras, keras_regs\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, path, inputs, predictions],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return path, np.array_equal(model.predict(x, verbose=0), np.load(predictions))


def figure(results, epochs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, terms) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(1, epochs + 1)
    for color, variant in zip(("C0", "C1", "C2"), VARIANTS, strict=True):
        runs = [r["history"] for r in results[variant]]
        for key, style in (("accuracy", ":"), ("val_accuracy", "-")):
            mean = np.mean([h[key] for h in runs], axis=0)
            label = f"{variant}, {'train' if key == 'accuracy' else 'test'}"
            curves.plot(x, mean, style, color=color, label=label)
    curves.set_xlabel("epoch")
    curves.set_ylabel("accuracy (mean over seeds)")
    curves.set_ylim(0.5, 1.01)
    curves.legend(fontsize="small", loc="lower right")
    curves.set_title("Learning curves: train (dotted) and test (solid)")
    keras_regs.plot_penalties(
        results["regularize_model"][0]["history"],
        ax=terms,
        title="regularize_model, seed 0: the training loss by term",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--short", action="store_true", help="1 seed, 3 epochs (the CI check)"
    )
    parser.add_argument("--out", default="demo_output", help="where files go")
    args = parser.parse_args(argv)
    if args.short:
        args.seeds, args.epochs = 1, 3
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    train, test = data()
    print(
        f"digits: {len(train[0])} training and {len(test[0])} test examples; "
        f"MLP 64-{'-'.join(map(str, HIDDEN))}-10; {args.epochs} epochs; "
        f"seeds 0..{args.seeds - 1}; backend {keras.backend.backend()}"
    )
    print(f"spec: {SPEC}\n")
    results = {variant: [] for variant in VARIANTS}
    for seed in range(args.seeds):
        for variant in VARIANTS:
            model, history, scores, terms = run(variant, seed, args.epochs, train, test)
            results[variant].append(
                {"model": model, "history": history, "scores": scores, "terms": terms}
            )
    print(table(results))

    plain = np.mean([r["scores"]["test"] for r in results["plain"]])
    ours = np.mean([r["scores"]["test"] for r in results["regularize_model"]])
    print(f"\nmean test accuracy: plain {plain:.3f}, regularize_model {ours:.3f}")

    path, identical = reload_check(
        results["regularize_model"][0]["model"], test[0], args.out
    )
    print(
        f"saved {path}; reloaded in a fresh process: predictions identical: {identical}"
    )
    png = os.path.join(args.out, "digits.png")
    figure(results, args.epochs, png)
    print(f"wrote {png}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
