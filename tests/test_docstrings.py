"""Every example in a public docstring runs.

The docstrings are those of every public name (`keras_regs.__all__` and the
subpackages' `__all__`), of the public methods and properties their classes
define or inherit from keras_regs' own classes (`__init__` and `__call__`
included), and of the public packages themselves. In them:

- a fenced ```` ```python ```` block (or `~~~python`) is run with `exec`;
- the `>>>` examples (and a ```` ```pycon ```` block) are run with `doctest`,
  their printed output checked (`ELLIPSIS` and `NORMALIZE_WHITESPACE`);
- as on the Markdown pages (tests/test_doc_blocks.py), a fenced block, or a
  group of `>>>` lines, right after a line `<!-- skip: <reason> -->` (blank
  lines may stand between) is not run, and the reason is required; any other
  fenced block must be Python. After `<!-- warns: <reason> -->` an example must
  give a `keras_regs.KerasRegsWarning` (otherwise one is an error). The comments
  are invisible in the rendered reference. A `>>>` line with `# doctest: +SKIP`
  must follow a `>>> # <reason>` comment line.

Each example runs in a fresh namespace holding `keras`, `keras_regs` and `np`
(NumPy), after `keras.utils.set_random_seed(0)` (and in float32),
with keras_regs' own warnings turned into errors. All of them run in one fresh
Python process on the TensorFlow backend, in a temporary directory: examples
register classes (`register_keras_serializable`, penalty keywords, layer tables),
set warning filters and write files, none of which may leak into the test
process. They do not depend on the backend, so the other passes skip them.
"""

import contextlib
import dataclasses
import doctest
import inspect
import io
import json
import linecache
import os
import re
import subprocess
import sys
import textwrap
import traceback
import types
import warnings

import keras
import pytest

import keras_regs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip|warns)\s*:(?P<reason>.*?)-->\s*$")
MARKER_LIKE = re.compile(r"<!--\s*(skip|warns)\b")
PACKAGES = ("keras_regs", "keras_regs.layers", "keras_regs.regularizers")
DUNDERS = ("__init__", "__call__")  # the other `_` names are not public


@dataclasses.dataclass
class Example:
    name: str  # the object whose docstring holds it: "keras_regs.summary"
    kind: str  # "python" (a fenced block) or "doctest" (its `>>>` examples)
    code: str
    line: int  # where it starts in the (cleaned) docstring, from 1
    skip: str | None = None  # the reason it is not run
    warns: str | None = None  # the reason it gives a keras_regs warning

    @property
    def label(self):
        return f"{self.name}, docstring line {self.line} ({self.kind})"


def _own_members(cls):
    """`(name, function)` of the public methods and properties (their getter)
    of `cls` that keras_regs' classes define (not Keras' inherited ones)."""
    found, seen = [], set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("keras_regs"):
            continue
        for name, value in vars(klass).items():
            if name in seen or (name.startswith("_") and name not in DUNDERS):
                continue
            seen.add(name)
            if isinstance(value, property):
                value = value.fget
            elif isinstance(value, classmethod | staticmethod):
                value = value.__func__
            qualname = getattr(value, "__qualname__", "")
            own = qualname.startswith(klass.__qualname__ + ".")
            if callable(value) and own:  # not a module's function held by a class
                found.append((name, value))
    return found


def public_docstrings():
    """`{dotted name: docstring}` of every public object, member and package,
    each object once (`keras_regs.WeightL2` is `keras_regs.regularizers.WeightL2`),
    under its first public name."""
    docs, seen = {}, set()

    def add(name, value, doc):
        if doc and id(value) not in seen:
            seen.add(id(value))
            docs[name] = doc

    for package in PACKAGES:
        module = sys.modules[package]
        add(package, module, module.__doc__)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                continue  # a subpackage: one of PACKAGES
            path = f"{package}.{name}"
            add(path, value, value.__doc__)
            if isinstance(value, type):
                for member, function in _own_members(value):
                    add(f"{path}.{member}", function, function.__doc__)
    return docs


