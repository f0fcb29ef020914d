"""Every fenced code block of README.md and docs/*.md runs, or says why not.

The convention (docs/testing.md, "The docs' code blocks"):

- A block whose opening fence is preceded by `<!-- skip: <reason> -->` (blank
  lines may stand between the two, nothing else) is not run; the reason must not
  be empty. Shell commands, printed output, excerpts, downloads.
- Every other block must be ```python (or ~~~python), and runs. The blocks of one
  file run in order in one namespace, which starts with `import keras`,
  `import numpy as np` and `import keras_regs`, in a fresh Python process per file
  (a page that sets a dtype policy or a distribution cannot reach another page),
  with the TensorFlow backend, in a temporary directory.
- A keras_regs warning (`keras_regs.KerasRegsWarning`) is an error, unless the
  block is preceded by `<!-- warns: <reason> -->`: then it must give one.

A failure names the file, the block and the line of its fence, and the traceback
points at the Markdown file's own lines.
"""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import pytest

from helpers import TESTS_DIR

ROOT = os.path.dirname(TESTS_DIR)
PAGES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT)
    for path in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)
TIMEOUT = 300  # seconds per page; the slowest (kerashub.md) takes under one

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the docs' examples are backend-independent (blocks that are not say so "
    "and are marked): they run once, in the TensorFlow pass",
)

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip|warns)\s*:(?P<reason>.*?)-->\s*$")
_MARKER_LIKE = re.compile(r"^\s*<!--\s*(skip|warns)\b")


@dataclasses.dataclass
class Block:
    index: int  # 1-based, among the page's blocks
    line: int  # the line of the opening fence, 1-based
    language: str
    code: str
    skip: str | None = None  # the reason, for a block that is not run
    warns: str | None = None  # the reason, for a block that must warn


def parse(text):
    """The fenced blocks of a Markdown text, and the problems with its markers:
    `(blocks, problems)`, each problem a message naming its line."""
    lines = text.split("\n")
    blocks, problems = [], []
    marker = None  # (line, kind, reason) waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence and not (fence["fence"][0] == "`" and "`" in fence["info"]):
            char, size, indent = fence["fence"][0], len(fence["fence"]), fence["indent"]
            closing = re.compile(rf"^\s*{re.escape(char)}{{{size},}}\s*$")
            end = i + 1
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            body = [
                text_line[len(indent) :] if text_line.startswith(indent) else text_line
                for text_line in lines[i + 1 : end]
            ]
            block = Block(
                index=len(blocks) + 1,
                line=i + 1,
                language=(fence["info"].split() or [""])[0],
                code="\n".join(body) + "\n",
            )
            if marker is not None:
                setattr(block, marker[1], marker[2])
                marker = None
            blocks.append(block)
            i = end + 1
            continue
        if marker is not None and line.strip():
            problems.append(
                f"line {marker[0]}: a `<!-- {marker[1]}: ... -->` marker must come "
                "right before a code block (blank lines allowed)"
            )
            marker = None
        found = _MARKER.match(line)
        if found:
            reason = found["reason"].strip()
            if not reason:
                problems.append(
                    f"line {i + 1}: the {found['kind']} marker gives no reason"
                )
            marker = (i + 1, found["kind"], reason or "?")
        elif _MARKER_LIKE.search(line):
            problems.append(
                f"line {i + 1}: a marker is written `<!-- skip: <reason> -->` or "
                f"`<!-- warns: <reason> -->`, on a line of its own: {line.strip()!r}"
            )
        i += 1
    if marker is not None:
        problems.append(f"line {marker[0]}: a marker with no code block after it")
    for block in blocks:
        if block.skip is None and block.language != "python":
            problems.append(
                f"block {block.index} (line {block.line}) is "
                f"{'```' + block.language if block.language else 'an unlabeled block'}"
                ": make it ```python, or precede it with `<!-- skip: <reason> -->`"
            )
    return blocks, problems


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


# Runs in a fresh Python: argv[1] is a JSON file {"path", "imports", "warning",
# "blocks": [{"index", "line", "code", "warns"}]}. Each block is compiled under the
# page's name with its own line numbers, so a traceback points into the page.
_DRIVER = textwrap.dedent(
    """
    import importlib, json, sys, traceback, warnings

    with open(sys.argv[1]) as f:
        spec = json.load(f)
    namespace = {"__name__": "__main__"}
    exec(spec["imports"], namespace)
    module, _, name = spec["warning"].rpartition(".")
    category = getattr(importlib.import_module(module), name)
    warnings.filterwarnings("error", category=category)
    for block in spec["blocks"]:
        where = f"{spec['path']}: block {block['index']} (line {block['line']})"
        print(f"=== running {where}", file=sys.stderr, flush=True)
        source = "\\n" * block["line"] + block["code"]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.filterwarnings("error", category=category)
                if block["warns"]:
                    warnings.filterwarnings("always", category=category)
                exec(compile(source, spec["path"], "exec"), namespace)
            for warning in caught:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
            if block["warns"] and not any(
                issubclass(w.category, category) for w in caught
            ):
                raise AssertionError(
                    f"marked `warns` ({block['warns']}), but gave no {name}"
                )
        except BaseException:
            error_type, error, trace = sys.exc_info()
            traceback.print_exception(error_type, error, trace.tb_next)  # not ours
            print(f"=== FAILED {where}", file=sys.stderr, flush=True)
            sys.exit(1)
    """
)

