"""Per-term logs: the cost per compiled train step of logging each penalty.

An MLP (4 x 1024) with `regularize_model(weight_l2=1e-4, hidden_l1=1e-5)`, trained
with `train_on_batch` (jit-compiled): logs on (regularize_model's default: a
`data_loss`, `weight_l2` and `hidden_l1` entry) against logs off
(`log_penalties(model, enabled=False)`), the same weights, interleaved; and, for
scale, logs off with three cheap compiled metrics (three more logged values, as
the logs add). Goal: under 2% per step.

    python benchmarks/logs_step.py [--rounds 600]
"""

import argparse

import common
import keras

import keras_regs


def mlp():
    model = common.mlp4x1024()
    return keras_regs.regularize_model(model, weight_l2=1e-4, hidden_l1=1e-5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=600)
    args = parser.parse_args()
    x, y = common.batch()
    models = {"logs off": mlp(), "logs on": mlp()}
    keras_regs.log_penalties(models["logs off"], enabled=False)
    common.compiled(models)
    with_metrics = {"logs off + 3 metrics": mlp()}
    keras_regs.log_penalties(with_metrics["logs off + 3 metrics"], enabled=False)
    common.compiled(
        with_metrics,
        metrics=lambda: [
            keras.metrics.SparseCategoricalAccuracy(f"acc_{i}") for i in range(3)
        ],
    )
    models.update(with_metrics)
    logged = models["logs on"].train_on_batch(x, y, return_dict=True)
    assert {"data_loss", "weight_l2", "hidden_l1"} <= set(logged), logged
    common.train_steps(
        "logs/mlp4x1024",
        "Per-term logs, MLP 4x1024, batch 128",
        models,
        "logs off",
        x,
        y,
        args.rounds,
        "ratio_to_logs_off",
    )


if __name__ == "__main__":
    main()
