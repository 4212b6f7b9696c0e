"""A compiled cell: the user-facing object behind rnncc.compile() and rnncc.load()."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from functools import cached_property, lru_cache
from importlib import resources

from .. import backends
from ..autodiff import differentiate
from ..frontend import Spec, decode, parse_spec, read_source
from ..frontend.lint import lint
from ..frontend.source import Source
from ..graph import FORMATS, Graph, build, verify
from ..ops import Stacked, dim_size
from ..passes import PASS_NAMES, optimize
from ..plan import Plan, make_plan, with_saved
from ..plan.scan import CHUNKS
from . import initialise
from .arguments import check_backward, check_forward, float_dtype

# What `show` can print: the graphs as built, after any pass, scheduled, and the plan.
STAGES = ("forward", "backward", *PASS_NAMES, *(f"backward:{p}" for p in PASS_NAMES), "plan",
          *backends.SOURCES)


def _shipped_dir():
    """Where the shipped .cell files are: the package rnncc.specs, which the build maps onto the
    repository's specs/ folder (pyproject.toml), so wheels, plain and editable installs all have
    them; a checkout that is on sys.path without being installed reads specs/ directly."""
    try:
        return resources.files("rnncc.specs")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "specs"
        if not checkout.is_dir():
            raise RuntimeError("rnncc's shipped specs are missing: this installation has no "
                               "package rnncc.specs (reinstall rnncc)") from None
        return checkout


class Cell:
    """One recurrent cell: its spec, its step graph, and ways to run it.

    Attributes (names): name, inputs, states, output, params, dims.
    """

    def __init__(self, spec: Spec, graph: Graph):
        self.spec = spec
        self.graph = graph
        self.name = spec.name
        self.inputs = list(graph.inputs)
        self.states = list(graph.states)
        self.output = graph.output_name
        self.params = list(graph.params)
        self.dims = list(graph.dims)
        self.warnings: list = []   # the spec's lint warnings (SpecWarning), also warned
        self.symbolic_shapes = {
            name: graph.node(nid).shape
            for kind in (graph.inputs, graph.states, graph.params) for name, nid in kind.items()
        }

    def __repr__(self) -> str:
        return (f"<rnncc.Cell {self.name}: inputs {self.inputs}, states {self.states}, "
                f"output {self.output!r}, dims {self.dims}>")

    @cached_property
    def backward_graph(self) -> Graph:
        """The backward step graph, derived from the forward one (built on first use)."""
        return differentiate(self.graph)

    @cached_property
    def plan(self) -> Plan:
        """The optimized execution plan, forward and backward (built on first use)."""
        return make_plan(self.graph, self.backward_graph)

    @cached_property
    def inference_plan(self):
        """The forward GraphPlan without the values backward reads (forward-only calls)."""
        from ..plan import lower
        return lower(optimize(self.graph))

    @property
    def schedules(self) -> tuple:
        """The schedules of the time loop that every plan of the cell runs (plan.py: "step",
        "lanes" for a cell whose recurrence meets no matrix, "scan" for one whose recurrence is
        linear both ways), the preferred one first; `schedule=` of forward, backward and
        rnncc.RNN picks one."""
        plans = self.directions().values()
        first = next(iter(plans)).schedules
        return tuple(s for s in first if all(s in p.schedules for p in plans))

    def directions(self) -> dict:
        """The GraphPlans of the cell's calls: training forward, backward, inference."""
        return {"forward": self.plan.forward, "backward": self.plan.backward,
                "infer": self.inference_plan}

    def compiled_plans(self) -> dict:
        """The GraphPlans a compiled backend generates a function for, by function name: each
        direction's, and the scan's chunk step of those that have one (`forward_chunks`)."""
        plans = self.directions()
        return {**plans, **{f"{d}{CHUNKS}": p.chunks for d, p in plans.items()
                            if p.chunks is not None}}

    def show(self, format: str = "text", stage: str = "forward") -> str:
        """A step graph, or the plan, as text; graphs also as Graphviz dot or json, the plan
        as json.

        stage: "forward" (the graph the spec becomes), "backward" (its derivative), a pass name
        ("cse", "stack", ..., "fuse": the forward graph after that pass, "backward:cse" the
        backward one; after hoist and fuse each node shows its phase and kernel), "plan",
        "cpu" (the Numba source the cpu target compiles, for float32) or "cuda" (the
        numba.cuda source the cuda target compiles for a GPU, for float32).
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        if stage in backends.SOURCES:
            if format != "text":
                raise ValueError(f"the generated source prints as text, not {format!r}")
            return backends.get(stage).source(self, np.float32)
        if stage == "plan":
            if format not in ("text", "json"):
                raise ValueError(f"the plan prints as text or json, not {format!r}")
            return self.plan.text() if format == "text" else self.plan.json()
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        if stage == "forward":
            graph = self.graph
        elif stage == "backward":
            graph = self.backward_graph
        else:  # the graphs the plan is made from: forward for training, with its saved values
            base = (self.backward_graph if stage.startswith("backward:")
                    else with_saved(self.graph, self.backward_graph))
            graph = optimize(base, until=stage.removeprefix("backward:"))
        return FORMATS[format](graph)

    def shape(self, name: str, **sizes) -> tuple:
        """The concrete shape of an input, state or parameter for the given dimension sizes."""
        if name not in self.symbolic_shapes:
            raise KeyError(name)
        return self.shape_of_dims(self.symbolic_shapes[name], sizes)

    @staticmethod
    def shape_of_dims(symbolic: tuple, sizes: dict) -> tuple:
        return tuple(dim_size(d, sizes) for d in symbolic)

    @property
    def initialisers(self) -> dict:
        """Parameter name -> the initialiser its spec line gives (`param b[H] = 1`); parameters
        without one are absent (they follow PyTorch's rule, see init_params)."""
        return {name: decl.init for name, decl in self.spec.params.items()
                if decl.init is not None}

    def init_params(self, seed: int = 0, dtype=np.float32, *, initialisers: bool = True,
                    **sizes) -> dict:
        """Fresh parameters: each parameter's initialiser from the spec (`param b_f[H] = 1`,
        `= uniform(a, b)`, `= normal(mean, std)`, `= xavier`, `= orthogonal`, `= zeros`,
        `= ones`); a parameter without one follows PyTorch's rule for nn.LSTM: uniform in
        (-k, k), k = 1/sqrt(size of the first state) (the hidden size H of the shipped cells).

        Values are drawn in float64 from numpy's default_rng(seed), in the order of cell.params,
        then cast: the same seed gives the same parameters in float32 and float64 up to rounding.
        initialisers=False ignores the spec's initialisers (every parameter by PyTorch's rule:
        random values everywhere, as tests want).
        """
        dtype = float_dtype(dtype)
        missing = [d for d in self.dims if d not in sizes]
        unknown = [d for d in sizes if d not in self.dims]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise ValueError(f"init_params takes one size per dimension of cell {self.name!r} "
                             f"({', '.join(self.dims) or 'none'}): {'; '.join(problems)}")
        for dim, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"dimension {dim} must be a positive integer, got {size!r}")
        first_state = self.symbolic_shapes[self.states[0]][0]
        k = 1.0 / math.sqrt(sizes[first_state] if isinstance(first_state, str) else first_state)
        rng = np.random.default_rng(seed)
        inits = self.initialisers if initialisers else {}
        return {name: initialise.draw(inits.get(name), self.shape(name, **sizes), rng, k,
                                      blocks=_row_blocks(self.symbolic_shapes[name])
                                      ).astype(dtype)
                for name in self.params}

    def forward(self, p, x, state=None, target: str = "reference", lengths=None,
                schedule: str | None = None):
        """Run the cell over a sequence: returns (ys [T, B, d_out], final states dict).
        schedule: the time loop's schedule on the compiled targets ("step", "lanes", "scan";
        default the plan's choice, see `schedules`); the numpy targets run step by step."""
        backend = backends.get(target)
        call = check_forward(self, p, x, state, lengths, device_ok=backend.device_arrays,
                             schedule=schedule)
        return backend.forward(self, call)

    def backward(self, p, x, dys, state=None, dfinal=None, target: str = "reference",
                 lengths=None, schedule: str | None = None) -> dict:
        """Gradients of sum(ys * dys) + sum over states of sum(final * dfinal) by BPTT.

        Runs the forward pass (keeping what backward needs) and then the backward pass from the
        last step to the first. Returns {"params": name -> like p[name], "x": like x (a dict
        when the cell has several inputs), "state": state name -> [B, dim]}, the last being the
        gradient with respect to the initial state (pass it on as `dfinal` of the previous chunk
        for truncated BPTT). schedule: as for forward, for both directions.
        """
        backend = backends.get(target)
        device_ok = backend.device_arrays
        call = check_forward(self, p, x, state, lengths, device_ok=device_ok,
                             schedule=schedule)
        dys, dfinal = check_backward(self, call, dys, dfinal, device_ok=device_ok)
        _, _, tape = backend.train(self, call)
        dparams, dxs, dstate = backend.backward(self, call, tape, dys, dfinal)
        dx = dxs if isinstance(x, dict) else dxs[self.inputs[0]]
        return {"params": dparams, "x": dx, "state": dstate}


