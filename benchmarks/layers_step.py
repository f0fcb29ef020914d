"""Contractive and noise/dropout layers: train-step cost, interleaved, jit-compiled.

- Contractive on Dense 784 -> 512, batch 128: closed form vs the keras.ops.jvp
  fallback vs no penalty (goal: closed form at least 10x faster than the fallback,
  within 1.3x of the plain step).
- keras_regs.layers.GaussianNoise / BernoulliDropout vs keras.layers.GaussianNoise /
  Dropout in an MLP (goal: within 1.05x).

    python benchmarks/layers_step.py [--rounds 30]
"""

import argparse

import common
import keras

import keras_regs

L = keras.layers


class JvpDense(L.Dense):
    """A Dense the closed form does not recognize: the wrapper falls back to jvp."""


def contractive_model(kind):
    inputs = keras.Input((784,))
    dense = (JvpDense if kind == "jvp fallback" else L.Dense)(512, activation="sigmoid")
    code = (
        dense(inputs)
        if kind == "no penalty"
        else keras_regs.layers.Contractive(dense, 0.1)(inputs)
    )
    return keras.Model(inputs, L.Dense(10)(code))


def noisy_mlp(noise, dropout):
    inputs = keras.Input((784,))
    x = noise(0.1)(inputs)
    for _ in range(3):
        x = dropout(0.3)(L.Dense(1024, activation="relu")(x))
    return keras.Model(inputs, L.Dense(10)(x))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    x, y = common.batch()

    models = common.compiled(
        {k: contractive_model(k) for k in ("no penalty", "closed form", "jvp fallback")}
    )
    weights = models["no penalty"].get_weights()
    for model in models.values():
        model.set_weights(weights)
    steps = {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}
    medians = common.interleaved(steps, rounds=args.rounds)
    common.print_table(
        "Contractive(Dense 784 -> 512), batch 128", medians, "no penalty"
    )
    common.record(
        "contractive/dense784x512",
        {
            "median_ms": {k: v * 1e3 for k, v in medians.items()},
            "ratio_to_no_penalty": common.ratios(medians, "no penalty"),
            "fallback_over_closed_form": medians["jvp fallback"]
            / medians["closed form"],
            "rounds": args.rounds,
        },
    )

    models = common.compiled(
        {
            "keras GaussianNoise+Dropout": noisy_mlp(L.GaussianNoise, L.Dropout),
            "keras_regs GaussianNoise+BernoulliDropout": noisy_mlp(
                keras_regs.layers.GaussianNoise, keras_regs.layers.BernoulliDropout
            ),
        }
    )
    steps = {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}
    medians = common.interleaved(steps, rounds=args.rounds)
    common.print_table(
        "noise and dropout, MLP 3 x 1024", medians, "keras GaussianNoise+Dropout"
    )
    common.record(
        "noise_dropout/mlp",
        {
            "median_ms": {k: v * 1e3 for k, v in medians.items()},
            "ratio_to_keras": common.ratios(medians, "keras GaussianNoise+Dropout"),
            "rounds": args.rounds,
        },
    )


if __name__ == "__main__":
    main()
