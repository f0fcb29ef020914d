"""Multi-worker training: every penalty counted once on a cluster of processes.

Two processes on this machine (127.0.0.1, ports chosen free at run time) form a
cluster: TensorFlow workers under `tf.distribute.MultiWorkerMirroredStrategy`
(TF_CONFIG; TensorFlow's gRPC server listens on every interface, without
authentication, while the test runs), JAX processes joined by
`keras.distribution.initialize` (the coordinator bound to 127.0.0.1) under
`keras.distribution.DataParallel` over the global device list
(tests/scripts/multiworker_tf.py and multiworker_jax.py). Each cluster's results
are compared with one process training on the global batch, computed here by
the same functions (to 1e-5): fit's losses and every per-term entry, a custom
loop adding `keras_regs.regularization_loss`, the final weights. A
`keras.callbacks.BackupAndRestore` run interrupted (the workers end) and resumed
by new processes on a new cluster equals the same cluster's uninterrupted run
bit for bit, weights, random state and optimizer state (SGD with momentum)
included; on JAX it also equals one process's uninterrupted run (to 1e-5), and
a model with nothing seeded is the same on both processes. The chief's
`.keras` file reloads here with every penalty, inserted layer and random state.

Each cluster is bounded by CLUSTER_TIMEOUT seconds, and every worker's process
group is killed whatever happens; a worker dies with the pytest process
(it sets PR_SET_PDEATHSIG on Linux, and a thread in it watches its parent:
MULTIWORKER_PARENT), so killing pytest leaves none running; a worker still
running after WATCHDOG seconds prints its threads' stacks into its log, which a
failure shows.
"""

import ast
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_regs
from helpers import TESTS_DIR

SCRIPTS = os.path.join(TESTS_DIR, "scripts")
WORKERS = 2
CLUSTER_TIMEOUT = 300  # seconds a cluster may run before it is killed
WATCHDOG = 240  # seconds after which a worker dumps its stacks and exits
TOLERANCE = 1e-5
# A worker that could not listen on its port (taken since it was chosen), as its
# raw log says it: the cluster is started again on new ports, once. (A JAX
# coordinator on a taken port: "Failed to add port to server", then "Failed to
# start RPC server", or at times a segmentation fault.)
PORT_TAKEN = re.compile(
    r"address already in use|failed to bind|could not start grpc server"
    r"|failed to add port|failed to start rpc server|segmentation fault",
    re.I,
)
# TensorFlow's and XLA's C++ informational and warning lines, left out of a
# failure message (errors, E and F, are kept).
NATIVE_LOG = re.compile(r"^[IW]\d{4} |^WARNING: All log messages before")


def scripts_module(name):
    """tests/scripts/`name`.py, imported (the test's one-process reference
    runs the workers' own functions)."""
    if SCRIPTS not in sys.path:
        sys.path.append(SCRIPTS)
    return __import__(name)


def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 now (held open together
    while chosen, so no two are the same); skips when none can be had."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    except OSError as error:
        pytest.skip(f"no free TCP port on 127.0.0.1 for a local cluster: {error}")
    finally:
        for s in sockets:
            s.close()


def tail(path, chars=3000):
    with open(path, errors="replace") as f:
        lines = [line for line in f if not NATIVE_LOG.match(line)]
    return "".join(lines)[-chars:]


