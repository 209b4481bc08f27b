"""dlgpu's errors: one base class, one subclass per kind of mistake.

Each subclass also derives from the built-in exception a Python user would
expect (a wrong dtype is a TypeError, a wrong shape a ValueError), so code
that already catches those keeps working.  Messages name the op, the
argument and the offending value.
"""


class DlgpuError(Exception):
    """Base class of every error dlgpu raises on purpose."""


class ShapeError(DlgpuError, ValueError):
    """Wrong rank, or shapes that do not agree with each other."""


class DtypeError(DlgpuError, TypeError):
    """A dtype the op does not accept, or operands whose dtypes differ."""


class DeviceError(DlgpuError, ValueError):
    """Arrays of different kinds (NumPy and CuPy) or on different devices."""


class ArgumentError(DlgpuError, ValueError):
    """A hyper-parameter or value out of its allowed range (stride 0, label >= classes, ...)."""


class LayoutError(DlgpuError, ValueError):
    """A memory layout the op does not handle: non-contiguous, read-only output, unsafe aliasing."""


class BackendUnavailableError(DlgpuError, NotImplementedError):
    """The chosen backend cannot run this op (no GPU, CuPy missing, kernel not written yet)."""


class CompileError(DlgpuError, RuntimeError):
    """NVRTC or the host compiler refused a kernel source; the message carries the log."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message if not log else f"{message}\n{log}")
        self.log = log



def install_hint(extra: str) -> str:
    """How to install what an optional extra of pyproject.toml brings, for an error message.

    dlgpu is installed from its checkout (it is not on PyPI), so ``pip install 'dlgpu[x]'``
    would fetch nothing: the hint names the extra as a checkout installs it and, read from the
    installed package's metadata (the one list, pyproject.toml), the packages it stands for.
    """
    import importlib.metadata

    try:
        requires = importlib.metadata.requires("dlgpu") or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        requires = []
    marker = f'extra == "{extra}"'
    packages = [r.split(";")[0].strip() for r in requires if marker in r.replace("'", '"')]
    direct = " ".join(f"'{p}'" for p in packages if not p.startswith("dlgpu["))
    return f"pip install -e '.[{extra}]' in the dlgpu checkout" + (f", or pip install {direct}" if direct else "")