PREAMBLE = "import keras\nimport numpy as np\nimport keras_regs\n"


def run_page(
    path,
    blocks,
    tmp_dir,
    imports=PREAMBLE,
    warning="keras_regs.KerasRegsWarning",
    timeout=TIMEOUT,
):
    """Run the python blocks of `blocks` that are not marked skip, in a fresh
    Python whose working directory is a new folder in `tmp_dir`, after `imports`,
    with `warning` (a dotted name) an error; fail naming the block that broke,
    with its traceback. Returns the finished process."""
    spec = {
        "path": path,
        "imports": imports,
        "warning": warning,
        "blocks": [
            {"index": b.index, "line": b.line, "code": b.code, "warns": b.warns}
            for b in blocks
            if b.skip is None and b.language == "python"
        ],
    }
    workdir = os.path.join(tmp_dir, "work")
    os.makedirs(workdir, exist_ok=True)
    spec_path = os.path.join(tmp_dir, "blocks.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(
            p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
        ),
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", _DRIVER, spec_path],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr or b""
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        running = re.findall(r"^=== running (.*)$", stderr, flags=re.MULTILINE)
        pytest.fail(
            f"{path}: timed out after {timeout} s in "
            f"{running[-1] if running else 'the imports'}",
            pytrace=False,
        )
    if result.returncode != 0:
        failed = re.findall(r"^=== (?:FAILED|running) (.*)$", result.stderr, re.M)
        where = failed[-1] if failed else f"{path}: the imports"
        pytest.fail(
            f"{where} failed:\n{result.stderr[-5000:]}\n"
            f"--- the page's last output:\n{result.stdout[-1500:]}",
            pytrace=False,
        )
    return result


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_python_or_marked(page):
    _, problems = parse(read(page))
    assert not problems, f"{page}:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page, tmp_path):
    blocks, _ = parse(read(page))
    if not any(b.skip is None and b.language == "python" for b in blocks):
        pytest.skip(f"{page} has no block to run")
    run_page(page, blocks, str(tmp_path))


# The runner itself, on small pages of plain Python (no imports: a fraction of a
# second each).

_PAGE = """\
# A page

<!-- skip: a shell command -->

```bash
pip install something
```

```python
a = 1
```

~~~python
b = a + 1
~~~

<!-- skip: output -->
```
b is 2
```

```python
c = b + 1
assert c == 4, c
```
"""


def test_parse_finds_the_blocks_their_lines_and_markers():
    blocks, problems = parse(_PAGE)
    assert problems == []
    assert [(b.index, b.line, b.language, b.skip) for b in blocks] == [
        (1, 5, "bash", "a shell command"),
        (2, 9, "python", None),
        (3, 13, "python", None),
        (4, 18, "", "output"),
        (5, 22, "python", None),
    ]
    assert blocks[2].code == "b = a + 1\n"


def test_parse_refuses_unmarked_blocks_and_bad_markers():
    text = (
        "```text\nout\n```\n\n"  # not python, no marker
        "<!-- skip: -->\n```bash\nls\n```\n"  # no reason
        "<!-- skip: orphan -->\nsome text\n\n"  # not before a block
        "<!-- skip this one -->\n```python\nx = 1\n```\n"  # malformed
    )
    _, problems = parse(text)
    assert len(problems) == 4, problems
    assert "block 1 (line 1) is ```text" in problems[-1]
    assert "line 5: the skip marker gives no reason" in problems[0]
    assert "line 9: a `<!-- skip: ... -->` marker must come" in problems[1]
    assert "line 12: a marker is written" in problems[2]


@pytest.mark.slow
def test_a_broken_block_fails_naming_the_page_the_block_and_the_line(tmp_path):
    blocks, _ = parse(_PAGE)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_page(
            "docs/page.md",
            blocks,
            str(tmp_path),
            imports="",
            warning="builtins.Warning",
        )
    message = str(failure.value)
    assert "docs/page.md: block 5 (line 22) failed" in message
    # The traceback points at the page's own line of the failing statement.
    assert 'File "docs/page.md", line 24' in message
    assert "AssertionError: 3" in message


@pytest.mark.slow
def test_a_warning_fails_unless_the_block_is_marked_and_gives_one(tmp_path):
    warn = "import warnings\nwarnings.warn('careful', RuntimeWarning)\n"
    page = f"```python\n{warn}```\n"
    with pytest.raises(pytest.fail.Exception, match="block 1 .line 1. failed"):
        run_page("w.md", parse(page)[0], str(tmp_path), "", "builtins.RuntimeWarning")
    marked = f"<!-- warns: it says careful -->\n```python\n{warn}```\n"
    run_page("w.md", parse(marked)[0], str(tmp_path), "", "builtins.RuntimeWarning")
    silent = "<!-- warns: it should -->\n```python\nx = 1\n```\n"
    with pytest.raises(pytest.fail.Exception, match="gave no RuntimeWarning"):
        run_page("w.md", parse(silent)[0], str(tmp_path), "", "builtins.RuntimeWarning")