class Cluster:
    """WORKERS Python processes started together on free ports, each in a
    process group of its own; `commands_for(ports)` gives each worker's argv
    and extra environment (None removes a variable).

    Used as a context manager: the workers run while the block does (the test
    computes its one-process reference meanwhile); `results()` waits for them,
    at most CLUSTER_TIMEOUT seconds from the start, and returns the JSON each
    wrote, in worker order; a cluster whose worker could not listen on its
    port (taken since it was chosen) is started again on new ports, once. On
    the way out every process group still running is killed, whatever
    happened.
    """

    def __init__(self, commands_for, name, tmp_path, ports=WORKERS):
        self.commands_for, self.name, self.tmp_path = commands_for, name, tmp_path
        self.ports = ports
        self.processes, self.logs, self.attempt = [], [], 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.kill()

    def start(self):
        logs = self.tmp_path / f"{self.name}-logs-{self.attempt}"
        logs.mkdir()
        self.processes, self.logs = [], []
        self.deadline = time.monotonic() + CLUSTER_TIMEOUT
        commands = self.commands_for(free_ports(self.ports))
        for i, (argv, extra) in enumerate(commands):
            env = {
                **os.environ,
                **extra,
                "MULTIWORKER_WATCHDOG": str(WATCHDOG),
                "MULTIWORKER_PARENT": str(os.getpid()),
            }
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            env = {key: value for key, value in env.items() if value is not None}
            self.logs.append(logs / f"worker-{i}.log")
            with open(self.logs[-1], "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, *argv],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()

    def problem(self):
        """None while the workers run or once all succeeded, else what went
        wrong."""
        codes = [process.poll() for process in self.processes]
        if any(code not in (None, 0) for code in codes):
            return f"a worker failed (exit codes {codes})"
        if None in codes and time.monotonic() > self.deadline:
            return f"the cluster ran past {CLUSTER_TIMEOUT} s (exit codes {codes})"
        return None

    def results(self):
        while True:
            problem = self.problem()
            if problem is not None:
                self.kill()
                logs = "\n".join(
                    f"--- worker {i} ({path}):\n{tail(path)}"
                    for i, path in enumerate(self.logs)
                )
                if self.attempt == 0 and any(
                    PORT_TAKEN.search(pathlib.Path(path).read_text(errors="replace"))
                    for path in self.logs
                ):
                    self.attempt += 1
                    self.start()
                    continue
                pytest.fail(f"{self.name}: {problem}\n{logs}")
            if all(process.poll() == 0 for process in self.processes):
                break
            time.sleep(0.2)
        results = []
        for i in range(WORKERS):
            with open(self.tmp_path / f"{self.name}-{i}.json") as f:
                results.append(json.load(f))
        return results


def assert_logs_match(actual, expected, keywords):
    """Every History entry of a cluster's fit equals one process's (1e-5), the
    entries are the expected ones, and they add up to `loss`."""
    assert sorted(actual) == sorted(expected) == sorted(["loss", *keywords])
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=TOLERANCE)
    parts = sum(np.array(actual[k]) for k in actual if k != "loss")
    np.testing.assert_allclose(parts, actual["loss"], rtol=TOLERANCE)


def assert_fit_and_loop_match(report, fit, loop):
    """A worker's `fit` (losses, every per-term entry, weights) and its custom
    loop adding regularization_loss equal one process on the global batch: each
    replica adds 1/replicas of every penalty, and the summed gradients count it
    once."""
    mw = scripts_module("multiworker_common")
    assert_logs_match(
        report["fit"]["history"],
        fit["history"],
        ["data_loss", "weight_l2", "weight_l1", "hidden_l1"],
    )
    assert mw.max_difference(report["fit"]["weights"], fit["weights"]) < TOLERANCE
    custom = report["loop"]
    np.testing.assert_allclose(custom["data"], loop["data"], rtol=TOLERANCE)
    np.testing.assert_allclose(custom["penalty"], loop["penalty"], rtol=TOLERANCE)
    assert mw.max_difference(custom["weights"], loop["weights"]) < TOLERANCE


def assert_resumed(report, logs, arrays, exact=True):
    """The logs of the interrupted run (its first INTERRUPT_AT epochs) and of
    the resumed one (the rest) are `logs`' epochs, and the resumed run ends
    with `arrays` (every weight, and the noise and dropout layers' random
    state): bit for bit, or with `exact=False` to TOLERANCE."""
    mw = scripts_module("multiworker_common")
    before, after = report["interrupted_logs"], report["resumed_logs"]
    assert sorted(before, key=int) == [str(e) for e in range(mw.INTERRUPT_AT)]
    assert sorted(after, key=int) == [
        str(e) for e in range(mw.INTERRUPT_AT, mw.RESUME_EPOCHS)
    ]
    assert len(report["resumed"]) == len(arrays)
    if exact:
        assert {**before, **after} == logs
        for a, b in zip(report["resumed"], arrays, strict=True):
            np.testing.assert_array_equal(a, b)
        return
    assert sorted({**before, **after}) == sorted(logs)
    for epoch, entries in {**before, **after}.items():
        assert sorted(entries) == sorted(logs[epoch])
        for key, value in entries.items():
            np.testing.assert_allclose(value, logs[epoch][key], rtol=TOLERANCE)
    assert mw.max_difference(report["resumed"], arrays) < TOLERANCE


def assert_saved_by_chief(tmp_path, chief, other):
    """Every worker saved (and got its own file); the only `.keras` file in the
    shared directory is the chief's, and the two records agree."""
    saved = tmp_path / "cluster.keras"
    assert sorted(tmp_path.rglob("*.keras")) == [saved]
    assert saved.stat().st_size == chief["saved_bytes"]
    assert other["saved_bytes"] > 0 and other["saved"] != str(saved)
    assert chief["record"] == other["record"]
    assert_reloads_as_saved(saved, chief["record"])