def _row_blocks(symbolic: tuple) -> int:
    """How many matrices a parameter stacks: 4 for [4H, I] (its rows are four blocks)."""
    first = symbolic[0] if symbolic else None
    return len(first.parts) if isinstance(first, Stacked) and len(symbolic) == 2 else 1


def _cell_from_source(source: Source, stacklevel: int = 3) -> Cell:
    """The cell of a spec; its lint warnings are warned at `stacklevel` (the user's call to
    rnncc.compile: 3, to rnncc.load: 4)."""
    spec = parse_spec(source)
    cell = Cell(spec, verify(build(spec)))
    cell.warnings = lint(spec)
    for warning in cell.warnings:
        warnings.warn(warning, stacklevel=stacklevel)
    return cell


def compile(spec) -> Cell:  # noqa: A001  (the public name the API promises)
    """Compile a cell spec: spec text (str or bytes), or a path (pathlib.Path or str ending
    in .cell) to a spec file. Raises rnncc.SpecError, pointing at the line, for a bad spec."""
    if isinstance(spec, Path):
        return _cell_from_source(read_source(spec))
    if isinstance(spec, (bytes, bytearray)):
        return _cell_from_source(decode(bytes(spec), "<spec>"))
    if not isinstance(spec, str):
        raise TypeError(f"rnncc.compile takes spec text or a path, not {type(spec).__name__}")
    if spec.endswith(".cell") and "\n" not in spec:
        return _cell_from_source(read_source(spec))
    return _cell_from_source(decode(spec.encode("utf-8", "surrogatepass"), "<spec>"))


def shipped() -> list[str]:
    """Names of the specs shipped with rnncc (the repository's specs/ folder)."""
    return sorted(p.name[:-5] for p in _shipped_dir().iterdir() if p.name.endswith(".cell"))


def load(name: str) -> Cell:
    """A shipped spec by name: rnncc.load("lstm"). A process builds each shipped cell once and
    hands out the same Cell (and so the same compiled code) to every later load."""
    stem = name[:-5] if name.endswith(".cell") else name
    if stem not in shipped():
        raise ValueError(f"no shipped spec named {name!r}; shipped: {', '.join(shipped())}")
    return _load_shipped(stem)


@lru_cache(maxsize=None)
def _load_shipped(stem: str) -> Cell:
    path = _shipped_dir().joinpath(f"{stem}.cell")
    return _cell_from_source(decode(path.read_bytes(), str(path)), stacklevel=4)
