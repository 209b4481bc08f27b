"""Cases of the softmax stem (kernels/softmax.cu): softmax cross-entropy and its gradient.

Checks: single rows and classes, logits scaled to 1e4 (stability), 1000
classes (the block-per-row kernel), and 1021 rows outside quick mode; int64
labels.  The backward pass starts from the reference's probabilities in the
target's dtype.  Tolerance: elementwise.

Benchmarks: 65536 x 1000 logits (read logits and labels, write probs),
against the same formulas in CuPy or NumPy, PyTorch's log_softmax + nll_loss
on the GPU, and the reference on the CPU.  Each carries the share of the copy
bandwidth predicted for an H100 before any GPU ran it (``predicted``;
kernels/softmax.cu's header has the reasoning).
"""

from __future__ import annotations

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.precision import is_half
from dlgpu.cases.case import STORAGE_DTYPES, Benchmark, Check, Output, Prediction, f32, randn, torch_view
from dlgpu.testing import random_array, to_numpy
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, ShapeError
from dlgpu.testing.bad_input import BadInput, FakeCupy, in_debug_mode, labels, logits, on_cpu, on_gpu, rand

FAMILY = "softmax"


def _check(rows: int, classes: int, scale: float, dtype=None) -> list[Check]:
    label = f"{rows}x{classes} scale {scale:g}"

    def inputs(rng, target):
        logits = random_array(rng, (rows, classes), target.dtype, scale=scale)
        return logits, rng.integers(0, classes, size=rows).astype(np.int64)

    def run_forward(rng, target):
        logits, labels = inputs(rng, target)
        loss, probs = target.backend.softmax_cross_entropy(target.array(logits), target.array(labels))
        ref_loss, ref_probs = R.softmax_cross_entropy(logits, labels)
        loss = to_numpy(loss).reshape(1)
        if loss.dtype != (np.float32 if is_half(target.dtype) else target.dtype):  # 16-bit logits: a float32 loss
            loss = np.full(1, np.inf)
        return [Output("loss", loss, np.reshape(ref_loss, 1), True),
                Output("probs", probs, ref_probs, True)]

    def run_backward(rng, target):
        logits, labels = inputs(rng, target)
        probs = R.softmax_cross_entropy(logits, labels)[1].astype(target.dtype)
        grad = target.backend.softmax_cross_entropy_backward(target.array(probs), target.array(labels))
        return [Output("grad", grad, R.softmax_cross_entropy_backward(probs, labels), True)]

    return [Check("softmax_cross_entropy", label, run_forward, dtype=dtype),
            Check("softmax_cross_entropy_backward", label, run_backward, dtype=dtype)]


def checks(quick: bool = True) -> list[Check]:
    configs = [(1, 1, 1.0), (5, 3, 1.0), (7, 10, 1e4), (64, 1000, 3.0)] + ([] if quick else [(1021, 10, 10.0)])
    # 16-bit storage: a few rows, and rows wide enough for the vector path.
    return [*(check for config in configs for check in _check(*config)),
            *(check for dtype in STORAGE_DTYPES for config in configs[1::2] for check in _check(*config, dtype))]


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------

SHAPES = {"gpu": (65536, 1000), "cpu": (16384, 1000), "cpu_quick": (2048, 1000)}


def _inputs(xp, shape, seed):
    n, c = shape
    labels = np.random.default_rng(seed).integers(0, c, size=n).astype(np.int32)
    return {"logits": randn(xp, shape, seed) * 4, "labels": xp.asarray(labels)}


def _backward_inputs(xp, shape, seed):
    d = _inputs(xp, shape, seed)
    e = xp.exp(d["logits"] - d["logits"].max(axis=1, keepdims=True))
    d["probs"] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    del d["logits"]
    return d


def xp_forward(xp, d):
    """(loss, probs) written with array expressions."""
    logits, labels = d["logits"], d["labels"]
    m = logits.max(axis=1, keepdims=True)
    e = xp.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    probs = e / s
    picked = logits[xp.arange(logits.shape[0]), labels]
    loss = (xp.log(s[:, 0]) + m[:, 0] - picked).mean()
    return loss, probs


def torch_forward(torch, d):
    """What torch.nn.functional.cross_entropy runs (log_softmax, then nll_loss), plus the
    probabilities that dlgpu returns alongside the loss."""
    logits = torch_view(torch, d["logits"])
    if "_labels_i64" not in d:
        d["_labels_i64"] = torch_view(torch, d["labels"]).long()
    logp = torch.log_softmax(logits, dim=1)
    loss = torch.nn.functional.nll_loss(logp, d["_labels_i64"])
    return loss, logp.exp()


def xp_backward(xp, d):
    """(probs - onehot(labels)) / N written with array expressions."""
    probs, labels = d["probs"], d["labels"]
    n = probs.shape[0]
    g = probs / np.float32(n)
    g[xp.arange(n), labels] -= np.float32(1.0 / n)
    return g


