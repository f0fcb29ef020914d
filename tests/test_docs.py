"""The docs site: it builds with --strict, and its API reference covers every
public name (each `::: path` resolves to the public object and gets an anchor)."""

import importlib
import os
import re
import subprocess
import sys

import keras
import pytest

import keras_regs
from helpers import TESTS_DIR

ROOT = os.path.dirname(TESTS_DIR)
DOCS = os.path.join(ROOT, "docs")
REFERENCE = os.path.join(DOCS, "reference.md")


def public_objects():
    """`{dotted name: object}` for every name in the packages' `__all__`."""
    found = {}
    for name in keras_regs.__all__:
        value = getattr(keras_regs, name)
        if type(value).__name__ == "module":
            for inner in value.__all__:
                found[f"keras_regs.{name}.{inner}"] = getattr(value, inner)
        else:
            found[f"keras_regs.{name}"] = value
    return found


def resolve(path):
    module, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def documented():
    with open(REFERENCE) as f:
        return re.findall(r"^::: (\S+)$", f.read(), flags=re.MULTILINE)


def test_every_public_name_is_in_the_api_reference():
    objects = [resolve(path) for path in documented()]
    missing = [
        name
        for name, value in public_objects().items()
        if not any(value is obj for obj in objects)
    ]
    assert not missing, f"not in docs/reference.md: {missing}"


def test_every_docs_page_is_in_the_site_navigation():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        config = f.read()
    pages = sorted(f for f in os.listdir(DOCS) if f.endswith(".md"))
    assert [p for p in pages if p not in config] == []


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the docs do not depend on the backend: built once, in the TensorFlow pass",
)
def test_the_site_builds_strictly_with_an_anchor_for_each_reference(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(site / "reference" / "index.html") as f:
        html = f.read()
    paths = documented()
    for path in paths:
        assert f'id="{path}"' in html, path