def examples_in(name, docstring):
    """The examples of one docstring: each fenced block, and its `>>>` examples
    as one doctest (the fenced and skipped blocks blanked out).

    Raises:
        ValueError: a marker without a reason, or not right before a block; a
            fenced block that is not Python and not skipped; an unclosed fence;
            a `+SKIP` without a reason.
    """
    lines = inspect.cleandoc(docstring).splitlines()
    found, rest, problems = [], list(lines), []
    marker = None  # (kind, reason, line) of a marker waiting for its block
    i = 0
    while i < len(lines):
        line, start = lines[i], i
        opening = FENCE.match(line)
        if opening:
            close = re.compile(rf"^\s*{re.escape(opening.group(1))}\s*$")
            end = next(
                (j for j in range(i + 1, len(lines)) if close.match(lines[j])), None
            )
            if end is None:
                problems.append(f"line {i + 1}: the fenced block is not closed")
                break
            language = opening.group(2).lower()
            kind = "doctest" if language == "pycon" else "python"
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            example = Example(name, kind, code, i + 2)
            rest[i : end + 1] = [""] * (end + 1 - i)
            i = end + 1
        elif line.strip().startswith(">>>") and marker is not None:
            # a marked group of `>>>` lines, up to a blank line
            end = next(
                (j for j in range(i, len(lines)) if not lines[j].strip()), len(lines)
            )
            example = Example(name, "doctest", "\n".join(lines[i:end]) + "\n", i + 1)
            rest[i:end] = [""] * (end - i)
            language, i = "pycon", end
        else:
            found_marker = MARKER.match(line)
            if found_marker:
                if marker is not None:
                    problems.append(f"line {marker[2]}: no block follows the marker")
                reason = found_marker.group("reason").strip()
                marker = (found_marker.group("kind"), reason, i + 1)
                if not reason:
                    problems.append(f"line {i + 1}: the marker gives no reason")
            elif MARKER_LIKE.search(line):
                problems.append(
                    f"line {i + 1}: a marker is written `<!-- skip: <reason> -->` "
                    f"or `<!-- warns: <reason> -->`, on a line of its own: {line!r}"
                )
            elif line.strip() and marker is not None:
                problems.append(f"line {marker[2]}: no block follows the marker")
                marker = None
            i += 1
            continue
        if marker is not None:
            setattr(example, marker[0], marker[1] or None)
            marker = None
        if language not in ("python", "py", "python3", "pycon") and not example.skip:
            problems.append(
                f"line {start + 1}: a ```{language} block: make it ```python, or "
                "precede it with `<!-- skip: <reason> -->`"
            )
        found.append(example)
    if marker is not None:
        problems.append(f"line {marker[2]}: no block follows the marker")
    text = "\n".join(rest)
    parsed = doctest.DocTestParser().get_examples(text, name)
    problems += _skip_problems(parsed, rest)
    if problems:
        raise ValueError(f"{name}'s docstring: " + "; ".join(problems))
    if parsed:
        found.append(Example(name, "doctest", text, parsed[0].lineno + 1))
    return found


def _skip_problems(parsed, lines):
    """A `+SKIP` example follows a `>>> # <reason>` comment line."""
    return [
        f"line {example.lineno + 1}: a `# doctest: +SKIP` example needs a "
        "`>>> # <reason>` line right before it"
        for example in parsed
        if example.options.get(doctest.SKIP)
        and not re.match(r"\s*>>>\s*#\s*\S", lines[example.lineno - 1])
    ]


def collect():
    examples = []
    for name, doc in public_docstrings().items():
        examples += examples_in(name, doc)
    return examples


def run_examples(examples):
    """Run each example (a dict of `Example`'s fields) in a fresh namespace:
    `[None or the error's text]`, one per example."""
    import numpy as np

    results = []
    for index, example in enumerate(examples):
        # not keras.backend.clear_session(): 0.7 s each on TensorFlow, for
        # auto-generated layer names, which the examples do not rely on
        keras.config.set_dtype_policy("float32")
        keras.utils.set_random_seed(0)
        namespace = {
            "__name__": "docstring_example",
            "keras": keras,
            "keras_regs": keras_regs,
            "np": np,
        }
        printed = io.StringIO()
        try:
            with (
                warnings.catch_warnings(record=bool(example.get("warns"))) as caught,
                contextlib.redirect_stdout(printed),
            ):
                if example.get("warns"):
                    warnings.simplefilter("always", keras_regs.KerasRegsWarning)
                else:
                    warnings.simplefilter("error", keras_regs.KerasRegsWarning)
                if example["kind"] == "python":
                    filename = f"<example {index}: {example['name']}>"
                    code = example["code"]
                    linecache.cache[filename] = (
                        len(code),
                        None,
                        code.splitlines(True),
                        filename,
                    )
                    exec(compile(code, filename, "exec"), namespace)
                else:
                    _run_doctest(example, namespace)
            if example.get("warns") and not any(
                issubclass(w.category, keras_regs.KerasRegsWarning) for w in caught
            ):
                raise AssertionError(
                    f"marked `warns` ({example['warns']}), but gave no "
                    "keras_regs.KerasRegsWarning"
                )
        except BaseException:  # noqa: B036 - reported, with its traceback
            results.append(traceback.format_exc())
        else:
            results.append(None)
    return results


