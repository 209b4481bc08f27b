"""Data-parallel training of a PyTorch LeNet converted to dlgpu, under DistributedDataParallel.

    torchrun --standalone --nproc-per-node 2 examples/torch_ddp.py                  # 2 CPU processes, gloo
    torchrun --standalone --nproc-per-node 4 examples/torch_ddp.py --device cuda    # one process per GPU, NCCL

Each process holds a replica of the model (``dlgpu.torch.convert`` of a plain
``torch.nn`` LeNet) and takes its share of every global batch of
scikit-learn's 8x8 digits; DDP averages the gradients across processes
during ``backward``, so every replica takes the same SGD step as one process
would on the whole global batch.  dlgpu runs the layers; PyTorch runs the
communication (gloo on CPUs, NCCL on GPUs).  Rank 0 reports the loss, the
test accuracy and the time per step; ``--save`` writes its final weights.
"""

from __future__ import annotations

import argparse
import os
import time

# Before torch: dlgpu.cpu asks for passive OpenMP workers (see dlgpu.torch).
import dlgpu.cpu  # noqa: F401, I001
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import dlgpu
import dlgpu.torch as dt
from dlgpu.train.data import load_digits


def lenet() -> torch.nn.Sequential:
    """The network of ``dlgpu train --model lenet`` written in plain torch.nn (8x8 -> 4x4 -> 2x2)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def global_batches(n_examples: int, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """Index arrays of ``steps`` global batches: a fresh permutation each epoch, whole batches only."""
    rng = np.random.default_rng(seed)
    per_epoch = n_examples // batch
    batches = []
    while len(batches) < steps:
        order = rng.permutation(n_examples)
        batches += [order[i * batch : (i + 1) * batch] for i in range(min(per_epoch, steps - len(batches)))]
    return batches


def build(device: torch.device, args: argparse.Namespace, steps: int):
    """(model, loss, optimizer, schedule): the same in every process for the same ``args.seed``.

    SGD with momentum and a cosine learning-rate decay to zero over the run, as ``dlgpu train`` uses.
    """
    torch.manual_seed(args.seed)
    model = dt.convert(lenet()).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return model, dt.CrossEntropyLoss(), optimizer, schedule


def save_state(model: torch.nn.Module, path: str) -> None:
    """Write ``model``'s state_dict to ``path`` with torch.save, atomically.

    Each tensor is cloned into its own CPU storage first, so the file never aliases a buffer the process
    still owns, and it is written beside ``path`` and renamed into place, so a reader sees the old file or
    the whole new one, never a part.
    """
    state = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in model.state_dict().items()}
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: gloo; cuda: NCCL")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=32, help="the GLOBAL batch, split across processes")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate at the start")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--seed", type=int, default=0, help="model initialization and batch order")
    parser.add_argument("--save", default=None, help="write rank 0's final state_dict here (torch.save)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if "RANK" not in os.environ:
        raise SystemExit("run under torchrun, e.g. torchrun --standalone --nproc-per-node 2 examples/torch_ddp.py")
    cuda = args.device == "cuda"
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must divide evenly among {world} processes")

    x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(device) for a in load_digits())
    steps = args.steps if args.steps is not None else args.epochs * (len(x_train) // args.batch_size)
    model, loss_fn, optimizer, schedule = build(device, args, steps)
    replica = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)

    start = time.perf_counter()
    for step, batch in enumerate(global_batches(len(x_train), args.batch_size, steps, args.seed)):
        mine = torch.from_numpy(batch[rank::world]).to(device)  # this process's share of the global batch
        optimizer.zero_grad()
        loss = loss_fn(replica(x_train[mine]), y_train[mine])
        loss.backward()  # DDP all-reduces (averages) the gradients here
        optimizer.step()
        schedule.step()
        if rank == 0 and (step + 1) % 50 == 0:
            print(f"step {step + 1}/{steps}  loss {loss.item():.4f}", flush=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    dlgpu.check_errors()  # a bad label the kernels found raises here, where the GPU has finished anyway

    if rank == 0:
        with torch.no_grad():
            correct = (model(x_test).argmax(1) == y_test).sum().item()
        print(f"{world} process(es), {args.device}: {steps} steps of {args.batch_size}, "
              f"{1e3 * seconds / max(steps, 1):.1f} ms per step; "
              f"test accuracy {100 * correct / len(y_test):.2f}% ({correct}/{len(y_test)})")
        if args.save:
            save_state(model, args.save)
    # Tear down together: a rank that destroys its group and exits while another still works can take
    # gloo's threads down mid-connection (seen as 'terminate called without an active exception').
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
