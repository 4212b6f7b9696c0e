"""A non-editable install: a wheel built from this checkout, installed apart from it, has the
shipped cells (the package rnncc.specs) and a working command."""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_pyproject_lists_every_package():
    """setuptools is given an explicit package list (it has to map specs/ onto rnncc.specs):
    a new package folder must be added to it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rnncc").rglob(
        "__init__.py")}
    assert listed == found | {"rnncc.specs"}


def test_a_wheel_installs_the_shipped_cells(tmp_path):
    dist, target, source = tmp_path / "dist", tmp_path / "site", tmp_path / "source"
    # built from a clean copy: setuptools would reuse an earlier build/ folder of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                            "--no-build-isolation", "-w", str(dist), "-q"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("rnncc-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target",
                              str(target), str(wheel), "-q"], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr
    # run from an empty folder, with only the installed copy on the path (the editable install's
    # finder would otherwise resolve rnncc to this checkout)
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import rnncc; "
              "assert rnncc.__file__.startswith(sys.argv[1]), rnncc.__file__; "
              "print(' '.join(rnncc.shipped())); "
              "cell = rnncc.load('lstm'); print(cell.name, cell.params)")
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    names, cell = done.stdout.splitlines()
    assert names.split() == sorted(p.stem for p in (ROOT / "specs").glob("*.cell"))
    assert cell.startswith("lstm ['W_i'")
    cli = ("import sys; sys.path.insert(0, sys.argv[1]); from rnncc.cli import main; "
           "sys.exit(main(sys.argv[2:]))")
    for argv in (["run", "gru", "--I", "3", "--H", "4", "--T", "3", "--B", "2", "--target",
                  "reference"], ["check", "lnlstm", "--T", "2"]):
        done = subprocess.run([sys.executable, "-c", cli, str(target), *argv],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert ("ys [3, 2, 4]" if argv[0] == "run" else "PASS") in done.stdout