def _run_doctest(example, namespace):
    test = doctest.DocTestParser().get_doctest(
        example["code"], namespace, example["name"], None, 0
    )
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    if runner.failures:
        raise AssertionError(report.getvalue())


def test_the_examples_are_found():
    examples = collect()
    names = {example.name for example in examples}
    for name in (
        "keras_regs.regularize_model",
        "keras_regs.summary",
        "keras_regs.Regularizer",
        "keras_regs.layers.Contractive",
        "keras_regs.regularizers.lookup",
        "keras_regs.regularizers.Penalties",
    ):
        assert name in names, name
    assert sum(e.kind == "doctest" for e in examples) >= 2
    assert all(example.code.strip() for example in examples)


def test_the_collector_reads_fences_doctests_and_markers():
    docstring = """Title.

    ```python
    x = 1
    ```

    <!-- skip: needs a GPU -->

    ```python
    x = 2
    ```

    <!-- skip: a shell command -->
    ```bash
    pip install keras_regs
    ```

    <!-- warns: a frozen layer -->
    ~~~python
    x = 3
    ~~~

    >>> 1 + 1
    2

    <!-- skip: downloads a preset -->
    >>> keras_hub.models.Bert.from_preset("bert")
    """
    found = examples_in("f", docstring)
    assert [(e.kind, e.line, e.skip, e.warns) for e in found] == [
        ("python", 4, None, None),
        ("python", 10, "needs a GPU", None),
        ("python", 15, "a shell command", None),
        ("python", 20, None, "a frozen layer"),
        ("doctest", 27, "downloads a preset", None),
        ("doctest", 23, None, None),
    ]
    assert found[0].code == "x = 1\n"
    assert "from_preset" not in found[5].code and ">>> 1 + 1" in found[5].code
    for problem, wrong in [
        ("gives no reason", "<!-- skip: -->\n```python\nx = 1\n```\n"),
        ("no block follows", "<!-- skip: orphan -->\nsome text\n"),
        ("on a line of its own", "<!-- skip this -->\n```python\nx = 1\n```\n"),
        ("make it ```python", "```bash\nls\n```\n"),
        ("not closed", "```python\nx = 1\n"),
        ("SKIP", ">>> 1 + 1  # doctest: +SKIP\n3\n"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            examples_in("f", "Title.\n\n" + wrong)
    reasoned = ">>> # slow\n>>> 1 + 1  # doctest: +SKIP\n3\n"
    assert [e.kind for e in examples_in("f", "Title.\n\n" + reasoned)] == ["doctest"]


def test_a_broken_example_fails():
    """The runner reports an exception, a wrong doctest output, a keras_regs
    warning, and an example marked `warns` that gives none; a good example, and
    a marked one that warns, report nothing."""
    examples = [
        {"name": "good", "kind": "python", "code": "y = keras_regs.WeightL2(0.1)\n"},
        {"name": "raises", "kind": "python", "code": "1 / 0\n"},
        {"name": "output", "kind": "doctest", "code": ">>> 1 + 1\n3\n"},
    ]
    warn = "import warnings\nwarnings.warn('x', keras_regs.KerasRegsWarning)\n"
    examples += [
        {"name": "warns", "kind": "python", "code": warn},
        {"name": "marked", "kind": "python", "code": warn, "warns": "it does"},
        {"name": "silent", "kind": "python", "code": "x = 1\n", "warns": "it does"},
    ]
    good, raises, output, warns, marked, silent = run_examples(examples)
    assert good is None and marked is None
    assert "ZeroDivisionError" in raises and "1 / 0" in raises
    assert "Expected:" in output and "Got:" in output
    assert "KerasRegsWarning" in warns
    assert "gave no keras_regs.KerasRegsWarning" in silent


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the docstring examples do not depend on the backend: run once, in "
    "the TensorFlow pass",
)
def test_every_docstring_example_runs(tmp_path):
    examples = collect()
    runnable = [dataclasses.asdict(e) for e in examples if e.skip is None]
    source, report = tmp_path / "examples.json", tmp_path / "results.json"
    source.write_text(json.dumps(runnable))
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(
            [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(source), str(report)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    errors = json.loads(report.read_text())
    assert len(errors) == len(runnable) > 0
    failed = [
        f"{Example(**example).label}:\n{error}"
        for example, error in zip(runnable, errors, strict=True)
        if error is not None
    ]
    assert not failed, "\n\n".join(failed)


if __name__ == "__main__":  # the fresh process of the test above
    with open(sys.argv[1]) as f:
        _examples = json.load(f)
    with open(sys.argv[2], "w") as f:
        json.dump(run_examples(_examples), f)
