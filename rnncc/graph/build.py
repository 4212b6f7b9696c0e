"""Spec -> step Graph, inferring the shapes of parameters that were not declared.

Undeclared parameters start with unknown dimensions (variables); each op's shape rule unifies
the dimensions its arguments must share, which binds the variables (a union-find). After the last
equation every parameter dimension must be bound to a declared dimension; one that is not is an
error at the parameter's first use, asking the user to declare it.
"""
from __future__ import annotations

from .graph import Graph
from ..frontend.language import CHUNK
from ..frontend.resolve import dim_names
from ..ops import REGISTRY, SPEC_FUNCTIONS, ShapeError, Stacked, show_shape
from ..errors import SpecError
from ..frontend.spec import Binary, Call, Name, Neg, Num, Pos, Power, Spec

_BINARY_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}


class _Var:
    """An unknown dimension of an inferred parameter."""
    __slots__ = ("param", "index")

    def __init__(self, param: str, index: int):
        self.param, self.index = param, index

    def __repr__(self) -> str:
        return "?"


class _Argument:
    """An argument of a function call: the caller's expression, built in the caller's scope
    (`depth` scopes deep) the first time the body reads it."""
    __slots__ = ("expr", "depth", "node")

    def __init__(self, expr, depth: int):
        self.expr, self.depth, self.node = expr, depth, None

    def value(self, builder: "_Builder") -> int:
        if self.node is None:
            inner = builder.scopes[self.depth:]
            del builder.scopes[self.depth:]
            try:
                self.node = builder.expr(self.expr)
            finally:
                builder.scopes.extend(inner)
        return self.node


class _Dims:
    """Union-find over dimensions; a named or fixed dimension is always its class's root.

    `line` is the spec line whose op is unifying; the line that first tied a class of unknown
    dimensions to a known one is remembered (`bound_on`), to tell, when a later line conflicts
    with it, which of the two lines is the odd one out. On the line `skip` nothing is tied to a
    known dimension and no conflict is raised: the unifications are kept in `skipped`, to be
    judged once the rest of the spec has fixed the dimensions."""

    def __init__(self, skip: int | None = None):
        self.parent: dict = {}
        self.bound_on: dict = {}   # a var whose parent is a known dimension -> the line
        self.line = 0
        self.skip = skip
        self.skipped: list = []

    def find(self, d):
        while isinstance(d, _Var) and d in self.parent:
            d = self.parent[d]
        if isinstance(d, Stacked):  # a stack of parts, each resolved; nested stacks flattened
            parts = []
            for p in d.parts:
                r = self.find(p)
                parts.extend(r.parts if isinstance(r, Stacked) else (r,))
            return Stacked(tuple(parts))
        return d

    def binding_line(self, d) -> int | None:
        """The line that tied d's class to a known dimension (None: d is known, or unknown)."""
        while isinstance(d, _Var) and d in self.parent:
            if d in self.bound_on:
                return self.bound_on[d]
            d = self.parent[d]
        return None

    def unify(self, a, b):
        if self.line == self.skip:
            self.skipped.append((a, b))
            ra, rb = self.find(a), self.find(b)
            if isinstance(ra, _Var) and isinstance(rb, _Var) and ra is not rb:
                self.parent[ra] = rb
            return rb if isinstance(ra, _Var) else ra
        a, b = self.find(a), self.find(b)
        if a is b or a == b:
            return a
        if isinstance(b, _Var) and not isinstance(a, _Var):
            a, b = b, a
        if isinstance(a, _Var):
            if isinstance(b, Stacked) and any(p is a for p in b.parts):
                raise ShapeError(f"a dimension cannot be a stack of itself and more ({b})")
            self.parent[a] = b
            if not isinstance(b, _Var):
                self.bound_on[a] = self.line
            return b
        if isinstance(a, Stacked) and isinstance(b, Stacked) and len(a.parts) == len(b.parts):
            for pa, pb in zip(a.parts, b.parts):
                self.unify(pa, pb)
            return self.find(a)
        raise ShapeError(f"dimension {a} does not match dimension {b}")

    def resolve(self, shape: tuple) -> tuple:
        return tuple(self.find(d) for d in shape)


