"""Long runs: train steps with every penalty leak neither losses nor memory;
regularize / strip / preview cycles leave nothing behind on the user's layers.

CI runs 600 compiled steps, 200 eager ones and 40 cycles; `make long` runs 2,000
steps of each and 500 cycles (`KERAS_REGS_LONG_STEPS`, `KERAS_REGS_LONG_CYCLES`),
and docs/testing.md records that run.

Eager execution (`run_eagerly=True`) is where a regularizer that appends to a
list on each call, or keeps a tensor per step, shows: the number of
`model.losses` entries would grow, and so would the process's memory. Compiled
steps are where state threaded through the step (seed generators, held rates)
would pile up.

Eager steps run on TensorFlow (about 46 ms a step on 2 CPU cores). On JAX an
eager step of this model takes about 0.6 s, most of it Keras' eager LSTM (the
same model without keras_regs: 0.45 s), so 2,000 of them would take 20 minutes:
JAX runs the compiled steps only.
"""

import gc
import os
import tracemalloc

import keras
import numpy as np
import pytest

import keras_regs
from helpers import mlp, to_numpy
from zoo import every_class

X = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")

STEPS = int(os.environ.get("KERAS_REGS_LONG_STEPS", "600"))
# An eager step costs about 0.4 s of CPU: in CI (no KERAS_REGS_LONG_STEPS) the
# eager case runs a third of the steps; `make long` runs 2,000 of each.
EAGER_STEPS = STEPS if "KERAS_REGS_LONG_STEPS" in os.environ else STEPS // 3
CYCLES = int(os.environ.get("KERAS_REGS_LONG_CYCLES", "40"))


def resident_mb():
    """This process's resident memory, in MB (Linux: /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads /proc/self/status"
)
@pytest.mark.parametrize("eager", [True, False], ids=["eager", "compiled"])
def test_two_thousand_steps_keep_losses_and_memory_flat(eager):
    if eager and keras.backend.backend() == "jax":
        pytest.skip("eager JAX: 0.6 s a step, 20 minutes for 2,000 (docstring)")
    keras.utils.set_random_seed(0)
    model = every_class()  # every penalty and layer, through regularize_model
    model.compile(optimizer="adam", loss="mse", run_eagerly=eager)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    counts, losses = set(), []
    steps = EAGER_STEPS if eager else STEPS
    for step in range(steps):
        losses.append(model.train_on_batch(x, y))
        counts.add(len(model.losses))
        if step == steps // 10:  # after a warm-up
            start = resident_mb()
    growth = resident_mb() - start
    # 5 weight penalties (one Penalties per kernel: the LSTM's kernel and
    # recurrent kernel, two hidden Dense kernels, the output's), and after an
    # eager step the last call's activity terms: one Penalties on the LSTM's
    # output (hidden_l1, recurrent_norm, recurrent_state), one on each hidden
    # Dense, and the two Contractive terms. JAX's compiled (stateless) step
    # keeps its activity terms inside the traced function.
    jax_compiled = not eager and keras.backend.backend() == "jax"
    assert counts == {5 if jax_compiled else 10}
    assert growth < 50, f"resident memory grew by {growth:.1f} MB"
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def live_counts():
    gc.collect()
    kinds = {
        "inserted layers": (
            keras_regs.layers.GaussianNoise,
            keras_regs.layers.BernoulliDropout,
            keras_regs.layers.Contractive,
        ),
        "models": keras.Model,
        "tensors": keras.KerasTensor,
    }
    objects = gc.get_objects()
    return {
        # type(o), not isinstance: some objects (PyTorch's deprecated ones)
        # warn on `__class__`
        name: sum(issubclass(type(o), cls) for o in objects)
        for name, cls in kinds.items()
    }


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow"
    and "KERAS_REGS_LONG_CYCLES" not in os.environ,
    reason="graph surgery is the same on every backend: one backend pass in CI",
)
def test_regularize_strip_preview_cycles_leave_nothing_behind():
    """A cycle as a user writes it: regularize (noise, dropout, a contractive
    wrapper, penalties), the same again, preview another spec, strip. After a
    warm-up, the nodes on the user's layers, the live inserted layers, models
    and symbolic tensors, and the traced memory stay where they were."""
    original = mlp()
    model = original

    def cycle(model):
        spec = {"hidden_dropout": 0.3, "input_noise": 0.1, "weight_l2": 1e-3}
        model = keras_regs.regularize_model(model, contractive=0.01, **spec)
        model = keras_regs.regularize_model(model, contractive=0.01, **spec)
        keras_regs.preview(model, output_noise=0.2, print_fn=lambda *a, **k: None)
        return keras_regs.strip_regularization(model)

    def settled():
        gc.collect()
        keras_regs.strip_regularization(model)  # the next call tidies
        nodes = {layer.name: len(layer._inbound_nodes) for layer in original.layers}
        return nodes, live_counts()

    # (the first cycles fill Keras' and Python's caches: measured from the 10th,
    # the traced memory grows by under 0.5 kB a cycle, tapering off)
    warm_up = 10
    tracemalloc.start()
    try:
        for _ in range(warm_up):
            model = cycle(model)
        nodes, counts = settled()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(CYCLES - warm_up):
            model = cycle(model)
        after_nodes, after_counts = settled()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after_nodes == nodes
    assert nodes == {"x": 1, "dense_0": 2, "dense_1": 2, "out": 2}, nodes
    assert after_counts == counts
    growth = (after - before) / 1e6
    # before the fix: 13 MB traced after 200 cycles, ~65 kB a cycle
    assert growth < 1.0, f"traced memory grew by {growth:.2f} MB"
    np.testing.assert_array_equal(to_numpy(model(X)), to_numpy(original(X)))
