"""A natively compiled generated function: compiled at its first call (or loaded from the disk
cache), called with numpy arrays like the Numba function it stands for."""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import abi, compile_functions, gemm, machine
from .machine import packed_enabled
from .lower import Param

def native_enabled() -> bool:
    """Whether one thread's functions compile with rnncc's own compiler (default), or with
    Numba as the threaded ones do (RNNCC_NATIVE=0: for comparisons, or a platform where
    llvmlite's object loading fails; and where the compiled code could not find its arguments
    in Python's objects, with a warning)."""
    return os.environ.get("RNNCC_NATIVE", "1") != "0" and _objects_readable()


@lru_cache(maxsize=None)
def _objects_readable() -> bool:
    try:
        abi.offsets()
    except RuntimeError as e:
        warnings.warn(f"{e}: one thread's functions compile with Numba", RuntimeWarning)
        return False
    return True


MAGIC = b"rnncc-native-object\n"


@lru_cache(maxsize=None)
def compiler_fingerprint() -> str:
    """The compiler's own code (this package and the elementary functions' instructions it
    emits) and llvmlite's version: what it emits for the same source changes with them."""
    import llvmlite

    from .. import elementary
    here = Path(__file__).parent
    files = [*sorted(here.glob("*.py")), Path(elementary.__file__)]
    h = hashlib.sha256(llvmlite.__version__.encode())
    for file in files:
        h.update(file.read_bytes())
    return h.hexdigest()


def cache_key(source: str, name: str, params: list) -> str:
    """The object code's key: the compiler, the machine, the object layout, the source, the
    function and the kinds of its arguments (the same source compiles differently for other
    argument kinds)."""
    h = hashlib.sha256()
    for part in (compiler_fingerprint(), machine.host(), repr(abi.offsets()), source, name,
                 repr(params), f"packed GEMM {packed_enabled()}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _read(path: Path) -> bytes | None:
    """An object file's code, or None where the file is missing or damaged (its checksum is
    the first line after the magic: a truncated or altered file fails it)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(MAGIC):
        return None
    digest, _, payload = data[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    return payload


def _write(path: Path, payload: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    os.replace(tmp, path)   # atomic: another process may write the same file


@lru_cache(maxsize=None)
def library(part: str = "team") -> dict:
    """{symbol: address} of one part of gemm.py's library in this process (gemm.PARTS): its
    object code loaded from the cache, else compiled (0.2-0.5 s a part) and cached. A float
    type's parts call the team's, which is loaded first."""
    from ...disk_cache import cache_dir
    if part != "team":
        library("team")
    key = hashlib.sha256(f"{compiler_fingerprint()} {machine.host()} {part}".encode())
    path = cache_dir() / f"gemm.{part}.{key.hexdigest()[:24]}.o"
    payload = _read(path)
    if payload is None:
        triple, layout = machine.triple_and_layout()
        text = gemm.part_ir(part, triple, layout, machine.host_features())
        payload = machine.object_code(machine.optimize(text, unroll=False))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, payload)
        except OSError:
            pass   # a read-only cache: the next process compiles it again
    return machine.load_library(payload, gemm.exported(part))


def libraries_for(payload: bytes) -> None:
    """Load the parts of gemm.py's library that an object file calls (their names are in its
    symbol table), before it is loaded."""
    for part in gemm.PARTS:
        if any(name.encode() in payload for name in gemm.exported(part)):
            library(part)


def _describe(a) -> str:
    if not isinstance(a, np.ndarray):
        return f"a {type(a).__name__}"
    layout = "C-contiguous" if a.flags.c_contiguous else "not C-contiguous"
    return f"a {a.ndim}-d {a.dtype} array ({layout})"


class NativeFunction:
    """One function of a generated module, compiled by rnncc's own compiler (one thread).

    `directory`/`stem` say where its object code is cached (beside the module's file, as
    `<stem>.<name>.<key>.o`); None: not cached."""

    def __init__(self, source: str, name: str, params: list[Param], dtype,
                 directory: Path | None, stem: str):
        self.source, self.__name__, self.params = source, name, params
        self.dtype = np.dtype(dtype)
        key = cache_key(source, name, params)
        self.symbol = f"rnncc_{name}_{key}"   # one code per name in the process's engine
        self.path = directory / f"{stem}.{name}.{key}.o" if directory is not None else None
        self._entry = None
        self.loaded_from_cache = False
        self.ndims = [p.ndim for p in params if p.kind == "array"]
        self._scalars = len(params) - len(self.ndims) - 2   # after T and B: flags, sizes
        self._expected = [(np.dtype(p.dtype), p.ndim) for p in params if p.kind == "array"]
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._entry is not None

    def compile(self) -> None:
        """Load the object code from the cache, else compile it (and cache it)."""
        with self._lock:
            if self._entry is not None:
                return
            payload = _read(self.path) if self.path is not None else None
            self.loaded_from_cache = payload is not None
            if payload is None:
                payload, _ = compile_functions(self.source,
                                               {self.symbol: (self.__name__, self.params)})
                if self.path is not None:
                    _write(self.path, payload)
            ints = len(self.params) - len(self.ndims)
            libraries_for(payload)   # (what the code calls: bound before it is loaded)
            self._entry = machine.load(payload, {self.symbol: ints})[self.symbol]

    def __call__(self, T, B, lengths, *rest) -> None:
        """Arguments as the Numba function takes them: T, B, lengths, flags and dimension
        sizes, then the arrays (each C-contiguous in the module's dtype; checked, since the
        compiled code trusts the layout it was compiled for)."""
        if self._entry is None:
            self.compile()
        arrays = (lengths, *rest[self._scalars:])
        for k, (a, (dtype, ndim)) in enumerate(zip(arrays, self._expected)):
            if (not isinstance(a, np.ndarray) or (a.dtype is not dtype and a.dtype != dtype)
                    or a.ndim != ndim or not a.flags.c_contiguous):
                raise TypeError(f"{self.__name__}: argument {k} is {_describe(a)}; expected "
                                f"a C-contiguous {ndim}-d {dtype} numpy array")
        self._entry(arrays, T, B, *rest[:self._scalars])   # (the tuple keeps them alive)
