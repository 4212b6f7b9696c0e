"""The disk cache of generated modules and their machine code.

One thread's functions are compiled by rnncc's own compiler (cpu/native/), whose object code
goes beside the module as `<module>.<function>.<key>.o` (key: the source, the compiler's own
code, the CPU), each file carrying a checksum of its contents (a damaged one is compiled again);
the threaded ones by Numba, as follows.

Numba cannot cache functions made by exec() from a string (numba issue 3501), so a generated
module is written to a real file in the cache directory, named by a hash of everything that
decides the compiled code: the source, the fastmath module it imports, and the versions of
rnncc, Numba and numpy. Numba's own cache (cache=True) keeps the machine code beside it, in
__pycache__ (or under NUMBA_CACHE_DIR where that is set), so a second process loads a compiled
cell instead of compiling it. RNNCC_CACHE_DIR moves the cache (default ~/.cache/rnncc).

Safe to share: processes compiling the same cell at once each write whole files and rename
them into place (as Numba does), and a damaged file is found and rebuilt: a module whose text
is not its source is rewritten here; a damaged machine-code file is removed and compiled again
by the backend that reads it (forget_cached).
"""
from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

PREFIX = "rnncc_cell_"


def cache_dir() -> Path:
    path = Path(os.environ.get("RNNCC_CACHE_DIR", Path.home() / ".cache" / "rnncc"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=None)
def _numba_version() -> str:
    """Numba's version, from its installed metadata: importing Numba to ask would cost a
    process that never compiles with it a quarter of a second."""
    return importlib.metadata.version("numba")


@lru_cache(maxsize=None)
def _imported_code() -> str:
    """The source of what generated modules import (the fastmath functions and the
    instructions they emit), read from the files without importing them."""
    cpu = Path(__file__).parent / "cpu"
    return (cpu / "fastmath.py").read_text() + (cpu / "elementary.py").read_text()


def _fingerprint(source: str) -> str:
    from ..version import __version__
    h = hashlib.sha256()
    for part in (source, _imported_code(), __version__, _numba_version(), np.__version__):
        h.update(part.encode())
    return h.hexdigest()[:24]


def _holds(path: Path, source: str) -> bool:
    """Whether the file at `path` is `source` (reading 10-100 KB once per cell and process)."""
    try:
        return path.read_text() == source
    except (OSError, UnicodeDecodeError):
        return False


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: another process may be writing the same file


def _note_cell(path: Path, cell: str) -> None:
    """Record in the module's .json beside it that `cell` uses it (for `rnncc cache info`:
    cells whose generated code is the same share one module)."""
    cells = _cells(path)
    if cell not in cells:
        _write(path.with_suffix(".json"), json.dumps({"cells": sorted({*cells, cell})}))


def _cells(path: Path) -> list[str]:
    try:
        return list(json.loads(path.with_suffix(".json").read_text())["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        return []   # none yet, or damaged: it is only a label


def write(source: str, cell: str | None = None) -> Path:
    """The file of generated `source` in the cache, written if new or damaged; `cell`: the name
    of a cell that uses it."""
    path = cache_dir() / f"{PREFIX}{_fingerprint(source)}.py"
    if not _holds(path, source):  # new, or damaged (truncated by a full disk, a killed copy)
        _write(path, source)
    if cell is not None:
        _note_cell(path, cell)
    return path


def load(source: str, cell: str | None = None):
    """Import generated `source` from its file in the cache (written if new; see write)."""
    return import_file(write(source, cell))


def import_file(path: Path):
    """Import a generated module's file (once per process)."""
    name = path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # never hand out a half-imported module
        raise
    return module


def _index(fn) -> Path | None:
    """Where Numba keeps the index of fn's machine code: beside the module, or under
    NUMBA_CACHE_DIR (its locators; a private attribute of Numba's cache)."""
    try:
        return Path(fn._cache._cache_file._index_path)
    except AttributeError:
        return None


def has_cached(fn) -> bool:
    """Whether Numba's disk cache holds machine code of fn (for some signature: a generated
    function has one per module)."""
    index = _index(fn)
    return index is not None and index.exists()


def forget_cached(fn) -> bool:
    """Remove a Numba function's machine code from Numba's disk cache (its index and data
    files); whether there was any. Numba writes each file whole (a temporary file, then a
    rename), so only damage from outside leaves one unreadable."""
    index = _index(fn)
    if index is None:
        return False
    stem = index.name[:-len(".nbi")]
    removed = False
    for file in [index, *index.parent.glob(f"{glob.escape(stem)}.*.nbc")]:
        try:
            file.unlink()
            removed = True
        except FileNotFoundError:
            pass
    return removed


# -- what is in it (`rnncc cache info|clear`) ----------------------------------------------------

@dataclass
class Module:
    """One generated module in the cache, and the machine code Numba keeps for it."""
    path: Path
    cells: list[str]               # the cells that have used it (names)
    target: str                    # "cpu" or "cuda"
    dtype: str
    functions: list[str]           # the functions it defines
    compiled: set[str] = field(default_factory=set)    # those with machine code on disk
    files: list[Path] = field(default_factory=list)    # every file of it (module, caches)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())


def _compiled_dirs(directory: Path) -> list[Path]:
    """Where Numba keeps machine code for modules in `directory`: its __pycache__, and under
    NUMBA_CACHE_DIR where that is set (one folder per source folder)."""
    dirs = [directory / "__pycache__"]
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")   # (what numba.config.CACHE_DIR reads)
    if numba_dir:
        dirs += [d for d in Path(numba_dir).glob("*") if d.is_dir()]
    return [d for d in dirs if d.is_dir()]


def modules(directory: Path | None = None) -> list[Module]:
    """The generated modules in the cache, oldest first."""
    directory = directory or cache_dir()
    found = []
    for path in sorted(directory.glob(f"{PREFIX}*.py"), key=lambda p: p.stat().st_mtime):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            text = ""
        dtype = re.search(r"^dtype = np\.(\w+)$", text, re.M)
        labels = path.with_suffix(".json")
        module = Module(path, _cells(path), "cuda" if "from numba import cuda" in text else "cpu",
                        dtype.group(1) if dtype else "?",
                        re.findall(r"^def (\w+)\(", text, re.M),
                        files=[path, *([labels] if labels.exists() else [])])
        for file in directory.glob(f"{glob.escape(path.stem)}.*.o"):   # native object code
            module.files.append(file)
            module.compiled.add(file.name[len(path.stem) + 1:].split(".")[0])
        for d in _compiled_dirs(directory):
            for file in d.glob(f"{glob.escape(path.stem)}.*"):
                module.files.append(file)
                if file.suffix == ".nbi":   # Numba's index: NAME-LINE.TAG.nbi
                    module.compiled.add(file.name[len(path.stem) + 1:].split("-")[0])
        found.append(module)
    return found


def clear(directory: Path | None = None) -> tuple[int, int]:
    """Remove every generated module and its machine code; (modules, bytes) removed. Only
    rnncc's files: the folder may hold others."""
    removed, size = 0, 0
    for module in modules(directory):
        size += module.bytes
        for file in module.files:
            try:
                file.unlink()
            except FileNotFoundError:
                pass
        removed += 1
    return removed, size
