"""The compiled build of the core (mypyc), imported in place of the sources when it matches them.

`make` compiles the correlation core, the adapters and the stream's per-record code with
mypyc into `build/native/` (`scripts/build_native.py`): one extension module per source module,
and a manifest with the SHA-256 of every source file of `correlators`, `schemas` and `streams`
(what the compiled code was type-checked against). Each compiled package's `__init__` calls
`use_compiled`. When a build exists for this interpreter and every one of those sources is byte
for byte the one it was built from, the build's directory goes ahead of the package's own on
its `__path__`, and its extension modules are imported instead of the `.py` files. Anything
else leaves the pure-Python sources in use: no build (no C compiler), a source edited since,
another interpreter, or `SOCNOC_PURE_PYTHON=1`.

All or nothing, decided once per process: compiled modules call each other directly, so a
compiled module must never meet the pure version of another module of its build. The choice is
made at import time because it decides which code the process runs; it is read from the
environment, not from `streams.settings`, for that reason.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DIR",
    "DIR_ENV",
    "LIBRARY_DIR",
    "MANIFEST",
    "PURE_ENV",
    "compiled_packages",
    "native_dir",
    "source_digests",
    "use_compiled",
]

MANIFEST = "manifest.json"
LIBRARY_DIR = "lib"  # the build's shared library, apart from the packages' modules
PURE_ENV = "SOCNOC_PURE_PYTHON"  # set (not "0" or empty): always run the sources
DIR_ENV = "SOCNOC_NATIVE_DIR"  # where the build is; default <project>/build/native
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # holds the packages
SOURCE_PACKAGES = ("correlators", "schemas", "streams")  # every .py file under these is part of a build's identity
DEFAULT_DIR = SOURCE_ROOT / "build" / "native"  # where `make` builds (`DIR_ENV` unset)

_active: list[str] = []  # packages whose compiled modules this process imports


def native_dir() -> Path:
    """The directory a build is read from."""
    given = os.environ.get(DIR_ENV)
    return Path(given) if given else DEFAULT_DIR


def source_digests(root: Path = SOURCE_ROOT) -> dict[str, str]:
    """SHA-256 of every source file of the compiled packages, by path relative to `root`."""
    digests: dict[str, str] = {}
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digests[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@cache
def _build() -> tuple[Path, dict[str, Any]] | None:
    """Where the build this process may use is, and its manifest; None: the sources run."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None
    root = native_dir()
    try:
        doc = json.loads((root / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not isinstance(doc, dict) or doc.get("suffix") != suffix:
        return None
    packages = doc.get("packages")
    if not isinstance(packages, dict) or not all(
        isinstance(p, str) and isinstance(m, list) and all(isinstance(x, str) for x in m) for p, m in packages.items()
    ):
        return None
    library = doc.get("library")
    if not isinstance(library, str):
        return None
    built = [root / package / (Path(name).stem + suffix) for package, names in packages.items() for name in names]
    if not built or not all(path.is_file() for path in [*built, root / LIBRARY_DIR / library]):
        return None  # a module missing would be imported from its source beside compiled ones
    try:
        if doc.get("sources") != source_digests():
            return None
    except OSError:
        return None
    return root, doc


def use_compiled(package: str, path: list[str]) -> bool:
    """Put the build's modules of `package` (a package `__init__` passes its `__path__`) first."""
    build = _build()
    if build is None or package not in build[1]["packages"]:
        return False
    root = build[0]
    path.insert(0, str(root / package))  # `schemas.adapters` apart from `schemas`: no nesting
    # The build's shared library, which its modules import by name, on sys.path in a folder of
    # its own: the packages' folders there would be namespace packages of the same names.
    library = str(root / LIBRARY_DIR)
    if library not in sys.path:
        sys.path.append(library)
    _active.append(package)
    return True


def compiled_packages() -> tuple[str, ...]:
    """The packages this process imports compiled (empty: pure Python)."""
    return tuple(_active)
