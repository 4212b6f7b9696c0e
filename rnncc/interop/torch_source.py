"""The eager PyTorch code of any cell, as Python source (generating it needs no torch).

What a careful user writes by hand for a cell PyTorch has no fused kernel for: a Python loop of
torch ops over the time steps, written here from the cell's own step graph after rnncc's
optimizer up to its hoist pass, so the gates' matrices are stacked (one product for all gates),
the input products run once over all T*B rows before the loop, parameter-only values (the
stacked matrices) once per call, and only what the carried states need runs step by step: one
line of torch per graph node, values the spec names under their names.

    generate(cell, sizes)       the source of forward(self, x, state=None) -> (y, finals)
    module_file(cell, sizes)    a file that needs torch alone: HELPERS, that forward, and
                                class EagerCell(params, dtype) (parameters named W_i_l0, ...)

rnncc.torch.Eager runs the first; the benchmarks' torch process loads the second (it never
imports rnncc, so that torch is timed as a torch user has it).
"""
from __future__ import annotations

import numpy as np

from ..graph.schedule import Phase
from ..ops.base import dim_size, part_offsets
from ..passes import optimize
from ..plan.layout import ident
from ..runtime.naming import suffix

# What the generated code calls besides torch (exec'd beside it, or written into the file).
HELPERS = '''
from typing import Dict, List, Optional, Tuple


def _concat(parts: List[torch.Tensor]) -> torch.Tensor:
    """Vectors laid end to end, per-row and parameter-only ones together (numpy's concat)."""
    rows: List[int] = []
    for p in parts:
        if p.dim() - 1 > len(rows):
            rows = list(p.shape[:-1])
    return torch.cat([p.expand(rows + [p.shape[-1]]) for p in parts], -1)
'''


def _unary(function: str):
    return lambda a, attrs, sizes: f"{function}({a[0]})"


def _binary(symbol: str):
    return lambda a, attrs, sizes: f"({a[0]} {symbol} {a[1]})"


def _part(rows: bool):
    def spell(a, attrs, sizes):
        start, stop = part_offsets(attrs["stacked"], sizes)[attrs["index"]]
        return f"{a[0]}[{start}:{stop}]" if rows else f"{a[0]}[..., {start}:{stop}]"
    return spell


# op -> its torch spelling: (argument expressions, attrs, dimension sizes) -> expression. The
# numpy evaluation in rnncc/ops/ is the definition; tests hold every op a forward graph can
# have to this table (tests/torch/test_eager.py).
SPELLING = {
    "add": _binary("+"),
    "sub": _binary("-"),
    "mul": _binary("*"),
    "div": _binary("/"),
    "neg": lambda a, attrs, sizes: f"(-{a[0]})",
    "pow": lambda a, attrs, sizes: f"torch.pow({a[0]}, {float(attrs['exponent'])!r})",
    "max": lambda a, attrs, sizes: f"torch.maximum({a[0]}, {a[1]})",
    "min": lambda a, attrs, sizes: f"torch.minimum({a[0]}, {a[1]})",
    "sigmoid": _unary("torch.sigmoid"),
    "tanh": _unary("torch.tanh"),
    "relu": _unary("torch.relu"),
    "exp": _unary("torch.exp"),
    "log": _unary("torch.log"),
    "sqrt": _unary("torch.sqrt"),
    "abs": _unary("torch.abs"),
    "softplus": _unary("torch.nn.functional.softplus"),
    "hardsigmoid": _unary("torch.nn.functional.hardsigmoid"),
    "step": lambda a, attrs, sizes: f"({a[0]} > 0).to({a[0]}.dtype)",
    "sign": _unary("torch.sign"),
    "mean": lambda a, attrs, sizes: f"{a[0]}.mean(-1, keepdim=True)",
    "sum": lambda a, attrs, sizes: f"{a[0]}.sum(-1, keepdim=True)",
    "broadcast": lambda a, attrs, sizes: (
        f"{a[0]}.expand(list({a[0]}.shape[:-1]) + [{dim_size(attrs['dim'], sizes)}])"),
    "matmul": lambda a, attrs, sizes: f"torch.matmul({a[1]}, {a[0]}.t())",
    "stack_rows": lambda a, attrs, sizes: f"torch.cat([{', '.join(a)}], 0)",
    "concat": lambda a, attrs, sizes: f"_concat([{', '.join(a)}])",
    "part": _part(rows=False),
    "part_rows": _part(rows=True),
}


def _constant(node, sizes: dict) -> str:
    """A constant as a 0-d (or zero) tensor of the call's dtype, made once per call."""
    if node.op == "const":
        return f"torch.tensor({float(node.attrs['value'])!r}, dtype=dtype)"
    if node.op == "size":
        return f"torch.tensor({float(dim_size(node.attrs['dim'], sizes))!r}, dtype=dtype)"
    shape = [dim_size(d, sizes) for d in node.attrs["shape"]]
    return f"torch.zeros({shape}, dtype=dtype)"


