"""DistributedDataParallel wraps a model with rnncc layers: two processes on this machine
(gloo, CPU), each training on half of the batch rows, end with the parameters one process
training on the whole batch ends with (DDP averages the halves' gradients; the loss is a mean,
so the average is the whole batch's gradient)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from . import ddp_worker  # noqa: E402
from ..close import assert_close  # noqa: E402

STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_trains_like_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "params.pt"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE="2")
    worker = Path(ddp_worker.__file__)
    procs = [subprocess.Popen([sys.executable, str(worker), str(out), str(STEPS)],
                              env=dict(env, RANK=str(rank)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    distributed = torch.load(out)
    single = ddp_worker.model()
    x, target = ddp_worker.data()
    ddp_worker.train(single, x, target, STEPS)
    start = ddp_worker.model()
    for name, p in single.named_parameters():
        assert not torch.equal(p, getattr(start, name)), f"{name} did not train"
        assert_close(distributed[name].numpy(), p.detach().numpy(), 1e-10, name)
