"""Attaching to a built model, and inserting layers, on ResNet50 (weights=None).

- `regularize_model(model, weight_l2=1e-4)` vs the common workaround (set the layer
  attributes, `model_from_json(model.to_json())`, `set_weights`): time ratio (goal:
  at least 20x faster) and peak extra memory (goal: no copy of the weights, under 5%
  of their bytes).
- `regularize_model(model, hidden_dropout=0.1)` vs `keras.models.clone_model` of the
  same model (goal: at most 1.5x).
- A tiny KerasHub BERT (`BertBackbone`, 2 layers, hidden 64, built from arguments:
  nothing is downloaded): `regularize_model(model, weight_l2=1e-4,
  hidden_dropout=0.1)` vs `keras.models.clone_model` of the same model (the same
  goal: at most 1.5x), with `BertBackbone.from_config(model.get_config())` beside
  it. `regularize_model` changes a KerasHub model in place and `clone_model` reads
  only the model, so every call of every variant gets a fresh backbone, built the
  same way outside the timed span: each time is one first attach to an
  unregularized model. `clone_model` of a `BertBackbone` returns a plain
  Functional model (same graph, new layers from their configs), not a
  `BertBackbone`: it wraps its default `clone_function` before testing whether one
  was passed, so it never takes its `from_config` path for subclasses of
  Functional; `from_config` is the rebuild that keeps the class.

On ResNet50 each operation is slow (seconds), so this takes fewer rounds than the
train-step benchmarks; the BERT operations take milliseconds and take more rounds.
Both counts are printed and recorded.

    python benchmarks/attach.py [--rounds 7] [--bert-rounds 50]
"""

import argparse
import ctypes
import gc
import threading
import time

import common
import keras
import keras_hub

import keras_regs

MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_extra_memory(operation):
    """Peak resident memory above the level before `operation`, sampled every 1 ms.

    First a garbage collection, and glibc's `malloc_trim(0)` where there is one,
    which hands the freed pages back: so that the reading is the operation's own,
    not that of collecting what earlier calls left (on JAX, right after the
    workaround's rounds, regularize_model read about 20 MiB without it), and so
    that a copy cannot hide in pages an earlier call freed (after a collection
    alone, the workaround read 0 MiB on JAX).
    """
    gc.collect()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
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
    parser.add_argument("--bert-rounds", type=int, default=50)
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
    bert(args.bert_rounds)


def tiny_bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=1000,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=64,
    )


def bert(rounds):
    """regularize_model on a tiny BertBackbone vs clone_model and from_config."""
    model = tiny_bert()
    before = len(model.layers)
    result = keras_regs.regularize_model(model, weight_l2=1e-4, hidden_dropout=0.1)
    if result is not model or len(model.layers) <= before or not model.losses:
        raise RuntimeError(
            "regularize_model did not attach to the BertBackbone in place: "
            f"{len(model.layers) - before} layers added, {len(model.losses)} losses"
        )
    del model, result
    clone = "keras.models.clone_model (returns a plain Functional)"
    ours = "regularize_model(weight_l2, hidden_dropout)"
    variants = {
        clone: keras.models.clone_model,
        "BertBackbone.from_config(get_config())": lambda model: (
            keras_hub.models.BertBackbone.from_config(model.get_config())
        ),
        ours: lambda model: keras_regs.regularize_model(
            model, weight_l2=1e-4, hidden_dropout=0.1
        ),
    }
    medians = common.interleaved(variants, rounds=rounds, warmup=2, setup=tiny_bert)
    common.print_table(
        "weight_l2 + hidden_dropout on a tiny BertBackbone (fresh model per call)",
        medians,
        clone,
    )
    common.record(
        "insert/kerashub_bert_tiny",
        {
            "median_ms": {name: value * 1e3 for name, value in medians.items()},
            "ratio_to_clone_model": common.ratios(medians, clone),
            "rounds": rounds,
            "note": (
                "KerasHub BertBackbone(vocabulary_size=1000, num_layers=2, "
                "num_heads=2, hidden_dim=64, intermediate_dim=128, "
                "max_sequence_length=64), built from its arguments (no preset). "
                "Every call of every variant gets a fresh backbone built outside "
                "the timed span: each time is one first attach (regularize_model "
                "changes the model in place and returns it), one clone, one "
                "rebuild. clone_model returns a plain Functional model, not a "
                "BertBackbone; BertBackbone.from_config(get_config()) is the "
                "rebuild that keeps the class."
            ),
        },
    )


if __name__ == "__main__":
    main()
