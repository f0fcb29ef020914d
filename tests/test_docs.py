"""The docs site: it builds with --strict, and its API reference covers every
public name (each `::: path` resolves to the public object and gets an anchor),
shows each signature with its annotations and no private base class, and
documents every keyword of `regularize_model`. Every public signature is
annotated."""

import html
import importlib
import inspect
import os
import re
import subprocess
import sys
import typing

import keras
import pytest

import keras_regs
from helpers import TESTS_DIR
from keras_regs.model.spec import LAYER_KEYWORDS, OPTIONS, WRAP_KEYWORDS

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


def public_signatures():
    """`{dotted name: callable}`: every public function, and each public class's
    `__init__`, `__call__` and public methods and properties that keras_regs'
    own classes define (a private base's included, not Keras')."""
    found = {}
    for name, value in public_objects().items():
        if not isinstance(value, type):
            found[name] = value
            continue
        if issubclass(value, Exception):
            continue  # the error and warning classes take Python's arguments
        for klass in value.__mro__:
            if not klass.__module__.startswith("keras_regs"):
                continue
            for member, attribute in vars(klass).items():
                if member.startswith("_") and member not in ("__init__", "__call__"):
                    continue
                if isinstance(attribute, property):
                    found.setdefault(f"{name}.{member}", attribute.fget)
                    if attribute.fset is not None:
                        found.setdefault(f"{name}.{member}.setter", attribute.fset)
                    continue
                if isinstance(attribute, classmethod | staticmethod):
                    attribute = attribute.__func__
                own = getattr(attribute, "__qualname__", "").startswith(
                    klass.__qualname__ + "."
                )  # not a function of another module held as a class attribute
                if inspect.isfunction(attribute) and own:
                    found.setdefault(f"{name}.{member}", attribute)
    return found


def test_every_public_signature_is_annotated():
    """Every parameter and return value of every public signature has a type
    annotation, and the annotations resolve (`typing.get_type_hints`)."""
    missing = []
    for name, function in public_signatures().items():
        signature = inspect.signature(function)
        for parameter in signature.parameters.values():
            if parameter.name in ("self", "cls"):
                continue
            if parameter.annotation is inspect.Parameter.empty:
                missing.append(f"{name}({parameter.name})")
        if signature.return_annotation is inspect.Signature.empty:
            missing.append(f"{name} -> ?")
        if name == "keras_regs.plot_penalties":
            pytest.importorskip("matplotlib.axes")
            import matplotlib.axes

            typing.get_type_hints(function, localns={"matplotlib": matplotlib})
        else:
            typing.get_type_hints(function)
    assert not missing, f"not annotated: {missing}"
    assert "keras_regs.regularize_model" in public_signatures()
    assert "keras_regs.layers.GaussianNoise.__init__" in public_signatures()


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
    # use_directory_urls: false, so that the site works opened from disk
    with open(site / "reference.html") as f:
        page = f.read()
    paths = documented()
    for path in paths:
        assert f'id="{path}"' in page, path
    check_signatures(page)
    check_types(page)
    check_regularize_model(page)
    check_self_contained(site)


def check_self_contained(site):
    """Opened from disk with no network, every page links pages as files and
    loads nothing from another host (no unpkg.com shim, no Google Fonts), and the
    search index is inlined in a script (the offline plugin)."""
    # (404.html is the web server's page: absolute paths under site_url)
    pages = sorted(p for p in site.glob("*.html") if p.name != "404.html")
    assert len(pages) > 20
    for page in pages:
        with open(page) as f:
            markup = f.read()
        remote = re.findall(r'<script[^>]+src="(https?:[^"]+)"', markup) + [
            href
            for tag, href in re.findall(r'(<link[^>]+href="(https?:[^"]+)")', markup)
            if 'rel="canonical"' not in tag
        ]
        assert not remote, (page.name, remote)
        links = re.findall(r'<a[^>]+href="([^"#:]+)(?:#[^"]*)?"', markup)
        assert all(link.endswith(".html") for link in links if link), (page.name, links)
        assert 'src="javascripts/iframe-worker-shim.js"' in markup, page.name
    assert (site / "search" / "search_index.js").is_file()


def text(markup):
    """The text of some HTML, whitespace collapsed."""
    plain = html.unescape(re.sub(r"<[^>]+>", "", markup))
    return re.sub(r"\s+", " ", plain).replace("( ", "(").replace(", )", ")")


def section(page, path):
    """The HTML of one object's entry: from its heading to the next object's
    heading at the same level (its methods included)."""
    start = page.index(f'id="{path}"')
    level = page[page.rindex("<h", 0, start) : start][:3]  # "<h3" or "<h4"
    end = page.find(level + " id=", start)
    return page[start : end if end > 0 else len(page)]


def check_signatures(page):
    """The signatures show their annotations (classes with their __init__'s),
    and no private base class shows anywhere."""
    for path, expected in [
        ("keras_regs.WeightL2", "strength: float | LearningRateSchedule | None = 0.01"),
        ("keras_regs.WeightL2", 'reduction: Literal["sum", "mean"] = "sum"'),
        ("keras_regs.layers.BernoulliDropout", "seed: int | None = None"),
        ("keras_regs.layers.SpatialDropout2D", "rate: float | LearningRateSchedule"),
        ("keras_regs.regularize_model", "model: keras.Model"),
        ("keras_regs.regularize_model", ") -> keras.Model"),
        ("keras_regs.summary", "line_length: int | None = None"),
        ("keras_regs.regularizers.lookup", "keyword: str) -> type[Regularizer]"),
    ]:
        assert expected in text(section(page, path)), (path, expected)
    for private in ("SeededLayer", "_SpatialDropout", "SequencePenalty", "Bases:"):
        assert private not in page, private


def check_types(page):
    """Every row of every Parameters table has its Type cell filled, and
    `summary` returns in one row."""
    titles = re.findall(r'doc-section-title">([^<]+)<', page)
    assert "Parameters:" in titles and "Returns:" in titles
    title = r'doc-section-title">((?:Other )?Parameters):</span></p>'
    tables = re.findall(title + r"\s*<table>(.*?)</table>", page, flags=re.DOTALL)
    assert tables
    for _, table in tables:
        for row in re.findall(r'<tr class="doc-section-item">(.*?)</tr>', table, re.S):
            cells = re.findall(r"<td>(.*?)</td>", row, flags=re.DOTALL)
            assert text(cells[1]).strip(), f"no type: {text(cells[0])}"
    summary = section(page, "keras_regs.summary")
    returns = summary[summary.index('doc-section-title">Returns:') :]
    returns = returns[: returns.index("</table>")]
    assert returns.count('<tr class="doc-section-item">') == 1


def check_regularize_model(page):
    """Its entry documents every parameter of its signature and every keyword
    it accepts: the penalties', the noise and dropout layers', contractive."""
    entry = text(section(page, "keras_regs.regularize_model"))
    names = list(inspect.signature(keras_regs.regularize_model).parameters)
    names += [*OPTIONS, *LAYER_KEYWORDS, *WRAP_KEYWORDS]
    names += [  # keras_regs' own (a test may have registered a custom one)
        keyword
        for keyword, cls in keras_regs.regularizers.keywords().items()
        if cls.__module__.startswith("keras_regs.")
    ]
    names += ["pattern", "strength", "weight", "stddev", "rate", "noise_shape"]
    names += ["estimator", "samples"]
    missing = [name for name in names if not re.search(rf"\b{name}\b", entry)]
    assert not missing, f"not in regularize_model's reference: {missing}"
