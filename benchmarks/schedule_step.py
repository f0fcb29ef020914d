"""Schedules: the cost per compiled train step of scheduled strengths and rates.

An MLP (4 x 1024) with `regularize_model(weight_l2=..., hidden_l1=...,
hidden_dropout=...)`, trained with `train_on_batch` (jit-compiled), each value a
number against each value a `LearningRateSchedule` (PolynomialDecay warm-ups: three
schedules evaluated per step, five scheduled objects), the same weights,
interleaved. The per-term logs are off in both, so only the schedules differ.
Goal: under 2% per step.

    python benchmarks/schedule_step.py [--rounds 300]
"""

import argparse

import common
import keras

import keras_regs


def warmup(end):
    return keras.optimizers.schedules.PolynomialDecay(
        0.0, 1000, end_learning_rate=end, power=1.0
    )


def mlp(scheduled):
    model = common.mlp4x1024()
    values = {"weight_l2": 1e-4, "hidden_l1": 1e-5, "hidden_dropout": 0.1}
    if scheduled:
        values = {k: warmup(v) for k, v in values.items()}
    model = keras_regs.regularize_model(model, **values)
    return keras_regs.log_penalties(model, enabled=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=600)
    args = parser.parse_args()
    x, y = common.batch()
    models = common.compiled({"numbers": mlp(False), "schedules": mlp(True)})
    common.train_steps(
        "schedules/mlp4x1024",
        "Schedules, MLP 4x1024, batch 128",
        models,
        "numbers",
        x,
        y,
        args.rounds,
        "ratio_to_numbers",
    )


if __name__ == "__main__":
    main()