def generate(cell, sizes: dict) -> str:
    """The module's forward function, as Python source, for these dimension sizes."""
    graph = optimize(cell.graph, until="hoist")
    phase = graph.phase
    (x_name, x_nid), = graph.inputs.items()
    name = {}   # node -> the variable holding its value (in its phase's shape)
    for pname, nid in graph.params.items():
        name[nid] = f"p_{pname}"
    for sname, nid in graph.states.items():
        name[nid] = f"s_{sname}"

    taken = set(name.values())

    def var(nid: int) -> str:
        """A node's variable: its name in the spec's terms (plan/layout.ident: c' is v_c_next),
        the node's number where two names meet. The loop's own names add a suffix after a
        double underscore, which ident never writes."""
        if nid not in name:
            spelled = graph.node(nid).name
            found = ident(spelled) if spelled else f"v{nid}"
            if found in taken or not found.isidentifier():
                found = f"v{nid}"
            name[nid] = found
            taken.add(found)
        return name[nid]

    def state_width(sname: str) -> int:
        return int(np.prod(cell.shape_of_dims(graph.node(graph.states[sname]).shape, sizes)))

    lines = ["def forward(self, x: torch.Tensor, state: Optional[Dict[str, torch.Tensor]] = "
             "None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:",
             "    T, B = x.shape[0], x.shape[1]",
             "    dtype = x.dtype"]
    lines += [f"    p_{p} = self.{p}{suffix(0, 0)}" for p in graph.params]
    for sname in graph.states:
        width = state_width(sname)
        lines += [f"    if state is not None and {sname!r} in state:",
                  f"        s_{sname} = state[{sname!r}][0]",
                  "    else:",
                  f"        s_{sname} = x.new_zeros([B, {width}])"]

    def emit(nid: int, indent: str, read) -> None:
        node = graph.node(nid)
        if node.opdef.kind == "constant":
            lines.append(f"{indent}{var(nid)} = {_constant(node, sizes)}")
            return
        if node.op not in SPELLING:
            raise NotImplementedError(f"op {node.op!r} has no torch spelling in "
                                      f"rnncc/interop/torch_source.py")
        args = [read(a) for a in node.args]
        lines.append(f"{indent}{var(nid)} = {SPELLING[node.op](args, node.attrs, sizes)}")

    order = [n for n in graph.order if graph.node(n).opdef.kind != "leaf"]
    of = {p: [n for n in order if phase.get(n) == p] for p in Phase}
    constants = [n for n in order if graph.node(n).opdef.kind == "constant"]
    # parameter-only values and constants: once per call
    for nid in constants + [n for n in of[Phase.INVARIANT] if n not in constants]:
        emit(nid, "    ", var)
    # over all T*B rows before the loop: the input is the whole sequence
    name[x_nid] = "x"
    for nid in of[Phase.BEFORE]:
        if nid not in constants:
            emit(nid, "    ", var)
    step_nodes = [n for n in of[Phase.STEP] if n not in constants]
    step_set = set(step_nodes)
    after_nodes = [n for n in of[Phase.AFTER] if n not in constants]
    states = set(graph.states.values())
    whole = set(of[Phase.BEFORE]) | {x_nid}   # values with a time axis before the loop
    # what the loop reads of the whole-sequence values (a step each, from unbind: indexing
    # would make each step's backward a zero tensor the size of the whole sequence)
    read_in_loop = sorted({a for n in step_nodes for a in graph.node(n).args if a in whole})
    output, updates = graph.output, graph.updates
    # what leaves the loop, one value per step: the output and whatever `after` reads (a
    # state's value at each step's start included)
    leaving = sorted({a for n in after_nodes for a in graph.node(n).args
                      if a in step_set or a in states}
                     | ({output} if output in step_set else set()))
    for nid in read_in_loop:
        lines.append(f"    {var(nid)}__steps = {var(nid)}.unbind(0)")
    for nid in leaving:
        lines.append(f"    {var(nid)}__all: List[torch.Tensor] = []")
    lines.append("    for t in range(T):")
    step_name = {nid: f"{var(nid)}__t" for nid in read_in_loop}
    for nid in read_in_loop:
        lines.append(f"        {step_name[nid]} = {var(nid)}__steps[t]")
    for nid in step_nodes:
        emit(nid, "        ", lambda a: step_name.get(a) or var(a))
    for nid in leaving:
        lines.append(f"        {var(nid)}__all.append({var(nid)})")
    for sname, nid in updates.items():   # every update computed before any state changes
        lines.append(f"        new_{sname} = {var(nid)}.expand([B, {state_width(sname)}])")
    for sname in updates:
        lines.append(f"        s_{sname} = new_{sname}")
    if not step_nodes and not leaving and not updates:
        lines.append("        pass")
    sequence = {nid: f"{var(nid)}__seq" for nid in leaving}
    for nid in leaving:
        lines.append(f"    {sequence[nid]} = torch.stack({var(nid)}__all)")
    for nid in after_nodes:
        emit(nid, "    ", lambda a: sequence.get(a) or var(a))
    out_width = int(np.prod(cell.shape_of_dims(graph.node(output).shape, sizes)))
    lines.append(f"    y = {sequence.get(output) or var(output)}.expand([T, B, {out_width}])")
    finals = ", ".join(f"{s!r}: s_{s}.unsqueeze(0)" for s in graph.states)
    lines.append(f"    return y, {{{finals}}}")
    return "\n".join(lines) + "\n"


def module_file(cell, sizes: dict) -> str:
    """A Python file that needs torch alone: the cell's eager module as class EagerCell,
    built from the parameters as numpy arrays by spec name, EagerCell(params, dtype)."""
    dims = ", ".join(f"{d}={sizes[d]}" for d in cell.dims)
    method = "".join("    " + line if line.strip() else line
                     for line in generate(cell, sizes).splitlines(True))
    return (f'"""The eager PyTorch module of rnncc cell {cell.name} ({dims}), generated by '
            f'rnncc."""\n'
            "import torch\n" + HELPERS + f'''

class EagerCell(torch.nn.Module):
    def __init__(self, params, dtype=torch.float32):
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name + {suffix(0, 0)!r}, torch.nn.Parameter(
                torch.tensor(value, dtype=dtype)))

''' + method)