def torch_backward(torch, d):
    """The kernels PyTorch's autograd runs for cross_entropy's backward: nll_loss_backward, then
    _log_softmax_backward_data, from the saved log-probabilities."""
    aten = torch.ops.aten
    if "_logp" not in d:
        probs = torch_view(torch, d["probs"])
        d["_logp"] = probs.log()
        d["_labels_i64"] = torch_view(torch, d["labels"]).long()
        _, d["_total_weight"] = aten.nll_loss_forward(d["_logp"], d["_labels_i64"], None, 1, -100)
        d["_grad_loss"] = torch.ones((), device=probs.device, dtype=probs.dtype)
    grad_logp = aten.nll_loss_backward(d["_grad_loss"], d["_logp"], d["_labels_i64"], None, 1, -100,
                                       d["_total_weight"])
    return aten._log_softmax_backward_data(grad_logp, d["_logp"], 1, d["_logp"].dtype)


def _bytes(shape):
    n, c = shape
    return f32(2 * n * c) + 4 * n  # read the rows and the int32 labels, write the rows


BENCHMARKS = (
    Benchmark(
        family=FAMILY, op="softmax_cross_entropy", shapes=SHAPES,
        make_inputs=_inputs,
        run=lambda d: F.softmax_cross_entropy(d["logits"], d["labels"]),
        xp_baseline=xp_forward, torch_baseline=torch_forward,
        reference=lambda d: R.softmax_cross_entropy(d["logits"], d["labels"]),
        bytes_moved=_bytes, predicted=Prediction("pct_of_ceiling", 72, 92, why="kernels/softmax.cu"),
    ),
    Benchmark(
        family=FAMILY, op="softmax_cross_entropy_backward", shapes=SHAPES,
        make_inputs=_backward_inputs,
        run=lambda d: F.softmax_cross_entropy_backward(d["probs"], d["labels"]),
        xp_baseline=xp_backward, torch_baseline=torch_backward,
        reference=lambda d: R.softmax_cross_entropy_backward(d["probs"], d["labels"]),
        bytes_moved=_bytes, predicted=Prediction("pct_of_ceiling", 75, 95, why="kernels/softmax.cu"),
    ),
)


# ---------------------------------------------------------------------------
# bad input: refused before any launch, with the op and the value named
# ---------------------------------------------------------------------------


def bad_inputs() -> list[BadInput]:
    """Calls of this stem's ops that must be refused (dlgpu.testing.bad_input.assert_refused)."""
    return [
        BadInput("softmax-backward-rank", lambda w: F.softmax_cross_entropy_backward(w(rand(40)), w(labels)),
                 ShapeError, "probs must be 2-D"),
        BadInput("labels-rank", lambda w: F.softmax_cross_entropy(w(logits), w(labels.reshape(2, 2))),
                 ShapeError, "labels must be 1-D"),
        BadInput("softmax-labels-count", lambda w: F.softmax_cross_entropy(w(logits), w(labels[:2])),
                 ShapeError, "labels has 2 entries"),
        BadInput("softmax-no-classes", lambda w: F.softmax_cross_entropy(w(rand(4, 0)), w(labels)),
                 ShapeError, "only the batch (first) dimension may be 0"),
        BadInput("label-out-of-range",  # the CUDA backend checks labels on the host in debug mode only
                 lambda w: in_debug_mode(F.softmax_cross_entropy, w(logits), w(np.array([0, 1, 2, 99]))),
                 ArgumentError, "label 99 is outside [0, 10)"),
        BadInput("backward-label-negative",
                 lambda w: in_debug_mode(F.softmax_cross_entropy_backward, w(logits), w(np.array([0, -1, 1, 2]))),
                 ArgumentError, "softmax_cross_entropy_backward: label -1 is outside [0, 10)"),
        BadInput("labels-uint8", lambda w: F.softmax_cross_entropy_backward(w(logits), w(labels.astype(np.uint8))),
                 DtypeError, "labels must be int32 or int64"),
        on_gpu("mix-softmax-labels", lambda: F.softmax_cross_entropy(FakeCupy(logits), labels),
               DeviceError, "labels is numpy"),
        on_cpu("softmax-rank", lambda: F.softmax_cross_entropy(rand(10), labels[:1]), ShapeError, "logits must be 2-D"),
        on_cpu("labels-count", lambda: F.softmax_cross_entropy(logits, labels[:3]), ShapeError, "labels has 3 entries"),
        on_cpu("label-too-large", lambda: F.softmax_cross_entropy(logits, np.array([0, 1, 10, 2])),
               ArgumentError, "label 10 is outside [0, 10)"),
        on_cpu("label-negative", lambda: F.softmax_cross_entropy_backward(logits, np.array([0, -1, 1, 2])),
               ArgumentError, "label -1"),
        on_cpu("label-float", lambda: F.softmax_cross_entropy(logits, labels.astype(np.float32)),
               DtypeError, "labels must be int32"),
    ]
