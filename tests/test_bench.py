"""The benchmark script runs end to end at a tiny size, so it cannot rot."""
import importlib.util
from pathlib import Path


def test_cpu_benchmark_runs(capsys):
    path = Path(__file__).parents[1] / "bench" / "cpu.py"
    spec = importlib.util.spec_from_file_location("bench_cpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--cells", "rnn", "--configs", "3,2,4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| cell |") and len(out) == 4  # header, rule, fwd, fwd+bwd
    assert all(line.startswith("| rnn | 3, 2, 4 |") for line in out[2:])
