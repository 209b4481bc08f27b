"""``dlgpu train``: a network learns the 8x8 handwritten digits, on the GPU or the CPU.

    dlgpu train                                # LeNet, the defaults below, GPU if one is found
    dlgpu train --model mlp --activation tanh  # a multilayer perceptron
    dlgpu train --model figure1 --plot fig1.png  # the review's Figure 1: 2-2-1 net, two classes of points
    dlgpu train --save lenet.npz --plot curves.png
    dlgpu train --load lenet.npz --epochs 0    # evaluate saved weights
    dlgpu train --precision bf16               # 16-bit storage, float32 master weights (fp16: loss scaling)

Each epoch visits ``floor(N / batch)`` full batches of a fresh permutation
of the training set (drawn from a NumPy Generator seeded by ``--seed``), so
every step has the same shapes; SGD with momentum and weight decay follows a
cosine learning rate over the epochs (constant within an epoch).  On the CPU
backend a seed fixes the result to the last bit: the initial weights, the
order of the batches and every op of the CPU backend are deterministic.

Every training step runs one function, :class:`StaticStep`, on fixed
buffers: the batch is copied into a static input and label array, and the
step adds its loss and its count of correct predictions into two device
accumulators, read once per epoch.  Nothing in the step reads a value back
to the host, which is what lets the GPU capture it whole.

On the GPU (``--graph``, the default) one eager step runs first, so that
every kernel is compiled and loaded and the momentum buffers exist; then the
whole step (forward, backward, SGD) is captured once with CuPy's stream
capture into a CUDA graph and replayed for every later batch: one launch per
step instead of one per kernel.  Its temporaries come from a private CuPy
memory pool kept alive with the graph, so the addresses baked into the graph
are never handed to anyone else.  The learning rate is a kernel argument
baked into the graph, so the step is captured again when the schedule changes
it (once per epoch).  If capture fails the run goes on eagerly, with a
warning.

``--precision bf16`` or ``fp16`` trains on 16-bit weights, activations and
gradients with float32 master weights, and for fp16 dynamic loss scaling,
which reads one value per step and so runs eagerly (dlgpu.train.fit says
more).
"""

from dlgpu.device import gpu_available
from dlgpu.train.checkpoint import load_model, read_saved, save_model
from dlgpu.train.cli import NO_GPU_MESSAGE, add_arguments, main
from dlgpu.train.loop import DEFAULTS, PRECISIONS, EpochStats, TrainResult, evaluate, fit, initial_model, predict
from dlgpu.train.plot import write_plot
from dlgpu.train.steps import GraphedStep, StaticStep

__all__ = [
    "DEFAULTS",
    "NO_GPU_MESSAGE",
    "PRECISIONS",
    "EpochStats",
    "GraphedStep",
    "StaticStep",
    "TrainResult",
    "add_arguments",
    "evaluate",
    "fit",
    "gpu_available",
    "initial_model",
    "load_model",
    "main",
    "predict",
    "read_saved",
    "save_model",
    "write_plot",
]
