"""A converted model under DistributedDataParallel: examples/torch_ddp.py run by torchrun, two CPU processes
over gloo, takes the same steps as one process on the whole global batch; NCCL on a GPU (world size 1)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dlgpu.testing import assert_close  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "torch_ddp.py"
STEPS, BATCH = 3, 32
ARGS = ["--steps", str(STEPS), "--batch-size", str(BATCH)]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("torch_ddp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun(tmp_path, processes: int, device: str) -> dict:
    saved = tmp_path / "rank0.pt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
        str(EXAMPLE), "--device", device, *ARGS, "--save", str(saved),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{processes} process(es), {device}: {STEPS} steps of {BATCH}" in result.stdout
    try:
        return torch.load(saved)
    except RuntimeError as error:  # say what rank 0 wrote, so an unreadable checkpoint can be traced
        raise AssertionError(
            f"torch.load of rank 0's {saved.stat().st_size}-byte checkpoint failed: {error}\n"
            + result.stdout + result.stderr
        ) from error


def _one_process(example, device: str) -> dict:
    """The same steps in this process, without DDP, each on the whole global batch."""
    from dlgpu.train.data import load_digits

    device = torch.device(device)
    x_train, y_train = (torch.from_numpy(a).to(device) for a in load_digits()[:2])
    args = example.parse_args(ARGS)
    model, loss_fn, optimizer, schedule = example.build(device, args, STEPS)
    for batch in example.global_batches(len(x_train), BATCH, STEPS, args.seed):
        batch = torch.from_numpy(batch).to(device)
        optimizer.zero_grad()
        loss_fn(model(x_train[batch]), y_train[batch]).backward()
        optimizer.step()
        schedule.step()
    return model.state_dict()


def _assert_same_weights(distributed: dict, single: dict) -> None:
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        # Averaging two half-batch gradients rounds differently from one whole-batch mean: fp32 rounding apart.
        assert_close(distributed[key].cpu().numpy(), value.cpu().numpy(), dtype=np.float32)


@pytest.mark.slow  # torchrun starts two Python processes that import torch and dlgpu
def test_two_gloo_processes_take_the_steps_of_one_on_the_global_batch(example, tmp_path):
    _assert_same_weights(_torchrun(tmp_path, 2, "cpu"), _one_process(example, "cpu"))


@pytest.mark.gpu
def test_nccl_on_one_gpu_trains_like_one_process(example, tmp_path):
    if not torch.cuda.is_available() or not torch.distributed.is_nccl_available():
        pytest.skip("this torch build has no CUDA or no NCCL")
    _assert_same_weights(_torchrun(tmp_path, 1, "cuda"), _one_process(example, "cuda"))


def test_readme_gives_the_command_the_example_documents():
    command = "torchrun --standalone --nproc-per-node 2 examples/torch_ddp.py"
    assert command in (EXAMPLE.parents[1] / "README.md").read_text()
    assert command in EXAMPLE.read_text()
