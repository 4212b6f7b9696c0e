"""The code's structure, as the design promises it (docs/design.md): the package's imports form
no cycle (lazy imports inside functions included), no runtime code compares target names (it
asks the backend's capabilities), and no runtime imports a printer's internals (the Layout
names what a runtime binds)."""
import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnncc"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path):
    """(module imported, names imported from it) for every import in the file, anywhere."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule, ()) if submodule in MODULES else (base, (alias.name,))


def test_the_package_imports_form_no_cycle():
    graph = nx.DiGraph()
    for name, path in MODULES.items():
        graph.add_node(name)
        for target, _ in imports(name, path):
            if target in MODULES and target != name:
                # importing a module runs its packages' __init__ first: not a dependency of
                # the importer's own, and counted by the __init__'s own imports
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_no_target_name_is_compared_outside_the_backends():
    pattern = re.compile(r"""((?<![.\w])target\s*(==|!=|in\b))|((==|!=)\s*["'](cpu|cuda|reference)["'])"""
                         r"""|(["'](cpu|cuda)["']\s*(==|!=|in\b))""")
    found = [f"{path.relative_to(ROOT)}:{k}: {line.strip()}"
             for name, path in MODULES.items() if not name.startswith("rnncc.backends")
             for k, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line) and "device" not in line]   # a torch device is no target
    assert not found, "\n".join(found)


def test_runtimes_import_no_printer_internals():
    """A runtime asks its printer for the module's source (generate) and nothing else."""
    printers = {"rnncc.backends.cpu.codegen", "rnncc.backends.cuda.codegen",
                "rnncc.backends.printing"}
    allowed = {"generate", "launch_shape"}
    for name, path in MODULES.items():
        if not (name.endswith(".runtime") or name.startswith("rnncc.runtime")):
            continue
        for target, names in imports(name, path):
            if target in printers:
                assert set(names) <= allowed, (name, target, names)
