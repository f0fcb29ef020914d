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
- The code blocks a reader sees are the fenced blocks found: the page is rendered
  as on the site (Python-Markdown with mkdocs.yml's extensions) or, for README.md,
  as CommonMark (GitHub, PyPI). An indented code block (shown, never run) and a
  fenced block inside an HTML comment (run, never shown) fail.
- A `try` with an `except` has an `else:` (that raises), so a block showing an
  error fails once the error is gone.

A failure names the file, the block and the line of its fence, and the traceback
points at the Markdown file's own lines.
"""

import ast
import dataclasses
import glob
import html
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import markdown
import pytest
import yaml
from markdown_it import MarkdownIt

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


# What a reader sees. A Markdown page shows other code blocks than the fenced ones
# the parser above finds: an indented one (four spaces, no fence) shows as code and
# would not run, a fenced one inside an HTML comment runs but nobody sees it. So the
# page is also rendered as its readers get it, and the code blocks shown must be
# exactly the fenced blocks found: docs/*.md by Python-Markdown with the extensions
# of mkdocs.yml (as mkdocs builds the site: an admonition's indented body is not
# code), README.md by a CommonMark parser (as GitHub and PyPI show it).


def _mkdocs_markdown():
    with open(os.path.join(ROOT, "mkdocs.yml")) as f:
        entries = yaml.safe_load(f)["markdown_extensions"]
    names, configs = [], {}
    for entry in entries:
        if isinstance(entry, dict):
            ((name, config),) = entry.items()
            configs[name] = config or {}
        else:
            name = entry
        names.append(name)
    return markdown.Markdown(extensions=names, extension_configs=configs)


_PRE = re.compile(r"<pre\b[^>]*>(.*?)</pre>", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def shown_code(text, commonmark=False):
    """The code blocks a reader sees on the rendered page, in order: a list of
    `(code, line)`, `line` (of the block's first line, 1-based) None where the
    renderer does not tell."""
    if commonmark:
        tokens = MarkdownIt("commonmark").enable("table").parse(text)
        return [
            (token.content, token.map[0] + 1 + (token.type == "fence"))
            for token in tokens
            if token.type in ("fence", "code_block")
        ]
    page = _mkdocs_markdown().convert(text)
    visible = _HTML_COMMENT.sub("", page)
    return [
        (html.unescape(re.sub(r"<[^>]+>", "", code)), None)
        for code in _PRE.findall(visible)
    ]


def _same_code(a, b):
    def lines(code):
        return [line.rstrip() for line in code.strip("\n").split("\n")]

    return lines(a) == lines(b)


def _line_of(text, code):
    first = next((line for line in code.split("\n") if line.strip()), "")
    for number, line in enumerate(text.split("\n"), 1):
        if first and line.strip() == first.strip() and line.startswith("    "):
            return number
    return "?"


def render_problems(text, blocks, commonmark=False):
    """The differences between the fenced `blocks` of `text` and the code blocks
    its readers see (`shown_code`): a list of messages naming their lines."""
    problems, pending = [], list(blocks)
    for code, line in shown_code(text, commonmark):
        found = next(
            (k for k, block in enumerate(pending) if _same_code(block.code, code)),
            None,
        )
        if found is None:
            problems.append(
                f"line {line or _line_of(text, code)}: an indented code block "
                "(four spaces, no fence) shows as code but never runs: fence it "
                "(```python, or another language after `<!-- skip: <reason> -->`), "
                "or indent it less"
            )
            continue
        hidden, pending = pending[:found], pending[found + 1 :]
        problems += [_hidden(block) for block in hidden]
    problems += [_hidden(block) for block in pending]
    return problems


def _hidden(block):
    return (
        f"block {block.index} (line {block.line}) is not shown on the rendered "
        "page (inside an HTML comment `<!-- ... -->`?): readers never see it, so "
        "it does not belong in the docs' tests either; show it or delete it"
    )


def catch_problems(blocks):
    """A block that catches an exception to show it must fail when none comes: a
    `try` with an `except` needs an `else:` (that raises), or the block would
    pass just the same once the error it shows is gone."""
    problems = []
    for block in blocks:
        if block.skip is not None or block.language != "python":
            continue
        try:
            tree = ast.parse(block.code)
        except SyntaxError:
            continue  # running the block reports it
        for node in ast.walk(tree):
            if isinstance(node, ast.Try | ast.TryStar) and node.handlers:
                if not node.orelse:
                    problems.append(
                        f"line {block.line + node.lineno}: a `try` that catches an "
                        "error passes when none is raised: add `else: raise "
                        "AssertionError(...)`"
                    )
    return problems


def page_problems(page, text):
    """All the problems of a page: its markers, its unmarked blocks, the code
    blocks its readers see that are not its fenced blocks (or the reverse), and
    the `try` blocks that cannot fail."""
    blocks, problems = parse(text)
    problems += render_problems(text, blocks, commonmark=page == "README.md")
    return problems + catch_problems(blocks)


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
def test_every_block_is_python_or_marked_and_shown(page):
    problems = page_problems(page, read(page))
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


# A page shows what its renderer makes of it: on the docs site (Python-Markdown with
# mkdocs.yml's extensions) and on GitHub and PyPI (CommonMark, for README.md).

_SHOWN_PAGE = """\
# A page

Some text.

!!! note
    An admonition's indented body is text, not code.

- A list item

    with a paragraph indented under it.

```python
a = 1
```

1. A step:

    ```python
    b = a + 1
    ```
"""


@pytest.mark.parametrize("commonmark", [False, True], ids=["mkdocs", "commonmark"])
def test_the_fenced_blocks_are_the_code_a_reader_sees(commonmark):
    blocks, problems = parse(_SHOWN_PAGE)
    assert problems == [] and len(blocks) == 2
    if commonmark:  # CommonMark knows no admonitions: GitHub shows that as code
        page = _SHOWN_PAGE.replace("!!! note\n    An", "> An")
    else:
        page = _SHOWN_PAGE
    assert render_problems(page, blocks, commonmark) == []


@pytest.mark.parametrize("commonmark", [False, True], ids=["mkdocs", "commonmark"])
def test_an_indented_code_block_is_refused(commonmark):
    page = "# A page\n\nRun this:\n\n    x = 1\n    y = 2\n\n```python\nz = 3\n```\n"
    problems = page_problems("README.md" if commonmark else "docs/p.md", page)
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 5: an indented code block"), problems


@pytest.mark.parametrize("commonmark", [False, True], ids=["mkdocs", "commonmark"])
def test_a_block_inside_an_html_comment_is_refused(commonmark):
    page = (
        "# A page\n\n<!--\nHidden:\n\n```python\nassert False\n```\n-->\n\n"
        "```python\nz = 3\n```\n"
    )
    problems = page_problems("README.md" if commonmark else "docs/p.md", page)
    assert problems == [
        "block 1 (line 6) is not shown on the rendered page (inside an HTML comment "
        "`<!-- ... -->`?): readers never see it, so it does not belong in the docs' "
        "tests either; show it or delete it"
    ]


def test_a_try_that_cannot_fail_is_refused():
    shows = "try:\n    int('x')\nexcept ValueError as error:\n    print(error)\n"
    page = f"# A page\n\n```python\nimport math\n{shows}```\n"
    assert page_problems("docs/p.md", page) == [
        "line 5: a `try` that catches an error passes when none is raised: add "
        "`else: raise AssertionError(...)`"
    ]
    checked = shows + "else:\n    raise AssertionError('no error')\n"
    assert page_problems("docs/p.md", f"```python\n{checked}```\n") == []
    # a skipped block is not run, so not checked
    assert (
        page_problems("docs/p.md", f"<!-- skip: x -->\n```python\n{shows}```\n") == []
    )
