"""Memory formats of 4-D activations and filters: NCHW (C-contiguous) and channels_last (NHWC storage).

An array keeps its logical shape, (N, C, H, W) for activations and (K, C, R, S) for filters, in both
formats; only the order in memory differs.  channels_last stores it as (N, H, W, C) (filters as (K, R, S,
C)), each pixel's channels side by side: what PyTorch's ``torch.channels_last`` tensors are, what
``cupy.from_dlpack`` / ``np.from_dlpack`` of one gives (an (N, C, H, W) array with strides
(H*W*C, 1, W*C, C)), and what tensor-core convolutions read best.  The array module's own
``transpose(0, 2, 3, 1)`` of such an array is the NHWC storage as a C-contiguous array, without a copy.
"""

from __future__ import annotations

import sys

from dlgpu.device import array_module

TO_NHWC = (0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C); (K, C, R, S) -> (K, R, S, C)
TO_NCHW = (0, 3, 1, 2)  # the inverse


def nhwc_view(array):
    """The NHWC storage of a 4-D array as a C-contiguous (N, H, W, C) view, or None when its memory is not
    laid out so (a C-contiguous array whose C, or H and W, are 1 is both NCHW and NHWC)."""
    if array is None or array.ndim != 4:
        return None
    view = array.transpose(TO_NHWC)
    return view if view.flags.c_contiguous else None


def is_channels_last(array) -> bool:
    """A 4-D array stored channels_last and not also C-contiguous: an array that is both (C = 1, or
    H = W = 1) counts as NCHW, where either reading of it is the same bytes.  A torch tensor is asked
    the same in its own terms (dlgpu.torch's fake kernels decide the layout of their answers so)."""
    if array is None:
        return False
    if _is_torch_tensor(array):
        torch = sys.modules["torch"]
        return (array.dim() == 4 and not array.is_contiguous()
                and array.is_contiguous(memory_format=torch.channels_last))
    return not array.flags.c_contiguous and nhwc_view(array) is not None


def _is_torch_tensor(obj) -> bool:
    torch = sys.modules.get("torch")  # a tensor means torch is imported already
    return torch is not None and isinstance(obj, torch.Tensor)


def to_nhwc(array):
    """(N, H, W, C) C-contiguous: the view of a channels_last array, else a transposing copy (one read and one
    write of each element, in its own dtype)."""
    view = nhwc_view(array)
    return view if view is not None else array_module(array).ascontiguousarray(array.transpose(TO_NHWC))


def as_nchw(nhwc):
    """The (N, C, H, W)-shaped view of NHWC storage: a channels_last array, no copy."""
    return nhwc.transpose(TO_NCHW)


def channels_last(array):
    """``array`` as a channels_last array: itself when it is one (or is stored so), else one copy."""
    return as_nchw(to_nhwc(array))
