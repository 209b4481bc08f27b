"""TMA tensor maps: what ``cp.async.bulk.tensor`` reads to copy a tile between global and shared memory.

A :class:`TileMap` describes a row-major matrix in global memory (``rows`` x ``cols``
elements, ``pitch`` bytes between rows), the box one copy moves (``box_rows`` x
``box_cols``, the inner extent first in memory) and the shared-memory swizzle.  Elements
of a box outside the matrix read as zeros (or NaN with ``nan_fill``) and are not written
by a store; the copy's transaction count is the whole box either way.

A launch gets its maps in one array of 128-byte maps (64-byte aligned), from
:func:`tensor_maps`:

- on a GPU (CuPy), each map is encoded by the driver (``cuTensorMapEncodeTiled`` through
  cuda-bindings) with the matrix's absolute address, and the device array holding them is
  cached per (device, pointers, maps), so a repeated call costs no encoding or copy; a new
  entry reaches the device by an asynchronous copy from pinned memory on the current stream
  (from pageable memory the copy would wait for all the stream's queued work first);
- on the CPU harness (NumPy), each map is the harness's own 128-byte format
  (``HostTensorMap`` in dlgpu/testing/cuda_host_sm90.h; there is no driver to ask), and
  the array also carries a copy of each matrix, which the map addresses relative to
  itself: the sanitizer runner copies every buffer of a launch to a new place, where an
  absolute host pointer inside a map would dangle.  What TMA stores write lands in that
  copy: :func:`copy_back` returns it to the array after the launch.

The kernel reads map ``i`` at ``maps + 128 * i`` either way.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from dlgpu.errors import ArgumentError

MAP_BYTES = 128
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "f32": 4}
SWIZZLES = (0, 32, 64, 128)

# dlgpu/testing/cuda_host_sm90.h: HostTensorMap (the field order is the struct's).
HOST_MAGIC = 0x414D547570676C64  # "dlgpuTMA" read as a little-endian u64
_HOST_FORMAT = struct.Struct("<Qq4I5Q4Q5II")
assert _HOST_FORMAT.size == MAP_BYTES

_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class TileMap:
    """A 2-D row-major matrix and the box one TMA copy moves; see the module docstring."""

    dtype: str  # "bf16", "fp16" or "f32"
    rows: int
    cols: int
    pitch: int  # bytes from one row to the next
    box_rows: int
    box_cols: int
    swizzle: int = 128  # bytes: 0 (none), 32, 64 or 128
    nan_fill: bool = False

    @property
    def element_bytes(self) -> int:
        return ELEMENT_BYTES[self.dtype]

    @property
    def box_bytes(self) -> int:
        return self.box_rows * self.box_cols * self.element_bytes

    def validate(self) -> None:
        """The driver's rules for cuTensorMapEncodeTiled (and the harness's, which are the same)."""
        problems = []
        if self.dtype not in ELEMENT_BYTES:
            problems.append(f"dtype {self.dtype!r} is not one of {sorted(ELEMENT_BYTES)}")
        elif self.swizzle not in SWIZZLES:
            problems.append(f"swizzle {self.swizzle} is not one of {SWIZZLES}")
        else:
            inner = self.box_cols * self.element_bytes
            if not (1 <= self.rows <= 2**32 and 1 <= self.cols <= 2**32):
                problems.append(f"dimensions {self.rows} x {self.cols} are not in [1, 2^32]")
            if self.pitch % 16 or not (0 < self.pitch < 2**40) or self.pitch < self.cols * self.element_bytes:
                problems.append(f"row pitch {self.pitch} B is not a multiple of 16 below 2^40 covering a row")
            if not (1 <= self.box_rows <= 256 and 1 <= self.box_cols <= 256) or inner % 16:
                problems.append(f"box {self.box_rows} x {self.box_cols} is not in [1, 256]^2 with rows of 16k bytes")
            if self.swizzle and inner != self.swizzle:
                # The driver allows inner <= swizzle; the harness models inner == swizzle only.
                problems.append(f"box rows of {inner} B with a {self.swizzle}-byte swizzle (must be equal)")
        if problems:
            raise ArgumentError("tma: " + "; ".join(problems))


def check_operand(array, what: str) -> None:
    """A TMA source must start 16-byte aligned (the driver's rule for globalAddress)."""
    if _address(array) % 16:
        raise ArgumentError(f"tma: {what} does not start on a 16-byte boundary")


def _address(array) -> int:
    data = getattr(array, "data", None)
    ptr = getattr(data, "ptr", None)
    return int(ptr) if ptr is not None else int(array.ctypes.data)


# ---------------------------------------------------------------- the harness's encoding


def host_encode(tile: TileMap, address_offset: int) -> bytes:
    """The harness's 128-byte map; the matrix starts ``address_offset`` bytes after the map."""
    tile.validate()
    dims = (tile.cols, tile.rows, 0, 0, 0)
    strides = (tile.pitch, 0, 0, 0)
    box = (tile.box_cols, tile.box_rows, 0, 0, 0)
    return _HOST_FORMAT.pack(HOST_MAGIC, address_offset, 2, tile.element_bytes, tile.swizzle, int(tile.nan_fill),
                             *dims, *strides, *box, 0)


def host_maps(pairs) -> np.ndarray:
    """One uint8 array: the maps of ``pairs`` ((array, TileMap), ...), then a copy of each array.

    Each copy starts on a 128-byte boundary of the array, which itself starts on one.
    """
    offsets, cursor = [], MAP_BYTES * len(pairs)
    for array, tile in pairs:
        cursor = -(-cursor // 128) * 128
        offsets.append(cursor)
        cursor += int(array.nbytes)
    storage = np.zeros(cursor + 128, np.uint8)
    start = (-storage.ctypes.data) % 128
    buffer = storage[start:start + cursor]
    for index, ((array, tile), offset) in enumerate(zip(pairs, offsets)):
        buffer[MAP_BYTES * index:MAP_BYTES * (index + 1)] = np.frombuffer(host_encode(tile, offset - MAP_BYTES * index),
                                                                           np.uint8)
        buffer[offset:offset + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return buffer


def host_matrix(buffer: np.ndarray, pairs, index: int) -> np.ndarray:
    """The copy of matrix ``index`` inside a :func:`host_maps` buffer (what a TMA store writes)."""
    (offset,) = struct.unpack_from("<q", buffer, MAP_BYTES * index + 8)
    array, _ = pairs[index]
    start = MAP_BYTES * index + offset
    return buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)


def copy_back(maps, pairs, index: int) -> None:
    """After a launch whose TMA stores wrote matrix ``index`` of ``pairs``: on the harness they wrote
    its copy inside the :func:`host_maps` buffer, which goes back into the array; on a GPU they
    wrote the array itself, and there is nothing to do."""
    if isinstance(maps, np.ndarray):
        array, _ = pairs[index]
        array[...] = host_matrix(maps, pairs, index)


# ---------------------------------------------------------------- the driver's encoding


def driver_encode(tile: TileMap, address: int) -> bytes:
    """The driver's 128-byte CUtensorMap for ``tile`` at global ``address`` (needs a CUDA driver)."""
    from cuda.bindings import driver

    tile.validate()
    data_type = {
        "bf16": driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        "fp16": driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        # fp32 in memory read as tf32 by wgmma, which ignores the low 13 mantissa bits.
        "f32": driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
    }[tile.dtype]
    swizzle = {
        0: driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_NONE,
        32: driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_32B,
        64: driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_64B,
        128: driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
    }[tile.swizzle]
    fill = (driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA if tile.nan_fill
            else driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
    # Every size as the binding's own integer type: cuda-bindings 13.0 (the H100 image's) converts no
    # plain int into cuuint32_t, where 13.5 does (first GPU run, 2026-11-27).
    u32, u64 = driver.cuuint32_t, driver.cuuint64_t
    err, encoded = driver.cuTensorMapEncodeTiled(
        data_type, u32(2), address, [u64(tile.cols), u64(tile.rows)], [u64(tile.pitch)],
        [u32(tile.box_cols), u32(tile.box_rows)], [u32(1), u32(1)],
        driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
        driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B, fill,
    )
    if err != driver.CUresult.CUDA_SUCCESS:
        raise ArgumentError(f"tma: cuTensorMapEncodeTiled refused {tile} at {address:#x}: {err.name}")
    return ctypes.string_at(encoded.getPtr(), MAP_BYTES)


@dataclass
class _DeviceEntry:
    """A cached device array of maps, with the pinned buffer it was copied from and the event after the
    copy: the buffer is released only once the event has passed.  An entry a CUDA-graph capture used is
    ``kept``: the graph holds its device pointer (and, if the capture made it, replays the copy from its
    buffer) for as long as the graph lives, so it is never evicted."""

    maps: object
    staging: np.ndarray
    copied: object  # None when the copy was captured into a CUDA graph (no event to wait on then)
    kept: bool = False

    def release(self):
        if self.copied is not None:
            self.copied.synchronize()  # long passed in practice: the entry is the oldest of _CACHE_ENTRIES


_device_maps: OrderedDict = OrderedDict()
_device_lock = threading.Lock()


def device_maps(cupy, pairs):
    """The driver-encoded maps of ``pairs`` in one device array, cached per (device, pointers, maps).

    A new entry is copied asynchronously on the current stream, from pinned memory: a copy from
    pageable memory would first wait for everything queued on the stream, so each new set of
    pointers would stall the host (the first GPU record's wgmma convolution rows, whose timed
    repetitions met input sets the warm-up had not)."""
    device = cupy.cuda.runtime.getDevice()
    key = (device, tuple((_address(array), tile) for array, tile in pairs))
    stream = cupy.cuda.get_current_stream()
    capturing = stream.is_capturing()
    with _device_lock:
        if key in _device_maps:
            _device_maps.move_to_end(key)
            _device_maps[key].kept |= capturing
            return _device_maps[key].maps
    encoded = b"".join(driver_encode(tile, _address(array)) for array, tile in pairs)
    memory = cupy.cuda.alloc_pinned_memory(len(encoded))
    staging = np.frombuffer(memory, np.uint8, len(encoded))
    staging[:] = np.frombuffer(encoded, np.uint8)
    maps = cupy.empty(len(encoded), np.uint8)  # cupy allocations are 256-byte aligned
    maps.set(staging, stream=stream)  # under graph capture this becomes the graph's copy node
    copied = None
    if not capturing:
        copied = cupy.cuda.Event(block=False, disable_timing=True)
        copied.record(stream)
    evicted = []
    with _device_lock:
        _device_maps[key] = _DeviceEntry(maps, staging, copied, kept=capturing)
        while len(_device_maps) > _CACHE_ENTRIES:
            oldest = next((k for k, entry in _device_maps.items() if not entry.kept and k != key), None)
            if oldest is None:  # every other entry belongs to a graph: the cache grows past its size
                break
            evicted.append(_device_maps.pop(oldest))
    for entry in evicted:
        entry.release()
    return maps


def tensor_maps(executor, pairs):
    """The maps of ``pairs`` ((array, TileMap), ...) for ``executor``: see the module docstring."""
    for index, (array, tile) in enumerate(pairs):
        check_operand(array, f"matrix {index}")
        tile.validate()
    if getattr(executor.xp, "cuda", None) is not None:
        return device_maps(executor.xp, pairs)
    return host_maps(pairs)
