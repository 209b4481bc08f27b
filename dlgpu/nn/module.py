"""Parameter, Module and Sequential: the bookkeeping that every layer shares.

A module's forward pass keeps what its backward pass needs; the backward
pass takes dE/d(output), returns dE/d(input) and adds each parameter's
gradient into ``Parameter.grad``.  There is no tape: ``Sequential`` simply
calls its layers' backward passes in reverse order.

Parameters are found by walking a module's attributes in the order they were
set (a ``Parameter``, a child ``Module``, or a list/tuple of modules), so the
order of ``parameters()`` and the dotted names of ``state_dict()`` are stable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from dlgpu.device import gpu_unavailable_reason, is_cupy
from dlgpu.errors import ArgumentError, BackendUnavailableError, DtypeError, ShapeError, install_hint

DEVICES = ("cpu", "cuda")


# ---------------------------------------------------------------------------
# moving arrays between NumPy and CuPy
# ---------------------------------------------------------------------------


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' for a NumPy array."""
    return "cuda" if is_cupy(array) else "cpu"


def _cupy(op: str):
    """The cupy module, imported only when a caller asks for the GPU."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(
            f"{op}: the 'cuda' device needs CuPy and a GPU: {reason} ({install_hint('cuda13')})"
        )
    import cupy

    return cupy


def to_numpy(array) -> np.ndarray:
    """A NumPy array holding the same values (a copy for CuPy, the array itself for NumPy)."""
    return array.get() if is_cupy(array) else np.asarray(array)


def move(array, device: str, *, op: str = "to"):
    """``array`` on ``device`` ('cpu' -> NumPy, 'cuda' -> CuPy); the array itself if already there."""
    if device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    return _cupy(op).asarray(array)


def check_device(op: str, device) -> str:
    if device not in DEVICES:
        raise ArgumentError(f"{op}: device must be 'cpu' or 'cuda', got {device!r}")
    return device


def zeros_like(array):
    """Zeros of the array's shape, dtype and kind (NumPy or CuPy)."""
    if is_cupy(array):
        import cupy

        return cupy.zeros_like(array)
    return np.zeros_like(array)


# ---------------------------------------------------------------------------
# Parameter
# ---------------------------------------------------------------------------


class Parameter:
    """A trainable array ``data`` and its gradient ``grad``, allocated like it (zeros)."""

    def __init__(self, data):
        if not (isinstance(data, np.ndarray) or is_cupy(data)):
            raise ArgumentError(f"Parameter: data must be a NumPy or CuPy array, got {type(data).__name__}")
        self.data = data
        self.grad = zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def device(self) -> str:
        return device_of(self.data)

    def zero_grad(self) -> None:
        # In place, so that anyone holding the grad buffer (an optimizer, a
        # captured CUDA graph) keeps seeing the live one.
        self.grad.fill(0)

    def to(self, device: str) -> "Parameter":
        check_device("Parameter.to", device)
        self.data = move(self.data, device, op="Parameter.to")
        self.grad = move(self.grad, device, op="Parameter.to")
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype.name}, device={self.device!r})"


# ---------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------


class Module:
    """Base class of layers: forward/backward plus parameter bookkeeping.

    Subclasses implement ``forward`` (keeping what backward needs through
    ``self._save(...)``) and ``backward(grad_y) -> grad_x`` (reading it back
    through ``self._saved(...)``, and adding into ``Parameter.grad``).
    Calling the module calls ``forward``.

    In eval mode (``eval()``), forward keeps nothing, so evaluation holds no
    activations; calling backward then is an error.  ``train()`` switches back.
    """

    def __init__(self):
        self.training = True
        self._saved_arrays = None

    # -- forward / backward -------------------------------------------------

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_y):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, *args):
        return self.forward(*args)

    def _save(self, **arrays) -> None:
        """Keep what backward needs (only in training mode)."""
        self._saved_arrays = arrays if self.training else None

    def _saved(self):
        """What the last training-mode forward kept, or a clear error if there is none."""
        if self._saved_arrays is None:
            name = type(self).__name__
            raise ArgumentError(
                f"{name}.backward: there is no saved forward pass; call forward first, in training mode "
                f"(training={self.training}; eval-mode forward passes keep nothing for backward)"
            )
        return self._saved_arrays

    # -- structure ------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Child modules in attribute order; lists/tuples of modules are named name.0, name.1, ..."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for this module's own parameters, then each child's."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        """This module, then every descendant, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -- state ------------------------------------------------------------------

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = bool(mode)
            if not mode:
                m._saved_arrays = None
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter (and its gradient) to 'cpu' (NumPy) or 'cuda' (CuPy); returns self.

        Saved forward state is dropped: it lives on the old device.
        """
        check_device(f"{type(self).__name__}.to", device)
        for p in self.parameters():
            p.to(device)
        for m in self.modules():
            m._saved_arrays = None
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: NumPy copy of the parameter's data}, in parameters() order."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping) -> None:
        """Copy ``state``'s arrays into the parameters, in place, on their current device.

        Every name, shape and dtype is checked before anything is written, so a
        refused state dict leaves the module unchanged.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise ArgumentError(f"{op}: expected a mapping of name -> array, got {type(state).__name__}")
        params = dict(self.named_parameters())
        missing = [name for name in params if name not in state]
        unexpected = [name for name in state if name not in params]
        if missing:
            raise ArgumentError(f"{op}: missing key(s) {', '.join(map(repr, missing))}")
        if unexpected:
            raise ArgumentError(
                f"{op}: unexpected key(s) {', '.join(map(repr, unexpected))} "
                f"(the module has {', '.join(map(repr, params))})"
            )
        values = {}
        for name, p in params.items():
            value = to_numpy(state[name])
            if tuple(value.shape) != p.shape:
                raise ShapeError(f"{op}: {name!r} has shape {tuple(value.shape)}, the parameter has {p.shape}")
            if np.dtype(value.dtype) != p.dtype:
                raise DtypeError(
                    f"{op}: {name!r} has dtype {np.dtype(value.dtype).name}, the parameter has {p.dtype.name}"
                )
            values[name] = value
        for name, p in params.items():
            p.data[...] = move(values[name], p.device, op=op)

    # -- printing ---------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Modules applied in order; backward runs their backward passes in reverse."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise ArgumentError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
        self.layers = tuple(modules)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, m in enumerate(self.layers):
            yield str(i), m

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x

    def backward(self, grad_y):
        for m in reversed(self.layers):
            grad_y = m.backward(grad_y)
        return grad_y

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)
