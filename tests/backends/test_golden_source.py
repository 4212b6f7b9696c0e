"""The generated source of lstm and gru, as files: a change in what the compiler emits shows up
in review as a diff of tests/golden/*.cpu.txt and *.cuda.txt (each holds a module's forward,
backward and infer functions, float32; cuda: the GPU's module, not the simulator's).
RNNCC_UPDATE_GOLDEN=1 rewrites them. What the code computes is held to the reference elsewhere
(test_cpu.py, test_cuda.py); these hold what it looks like."""
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_generated_source_golden(shipped_cells, name, target):
    source = shipped_cells[name].show("text", stage=target)
    path = GOLDEN / f"{name}.{target}.txt"
    if os.environ.get("RNNCC_UPDATE_GOLDEN"):
        path.write_text(source)
    assert path.exists(), f"{path} is missing: run with RNNCC_UPDATE_GOLDEN=1 and review it"
    assert source == path.read_text(), (
        f"the generated {target} source of {name} changed; review the diff with "
        f"RNNCC_UPDATE_GOLDEN=1 and git diff {path}")


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_value_names_come_from_the_spec_not_node_ids(shipped_cells, target):
    """Buffers and locals are named after the spec's values (i, c', tanh(c'), the gate
    gradients), so a golden diff reads as a change of the cell, not of node numbering."""
    import re
    source = shipped_cells["lstm"].show("text", stage=target)
    assert not re.search(r"\b[vwrx]_(add|sub|mul|div|tanh|sigmoid|concat|const)_?\d+\b", source)
    for name in ("v_tanh_c_next", "v_dgates", "v_c_next", "v_h_next"):
        assert name in source, name