def assert_reloads_as_saved(path, record):
    """The chief's `.keras` file, loaded in this plain process (safe mode, no
    custom objects), gives back the cluster's model: config (penalties and
    inserted layers), weights and random state, predictions and penalties, all
    exactly; and it logs the penalty terms again."""
    mw = scripts_module("multiworker_common")
    reloaded = keras.saving.load_model(path)
    again = mw.saved_record(reloaded)
    assert again["config"] == record["config"]
    assert len(again["arrays"]) == len(record["arrays"])
    for a, b in zip(again["arrays"], record["arrays"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again["predictions"], record["predictions"])
    assert again["losses"] == record["losses"] and len(record["losses"]) == 5
    assert again["penalty"] == record["penalty"] > 0
    inserted = sorted(
        (type(layer).__name__, layer.inserted_by)
        for layer in reloaded.layers
        if isinstance(
            layer, keras_regs.layers.GaussianNoise | keras_regs.layers.BernoulliDropout
        )
    )
    assert inserted == [
        ("BernoulliDropout", "hidden_dropout"),
        ("BernoulliDropout", "hidden_dropout"),
        ("GaussianNoise", "input_noise"),
    ]
    x, y = mw.data()
    logs = reloaded.evaluate(
        x, y, batch_size=mw.GLOBAL_BATCH, verbose=0, return_dict=True
    )
    assert sorted(logs) == ["data_loss", "hidden_l1", "loss", "weight_l2"]


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute.MultiWorkerMirroredStrategy: the TensorFlow pass",
)
def test_tensorflow_two_workers_count_each_penalty_once(tmp_path):
    import tensorflow as tf

    script = os.path.join(SCRIPTS, "multiworker_tf.py")

    def phase(name):
        def commands_for(ports):
            workers = [f"127.0.0.1:{port}" for port in ports]
            return [
                (
                    [script, name, str(tmp_path / f"{name}-{i}.json"), str(tmp_path)],
                    {
                        "TF_CONFIG": json.dumps(
                            {
                                "cluster": {"worker": workers},
                                "task": {"type": "worker", "index": i},
                            }
                        ),
                        "CUDA_VISIBLE_DEVICES": "-1",
                    },
                )
                for i in range(WORKERS)
            ]

        return Cluster(commands_for, name, tmp_path)

    worker = scripts_module("multiworker_tf")
    mw = scripts_module("multiworker_common")
    with phase("train") as cluster:
        # One process on the global batch, while the cluster trains: the same
        # functions, under the default strategy.
        one = tf.distribute.get_strategy()
        fit = worker.fit_run(one)
        loop = worker.loop_run(one, keras_regs.regularization_loss)
        draws = np.array(worker.replica_draws(one))
        train = cluster.results()
    # the interrupted workers left their backups: epoch INTERRUPT_AT is next
    for i in range(WORKERS):
        with open(tmp_path / f"backup-{i}" / "training_metadata.json") as f:
            assert json.load(f)["epoch"] == mw.INTERRUPT_AT
    with phase("resume") as cluster:
        resume = cluster.results()

    for report in train + resume:
        assert report["workers"] == WORKERS and report["replicas"] == WORKERS
    for report in train:
        assert_fit_and_loop_match(report, fit, loop)
        # the raw sum(model.losses) counts every penalty once per replica
        raw = report["raw_loop"]
        np.testing.assert_allclose(
            raw["penalty"][0], WORKERS * loop["penalty"][0], rtol=TOLERANCE
        )
        assert mw.max_difference(raw["weights"], loop["weights"]) > 1e-3
    # each worker's rows of the first global batch: rows 0-7, then 8-15
    x, _ = mw.data()
    rows = mw.GLOBAL_BATCH // WORKERS
    assert loop["first_rows"] == x[: mw.GLOBAL_BATCH].tolist()
    for i, report in enumerate(train):
        assert report["index"] == i
        assert report["loop"]["first_rows"] == x[i * rows : (i + 1) * rows].tolist()

    for report, resumed in zip(train, resume, strict=True):
        assert_resumed(
            {**report, **resumed}, report["uninterrupted_logs"], report["uninterrupted"]
        )

    # Noise and dropout: every replica draws the same numbers for its rows (the
    # seed state is mirrored), what one process draws for the first rows, where
    # one process draws new ones for every row: a model with them is not
    # comparable number for number to one process.
    rows = mw.GLOBAL_BATCH // WORKERS
    cluster_draws = np.array(resume[0]["draws"])
    np.testing.assert_array_equal(cluster_draws[:, :rows], cluster_draws[:, rows:])
    np.testing.assert_array_equal(cluster_draws[:, :rows], draws[:, :rows])
    for layer in range(2):
        assert not np.array_equal(draws[layer, :rows], draws[layer, rows:])

    # Saving: the chief's file (the other worker's went to a deleted temp dir)
    assert_saved_by_chief(tmp_path, *resume)


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="jax.distributed and keras.distribution: the JAX pass",
)
def test_jax_two_processes_count_each_penalty_once(tmp_path):
    import jax

    if not hasattr(jax, "distributed") or not hasattr(
        jax.config, "jax_cpu_collectives_implementation"
    ):
        pytest.skip(f"jax {jax.__version__} has no cross-process CPU collectives")
    assert keras.distribution.distribution() is None

    script = os.path.join(SCRIPTS, "multiworker_jax.py")

    def phase(name):
        def commands_for(ports):
            coordinator = f"127.0.0.1:{ports[0]}"
            return [
                (
                    [
                        script,
                        name,
                        coordinator,
                        str(WORKERS),
                        str(i),
                        str(tmp_path / f"{name}-{i}.json"),
                        str(tmp_path),
                    ],
                    {
                        "JAX_PLATFORMS": "cpu",
                        "XLA_FLAGS": None,
                        # JAX's coordinator listens on [::] unless told
                        "JAX_COORDINATOR_BIND_ADDRESS": coordinator,
                    },
                )
                for i in range(WORKERS)
            ]

        return Cluster(commands_for, name, tmp_path, ports=1)

    worker = scripts_module("multiworker_jax")
    mw = scripts_module("multiworker_common")
    with phase("train") as running:
        # One process, one device, the global batch, while the cluster trains:
        # the same functions.
        fit = worker.fit_run()
        loop = worker.loop_run()
        model, random_logs = worker.random_fit()
        random_arrays = mw.arrays(model)
        train = running.results()
    for i in range(WORKERS):
        with open(tmp_path / f"backup-{i}" / "training_metadata.json") as f:
            assert json.load(f)["epoch"] == mw.INTERRUPT_AT
    with phase("resume") as running:
        resume = running.results()

    for report in train + resume:
        assert report["processes"] == WORKERS
        assert report["devices"] == WORKERS * report["local_devices"] > WORKERS
        assert report["data_axes"] == ["batch", None]
    for report in train:
        assert_fit_and_loop_match(report, fit, loop)

    # Nothing seeded: both processes built the same model from the seed
    # keras.distribution.initialize agreed on (else placing the weights fails),
    # and it trained the same on both.
    unseeded = [report["unseeded"] for report in train]
    assert unseeded[0] == unseeded[1]
    assert sorted(unseeded[0]["history"]) == [
        "data_loss",
        "hidden_l1",
        "loss",
        "weight_l2",
    ]
    initial = unseeded[0]["initial"]
    trained = unseeded[0]["weights"][: len(initial)]
    assert mw.max_difference(initial, trained) > 1e-3

    # BackupAndRestore: interrupted (the processes end), resumed by new
    # processes on a new cluster; bit for bit the cluster's uninterrupted run,
    # and, JAX drawing the noise and the masks for the global batch (sharded,
    # not per device), one process's uninterrupted run, noise and dropout
    # included.
    for report, resumed in zip(train, resume, strict=True):
        both = {**report, **resumed}
        assert_resumed(both, report["uninterrupted_logs"], report["uninterrupted"])
        assert_resumed(both, random_logs, random_arrays, exact=False)

    assert_saved_by_chief(tmp_path, *resume)


def test_docs_print_the_scripts_fit_patch():
    """docs/scaling-out.md prints `patch_keras_fit_for_multiworker` as
    tests/scripts/multiworker_tf.py defines it, character for character."""
    path = os.path.join(SCRIPTS, "multiworker_tf.py")
    with open(path) as f:
        source = f.read()
    (function,) = [
        node
        for node in ast.parse(source).body
        if getattr(node, "name", None) == "patch_keras_fit_for_multiworker"
    ]
    script = ast.get_source_segment(source, function)
    docs = pathlib.Path(TESTS_DIR).parent / "docs" / "scaling-out.md"
    blocks = re.findall(r"```python\n(.*?)```", docs.read_text(), re.S)
    printed = [
        block for block in blocks if "def patch_keras_fit_for_multiworker" in block
    ]
    assert len(printed) == 1
    assert script in printed[0]
