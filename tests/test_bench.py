"""The benchmark script runs end to end at a tiny size, so it cannot rot."""
import importlib.util
from pathlib import Path


def script(name: str):
    """bench/NAME.py, imported as a module."""
    path = Path(__file__).parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_benchmark_runs(capsys):
    bench = script("cpu")
    assert bench.main(["--cells", "rnn", "lnlstm", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell |") and len(out) == 6  # header, rule, 2 cells x 2 passes
    assert all(line.startswith("| rnn | 3, 2, 4 |") for line in out[2:4])
    assert all(line.startswith("| lnlstm | 3, 2, 4 |") for line in out[4:])
    assert all(line.count("|") == 11 for line in out)
    # the custom cell has a TorchScript column, the builtin one none
    assert out[2].split("|")[6].strip() == "-" and out[4].split("|")[6].strip() != "-"


def test_cpu_profile_runs(capsys):
    profile = script("profile_cpu")
    assert profile.main(["rnn", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert all(part in out for part in ("whole", "gemms only", "kernels only", "layer(x)"))


def test_stack_benchmark_runs(capsys):
    bench = script("stacks")
    assert bench.main(["--configs", "rnn,2,bi,3,2,4", "gru,3,uni,5,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell | layers |") and len(out) == 6  # 2 configs x 2 passes
    assert all(line.startswith("| rnn | 2 | bi | 3, 2, 4 |") for line in out[2:4])
    assert all(line.startswith("| gru | 3 | uni | 5, 2, 4 |") for line in out[4:])
    assert all(line.count("|") == out[0].count("|") for line in out)


def test_gpu_benchmark_runs_in_the_simulator(capsys):
    """tests/conftest.py turns on Numba's CUDA simulator: rnncc's kernels run there, torch on
    the CPU; the table has every row, with no verdict on the targets."""
    bench = script("gpu")
    assert bench.main(["--cells", "gru", "lnlstm", "--configs", "2,2,3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell | T, B, I=H |") and len(out) == 6  # 2 cells x 2 passes
    assert all(line.startswith("| gru | 2, 2, 3 |") for line in out[2:4])
    assert all(line.startswith("| lnlstm | 2, 2, 3 |") for line in out[4:])
    assert all(line.count("|") == 10 and line.endswith("| - |") for line in out[2:])
