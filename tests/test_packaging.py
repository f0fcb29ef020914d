"""The release as a package index would get it: the sdist carries every file its
tests need and its tests run from it, the wheel's metadata is complete (licence
expression and file, Python floor, project URLs, classifiers, type-hint marker), and
the version is written once. (`make test` also installs the wheel into a fresh
environment: .ci/wheel-check.)"""

import email
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import keras
import pytest
from packaging.specifiers import SpecifierSet

import keras_regs
from helpers import TESTS_DIR

ROOT = os.path.dirname(TESTS_DIR)
NAME = f"keras_regs-{keras_regs.__version__}"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="packaging does not depend on the backend: checked once, in the "
        "TensorFlow pass",
    ),
]


def run(args, cwd, timeout=300):
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel, built as `make dist` builds them (here with the
    environment's own setuptools instead of an isolated download)."""
    out = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
    )
    return out / f"{NAME}.tar.gz", out / f"{NAME}-py3-none-any.whl"


def tracked_files():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout (run from an sdist): no list of tracked files")
    out = run(["git", "ls-files"], cwd=ROOT)
    return {line for line in out.splitlines() if line}


def test_the_sdist_holds_every_tracked_file(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}
    tracked = tracked_files()
    missing = sorted(tracked - members - {".gitignore"})
    assert not missing, f"tracked but not in the sdist: {missing}"
    # ... and nothing else: no untracked file of a working tree, only what
    # setuptools writes (PKG-INFO, setup.cfg, the egg-info).
    stray = sorted(
        m
        for m in members - tracked
        if m not in ("PKG-INFO", "setup.cfg")
        and not m.startswith("keras_regs.egg-info/")
    )
    assert not stray, f"in the sdist but not tracked: {stray}"


def test_the_sdists_tests_collect_and_run_from_it(dist, tmp_path):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    unpacked = tmp_path / NAME
    # From the unpacked folder, `import keras_regs` is the sdist's own copy.
    found = run(
        [sys.executable, "-c", "import keras_regs; print(keras_regs.__file__)"],
        cwd=unpacked,
    )
    assert found.strip().startswith(str(unpacked)), found
    # Every test module collects there (a collection error exits non-zero) ...
    out = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
        ],
        cwd=unpacked,
    )
    modules = {line.split("::")[0] for line in out.splitlines() if "::" in line}
    assert modules == {
        f"tests/{name}"
        for name in os.listdir(unpacked / "tests")
        if name.startswith("test_") and name.endswith(".py")
    }
    # ... and a test file runs there, with its support modules (conftest, helpers).
    out = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "tests/test_regularizers.py",
        ],
        cwd=unpacked,
    )
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-2000:]


def test_the_wheel_metadata_is_complete(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(archive.read(f"{NAME}.dist-info/METADATA"))
    assert "keras_regs/py.typed" in names
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Version"] == keras_regs.__version__
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values()), urls
    classifiers = metadata.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    # PEP 639: no licence classifier beside a licence expression.
    assert not [c for c in classifiers if c.startswith("License ::")]
    # Every Python version a classifier names is one the floor admits.
    floor = SpecifierSet(metadata["Requires-Python"])
    for c in classifiers:
        match = re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c)
        if match:
            assert match.group(1) in floor, (c, floor)


def test_requires_python_is_one_pip_can_honour():
    """The floor is no lower than the installed Keras' own: a Python below it could
    install no Keras that keras_regs supports (Keras >= 3.13 needs 3.11)."""
    ours = SpecifierSet(importlib.metadata.metadata("keras_regs")["Requires-Python"])
    keras_floor = importlib.metadata.metadata("keras")["Requires-Python"]
    lowest = re.search(r">=\s*(3\.\d+)", keras_floor).group(1)
    below = f"3.{int(lowest.split('.')[1]) - 1}"
    assert lowest in ours and below not in ours, (ours, keras_floor)


def test_the_version_is_written_once():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        project = f.read().split("[project]", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project
    assert not re.search(r"^version\s*=", project, flags=re.MULTILINE)
    assert importlib.metadata.version("keras_regs") == keras_regs.__version__
    written = []
    for folder, _, files in os.walk(os.path.join(ROOT, "keras_regs")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    if re.search(r"^__version__\s*=", f.read(), flags=re.MULTILINE):
                        written.append(name)
    assert written == ["__init__.py"]


def test_the_changelog_leads_with_this_version():
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        headings = re.findall(r"^## (\S+)", f.read(), flags=re.MULTILINE)
    assert headings[0] == keras_regs.__version__, headings[:2]
    assert len(set(headings)) == len(headings), headings
