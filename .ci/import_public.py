"""Run by .ci/wheel-check inside a fresh environment holding only the wheel and its
base dependencies: every public name imports, from the installed package (not a
source tree), with its type-hint marker, its version, and no optional extra."""

import importlib.metadata
import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_regs  # noqa: E402

problems = []
package = os.path.dirname(keras_regs.__file__)
if "site-packages" not in package:
    problems.append(f"keras_regs imported from {package}, not an installed wheel")
if not os.path.isfile(os.path.join(package, "py.typed")):
    problems.append("py.typed is missing from the installed package")
installed = importlib.metadata.version("keras_regs")
if installed != keras_regs.__version__:
    problems.append(
        f"metadata version {installed} != __version__ {keras_regs.__version__}"
    )

names = 0
for name in keras_regs.__all__:
    value = getattr(keras_regs, name)
    names += 1
    for inner in (
        getattr(value, "__all__", []) if type(value).__name__ == "module" else []
    ):
        getattr(value, inner)
        names += 1

# Only the base dependencies: none of the extras came along.
for extra in ("keras_hub", "matplotlib", "sklearn", "mlxtend", "pytest", "jax"):
    if importlib.util.find_spec(extra) is not None:
        problems.append(f"{extra} is installed, but no base dependency needs it")

if problems:
    sys.exit("import_public: " + "; ".join(problems))
print(
    f"import_public: {names} public names of keras_regs {keras_regs.__version__} "
    f"import from {package} (Python {sys.version.split()[0]})"
)
