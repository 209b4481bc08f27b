"""The training step on static buffers, and the same step captured into a CUDA graph.

Every training step runs one function, :class:`StaticStep`, on fixed buffers:
the batch is copied into a static input and label array, and the step adds its
loss and its count of correct predictions into two device accumulators, read
once per epoch.  Nothing in the step reads a value back to the host, which is
what lets the GPU capture it whole (:class:`GraphedStep`).
"""

from __future__ import annotations

import contextlib

import numpy as np


# ---------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------


def array_module(device: str):
    if device == "cuda":
        import cupy

        return cupy
    return np


def classes_of(outputs):
    """The class each row of outputs names (int64, on their device, no host read): the largest of
    several class scores, or for a single output unit in (0, 1) (Figure 1's), class 1 above 0.5."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


# ---------------------------------------------------------------------------
# the training step on static buffers
# ---------------------------------------------------------------------------


class StaticStep:
    """One SGD step of ``model`` on fixed buffers, with its loss and hits summed on the device.

    ``x`` (batch, ...) and ``labels`` (batch,) are allocated once; ``load``
    copies a batch into them (``take`` with ``out=``, no new array).
    ``__call__`` runs zero_grad, forward, loss, backward and the optimizer
    step, then adds the batch's mean loss into ``loss_sum`` and its number of
    correct predictions into ``correct``.  Those are in-place updates of 0-d
    arrays, so the step never reads a value on the host: on the GPU it can be
    captured into a CUDA graph, and on the CPU it runs unchanged on NumPy.

    ``dtype`` is the input's (the model's storage dtype).  With a ``scaler``
    (:class:`dlgpu.optim.GradScaler`, float16 training) the backward pass
    starts from the scaled loss gradient and the scaler decides whether the
    optimizer steps; that decision reads one value on the host, so such a
    step cannot be captured into a graph.
    """

    def __init__(self, model, loss_fn, optimizer, batch_shape: tuple[int, ...], xp=np, *, dtype=np.float32,
                 scaler=None):
        self.model, self.loss_fn, self.optimizer, self.xp = model, loss_fn, optimizer, xp
        self.scaler = scaler
        self.x = xp.zeros(batch_shape, dtype=dtype)
        self.labels = xp.zeros(batch_shape[:1], dtype=np.int64)
        self.loss_sum = xp.zeros((), dtype=np.float64)
        self.correct = xp.zeros((), dtype=np.int64)

    def load(self, images, labels, indices) -> None:
        """x <- images[indices], labels <- labels[indices], into the existing buffers."""
        self.xp.take(images, indices, axis=0, out=self.x)
        self.xp.take(labels, indices, axis=0, out=self.labels)

    def reset_totals(self) -> None:
        self.loss_sum.fill(0)
        self.correct.fill(0)

    def __call__(self) -> None:
        self.optimizer.zero_grad()
        logits = self.model(self.x)
        loss = self.loss_fn(logits, self.labels)
        if self.scaler is None:
            self.model.backward(self.loss_fn.backward())
            self.optimizer.step()
        else:
            self.model.backward(self.scaler.scale(self.loss_fn.backward()))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.loss_sum += loss
        self.correct += (classes_of(logits) == self.labels).sum()


class GraphedStep:
    """A :class:`StaticStep` captured once into a CUDA graph and replayed (GPU only).

    ``warm_up()`` runs the step eagerly (compiling and loading every kernel,
    allocating the momentum buffers) inside the private memory pool;
    ``capture()`` records one step on ``stream`` without running it;
    ``__call__`` launches the graph.  Everything the graph touches is either
    persistent (parameters, gradients, velocities, the step's buffers) or
    came from the private pool, which lives as long as this object.
    """

    def __init__(self, step: StaticStep, stream):
        import cupy

        self.step = step
        self.stream = stream
        self._cupy = cupy
        self.pool = cupy.cuda.MemoryPool()
        self.graph = None
        self.captured_lr: float | None = None

    @contextlib.contextmanager
    def _private_memory(self):
        with self._cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            yield

    def warm_up(self) -> None:
        with self._private_memory():
            self.step()

    def capture(self) -> None:
        """Record one step into a new graph; raises (and leaves the stream usable) if capture fails."""
        self.graph = None
        with self._private_memory():
            self.stream.begin_capture()
            try:
                self.step()
            except BaseException:
                # An invalidated capture must still be ended before the stream is usable again.
                with contextlib.suppress(Exception):
                    self.stream.end_capture()
                raise
            self.graph = self.stream.end_capture()
        self.captured_lr = self.step.optimizer.lr

    def __call__(self) -> None:
        self.graph.launch(stream=self.stream)
