"""The cpu target's own compiler: a generated module's one-thread functions straight to machine
code with llvmlite (lower.py: the printed loop language -> LLVM IR; blas.py: np.dot as BLAS's
gemm; machine.py: LLVM's optimizer, object code, loading)."""
from __future__ import annotations

import ast

from llvmlite import ir

from . import machine
from .lower import Lowering, NativeError, Param

__all__ = ["NativeError", "Param", "compile_functions"]


def compile_functions(source: str, functions: dict) -> tuple[bytes, str]:
    """Object code for the functions {name: [Param per parameter]} of a generated module's
    `source`, each exported as `rnncc_<name>` (Lowering.function's entry), and the optimized
    IR's text."""
    tree = ast.parse(source)
    defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    module = ir.Module(name="rnncc")
    module.triple, module.data_layout = machine.triple_and_layout()
    lowering = Lowering(module, tree, source.splitlines())
    for name, params in functions.items():
        if name not in defs:
            raise NativeError(f"the module has no function {name}")
        lowering.function(defs[name], params, symbol(name))
    optimized = machine.optimize(str(module))
    return machine.object_code(optimized), str(optimized)


def symbol(name: str) -> str:
    return f"rnncc_{name}"
