"""Check the public surface: the README's ``mlflow_green`` names, ``__all__``, the entry points.

Run from the repository root: ``.venv/bin/python scripts/check_public_api.py``. It imports

* every ``mlflow_green.<name>`` (dotted paths too) and every name of a
  ``from mlflow_green[...] import ...`` / ``import mlflow_green[...]`` in README.md: each must
  resolve, as an attribute of ``mlflow_green`` or as a module and attributes under it;
* every name of ``mlflow_green.__all__``;
* every entry point of setup.cfg's ``[options.entry_points]`` (``name = module:attr``);

and compares the installed metadata's entry points of each mlflow-green distribution that
Python can see with setup.cfg (a stale ``pip install -e .`` shows here). Prints what it
checked; exits 1 with the list of failures.
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.metadata
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mlflow_green"
DISTRIBUTION = "mlflow-green"

# ``mlflow_green.x.y`` in prose or code, not inside a longer name or a path.
_DOTTED = re.compile(r"(?<![\w./-])mlflow_green((?:\.[A-Za-z_]\w*)+)")
_FROM_IMPORT = re.compile(
    r"^\s*from\s+(mlflow_green(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#]+)", re.MULTILINE
)
_IMPORT = re.compile(r"^\s*import\s+([^\n#]+)", re.MULTILINE)
# ``mlflow_green.callbacks.keras`` imports Keras, which reads its backend at its first import;
# the development environment has torch, not TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")


def readme_names(text: str) -> list[str]:
    """The dotted ``mlflow_green`` names README text uses, in order of first use."""
    names = ["mlflow_green" + match.group(1) for match in _DOTTED.finditer(text)]
    for match in _FROM_IMPORT.finditer(text):
        for item in match.group(2).strip("()").split(","):
            name = item.split(" as ")[0].strip()
            if name and name != "*":
                names.append(f"{match.group(1)}.{name}")
    for match in _IMPORT.finditer(text):
        for item in match.group(1).split(","):
            name = item.split(" as ")[0].strip()
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                names.append(name)
    return list(dict.fromkeys(names))


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" moves on; a module that fails inside is an error.
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"no module {parts[0]!r}")


def setup_cfg_entry_points(path: Path) -> set[tuple[str, str, str]]:
    """``(group, name, "module:attr")`` for every entry point declared in setup.cfg."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    parser.read(path, encoding="utf-8")
    if not parser.has_section("options.entry_points"):
        return set()
    declared = set()
    for group, block in parser.items("options.entry_points"):
        for line in block.splitlines():
            if line.strip():
                name, _, value = line.partition("=")
                declared.add((group, name.strip(), value.strip()))
    return declared


def load_entry_point(value: str) -> object:
    """The object an entry point value ``module:attr [extras]`` names."""
    module_name, _, attrs = value.split("[")[0].strip().partition(":")
    obj: object = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def installed_entry_points() -> list[tuple[str, set[tuple[str, str, str]]]]:
    """For each visible mlflow-green distribution: where its metadata lives, its entry points."""
    found = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").replace("_", "-").lower()
        if name == DISTRIBUTION:
            where = str(getattr(dist, "_path", "?"))
            found.append((where, {(ep.group, ep.name, ep.value) for ep in dist.entry_points}))
    return found


def main(argv: list[str] | None = None) -> int:
    """Run every check; print each; exit status 1 when any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=REPO, help="folder with README.md and setup.cfg"
    )
    args = parser.parse_args(argv)
    # The checkout's package, whichever copy is installed (as ``python -c`` from the root does).
    sys.path.insert(0, str(REPO))
    failures: list[str] = []

    def check(label: str, dotted: str, load: object) -> None:
        try:
            load(dotted)  # type: ignore[operator]
        except Exception as exc:  # any failure to resolve is what this script reports
            failures.append(f"{label}: {dotted}: {type(exc).__name__}: {exc}")
            print(f"  FAIL {dotted}: {type(exc).__name__}: {exc}")
        else:
            print(f"  ok   {dotted}")

    readme = args.root / "README.md"
    names = readme_names(readme.read_text(encoding="utf-8"))
    print(f"README names ({readme}): {len(names)}")
    for dotted in names:
        check("README", dotted, resolve)

    package = importlib.import_module(PACKAGE)
    exported = list(getattr(package, "__all__", []))
    print(f"{PACKAGE}.__all__: {len(exported)}")
    if not exported:
        failures.append(f"{PACKAGE}.__all__ is missing or empty")
    for name in exported:
        check("__all__", f"{PACKAGE}.{name}", resolve)

    setup_cfg = args.root / "setup.cfg"
    declared = setup_cfg_entry_points(setup_cfg)
    print(f"entry points ({setup_cfg}): {len(declared)}")
    for group, name, value in sorted(declared):
        print(f"  [{group}] {name}")
        check(f"entry point [{group}] {name}", value, load_entry_point)

    installed = installed_entry_points()
    if not installed:
        print(f"installed metadata: {DISTRIBUTION} is not installed, not compared")
    for where, entry_points in installed:
        missing, extra = declared - entry_points, entry_points - declared
        verdict = "agrees" if not missing and not extra else "DIFFERS"
        print(f"installed metadata ({where}): {len(entry_points)} entry points, {verdict}")
        for group, name, value in sorted(missing):
            failures.append(f"in setup.cfg, not in {where}: [{group}] {name} = {value}")
        for group, name, value in sorted(extra):
            failures.append(f"in {where}, not in setup.cfg: [{group}] {name} = {value}")
        if missing or extra:
            failures.append(f"(reinstall: .venv/bin/python -m pip install -e . to refresh {where})")

    if failures:
        print(f"\nFAILED ({len(failures)}):")
        print("\n".join(f"  {line}" for line in failures))
        return 1
    print("\nall public names and entry points resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