class _Builder:
    def __init__(self, spec: Spec, skip_line: int | None = None):
        self.spec = spec
        self.dims = _Dims(skip_line)
        self.graph = Graph(spec.name, ())
        self.shapes: dict[int, tuple] = {}  # provisional shapes, may hold _Var
        self.values: dict[str, int] = {}    # intermediate name -> node
        self.new: dict[str, int] = {}       # state name -> node of its new value
        self.consts: dict[float, int] = {}
        self.leaf: dict[tuple, int] = {}    # (op, name) -> node
        self.param_role: dict[str, tuple] = {}  # inferred param -> ("matrix"|"vector", first Pos)
        self.labels: dict[int, str] = {}
        self.deferred: list = []   # (what, argument shapes, Pos) of the skipped line's ops
        self.operand: dict[str, tuple] = {}   # matrix parameter -> (the vector it multiplies, Pos)
        self.chunks: dict[int, list] = {}     # id of a chunk Call -> its part nodes
        # the arguments of the functions being expanded, innermost last: name -> _Argument
        self.scopes: list[dict] = []

    def error(self, msg: str, pos: Pos):
        return self.spec.error(msg, pos)

    def show(self, shape: tuple) -> str:
        return show_shape(self.dims.resolve(shape))

    def mismatch(self, what: str, shapes: list, exc, pos: Pos):
        """The error for arguments of an op that do not fit. Where a line before this one
        tied one of them to its dimension (`q = f + x` making f's dimension I), and the spec
        builds without that line's ties, that line is the mistake: the error points there."""
        detail = " and ".join(self.show(s) for s in shapes)
        error = self.error(f"shape mismatch in {what}: {exc} (operands: {detail})", pos)
        if self.dims.skip is not None:
            return error
        earlier = {self.dims.binding_line(d) for s in shapes for d in s} - {None, pos.line}
        for line in sorted(earlier):
            blamed = _Builder(self.spec, skip_line=line).judged()
            if blamed is not None:
                return blamed
        return error

    def judged(self):
        """Build with the skip line's ties left out: the error on that line if the rest of
        the spec builds and the line's own unifications then fail, else None."""
        try:
            self.build()
        except SpecError:
            return None
        for what, shapes, pos in self.deferred:
            resolved = [self.dims.resolve(s) for s in shapes]
            # the known dimensions of the op's vector operands, in order, each once
            known = list(dict.fromkeys(s[0] for s in resolved
                                       if len(s) == 1 and not isinstance(s[0], _Var)))
            if len(known) > 1:
                detail = " and ".join(show_shape(s) for s in resolved)
                return self.error(f"shape mismatch in {what}: dimension {known[0]} does not "
                                  f"match dimension {known[1]} (operands: {detail})", pos)
        return None

    # -- leaves -----------------------------------------------------------------------------------
    def add_leaf(self, op: str, name: str, shape: tuple, pos: Pos) -> int:
        nid = self.graph.add(op, (), shape, {}, name, (pos.line, pos.col))
        self.shapes[nid] = shape
        self.leaf[(op, name)] = nid
        return nid

    def param(self, name: str, as_matrix: bool, pos: Pos) -> int:
        """The leaf of parameter `name`; an undeclared one is created at its first use."""
        decl = self.spec.params.get(name)
        nid = self.leaf.get(("param", name))
        if decl is not None:
            if as_matrix and len(decl.dims) != 2:
                raise self.error(f"the left side of @ must be a matrix, but parameter '{name}' is "
                                 f"declared {show_shape(decl.dims)}", pos)
            return nid
        role = "matrix" if as_matrix else "vector"
        if nid is None:
            shape = (_Var(name, 0), _Var(name, 1)) if as_matrix else (_Var(name, 0),)
            self.param_role[name] = (role, pos)
            return self.add_leaf("param", name, shape, self.spec.inferred_params[name])
        first_role, first_pos = self.param_role[name]
        if first_role != role:
            raise self.error(f"parameter '{name}' is used as a {role} here but as a {first_role} "
                             f"on line {first_pos.line}", pos)
        return nid

    def one_operand(self, matrix: str, operand: int, pos: Pos) -> None:
        """A matrix may appear in several products of one vector (`W @ x` twice: its gradient is
        one product over the batch of the summed gradients), not of two: the sum of two such
        products over the batch is no op of rnncc's plans."""
        first = self.operand.setdefault(matrix, (operand, pos))
        if first[0] != operand:
            raise self.error(f"parameter '{matrix}' multiplies a different vector here than on "
                             f"line {first[1].line}: a matrix shared by products of two vectors "
                             f"is not supported (use two matrices; or one product of a vector "
                             f"named once, `v = ...`, where both are the same)", pos)

    # -- expressions ------------------------------------------------------------------------------
    def op(self, op: str, args: list[int], pos: Pos, error_pos: Pos, attrs=None, what=None) -> int:
        shapes = [self.shapes[a] for a in args]
        self.dims.line = pos.line
        skipped = len(self.dims.skipped)
        try:
            shape = REGISTRY[op].shape(shapes, attrs or {}, self.dims.unify)
        except ShapeError as exc:
            raise self.mismatch(what or op, shapes, exc, error_pos) from None
        if len(self.dims.skipped) > skipped:   # judged at the end (_Dims' doc)
            self.deferred.append((what or op, shapes, error_pos))
        nid = self.graph.add(op, args, shape, attrs, None, (pos.line, pos.col))
        self.shapes[nid] = shape
        return nid

    def expr(self, e) -> int:
        if isinstance(e, Num):
            if e.value not in self.consts:
                nid = self.graph.add("const", (), (), {"value": e.value}, None,
                                     (e.pos.line, e.pos.col))
                self.shapes[nid] = ()
                self.consts[e.value] = nid
            return self.consts[e.value]
        if isinstance(e, Name):
            return self.name(e, as_matrix=False)
        if isinstance(e, Neg):
            return self.op("neg", [self.expr(e.operand)], e.pos, e.pos, what="'-'")
        if isinstance(e, Power):
            return self.op("pow", [self.expr(e.base)], e.pos, e.pos, {"exponent": e.exponent},
                           what="'**'")
        if isinstance(e, Binary):
            if e.op == "@":
                matrix = self.matrix(e.left)
                left = self.param(matrix, True, e.left.pos)
                right = self.expr(e.right)
                self.one_operand(matrix, right, e.right.pos)
                return self.op("matmul", [left, right], e.pos, e.right.pos, what="'@'")
            left, right = self.expr(e.left), self.expr(e.right)
            return self.op(_BINARY_OPS[e.op], [left, right], e.pos, e.right.pos,
                           what=f"'{e.op}'")
        if isinstance(e, Call):
            if e.func in self.spec.functions:
                return self.call(e)
            args = [self.expr(a) for a in e.args]
            return self.op(SPEC_FUNCTIONS[e.func].name, args, e.pos,
                           e.args[-1].pos if e.args else e.pos, what=f"{e.func}()")
        raise TypeError(f"not an expression: {e!r}")  # unreachable: the parser builds only these

    def matrix(self, left) -> str:
        """The parameter named on the left of @ (through the arguments of functions)."""
        scopes = len(self.scopes)
        while isinstance(left, Name) and not left.primed and scopes and \
                left.name in self.scopes[scopes - 1]:
            argument = self.scopes[scopes - 1][left.name]
            left, scopes = argument.expr, argument.depth
        if not isinstance(left, Name) or left.primed or left.name in self.spec.inputs \
                or left.name in self.spec.states or left.name in self.values:
            raise self.error("the left side of @ must be a matrix parameter, as in W @ x",
                             left.pos)
        return left.name

    def call(self, e: Call) -> int:
        """A function of the spec, expanded here: its body built with its arguments bound to
        the call's (each built once, where the body first uses it)."""
        function = self.spec.functions[e.func]
        scope = {name: _Argument(arg, len(self.scopes))
                 for (name, _), arg in zip(function.args, e.args)}
        self.scopes.append(scope)
        try:
            return self.expr(function.expr)
        except SpecError as exc:
            raise exc.called_from(e.func, e.pos.line, e.pos.col,
                                  self.spec.source.line_text(e.pos.line)) from None
        finally:
            self.scopes.pop()

    def chunk(self, e: Call) -> list[int]:
        """The parts of `chunk(v, n)`: v's dimension is n equal parts (unknown: made so)."""
        if id(e) in self.chunks:
            return self.chunks[id(e)]
        v = self.expr(e.args[0])
        n = int(e.args[1].value)
        shape = self.shapes[v]
        if shape == ():
            raise self.error("chunk(v, n) splits a vector, and its argument is a scalar per row",
                             e.args[0].pos)
        if n == 1:
            self.chunks[id(e)] = [v]
            return [v]
        self.dims.line = e.pos.line
        dim = self.dims.find(shape[0])
        if isinstance(dim, _Var):
            part = _Var("chunk", 0)
            dim = self.dims.unify(dim, Stacked((part,) * n))
        if not isinstance(dim, Stacked) or len(dim.parts) != n:
            raise self.error(f"chunk(v, {n}) splits a vector made of {n} equal blocks (such as "
                             f"one of size {n}H, or the product of a parameter declared "
                             f"[{n}H, ...]); this one is {self.show(shape)}", e.args[0].pos)
        for p in dim.parts[1:]:
            try:
                self.dims.unify(dim.parts[0], p)
            except ShapeError:
                raise self.error(f"chunk(v, {n}) splits a vector into {n} equal parts, and the "
                                 f"parts of {self.show(shape)} differ", e.args[0].pos) from None
        dim = self.dims.find(dim)
        parts = []
        for k in range(n):
            nid = self.graph.add("part", (v,), (dim.parts[k],), {"index": k, "stacked": dim}, None,
                                 (e.pos.line, e.pos.col))
            self.shapes[nid] = (dim.parts[k],)
            parts.append(nid)
        self.chunks[id(e)] = parts
        return parts

    def name(self, e: Name, as_matrix: bool) -> int:
        n = e.name
        if self.scopes and not e.primed and n in self.scopes[-1]:
            return self.scopes[-1][n].value(self)
        if e.primed:
            return self.new[n]
        for op in ("input", "state"):
            if (op, n) in self.leaf:
                return self.leaf[(op, n)]
        if n in self.values:
            return self.values[n]
        return self.param(n, as_matrix, e.pos)

    # -- the whole spec ---------------------------------------------------------------------------
    def build(self) -> Graph:
        spec = self.spec
        for decls, op in ((spec.inputs, "input"), (spec.states, "state"), (spec.params, "param")):
            for decl in decls.values():
                self.add_leaf(op, decl.name, decl.dims, decl.pos)
        for eq in spec.equations:
            nid = self.chunk(eq.expr)[eq.part[0]] if eq.part else self.expr(eq.expr)
            if eq.primed:
                want = spec.states[eq.target].dims
                got = self.shapes[nid]
                if got == ():
                    raise self.error(f"{eq.target}' must be a vector {show_shape(want)} like state "
                                     f"'{eq.target}', but the expression is a scalar per row",
                                     eq.expr.pos)
                self.dims.line = eq.pos.line
                try:
                    self.dims.unify(got[0], want[0])
                except ShapeError:
                    raise self.error(f"shape mismatch: {eq.target}' must have the shape "
                                     f"{show_shape(want)} of state '{eq.target}', but the "
                                     f"expression has {self.show(got)}", eq.expr.pos) from None
                self.new[eq.target] = nid
            else:
                self.values[eq.target] = nid
            # Label the node with the equation that defines it (a leaf keeps its own name, and
            # `a = b` leaves the node named b).
            self.labels.setdefault(nid, eq.target + ("'" if eq.primed else ""))

        for name, (role, pos) in self.param_role.items():
            shape = self.dims.resolve(self.shapes[self.leaf[("param", name)]])
            if any(isinstance(p, _Var) for d in shape
                   for p in (d.parts if isinstance(d, Stacked) else (d,))):
                example = "[" + ", ".join(
                    "P" if isinstance(d, _Var) else f"{len(d.parts)}P" if isinstance(d, Stacked)
                    and any(isinstance(p, _Var) for p in d.parts) else str(d) for d in shape) + "]"
                raise self.error(f"cannot infer the shape of parameter '{name}' (found "
                                 f"{show_shape(shape)}): declare it, e.g. 'param {name}{example}' "
                                 f"with a new dimension P", spec.inferred_params[name])
        return self.finish()

    def finish(self) -> Graph:
        """A fresh graph with every provisional shape resolved to declared dimensions."""
        spec, old = self.spec, self.graph
        dims = []
        for decl in [*spec.inputs.values(), *spec.states.values(), *spec.params.values()]:
            for d in decl.dims:
                dims.extend(n for n in dim_names(d) if n not in dims)
        graph = Graph(spec.name, dims)
        for nid in sorted(old.nx.nodes):
            node = old.node(nid)
            name = node.name if node.name is not None else self.labels.get(nid)
            attrs = node.attrs
            if "stacked" in attrs:
                attrs = {**attrs, "stacked": self.dims.find(attrs["stacked"])}
            graph.add(node.op, node.args, self.dims.resolve(self.shapes[nid]), attrs, name,
                      node.pos)
        output = (self.new[spec.output_name] if spec.output_name in spec.states
                  else self.values[spec.output_name])
        graph.results = {"updates": {s: self.new[s] for s in spec.states},
                         "output": {spec.output_name: output}}
        return graph


def build(spec: Spec) -> Graph:
    return _Builder(spec).build()
