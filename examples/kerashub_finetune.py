"""Fine-tuning a KerasHub classifier with one regularize_model call.

A tiny `keras_hub.models.BertTextClassifier` (2 transformer layers of width 32,
built from a config: nothing is downloaded, never `from_preset`) on a synthetic,
seeded text-classification task: a sequence is positive when it holds one of a
few trigger tokens. The training set is small enough for the model to over-fit
it. Three variants start from the same initial weights:

- plain: Adam;
- AdamW: the optimizer's decoupled weight decay;
- regularize_model: Adam, and one `keras_regs.regularize_model(model,
  weight_l2=..., hidden_dropout=...)` call, which reaches every kernel of the
  transformer blocks and keeps the model a `BertTextClassifier`.

It prints a table (train and test accuracy, and the logged `weight_l2` term at
the end of training), then saves the regularized model to a `.keras` file, loads
it in a fresh Python process that imports only keras, keras_hub and keras_regs,
and checks that the class, the penalties and the predictions are the same. It
exits non-zero if any of these checks fails.

It needs the `hub` extra, for KerasHub: `pip install "keras_regs[hub]"`. Run it
with `python examples/kerashub_finetune.py [--short]`.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_regs  # noqa: E402

VOCABULARY = 100  # token ids: 0 pads, 1 starts a sequence ([CLS])
TRIGGERS = (5, 6, 7)  # a sequence holding one of these is positive
WORDS = 10  # the other tokens are drawn from WORDS..VOCABULARY-1
LENGTH = 16
LEARNING_RATE = 1e-3
BATCH = 16  # every count below is a multiple: one compiled shape per function
SPEC = {"weight_l2": 1e-5, "hidden_dropout": 0.1}
WEIGHT_DECAY = 0.01  # AdamW's decoupled decay (docs/weight-decay.md)
VARIANTS = ("plain (Adam)", f"AdamW(weight_decay={WEIGHT_DECAY})", "regularize_model")


def data(count, rng):
    """`count` sequences of 6 to LENGTH tokens, half of them positive, as the
    dict of int32 arrays a BertTextClassifier without preprocessor takes."""
    token_ids = np.zeros((count, LENGTH), "int32")
    padding_mask = np.zeros((count, LENGTH), "int32")
    labels = rng.permutation(np.arange(count) % 2).astype("int32")
    for i, label in enumerate(labels):
        length = rng.integers(6, LENGTH + 1)
        tokens = rng.integers(WORDS, VOCABULARY, size=length)
        tokens[0] = 1
        if label:
            tokens[rng.integers(1, length)] = rng.choice(TRIGGERS)
        token_ids[i, :length] = tokens
        padding_mask[i, :length] = 1
    inputs = {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": padding_mask,
    }
    return inputs, labels


def build():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=LENGTH,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None
    )


def run(variant, seed, weights, epochs, train, test):
    keras.utils.set_random_seed(seed)
    model = build()
    model.set_weights(weights)  # the same starting point for every variant
    if variant == "regularize_model":
        # The same object comes back, still a BertTextClassifier.
        model = keras_regs.regularize_model(model, seed=seed, **SPEC)
    if variant.startswith("AdamW"):
        optimizer = keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    else:
        optimizer = keras.optimizers.Adam(LEARNING_RATE)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # KerasHub batches arrays into a dataset of its own, which it does not
    # shuffle: say so rather than be warned.
    history = model.fit(
        *train, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0
    ).history
    scores = {
        split: model.evaluate(*xy, batch_size=BATCH, verbose=0, return_dict=True)[
            "accuracy"
        ]
        for split, xy in (("train", train), ("test", test))
    }
    scores["weight_l2"] = history["weight_l2"][-1] if "weight_l2" in history else None
    return model, scores


def table(results):
    """One row per variant: mean +/- std over seeds."""
    lines = [f"{'variant':<26}{'train acc':>18}{'test acc':>18}   weight_l2 at the end"]

    def cell(values):
        return f"{np.mean(values):.3f} +/- {np.std(values):.3f}"

    for variant, runs in results.items():
        terms = [r["weight_l2"] for r in runs if r["weight_l2"] is not None]
        lines.append(
            f"{variant:<26}{cell([r['train'] for r in runs]):>18}"
            f"{cell([r['test'] for r in runs]):>18}   "
            f"{f'{np.mean(terms):.5f}' if terms else '-'}"
        )
    return "\n".join(lines)


def total_penalty(model):
    """sum(model.losses), exactly rounded whatever the order of the terms."""
    return math.fsum(float(keras.ops.convert_to_numpy(p)) for p in model.losses)


# Runs in a fresh process that imports only keras, keras_hub and keras_regs.
# A KerasHub task compiles itself when it is built, with an optimizer that has
# not seen a step; Keras then warns that it skips the saved optimizer's
# variables (KerasHub's behaviour, with or without keras_regs).
RELOAD = """
import json, math, sys, warnings
import keras, keras_hub, keras_regs
import numpy as np
warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
model = keras.saving.load_model(sys.argv[1], compile=False)
inputs = dict(np.load(sys.argv[2]))
np.save(sys.argv[3], model.predict(inputs, batch_size=int(sys.argv[5]), verbose=0))
with open(sys.argv[4], "w") as f:
    json.dump({
        "class": isinstance(model, keras_hub.models.BertTextClassifier),
        "penalty": math.fsum(
            float(keras.ops.convert_to_numpy(p)) for p in model.losses
        ),
    }, f)
