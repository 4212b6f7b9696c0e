"""Readable forms of a step graph: text (one line per node), Graphviz dot, and json."""
from __future__ import annotations

import json

from .graph import Graph


def _shape(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _ref(graph: Graph, nid: int) -> str:
    node = graph.node(nid)
    if node.op == "const":
        return _number(node.attrs["value"])
    if node.op == "size":
        return f"size({node.attrs['dim']})"
    if node.op == "zeros":
        return f"zeros{_shape(node.attrs['shape'])}"
    return node.name or f"%{nid}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def _attrs(node) -> str:
    attrs = {k: v for k, v in node.attrs.items() if k != "stacked"} if not node.is_leaf else {}
    return "".join(f" {k}={_number(v) if isinstance(v, float) else v}" for k, v in attrs.items())


def to_text(graph: Graph) -> str:
    """
    cell lstm  (dims I, H)
      input  x: [I]
      ...
      %4: [H] = matmul W_i x                  # line 11
      ...
      i: [H] = sigmoid %9                     # line 11
    updates  h = h', c = c'
    output   h = h'
    """
    lines = [f"cell {graph.name}  (dims {', '.join(graph.dims) or 'none'})"]
    for kind in ("input", "state", "param", "grad", "saved"):
        for name, nid in graph.leaves(kind).items():
            lines.append(f"  {kind:<6} {name}: {_shape(graph.node(nid).shape)}")
    for nid in graph.order:
        node = graph.node(nid)
        if node.is_leaf:
            continue
        args = " ".join(_ref(graph, a) for a in node.args)
        left = f"  {_ref(graph, nid)}: {_shape(node.shape)} = {node.op} {args}{_attrs(node)}"
        notes = [f"line {node.pos[0]}"] if node.pos else []
        if nid in graph.phase:
            stage = graph.stage.get(nid)
            where = f" {stage}" if stage is not None else ""
            notes.append(f"[{graph.phase[nid]}{where}]")
        lines.append(f"{left:<44}# {'  '.join(notes)}" if notes else left)
    if graph.saved:
        lines.append(f"{'saved':<8} " + ", ".join(graph.saved))
    for group, named in graph.results.items():
        lines.append(f"{group:<8} " + ", ".join(f"{k} = {_ref(graph, n)}" for k, n in named.items()))
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    out = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [fontname="monospace"];']
    shapes = {"input": "invhouse", "state": "box", "param": "note", "const": "plaintext",
              "grad": "invhouse", "saved": "box"}
    roots = set(graph.roots())
    for nid in graph.order:
        node = graph.node(nid)
        if node.is_leaf:
            label = (f"{node.name}\\n{_shape(node.shape)}" if node.opdef.kind == "leaf"
                     else _ref(graph, nid))
        else:
            label = f"{node.op}{_attrs(node)}\\n{_shape(node.shape)}"
            if node.name:
                label = f"{node.name} = {label}"
        style = f'shape={shapes.get(node.op, "ellipse")}'
        if nid in roots:
            style += ", peripheries=2"
        out.append(f'  n{nid} [label="{label}", {style}];')
    for src, dst, index in sorted(graph.nx.edges(data="index"), key=lambda e: (e[1], e[2])):
        out.append(f'  n{src} -> n{dst} [label="{index}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def to_json(graph: Graph) -> str:
    nodes = []
    for nid in graph.order:
        node = graph.node(nid)
        nodes.append({
            "id": nid, "op": node.op, "args": list(node.args), "shape": list(node.shape),
            "dtype": node.dtype, "name": node.name, "attrs": dict(node.attrs),
            "line": node.pos[0] if node.pos else None, "col": node.pos[1] if node.pos else None,
        })
    edges = sorted([s, d, index] for s, d, index in graph.nx.edges(data="index"))
    doc = {"cell": graph.name, "kind": graph.kind, "dims": list(graph.dims), "nodes": nodes,
           "edges": edges, "results": graph.results, "saved": graph.saved}
    return json.dumps(doc, indent=2) + "\n"


FORMATS = {"text": to_text, "dot": to_dot, "json": to_json}
