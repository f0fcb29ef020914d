"""Attaching to a built model, and inserting layers, on ResNet50 (weights=None).

- `regularize_model(model, weight_l2=1e-4)` vs the common workaround (set the layer
  attributes, `model_from_json(model.to_json())`, `set_weights`): time ratio (goal:
  at least 20x faster) and peak extra memory (goal: no copy of the weights, under 5%
  of their bytes).
- `regularize_model(model, hidden_dropout=0.1)` vs `keras.models.clone_model` of the
  same model (goal: at most 1.5x).

Each operation is slow (seconds), so this takes fewer rounds than the train-step
benchmarks; the count is printed and recorded.

    python benchmarks/attach.py [--rounds 7]
"""

import argparse
import threading
import time

import common
import keras

import keras_regs


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_extra_memory(operation):
    """Peak resident memory above the level before `operation`, sampled every 1 ms."""
    start = rss_bytes()
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        result = operation()
    finally:
        done.set()
        thread.join()
    return max(peak[0], rss_bytes()) - start, result


def workaround(model, strength):
    """What users do today: set attributes, rebuild from JSON, copy the weights."""
    for layer in model.layers:
        if hasattr(layer, "kernel_regularizer"):
            layer.kernel_regularizer = keras.regularizers.L2(strength)
    rebuilt = keras.models.model_from_json(model.to_json())
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    model = keras.applications.ResNet50(weights=None)
    weight_bytes = sum(v.numpy().nbytes for v in model.weights)
    strengths = iter([1e-4, 2e-4] * 1000)  # a real change every time

    attach = {
        "keras_regs.regularize_model": lambda: keras_regs.regularize_model(
            model, weight_l2=next(strengths)
        ),
        "workaround (attrs + JSON + set_weights)": lambda: workaround(model, 1e-4),
    }
    medians = common.interleaved(attach, rounds=args.rounds, warmup=1)
    common.print_table(
        "attach weight_l2 to ResNet50",
        medians,
        "workaround (attrs + JSON + set_weights)",
    )
    memory = {name: peak_extra_memory(run)[0] for name, run in attach.items()}
    for name, extra in memory.items():
        print(
            f"  peak extra memory, {name:<40} {extra / 2**20:8.1f} MiB "
            f"({extra / weight_bytes:.1%} of the weights' "
            f"{weight_bytes / 2**20:.0f} MiB)"
        )
    speedup = (
        medians["workaround (attrs + JSON + set_weights)"]
        / medians["keras_regs.regularize_model"]
    )
    common.record(
        "attach/resnet50",
        {
            "median_s": medians,
            "speedup_over_workaround": speedup,
            "peak_extra_bytes": memory,
            "weight_bytes": weight_bytes,
            "rounds": args.rounds,
        },
    )

    keras_regs.strip_regularization(model)
    insert = {
        "keras.models.clone_model": lambda: keras.models.clone_model(model),
        "regularize_model(hidden_dropout)": lambda: keras_regs.regularize_model(
            model, hidden_dropout=0.1
        ),
    }
    medians = common.interleaved(insert, rounds=args.rounds, warmup=1)
    common.print_table(
        "insert dropout into ResNet50", medians, "keras.models.clone_model"
    )
    common.record(
        "insert/resnet50",
        {
            "median_s": medians,
            "ratio_to_clone_model": common.ratios(medians, "keras.models.clone_model"),
            "rounds": args.rounds,
        },
    )


if __name__ == "__main__":
    main()
