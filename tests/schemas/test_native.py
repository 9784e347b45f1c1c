"""The compiled core (schemas/native.py, scripts/build_native.py).

A build is used only while it matches its sources; it decides exactly as the sources do. These
tests run the checks in fresh processes: a process decides once, at its first import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from schemas.native import DIR_ENV, MANIFEST, PURE_ENV, SOURCE_ROOT, source_digests

BUILD = SOURCE_ROOT / "build" / "native"
ALL = ["correlators", "schemas", "schemas.adapters", "streams"]  # the packages with compiled modules
PROBE = (
    "import json, correlators.engine, schemas.adapters.aitads, schemas.severity, streams.decoder, schemas.native as n;"
    "print(json.dumps([sorted(n.compiled_packages()), correlators.engine.__file__]))"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PURE_ENV, DIR_ENV)}
    return {**env, **extra}


def probe(cwd: Path = SOURCE_ROOT, **extra: str) -> tuple[list[str], str]:
    """The packages a fresh process imports compiled, and the file its engine came from."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=_env(**extra), cwd=cwd, capture_output=True, text=True, check=True
    )
    packages, engine = json.loads(done.stdout)
    return packages, engine


def _build_native() -> ModuleType:
    sys.path.insert(0, str(SOURCE_ROOT / "scripts"))
    try:
        import build_native
    finally:
        sys.path.pop(0)
    return build_native


def _compiler() -> bool:
    return _build_native().compiler() is not None


def needs_build() -> dict[str, Any]:
    """This checkout's build; fails (not skips) where a C compiler exists and none matches."""
    if not _compiler():
        pytest.skip("no C compiler: socnoc runs as pure Python here")
    try:
        manifest: dict[str, Any] = json.loads((BUILD / MANIFEST).read_bytes())
    except OSError:
        pytest.fail(f"no compiled build in {BUILD}: run `make native` (make test does)")
    if manifest.get("sources") != source_digests():
        pytest.fail(f"the build in {BUILD} is older than the sources: run `make native` (make test does)")
    return manifest


def test_this_checkout_runs_its_compiled_build() -> None:
    manifest = needs_build()
    packages, engine = probe()
    assert packages == ALL == sorted(manifest["packages"])
    assert Path(engine).parent == BUILD / "correlators"
    assert "engine.py" in manifest["packages"]["correlators"]


def test_the_build_is_found_from_any_directory(tmp_path: Path) -> None:
    """Outside the checkout the packages come from the installation, not the current directory
    (once, the build's folder on sys.path made `correlators` a namespace package there)."""
    needs_build()
    packages, engine = probe(cwd=tmp_path)
    assert packages == ALL
    assert Path(engine).parent == BUILD / "correlators"


def test_the_sources_run_when_asked() -> None:
    packages, engine = probe(**{PURE_ENV: "1"})
    assert packages == []
    assert Path(engine) == SOURCE_ROOT / "correlators" / "engine.py"


def _stale(doc: dict[str, Any]) -> None:
    doc["sources"]["correlators/engine.py"] = "0" * 64


def _another_python(doc: dict[str, Any]) -> None:
    doc["suffix"] = ".cpython-310-x86_64-linux-gnu.so"


def _bad_packages(doc: dict[str, Any]) -> None:
    doc["packages"] = 5


def _bad_module_list(doc: dict[str, Any]) -> None:
    doc["packages"]["correlators"] = [None]


def _module_missing(doc: dict[str, Any]) -> None:
    doc["packages"]["correlators"].append("nowhere.py")


def _library_missing(doc: dict[str, Any]) -> None:
    doc["library"] = "nowhere__mypyc.so"


@pytest.mark.parametrize(
    "spoil",
    [_stale, _another_python, _bad_packages, _bad_module_list, _module_missing, _library_missing],
    ids=[
        "a source edited",
        "another interpreter",
        "packages not an object",
        "a module not a name",
        "a module missing",
        "the library missing",
    ],
)
def test_a_build_that_does_not_match_is_not_used(tmp_path: Path, spoil: Callable[[dict[str, Any]], None]) -> None:
    needs_build()
    copy = tmp_path / "native"
    shutil.copytree(BUILD, copy)
    assert probe(**{DIR_ENV: str(copy)})[0] == ALL  # the copy works
    doc = json.loads((copy / MANIFEST).read_bytes())
    spoil(doc)
    (copy / MANIFEST).write_text(json.dumps(doc))
    packages, engine = probe(**{DIR_ENV: str(copy)})
    assert packages == [] and Path(engine) == SOURCE_ROOT / "correlators" / "engine.py"


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage", b"[1, 2]", b'{"suffix": 3}', None])
def test_a_garbage_or_missing_manifest_leaves_the_sources_in_use(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / MANIFEST).write_bytes(content)
    packages, engine = probe(**{DIR_ENV: str(tmp_path)})
    assert packages == [] and Path(engine) == SOURCE_ROOT / "correlators" / "engine.py"


def test_compiled_and_pure_decide_the_bundled_data_byte_for_byte(tmp_path: Path) -> None:
    """`socnoc evaluate --all` (socnoc and the naive baseline on the four datasets), both ways."""
    needs_build()
    outputs = {}
    for kind, extra in (("compiled", {}), ("pure", {PURE_ENV: "1"})):
        out = tmp_path / kind
        code = f"from streams.cli import main; raise SystemExit(main(['evaluate', '--all', '--out', {str(out)!r}]))"
        env = _env(**extra)
        subprocess.run([sys.executable, "-c", code], env=env, cwd=SOURCE_ROOT, capture_output=True, check=True)
        outputs[kind] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert len(outputs["pure"]) == 17  # 4 datasets x 2 engines x (decisions, incidents), and the report
    assert outputs["compiled"].keys() == outputs["pure"].keys()
    for name, data in outputs["pure"].items():
        assert outputs["compiled"][name] == data, name


def test_without_a_compiler_the_build_steps_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No C compiler: `make` goes on with the sources (exit 0), and no build is written."""
    build_native = _build_native()
    config = {"CC": "no-such-cc -O2"}
    monkeypatch.setattr(build_native.sysconfig, "get_config_var", config.get)
    assert build_native.compiler() is None
    assert build_native.build(tmp_path / "native") == 0
    assert not (tmp_path / "native").exists()
