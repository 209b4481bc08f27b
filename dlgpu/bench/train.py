"""The ``train`` family of ``dlgpu bench``: a whole training step of the digits' LeNet, against PyTorch.

GPU (batch 128): a round is 50 training steps (batch copy into the static
buffers, forward, backward, SGD with momentum) followed by one
synchronization, timed on the host clock, so the time per step includes what
eager execution really pays: one Python call and one launch per kernel.
Rows: dlgpu's eager step and the same step captured once into a CUDA graph
and replayed, each against the same network (same weights) in PyTorch eager.
CPU: a round is one epoch of the README's setting (batch 32) on the CPU
backend, against the same network in PyTorch on the CPU.

Each row's ``ms`` is the median time per step; ``ratio`` is PyTorch's over
ours (above 1: dlgpu is faster).  benchmarks/bench_train.py times the same
rounds under pytest-benchmark.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from dlgpu.bench.machines import Machine, import_optional
from dlgpu.bench.timing import WallClockTimer, summarize

FAMILY = "train"
OP = "lenet_step"
GPU_BATCH = 128
STEPS_PER_ROUND = 50


def settings() -> dict[str, float]:
    from dlgpu import train

    return {k: train.DEFAULTS[k] for k in ("lr", "momentum", "weight_decay")}


def batches(n: int, batch: int, count: int) -> list[np.ndarray]:
    """``count`` index batches walking one fixed permutation of ``n`` examples."""
    order = np.random.default_rng(0).permutation(n)
    per_epoch = n // batch
    return [order[(i % per_epoch) * batch : (i % per_epoch + 1) * batch] for i in range(count)]


# ---------------------------------------------------------------------------
# the same LeNet in PyTorch, starting from dlgpu's weights
# ---------------------------------------------------------------------------


def torch_lenet(torch, model, device: str):
    """dlgpu's LeNet (dlgpu.train.models) as a torch.nn.Sequential holding the same weights."""
    tnn = torch.nn
    c1, c2 = model[0].out_channels, model[2].out_channels
    hidden = model[5].out_features
    net = tnn.Sequential(
        tnn.Conv2d(1, c1, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(c1, c2, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(model[5].in_features, hidden), tnn.ReLU(), tnn.Linear(hidden, 10),
    )
    with torch.no_grad():
        for target, source in zip(net.parameters(), model.state_dict().values()):
            target.copy_(torch.from_numpy(source))
    return net.to(device)


def torch_step(torch, model, x_all, y_all, batch: int, device: str):
    """(step(indices), to_device(indices)): one PyTorch SGD step on the batch the indices pick."""
    net = torch_lenet(torch, model, device)
    opt = torch.optim.SGD(net.parameters(), **settings())
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(x_all).to(device)
    y_all = torch.from_numpy(y_all).to(device)
    x = torch.empty((batch, *x_all.shape[1:]), device=device)
    y = torch.empty((batch,), dtype=torch.int64, device=device)

    def step(indices):
        torch.index_select(x_all, 0, indices, out=x)
        torch.index_select(y_all, 0, indices, out=y)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    return step, lambda idx: torch.from_numpy(idx).to(device)


# ---------------------------------------------------------------------------
# rounds
# ---------------------------------------------------------------------------


def torch_round(torch, model, x_all, y_all, chosen: list[np.ndarray], device: str) -> Callable[[], None]:
    """One PyTorch pass over the index batches ``chosen`` (synchronized on the GPU)."""
    step, to_device = torch_step(torch, model, x_all, y_all, len(chosen[0]), device)
    indices = [to_device(idx) for idx in chosen]

    def run_round():
        for idx in indices:
            step(idx)
        if device == "cuda":
            torch.cuda.synchronize()

    return run_round


def gpu_round(mode: str, digits, cupy, torch=None) -> Callable[[], None]:
    """One round of STEPS_PER_ROUND steps at batch GPU_BATCH, synchronized: "torch", "eager" or "graph"."""
    from dlgpu import nn, optim, train

    x_train, y_train = digits[0], digits[1]
    model = train.initial_model("lenet", "relu", 0)
    chosen = batches(len(x_train), GPU_BATCH, STEPS_PER_ROUND)
    if mode == "torch":
        return torch_round(torch, model, x_train, y_train, chosen, "cuda")
    stream = cupy.cuda.Stream(non_blocking=True)
    model.to("cuda")
    opt = optim.SGD(model.parameters(), **settings())
    static = train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (GPU_BATCH, 1, 8, 8), cupy)
    x_dev, y_dev = cupy.asarray(x_train), cupy.asarray(y_train)
    indices = [cupy.asarray(idx) for idx in chosen]
    run = static
    if mode == "graph":
        graphed = train.GraphedStep(static, stream)
        with stream:
            static.load(x_dev, y_dev, indices[0])
            graphed.warm_up()
            graphed.capture()  # a failure here fails the row: no silent eager row
        run = graphed

    def dlgpu_round():
        with stream:
            for idx in indices:
                static.load(x_dev, y_dev, idx)
                run()
        stream.synchronize()

    return dlgpu_round


def cpu_round(framework: str, digits, torch=None) -> tuple[Callable[[], None], int, int]:
    """(one epoch of the README's setting, its steps, its batch) on the CPU: "torch" or "dlgpu"."""
    from dlgpu import nn, optim, train

    x_train, y_train = digits[0], digits[1]
    batch = train.DEFAULTS["batch_size"]
    model = train.initial_model("lenet", "relu", 0)
    steps = len(x_train) // batch
    chosen = batches(len(x_train), batch, steps)
    if framework == "torch":
        return torch_round(torch, model, x_train, y_train, chosen, "cpu"), steps, batch
    static = train.StaticStep(model, nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), **settings()),
                              (batch, 1, 8, 8))

    def dlgpu_epoch():
        for idx in chosen:
            static.load(x_train, y_train, idx)
            static()

    return dlgpu_epoch, steps, batch


