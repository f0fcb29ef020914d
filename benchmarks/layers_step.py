"""Contractive and noise/dropout layers: train-step cost, interleaved, jit-compiled.

- Contractive on Dense 784 -> 512, batch 128: closed form vs the keras.ops.jvp
  fallback vs no penalty (goal: closed form at least 10x faster than the fallback,
  within 1.3x of the plain step).
- Contractive on Conv2D(32, 3, relu) of 14 x 14 x 1 images, batch 128: closed form
  vs the exact jvp fallback vs the Hutchinson estimator with 1 and 4 samples (on a
  Conv2D subclass, which the closed form does not recognize) vs no penalty (goal:
  closed form within 1.5x of the plain step). 14 x 14, not 28 x 28: the
  fallback's step keeps the convolutions of 64 x 128 images per chunk of input
  coordinates for the backward pass, beyond 20 GB at 28 x 28 (killed for memory
  on a 23 GB machine).
- The Contractive models compile as a user's do, `jit_compile="auto"`: XLA on JAX;
  on TensorFlow none on a CPU-only machine, and a wrapper on a jvp path asks for
  none on any (TensorFlow's XLA compiles a step through jvp anew at every step).
- keras_regs.layers.GaussianNoise / BernoulliDropout vs keras.layers.GaussianNoise /
  Dropout in an MLP (goal: within 1.05x).

    python benchmarks/layers_step.py [--rounds 30] [--only contractive_conv ...]
"""

import argparse

import common
import keras

import keras_regs

L = keras.layers


class JvpDense(L.Dense):
    """A Dense the closed form does not recognize: the wrapper falls back to jvp."""


class JvpConv2D(L.Conv2D):
    """A Conv2D the closed form does not recognize: exact jvp or Hutchinson."""


# Each variant of the convolution: its Conv2D class and its Contractive arguments
# (None: no wrapper).
CONV_VARIANTS = {
    "no penalty": (L.Conv2D, None),
    "closed form": (L.Conv2D, {}),
    "jvp fallback": (JvpConv2D, {}),
    "hutchinson k=1": (JvpConv2D, {"estimator": "hutchinson", "samples": 1, "seed": 0}),
    "hutchinson k=4": (JvpConv2D, {"estimator": "hutchinson", "samples": 4, "seed": 0}),
}


def contractive_model(kind):
    inputs = keras.Input((784,))
    dense = (JvpDense if kind == "jvp fallback" else L.Dense)(512, activation="sigmoid")
    code = (
        dense(inputs)
        if kind == "no penalty"
        else keras_regs.layers.Contractive(dense, 0.1)(inputs)
    )
    return keras.Model(inputs, L.Dense(10)(code))


def contractive_conv_model(kind):
    conv_class, contractive = CONV_VARIANTS[kind]
    inputs = keras.Input((14, 14, 1))
    conv = conv_class(32, 3, activation="relu")
    if contractive is None:
        features = conv(inputs)
    else:
        features = keras_regs.layers.Contractive(conv, 0.1, **contractive)(inputs)
    return keras.Model(inputs, L.Dense(10)(L.Flatten()(features)))


def noisy_mlp(noise, dropout):
    inputs = keras.Input((784,))
    x = noise(0.1)(inputs)
    for _ in range(3):
        x = dropout(0.3)(L.Dense(1024, activation="relu")(x))
    return keras.Model(inputs, L.Dense(10)(x))


def time_contractive(name, title, models, x, y, rounds, goal, warmup=5):
    """Time the Contractive variants `models` (same weights, compiled as users
    compile them), print the table and record it with its goal ratio."""
    models = common.compiled(models, jit_compile="auto")
    weights = models["no penalty"].get_weights()
    for model in models.values():
        model.set_weights(weights)
    steps = {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}
    medians = common.interleaved(steps, rounds=rounds, warmup=warmup)
    common.print_table(title, medians, "no penalty")
    common.record(
        name,
        {
            "median_ms": {k: v * 1e3 for k, v in medians.items()},
            "ratio_to_no_penalty": common.ratios(medians, "no penalty"),
            "fallback_over_closed_form": medians["jvp fallback"]
            / medians["closed form"],
            "goal_ratio": goal,
            "rounds": rounds,
        },
    )


def contractive_dense(x, y, rounds):
    time_contractive(
        "contractive/dense784x512",
        "Contractive(Dense 784 -> 512), batch 128",
        {
            k: contractive_model(k)
            for k in ("no penalty", "closed form", "jvp fallback")
        },
        x,
        y,
        rounds,
        goal=1.3,
    )


def contractive_conv(x, y, rounds):
    # The fallback's step takes seconds: two warm-up rounds exclude compilation.
    time_contractive(
        "contractive/conv2d14x14x32",
        "Contractive(Conv2D 14 x 14 x 1 -> 32, 3 x 3), batch 128",
        {k: contractive_conv_model(k) for k in CONV_VARIANTS},
        x[:, : 14 * 14].reshape(-1, 14, 14, 1),
        y,
        rounds,
        goal=1.5,
        warmup=2,
    )


def noise_dropout(x, y, rounds):
    models = common.compiled(
        {
            "keras GaussianNoise+Dropout": noisy_mlp(L.GaussianNoise, L.Dropout),
            "keras_regs GaussianNoise+BernoulliDropout": noisy_mlp(
                keras_regs.layers.GaussianNoise, keras_regs.layers.BernoulliDropout
            ),
        }
    )
    steps = {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}
    medians = common.interleaved(steps, rounds=rounds)
    common.print_table(
        "noise and dropout, MLP 3 x 1024", medians, "keras GaussianNoise+Dropout"
    )
    common.record(
        "noise_dropout/mlp",
        {
            "median_ms": {k: v * 1e3 for k, v in medians.items()},
            "ratio_to_keras": common.ratios(medians, "keras GaussianNoise+Dropout"),
            "rounds": rounds,
        },
    )


BENCHMARKS = {
    "contractive_dense": contractive_dense,
    "contractive_conv": contractive_conv,
    "noise_dropout": noise_dropout,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    # Run (and record) only some: the others' results.json entries stay as they are.
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS))
    args = parser.parse_args()
    x, y = common.batch()
    for name in args.only or BENCHMARKS:
        BENCHMARKS[name](x, y, args.rounds)


if __name__ == "__main__":
    main()