"""


def reload_check(model, inputs, folder):
    """Save `model`, load it in a new Python process; compare class, penalties
    and predictions."""
    path = os.path.join(folder, "bert_regularized.keras")
    files = [os.path.join(folder, f) for f in ("x.npz", "p.npy", "r.json")]
    model.save(path)
    np.savez(files[0], **inputs)
    subprocess.run(
        [sys.executable, "-c", RELOAD, path, *files, str(BATCH)],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    with open(files[2]) as f:
        reloaded = json.load(f)
    return path, {
        "class kept": reloaded["class"],
        "penalties identical": reloaded["penalty"] == total_penalty(model),
        "predictions identical": np.array_equal(
            model.predict(inputs, batch_size=BATCH, verbose=0), np.load(files[1])
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--train", type=int, default=64, help="training sequences")
    parser.add_argument("--test", type=int, default=1024, help="test sequences")
    parser.add_argument(
        "--short",
        action="store_true",
        help="1 seed, 20 epochs, 256 test sequences (the CI check)",
    )
    args = parser.parse_args(argv)
    if args.short:
        args.seeds, args.epochs, args.train, args.test = 1, 20, 64, 256
    start = time.perf_counter()

    rng = np.random.default_rng(0)  # one data set for every seed
    train, test = data(args.train, rng), data(args.test, rng)
    print(
        f"{args.train} training and {args.test} test sequences of up to {LENGTH} "
        f"tokens; BertTextClassifier, 2 layers of width 32; {args.epochs} epochs; "
        f"seeds 0..{args.seeds - 1}; backend {keras.backend.backend()}"
    )
    print(f"regularize_model spec: {SPEC}\n")
    results = {variant: [] for variant in VARIANTS}
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        weights = build().get_weights()  # each seed's initial weights, shared
        for variant in VARIANTS:
            model, scores = run(variant, seed, weights, args.epochs, train, test)
            results[variant].append(scores)
            if variant == "regularize_model":
                regularized = model  # the last seed's is saved below
    print(table(results))

    with tempfile.TemporaryDirectory() as folder:
        path, checks = reload_check(regularized, test[0], folder)
    print(f"\nsaved {os.path.basename(path)}; reloaded in a fresh process:")
    for name, ok in checks.items():
        print(f"  {name}: {ok}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