# ---------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------


def _row(machine: Machine, variant: str, batch: int, note: str) -> dict[str, Any]:
    return {"family": FAMILY, "op": OP, "variant": variant, "shape": f"lenet batch {batch}", "dtype": "float32",
            "precision": "ieee", "backend": machine.name, "bytes": None, "flops": None, "ms": None,
            "baseline": None, "baseline_ms": None, "ratio": None, "gbps": None, "tflops": None,
            "pct_of_ceiling": None, "note": note}


def _per_step(fn: Callable[[], None], steps: int, quick: bool) -> dict[str, Any]:
    timer = WallClockTimer(budget_s=2.0 if quick else 10.0, min_reps=3, clock=time.perf_counter)
    t = summarize(timer.measure(lambda _i: fn(), warmup=1, reps=3 if quick else 10))
    return {"ms": t.median_ms / steps, "p10_ms": t.p10_ms / steps, "p90_ms": t.p90_ms / steps, "reps": t.reps}


def rows(machine: Machine, quick: bool) -> list[dict[str, Any]]:
    """The family's rows on this machine: dlgpu's step(s), each with PyTorch's time as its baseline."""
    from dlgpu import train

    on_gpu = machine.name == "cuda"
    batch = GPU_BATCH if on_gpu else train.DEFAULTS["batch_size"]
    variants = ("eager", "graph") if on_gpu else ("eager",)
    note = (f"{STEPS_PER_ROUND} steps per round, host clock, synchronized" if on_gpu
            else "one epoch of the README's setting per round")
    try:
        from dlgpu.train.data import load_digits

        digits = load_digits()
    except Exception as exc:  # noqa: BLE001 - scikit-learn missing: the rows say so
        why = f"the digits are not loadable ({type(exc).__name__}: {exc})"
        return [{**_row(machine, v, batch, note), "skipped": why} for v in variants]
    torch = import_optional("torch")
    if torch is not None and on_gpu and not torch.cuda.is_available():
        torch = None
    baseline: dict[str, Any] = {}
    if torch is not None:
        try:
            if on_gpu:
                baseline = _per_step(gpu_round("torch", digits, machine.xp, torch), STEPS_PER_ROUND, quick)
            else:
                fn, steps, _ = cpu_round("torch", digits, torch)
                baseline = _per_step(fn, steps, quick)
        except Exception as exc:  # noqa: BLE001 - a broken PyTorch costs the baseline, not the rows
            baseline = {"error": f"{type(exc).__name__}: {exc}"}
    result = []
    for variant in variants:
        try:
            if on_gpu:
                timing = _per_step(gpu_round(variant, digits, machine.xp), STEPS_PER_ROUND, quick)
            else:
                fn, steps, _ = cpu_round("dlgpu", digits)
                timing = _per_step(fn, steps, quick)
        except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others
            timing = {"error": f"dlgpu: {type(exc).__name__}: {exc}"}
        row = {**_row(machine, variant, batch, note), **timing}
        if torch is not None:
            row["baseline"] = "torch"
            row["baseline_ms"] = baseline.get("ms")
            if baseline.get("error"):
                row["baseline_error"] = baseline["error"]
            elif row["ms"]:
                row["ratio"] = baseline["ms"] / row["ms"]
        result.append(row)
    return result
