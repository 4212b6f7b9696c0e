"""The cpu target's own compiler: a generated module's one-thread functions straight to machine
code with llvmlite (lower.py: the printed loop language -> LLVM IR; blas.py: np.dot as BLAS's
gemm; machine.py: LLVM's optimizer, object code, loading)."""
from __future__ import annotations

import ast

from llvmlite import ir

from . import machine
from .lower import Lowering, NativeError, Param

__all__ = ["NativeError", "Param", "compile_functions", "lower_functions"]


def compile_functions(source: str, functions: dict) -> tuple[bytes, str]:
    """Object code for the functions {symbol: (name, [Param per parameter])} of a generated
    module's `source`, each exported under its symbol (Lowering.function's entry), and the
    optimized IR's text. Every object is loaded into one engine per process, so a symbol must
    name one code: NativeFunction's carry their cache key."""
    optimized = machine.optimize(lower_functions(source, functions))
    return machine.object_code(optimized), str(optimized)


def lower_functions(source: str, functions: dict) -> str:
    """The LLVM IR (unoptimized) of compile_functions' functions."""
    tree = ast.parse(source)
    defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    module = ir.Module(name="rnncc")
    module.triple, module.data_layout = machine.triple_and_layout()
    lowering = Lowering(module, tree, source.splitlines())
    for exported, (name, params) in functions.items():
        if name not in defs:
            raise NativeError(f"the module has no function {name}")
        lowering.function(defs[name], params, exported)
    return str(module)
