"""Shared by the benchmarks: interleaved timing, medians, ratios, results.json.

Every benchmark times its variants side by side in one process: after a warm-up
(compilation excluded), each round runs every variant once, in turn (each round
starting one variant later), so that drift of the machine affects all of them
alike. It reports the median of the
rounds and ratios against the baseline variant, never bare seconds alone.
"""

import gc
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def interleaved(variants, rounds=30, warmup=5, setup=None, times_out=None):
    """`variants`: {name: callable}. Returns {name: median seconds per call}.

    `times_out` (a dict) receives every call's time, {name: [seconds, ...]},
    round by round (for ratios paired within a round).

    With `setup` (a callable), every call of a variant, warm-up included, gets its
    own fresh `setup()` as its argument, made outside the timed span (followed by
    a garbage collection, so that no call pays for an earlier round's garbage).
    """

    def run(name):
        if setup is None:
            start = time.perf_counter()
            variants[name]()
            return time.perf_counter() - start
        argument = setup()
        gc.collect()
        start = time.perf_counter()
        variants[name](argument)
        return time.perf_counter() - start

    for _ in range(warmup):
        for name in variants:
            run(name)
    times = {name: [] for name in variants}
    names = list(variants)
    for i in range(rounds):
        # Each round starts one variant later, so that no variant always runs
        # right after the same other one (whose caches it would inherit).
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(run(name))
    if times_out is not None:
        times_out.update(times)
    return {name: statistics.median(values) for name, values in times.items()}


def mlp4x1024():
    """The MLP several benchmarks share: 784 -> 4 x Dense(1024, relu) -> 10."""
    inputs = keras.Input((784,))
    x = inputs
    for _ in range(4):
        x = keras.layers.Dense(1024, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def batch(size=128):
    """A fixed batch for `mlp4x1024`: 784 normal features, 10 classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, 784)).astype("float32")
    return x, rng.integers(0, 10, size=size)


def compiled(models, metrics=None, jit_compile=True):
    """Compile every model alike: SGD, sparse cross-entropy, XLA (`jit_compile`);
    `metrics()`, if given, makes each model's compiled metrics."""
    for model in models.values():
        model.compile(
            optimizer=keras.optimizers.SGD(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=None if metrics is None else metrics(),
            jit_compile=jit_compile,
        )
    return models


def ratios(medians, baseline):
    return {name: value / medians[baseline] for name, value in medians.items()}


def machine():
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def record(name, result):
    """Store one benchmark's result (with its command and machine) in results.json."""
    data = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            data = json.load(f)
    key = f"{name}[{keras.backend.backend()}]"
    data[key] = {
        "command": "cd benchmarks && "
        + " ".join([f"KERAS_BACKEND={keras.backend.backend()}", "python", *sys.argv]),
        "machine": machine(),
        **result,
    }
    with open(RESULTS, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def print_table(title, medians, baseline):
    print(f"\n{title}  (median of interleaved rounds; ratio to {baseline!r})")
    for name, ratio in ratios(medians, baseline).items():
        print(f"  {name:<28} {medians[name] * 1e3:9.3f} ms   x{ratio:6.3f}")


def train_steps(name, title, models, baseline, x, y, rounds, ratio_key):
    """Time `train_on_batch` of each model (compiled, same weights as `baseline`),
    interleaved; print the table and record `median_ms`, `ratio_key` and rounds."""
    weights = models[baseline].get_weights()
    for model in models.values():
        model.set_weights(weights)
    steps = {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()}
    times = {}
    medians = interleaved(steps, rounds=rounds, times_out=times)
    print_table(title, medians, baseline)
    # Each variant's time over the baseline's in the same round, the median over
    # rounds: what a drift in the machine's speed (another process, a clock)
    # moves less than the ratio of medians.
    paired = {
        k: statistics.median(t / b for t, b in zip(v, times[baseline], strict=True))
        for k, v in times.items()
    }
    print(
        "  paired (median of per-round ratios): "
        + ", ".join(f"{k} x{v:.3f}" for k, v in paired.items() if k != baseline)
    )
    record(
        name,
        {
            "median_ms": {k: v * 1e3 for k, v in medians.items()},
            ratio_key: ratios(medians, baseline),
            "paired_" + ratio_key: paired,
            "rounds": rounds,
        },
    )
