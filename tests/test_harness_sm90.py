"""The CPU harness's Hopper models (dlgpu/testing/cuda_host_sm90.h) against the PTX ISA, and planted bugs.

wgmma: operands are laid out in shared memory here in Python, from a plain reading of the ISA's
tables (swizzle atoms of 8 rows, the XOR pattern each swizzle mode draws, what the leading and
stride byte offsets mean for K-major and MN-major operands), independently of the C++ model,
which decodes descriptors and swizzles address bits.  A probe kernel issues one wgmma through
kernels/ptx_sm90.cuh on that image; the result, read back through the ISA's accumulator
fragment layout, must equal A @ B exactly (small multiples of 1/4: every product and sum is
exact).  Then the asynchronous rules: results unreadable before wgmma.wait_group, accumulators
not to be written meanwhile, wgmma.fence first, operands not to change under an in-flight wgmma,
and operands written by ordinary stores reach wgmma (or a TMA store) only through fence.proxy.async:
a missing fence, or one before the stores, fails.

Clusters: the CTAs of a cluster share a slab by TMA multicast and arrive on each other's
mbarriers; planted bugs (a multicast that leaves a CTA out, a CTA that leaves while its peer will
still reach into it, a launch whose cluster is not the kernel's) must fail.

mbarrier inits reach the TMA unit only through fence.mbarrier_init or fence.proxy.async, and the
peers of a cluster only through fence.mbarrier_init.release.cluster and a barrier.cluster after it.

TMA: boxes at every swizzle mode, inside, across and outside the matrix, land in shared memory
where the ISA's pattern puts them, zeros (or NaN) out of bounds; the full box is the transaction
count.  mbarrier: phases, parities, counts and transaction counts; and the planted bugs of a
pipeline: a wrong parity, an extra arrival, a barrier used before init, a deadlock.  cp.async
copies tracked by cp.async.mbarrier.arrive.noinc land with their arrival, and only then: a count
too low, an arrival that does not track the copies, or a read without the wait sees poison.
"""

from __future__ import annotations

import itertools
import types

import numpy as np
import pytest

from dlgpu.cuda import tma
from dlgpu.cuda.launch import Launch
from dlgpu.errors import ArgumentError
from dlgpu.testing import harness
from dlgpu.testing.harness import HarnessError, HarnessExecutor

pytestmark = pytest.mark.usefixtures("host_compiler")

# ---------------------------------------------------------------- the ISA's layouts, read plainly

# In a W-byte swizzle atom (8 rows of W bytes), the 16-byte unit c of row r is stored at unit
# c XOR xor(r): the ISA's figures for the 128-, 64- and 32-byte modes.
ATOM_ROW_XOR = {
    128: lambda row: row % 8,
    64: lambda row: (row // 2) % 4,
    32: lambda row: (row // 4) % 2,
}


def k_major_offset(width, element_bytes, lbo, sbo, mn, k, k_byte_offset=0):
    """Byte offset of element (mn, k) of a K-major operand (its k-slice starts k_byte_offset into the row)."""
    byte = k_byte_offset + k * element_bytes
    if width == 0:
        # Core matrices of 8 rows x 16 bytes, 128 contiguous bytes; LBO steps the 16-byte k unit,
        # SBO the group of 8 rows.
        return (mn // 8) * sbo + (byte // 16) * lbo + (mn % 8) * 16 + byte % 16
    row = mn % 8  # the atom's row; atoms of 8 rows follow at SBO; LBO is not used
    return (mn // 8) * sbo + row * width + ((byte // 16) ^ ATOM_ROW_XOR[width](row)) * 16 + byte % 16


def mn_major_offset(width, element_bytes, lbo, sbo, mn, k):
    """Byte offset of element (mn, k) of an MN-major operand."""
    byte = mn * element_bytes
    if width == 0:
        # Core matrices of 8 k-rows x 16 bytes of mn; SBO steps the 16-byte mn unit, LBO the 8 k.
        return (byte // 16) * sbo + (k // 8) * lbo + (k % 8) * 16 + byte % 16
    # Atoms of 8 k-rows x W bytes of mn: LBO steps W bytes of mn, SBO the 8 k.
    row = k % 8
    unit = (byte % width) // 16
    return (byte // width) * lbo + (k // 8) * sbo + row * width + (unit ^ ATOM_ROW_XOR[width](row)) * 16 + byte % 16


def accumulator_position(thread: int, index: int) -> tuple[int, int]:
    """The ISA's wgmma D fragment: (row, column) of element ``index`` of ``thread`` of the warpgroup."""
    warp, lane = divmod(thread, 32)
    return 16 * warp + lane // 4 + 8 * ((index % 4) // 2), 8 * (index // 4) + 2 * (lane % 4) + index % 2


DTYPES = {  # precision code of ptx::wgmma, element bytes, how NumPy holds the bits
    "tf32": (0, 4, np.float32),
    "bf16": (1, 2, None),
    "fp16": (2, 2, np.float16),
}


def element_bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """The stored bits of exactly representable values (small multiples of 1/4)."""
    if dtype == "bf16":
        return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return values.astype(DTYPES[dtype][2])


class Operand:
    """One wgmma operand placed in a shared-memory image: rows x K, K-major or MN-major."""

    def __init__(self, values, dtype, mn_major, width, k_byte_offset=0):
        self.values, self.dtype, self.mn_major, self.width = values, dtype, mn_major, width
        self.k_byte_offset = k_byte_offset
        rows, k_extent = values.shape
        e = DTYPES[dtype][1]
        if mn_major:
            if width == 0:  # mn units one after another, then the second 8 k
                self.sbo, self.lbo = 128, 128 * (rows * e // 16)
            else:  # both k groups of an atom column, then the next W bytes of mn
                self.sbo, self.lbo = 8 * width, 8 * width * (k_extent // 8)
        elif width == 0:  # 8-row groups one after another, then the second 16 bytes of k
            self.sbo, self.lbo = 128, 128 * (rows // 8)
        else:
            self.sbo, self.lbo = 8 * width, 16  # LBO unused for swizzled K-major: any value
        self.span = 1 + max(self.offset(r, k) + e for r in range(rows) for k in range(k_extent))

    def offset(self, mn, k):
        e = DTYPES[self.dtype][1]
        if self.mn_major:
            return mn_major_offset(self.width, e, self.lbo, self.sbo, mn, k)
        return k_major_offset(self.width, e, self.lbo, self.sbo, mn, k, self.k_byte_offset)

    def place(self, image: np.ndarray, base: int) -> None:
        bits = element_bits(self.values, self.dtype)
        raw = bits.view(np.uint8).reshape(*bits.shape, bits.itemsize)
        for (r, k), _ in np.ndenumerate(self.values):
            at = base + self.offset(r, k)
            image[at:at + bits.itemsize] = raw[r, k]


# ---------------------------------------------------------------- the wgmma probe kernel

WGMMA_PROBE = r"""
#include "ptx_sm90.cuh"

// params: 0..3 A (offset, lbo, sbo, swizzle), 4..7 B, 8 scale_d, 9 N, 10 precision, 11 trans_a,
// 12 trans_b, 13 planted bug (0 none).
template <int N, int P, int TA, int TB>
__device__ void probe(const unsigned char* image, int image_bytes, const int* params, const float* c_in, float* d_out)
{
    extern __shared__ unsigned char probe_shared[];
    unsigned char* base = probe_shared + (1024 - ptx::shared_window_address(probe_shared) % 1024) % 1024;
    const int bug = params[13];
    if (bug == 7) ptx::fence_proxy_async_shared();  // 7: fences before writing the tiles
    for (int i = threadIdx.x; i < image_bytes; i += blockDim.x) base[i] = image[i];
    if (bug != 6 && bug != 7) ptx::fence_proxy_async_shared();  // 6: no fence between the stores and the wgmma
    __syncthreads();
    const unsigned at = ptx::shared_window_address(base);
    unsigned long long desc_a = ptx::wgmma_descriptor(at + params[0], params[1], params[2], params[3]);
    const unsigned long long desc_b = ptx::wgmma_descriptor(at + params[4], params[5], params[6], params[7]);
    if (bug == 5 && threadIdx.x == 77) desc_a += 2;  // one thread issues another descriptor
    float d[N / 2];
    for (int i = 0; i < N / 2; ++i) d[i] = c_in[threadIdx.x * (N / 2) + i];
    if (bug != 3) ptx::wgmma_fence();  // 3: no fence before the first wgmma
    ptx::wgmma<N, static_cast<ptx::Precision>(P), TA, TB>(d, desc_a, desc_b, params[8]);
    ptx::wgmma_commit();
    if (bug == 2) d[0] = 0.0f;  // 2: writes an accumulator of the in-flight wgmma
    if (bug == 4) {  // 4: overwrites its operand while the wgmma is in flight
        __syncthreads();
        if (threadIdx.x == 0) base[params[0]] ^= 1;
        __syncthreads();
    }
    if (bug != 1) ptx::wgmma_wait<0>();  // 1: no wgmma.wait_group before reading the result
    for (int i = 0; i < N / 2; ++i) d_out[threadIdx.x * (N / 2) + i] = d[i];
}

template <int N, int P>
__device__ void by_transposes(const unsigned char* image, int bytes, const int* params, const float* c, float* d)
{
    if constexpr (P == 0) {
        probe<N, 0, 0, 0>(image, bytes, params, c, d);
    } else {
        if (params[11] == 0 && params[12] == 0) probe<N, P, 0, 0>(image, bytes, params, c, d);
        if (params[11] == 0 && params[12] == 1) probe<N, P, 0, 1>(image, bytes, params, c, d);
        if (params[11] == 1 && params[12] == 0) probe<N, P, 1, 0>(image, bytes, params, c, d);
        if (params[11] == 1 && params[12] == 1) probe<N, P, 1, 1>(image, bytes, params, c, d);
    }
}

template <int N>
__device__ void by_precision(const unsigned char* image, int bytes, const int* params, const float* c, float* d)
{
    if (params[10] == 0) by_transposes<N, 0>(image, bytes, params, c, d);
    if (params[10] == 1) by_transposes<N, 1>(image, bytes, params, c, d);
    if (params[10] == 2) by_transposes<N, 2>(image, bytes, params, c, d);
}

extern "C" __global__ void wgmma_probe(const unsigned char* image, int image_bytes, const int* params,
                                       const float* c_in, float* d_out)
{
    if (params[9] == 64) by_precision<64>(image, image_bytes, params, c_in, d_out);
    if (params[9] == 128) by_precision<128>(image, image_bytes, params, c_in, d_out);
    if (params[9] == 256) by_precision<256>(image, image_bytes, params, c_in, d_out);
}
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """A kernels folder holding the probe kernels of this file."""
    folder = tmp_path_factory.mktemp("sm90_probes")
    (folder / "wgmma_probe.cu").write_text(WGMMA_PROBE)
    (folder / "tma_probe.cu").write_text(TMA_PROBE)
    # one build (and one TSan build)
    (folder / "mbarrier_probe.cu").write_text(MBARRIER_PROBE + CP_ASYNC_PROBE + CLUSTER_PROBE)
    return folder


def quarters(rng, shape):
    return rng.integers(-8, 9, size=shape).astype(np.float64) / 4


def run_wgmma(probes, a: Operand, b: Operand, n: int, *, c=None, bug=0, mode="plain", descriptor_swizzle_a=None):
    """D of the probe (64 x n) for operands a (64 x K) and b (n x K), D = A @ B^T (+ c).

    ``descriptor_swizzle_a``: the swizzle A's descriptor names, when not the one A was placed with.
    """
    image_a = a.span + (-a.span) % 1024
    image = np.zeros(image_a + b.span + 1024, np.uint8)
    a.place(image, 0)
    b.place(image, image_a)
    precision, _, _ = DTYPES[a.dtype]
    swizzle_a = a.width if descriptor_swizzle_a is None else descriptor_swizzle_a
    params = np.array([a.k_byte_offset, a.lbo, a.sbo, swizzle_a, image_a + b.k_byte_offset, b.lbo, b.sbo, b.width,
                       int(c is not None), n, precision, int(a.mn_major), int(b.mn_major), bug], np.int32)
    c_in = np.zeros((128, n // 2), np.float32)
    if c is not None:
        for t, i in itertools.product(range(128), range(n // 2)):
            c_in[t, i] = c[accumulator_position(t, i)]
    d_out = np.full((128, n // 2), np.nan, np.float32)
    executor = HarnessExecutor(mode, kernels_dir=probes)
    executor.launch(Launch("wgmma_probe", "wgmma_probe", (1, 1, 1), (128, 1, 1),
                           (image, np.int32(image.size), params, c_in, d_out), image.size + 1024))
    d = np.full((64, n), np.nan)
    for t, i in itertools.product(range(128), range(n // 2)):
        d[accumulator_position(t, i)] = d_out[t, i]
    return d


LAYOUT_CASES = [
    (dtype, width, a_mn, b_mn)
    for dtype in ("bf16", "fp16", "tf32")
    for width in (0, 32, 64, 128)
    for a_mn, b_mn in itertools.product((False, True), repeat=2)
    if dtype != "tf32" or not (a_mn or b_mn)  # tf32 operands are K-major only
]


@pytest.mark.parametrize(("dtype", "width", "a_mn_major", "b_mn_major"), LAYOUT_CASES,
                         ids=[f"{d}-sw{w}-{'M' if a else 'K'}{'N' if b else 'K'}" for d, w, a, b in LAYOUT_CASES])
def test_wgmma_reads_the_isa_layouts(probes, rng, dtype, width, a_mn_major, b_mn_major):
    k_extent = 32 // DTYPES[dtype][1]
    for n in (64, 256):
        a_values, b_values = quarters(rng, (64, k_extent)), quarters(rng, (n, k_extent))
        # A K-major slice of k that starts inside a swizzled row, as a kernel stepping through k does.
        k_offset = 32 if width >= 64 and not a_mn_major else 0
        a = Operand(a_values, dtype, a_mn_major, width, k_byte_offset=k_offset)
        b = Operand(b_values, dtype, b_mn_major, width)
        c = quarters(rng, (64, n))
        d = run_wgmma(probes, a, b, n, c=c if n == 64 else None)
        expected = a_values @ b_values.T + (c if n == 64 else 0)
        np.testing.assert_array_equal(d, expected)


def test_a_wrong_swizzle_mode_is_caught(probes, rng):
    """Tiles written with the 128-byte pattern, read through a descriptor that says 64 bytes: wrong numbers."""
    a_values, b_values = quarters(rng, (64, 16)), quarters(rng, (64, 16))
    a = Operand(a_values, "bf16", False, 128)
    b = Operand(b_values, "bf16", False, 128)
    np.testing.assert_array_equal(run_wgmma(probes, a, b, 64), a_values @ b_values.T)
    assert not np.array_equal(run_wgmma(probes, a, b, 64, descriptor_swizzle_a=64), a_values @ b_values.T)


PLANTED_WGMMA = {
    2: "accumulator registers of an in-flight wgmma.mma_async were written",
    3: "without a wgmma.fence",
    4: "changed before the wgmma.wait_group",
    5: "issue different instructions or descriptors",
    6: "changed after the last fence.proxy.async",
    7: "changed after the last fence.proxy.async",
}


@pytest.mark.parametrize("bug", sorted(PLANTED_WGMMA))
def test_planted_wgmma_misuse_fails(probes, rng, bug):
    a = Operand(quarters(rng, (64, 16)), "bf16", False, 128)
    b = Operand(quarters(rng, (64, 16)), "bf16", True, 128)
    with pytest.raises(HarnessError, match=PLANTED_WGMMA[bug]):
        run_wgmma(probes, a, b, 64, bug=bug)


def test_results_are_poison_until_wgmma_wait_group(probes, rng):
    """A missing wgmma.wait_group: the accumulators read NaN, so any use of them shows."""
    a = Operand(quarters(rng, (64, 16)), "fp16", False, 0)
    b = Operand(quarters(rng, (64, 16)), "fp16", False, 0)
    assert np.isnan(run_wgmma(probes, a, b, 64, c=quarters(rng, (64, 64)), bug=1)).all()


# ---------------------------------------------------------------- TMA

TMA_PROBE = r"""
#include "ptx_sm90.cuh"

// One box through one tensor map (maps: the map, then the matrix, as dlgpu.cuda.tma lays them out).
// params: 0 c0, 1 c1, 2 the transaction bytes expected, 3 box bytes, 4 planted bug (0 none),
// 5 the box's byte offset from a 1024-byte boundary.
extern "C" __global__ void tma_load_probe(const unsigned char* maps, const int* params, unsigned char* out)
{
    extern __shared__ unsigned char tma_shared[];
    unsigned char* base = tma_shared + (1024 - ptx::shared_window_address(tma_shared) % 1024) % 1024;
    unsigned long long* bar = reinterpret_cast<unsigned long long*>(base);
    unsigned char* box = base + 1024 + params[5];
    if (threadIdx.x == 0) {
        ptx::mbarrier_init(bar, 1);
        if (params[4] == 3) ptx::fence_proxy_async_shared();  // 3: the proxy fence publishes the init as well
        else if (params[4] != 2) ptx::fence_mbarrier_init();  // 2: the TMA unit may not see the init
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        ptx::prefetch_tensor_map(maps);
        ptx::mbarrier_arrive_expect_tx(bar, params[2]);
        ptx::tma_load_2d(box, maps, params[0], params[1], bar);
    }
    if (params[4] != 1) ptx::mbarrier_wait(bar, 0);  // 1: reads the box without waiting
    for (int i = threadIdx.x; i < params[3]; i += blockDim.x) out[i] = box[i];
}

// The box's shared image (`image`, already swizzled) stored through the map at (c0, c1).
extern "C" __global__ void tma_store_probe(unsigned char* maps, const unsigned char* image, const int* params)
{
    extern __shared__ unsigned char tma_shared[];
    unsigned char* box = tma_shared + (1024 - ptx::shared_window_address(tma_shared) % 1024) % 1024;
    for (int i = threadIdx.x; i < params[3]; i += blockDim.x) box[i] = image[i];
    if (params[4] != 4) ptx::fence_proxy_async_shared();  // 4: the TMA unit may read stale bytes
    __syncthreads();
    if (threadIdx.x == 0) {
        ptx::tma_store_2d(maps, params[0], params[1], box);
        ptx::bulk_commit();
        if (params[4] == 2) box[5] ^= 1;  // 2: reuses the source before wait_group.read
        ptx::bulk_wait_read<0>();
        if (params[4] != 3) ptx::bulk_wait<0>();  // 3: never waits for the writes
    }
}
"""


def box_image(matrix: np.ndarray, tile: tma.TileMap, c0: int, c1: int, fill=0) -> np.ndarray:
    """The box's bytes in shared memory by the ISA: rows of the box one after another, each row's
    16-byte units permuted by the swizzle atom's XOR; elements outside the matrix are ``fill``."""
    box = np.full((tile.box_rows, tile.box_cols), fill, matrix.dtype)
    for r, c in itertools.product(range(tile.box_rows), range(tile.box_cols)):
        if 0 <= c1 + r < tile.rows and 0 <= c0 + c < tile.cols:
            box[r, c] = matrix[c1 + r, c0 + c]
    plain = box.view(np.uint8).reshape(-1)
    if tile.swizzle == 0:
        return plain
    width = tile.swizzle
    image = np.empty_like(plain)
    for row in range(plain.size // width):
        for unit in range(width // 16):
            source = row * width + unit * 16
            target = row * width + (unit ^ ATOM_ROW_XOR[width](row % 8)) * 16
            image[target:target + 16] = plain[source:source + 16]
    return image


def padded_matrix(rng, rows, cols, dtype, pitch_elements):
    storage = rng.integers(1, 1 << 14, size=(rows, pitch_elements)).astype(dtype)
    return storage[:, :cols], storage


def load_box(probes, buffer, tile, c0, c1, *, expect=None, bug=0, misalign=0, mode="plain"):
    out = np.full(tile.box_bytes, 0xAB, np.uint8)
    params = np.array([c0, c1, tile.box_bytes if expect is None else expect, tile.box_bytes, bug, misalign], np.int32)
    HarnessExecutor(mode, kernels_dir=probes).launch(
        Launch("tma_probe", "tma_load_probe", (1, 1, 1), (64, 1, 1), (buffer, params, out), 4096 + tile.box_bytes))
    return out


TMA_BOXES = [  # (dtype, swizzle, box rows, box cols)
    ("fp16", 0, 5, 24),
    ("bf16", 32, 16, 16),
    ("fp16", 64, 9, 32),
    ("bf16", 128, 12, 64),
    ("f32", 128, 8, 32),
]


@pytest.mark.parametrize(("dtype", "swizzle", "box_rows", "box_cols"), TMA_BOXES)
def test_tma_load_places_boxes_as_the_isa_swizzles_them(probes, rng, dtype, swizzle, box_rows, box_cols):
    numpy_dtype = np.uint32 if dtype == "f32" else np.uint16
    e = tma.ELEMENT_BYTES[dtype]
    rows, cols, pitch = 37, 3 * box_cols + 5, -(-(3 * box_cols + 5) * e // 16) * 16 // e + 8
    matrix, storage = padded_matrix(rng, rows, cols, numpy_dtype, pitch)
    tile = tma.TileMap(dtype, rows, cols, pitch * e, box_rows, box_cols, swizzle)
    buffer = tma.host_maps([(storage, tile)])
    # Inside; across the right and bottom edges; before the first row and column; wholly outside.
    for c0, c1 in ((box_cols, 3), (cols - box_cols // 2, rows - 2), (-3, -box_rows + 2), (cols + 1, 0)):
        np.testing.assert_array_equal(load_box(probes, buffer, tile, c0, c1), box_image(matrix, tile, c0, c1))


def test_tma_nan_fill_and_the_box_counts_whole(probes, rng):
    matrix, storage = padded_matrix(rng, 10, 64, np.uint16, 64)
    tile = tma.TileMap("bf16", 10, 64, 128, 8, 64, 128, nan_fill=True)
    buffer = tma.host_maps([(storage, tile)])
    out = load_box(probes, buffer, tile, 0, 6).view(np.uint16)  # rows 6..13: four outside
    expected = box_image(matrix, tile, 0, 6, fill=0xFFFF).view(np.uint16)
    np.testing.assert_array_equal(out, expected)
    assert (out == 0xFFFF).sum() == 4 * 64  # a NaN per element outside, here all ones


def test_tma_planted_misuse_fails(probes, rng, monkeypatch):
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "2")
    matrix, storage = padded_matrix(rng, 16, 64, np.uint16, 64)
    tile = tma.TileMap("fp16", 16, 64, 128, 8, 64, 128)
    buffer = tma.host_maps([(storage, tile)])
    # Reading the box without waiting on the barrier: the destination holds poison, not data.
    assert (load_box(probes, buffer, tile, 0, 0, bug=1) == 0xFF).all()
    # The transaction count is the whole box, even where most of it is out of bounds.
    with pytest.raises(HarnessError, match="deadlock"):
        load_box(probes, buffer, tile, 0, 12, expect=tile.box_bytes // 2)
    # A 128-byte swizzle needs its destination on a 1024-byte boundary.
    with pytest.raises(HarnessError, match="1024-byte aligned"):
        load_box(probes, buffer, tile, 0, 0, misalign=128)
    # mbarrier.init is an ordinary write: the TMA unit signals the barrier only after a fence publishes it
    # (fence.mbarrier_init, or fence.proxy.async).
    with pytest.raises(HarnessError, match="init is not visible to the TMA unit"):
        load_box(probes, buffer, tile, 0, 0, bug=2)
    np.testing.assert_array_equal(load_box(probes, buffer, tile, 0, 0, bug=3), load_box(probes, buffer, tile, 0, 0))


def store_box(probes, buffer, tile, image, c0, c1, bug=0):
    params = np.array([c0, c1, 0, tile.box_bytes, bug], np.int32)
    HarnessExecutor("plain", kernels_dir=probes).launch(
        Launch("tma_probe", "tma_store_probe", (1, 1, 1), (64, 1, 1), (buffer, image, params), 2048 + tile.box_bytes))


@pytest.mark.parametrize("swizzle", (0, 64, 128))
def test_tma_store_writes_only_in_bounds(probes, rng, swizzle):
    cols = max(swizzle // 2, 24)
    matrix, storage = padded_matrix(rng, 20, 3 * cols, np.uint16, 3 * cols)
    tile = tma.TileMap("bf16", 20, 3 * cols, 6 * cols, 8, cols, swizzle)
    pairs = [(storage, tile)]
    values = rng.integers(1, 1 << 14, size=(8, cols)).astype(np.uint16)
    for c0, c1 in ((cols, 4), (2 * cols + 5, 16), (-7, -3)):
        buffer = tma.host_maps(pairs)
        image = box_image(values, tma.TileMap("bf16", 8, cols, 2 * cols, 8, cols, swizzle), 0, 0)
        store_box(probes, buffer, tile, image, c0, c1)
        expected = storage.copy()
        for r, c in itertools.product(range(8), range(cols)):
            if 0 <= c1 + r < 20 and 0 <= c0 + c < 3 * cols:
                expected[c1 + r, c0 + c] = values[r, c]
        np.testing.assert_array_equal(tma.host_matrix(buffer, pairs, 0), expected)


def test_device_maps_reach_the_gpu_without_a_stream_sync(monkeypatch):
    """On a GPU a new entry of maps is copied asynchronously from pinned memory on the current stream (a
    pageable copy waits for the stream's queued work), cached per pointers, and its pinned buffer is let go
    only after the copy's event has passed.  A stand-in for CuPy records what happens."""
    log = []

    class Array:
        def __init__(self, n):
            self.data = types.SimpleNamespace(ptr=0x10000 + 256 * len(log))
            self.n = n

        def set(self, host, stream=None):
            assert isinstance(host.base.obj, Pinned) and stream is not None  # async, from pinned memory
            log.append(("copy", bytes(host), stream))

    class Pinned(bytearray):
        pass

    class Event:
        def __init__(self, block=False, disable_timing=False):
            self.recorded = None

        def record(self, stream=None):
            self.recorded = stream
            log.append(("record", stream))

        def synchronize(self):
            log.append(("wait", self.recorded))

    stream = types.SimpleNamespace(is_capturing=lambda: False)
    fake = types.SimpleNamespace(
        empty=lambda n, dtype: Array(n),
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0), Event=Event,
                                   alloc_pinned_memory=lambda n: Pinned(n), get_current_stream=lambda: stream))
    monkeypatch.setattr(tma, "driver_encode", lambda tile, address: address.to_bytes(8, "little") * 16)
    monkeypatch.setattr(tma, "_device_maps", type(tma._device_maps)())
    monkeypatch.setattr(tma, "_CACHE_ENTRIES", 2)
    tile = tma.TileMap("bf16", 8, 64, 128, 8, 64, 128)
    arrays = [types.SimpleNamespace(data=types.SimpleNamespace(ptr=0x1000 * k)) for k in range(1, 4)]
    first = tma.device_maps(fake, [(arrays[0], tile)])
    assert log == [("copy", (0x1000).to_bytes(8, "little") * 16, stream), ("record", stream)]
    assert tma.device_maps(fake, [(arrays[0], tile)]) is first and len(log) == 2  # cached: no copy
    tma.device_maps(fake, [(arrays[1], tile)])
    assert ("wait", stream) not in log
    tma.device_maps(fake, [(arrays[2], tile)])  # evicts the first entry: its copy is waited for
    assert log[-1] == ("wait", stream) and [entry[0] for entry in log].count("copy") == 3
    # Under CUDA-graph capture the copy becomes a node of the graph: no event to record or wait on, and the
    # entries the capture used (arrays[2]'s, a hit, and arrays[0]'s, new) stay while the graph may live.
    capturing = types.SimpleNamespace(is_capturing=lambda: True)
    fake.cuda.get_current_stream = lambda: capturing
    del log[:]
    tma.device_maps(fake, [(arrays[2], tile)])
    tma.device_maps(fake, [(arrays[0], tile)])
    assert [entry[0] for entry in log] == ["copy", "wait"]  # arrays[0]'s copy, then arrays[1]'s eviction
    fake.cuda.get_current_stream = lambda: stream
    extra = types.SimpleNamespace(data=types.SimpleNamespace(ptr=0x9000))
    tma.device_maps(fake, [(extra, tile)])  # over the limit, but both older entries are kept
    kept = [key[1][0][0] for key in tma._device_maps]
    assert kept == [0x3000, 0x1000, 0x9000]
    tma.device_maps(fake, [(arrays[1], tile)])  # evicts extra's entry, the one that is not kept
    assert [key[1][0][0] for key in tma._device_maps] == [0x3000, 0x1000, 0x2000]


def test_tma_store_planted_misuse(probes, rng):
    matrix, storage = padded_matrix(rng, 8, 64, np.uint16, 64)
    tile = tma.TileMap("bf16", 8, 64, 128, 8, 64, 128)
    pairs = [(storage, tile)]
    image = rng.integers(0, 255, size=tile.box_bytes).astype(np.uint8)
    with pytest.raises(HarnessError, match="changed before cp.async.bulk.wait_group.read"):
        store_box(probes, tma.host_maps(pairs), tile, image, 0, 0, bug=2)
    with pytest.raises(HarnessError, match=r"store\) reads shared bytes .* after the last fence.proxy.async"):
        store_box(probes, tma.host_maps(pairs), tile, image, 0, 0, bug=4)
    buffer = tma.host_maps(pairs)
    store_box(probes, buffer, tile, image, 0, 0, bug=3)  # no wait_group: the writes never happen
    np.testing.assert_array_equal(tma.host_matrix(buffer, pairs, 0), storage)


# ---------------------------------------------------------------- mbarrier: a ring of stages

MBARRIER_PROBE = r"""
#include "ptx_sm90.cuh"

// A producer (thread 0) loads 8-row boxes of a matrix through a ring of STAGES stages; consumers
// (threads 32..95: two warps) copy each stage out and release it.  params: 0 tiles, 1 planted bug.
#define STAGES 2
#define BOX 1024
extern "C" __global__ void ring_probe(const unsigned char* maps, const int* params, unsigned char* out)
{
    extern __shared__ unsigned char ring_shared[];
    unsigned char* base = ring_shared + (1024 - ptx::shared_window_address(ring_shared) % 1024) % 1024;
    unsigned long long* full = reinterpret_cast<unsigned long long*>(base + STAGES * BOX);
    unsigned long long* empty = full + STAGES;
    const int tiles = params[0], bug = params[1];
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            if (!(bug == 4 && s == 1)) ptx::mbarrier_init(&full[s], 1);  // 4: one barrier never initialized
            ptx::mbarrier_init(&empty[s], 2);  // one arrival per consumer warp
        }
        ptx::fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int t = 0; t < tiles; ++t) {
            const int s = t % STAGES;
            const unsigned phase = (t / STAGES) & 1;
            if (bug != 2) ptx::mbarrier_wait(&empty[s], phase ^ 1);  // 2: overruns the ring
            ptx::mbarrier_arrive_expect_tx(&full[s], bug == 5 ? 2 * BOX : BOX);  // 5: expects too much
            ptx::tma_load_2d(base + s * BOX, maps, 0, 8 * t, &full[s]);
        }
    } else if (threadIdx.x >= 32 && threadIdx.x < 96) {
        for (int t = 0; t < tiles; ++t) {
            const int s = t % STAGES;
            const unsigned phase = (t / STAGES) & 1;
            ptx::mbarrier_wait(&full[s], bug == 1 ? phase ^ 1 : phase);  // 1: the wrong parity
            for (int i = threadIdx.x - 32; i < BOX; i += 64) out[t * BOX + i] = base[s * BOX + i];
            __syncwarp();
            if (threadIdx.x % 32 == 0) {
                ptx::mbarrier_arrive(&empty[s]);
                if (bug == 3 && t == 1) ptx::mbarrier_arrive(&empty[s]);  // 3: one arrival too many
            }
        }
    }
}
"""


def run_ring(probes, rng, bug=0, mode="plain", tiles=8):
    matrix, storage = padded_matrix(rng, 8 * tiles - 3, 64, np.uint16, 64)  # the last box runs 3 rows out
    tile = tma.TileMap("bf16", 8 * tiles - 3, 64, 128, 8, 64, 128)
    buffer = tma.host_maps([(storage, tile)])
    out = np.zeros(tiles * 1024, np.uint8)
    params = np.array([tiles, bug], np.int32)
    HarnessExecutor(mode, kernels_dir=probes).launch(
        Launch("mbarrier_probe", "ring_probe", (1, 1, 1), (96, 1, 1), (buffer, params, out), 4096 + 1024))
    expected = np.concatenate([box_image(matrix, tile, 0, 8 * t) for t in range(tiles)])
    return out, expected


@pytest.mark.parametrize("mode", harness.MODES)
def test_a_ring_of_stages_carries_every_tile(probes, rng, mode):
    out, expected = run_ring(probes, rng, mode=mode)
    np.testing.assert_array_equal(out, expected)


PLANTED_RING = {
    1: "the consumers wait with the wrong parity",
    2: "the producer overruns the ring (no wait on the empty barrier)",
    3: "a consumer arrives twice",
    4: "a barrier used before mbarrier.init",
    5: "the producer expects more bytes than its loads bring",
}


@pytest.mark.parametrize("bug", sorted(PLANTED_RING), ids=[PLANTED_RING[b] for b in sorted(PLANTED_RING)])
def test_planted_ring_bugs_are_caught(probes, rng, monkeypatch, bug):
    """Each bug either fails a harness check or delivers wrong tiles; it never passes."""
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "2")
    try:
        out, expected = run_ring(probes, rng, bug=bug)
    except HarnessError as error:
        assert any(word in str(error) for word in ("mbarrier", "deadlock", "overrunning", "arrivals")), error
    else:
        assert not np.array_equal(out, expected), f"planted bug {bug} ({PLANTED_RING[bug]}) went unnoticed"


# ---------------------------------------------------------------- cp.async with mbarrier arrivals

CP_ASYNC_PROBE = r"""
#include "ptx.cuh"
#include "ptx_sm90.cuh"

// Producers (threads 0..63) each copy 16 bytes of every 1024-byte tile into a ring of 2 stages with cp.async
// and signal `full` with cp.async.mbarrier.arrive.noinc (the PTX ISA: the arrival comes once all of the
// thread's earlier cp.async have completed, and .noinc leaves the pending count alone, so `full` is
// initialized with the 64 arrivals); a consumer warp (64..95) copies each stage out and releases it.
// params: 0 tiles, 1 planted bug.
extern "C" __global__ void cp_async_ring_probe(const unsigned char* src, const int* params, unsigned char* out)
{
    extern __shared__ unsigned char cp_ring_shared[];
    unsigned char* base = cp_ring_shared + (1024 - ptx::shared_window_address(cp_ring_shared) % 1024) % 1024;
    unsigned long long* full = reinterpret_cast<unsigned long long*>(base + 2 * 1024);
    unsigned long long* empty = full + 2;
    const int tiles = params[0], bug = params[1];
    if (threadIdx.x == 0) {
        for (int s = 0; s < 2; ++s) {
            ptx::mbarrier_init(&full[s], bug == 1 ? 63 : 64);  // 1: the count misses one producer's arrival
            ptx::mbarrier_init(&empty[s], 1);
        }
        ptx::fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x < 64) {
        for (int t = 0; t < tiles; ++t) {
            const int s = t % 2;
            ptx::mbarrier_wait(&empty[s], ((t / 2) & 1) ^ 1);
            ptx::cp_async_16(base + s * 1024 + 16 * threadIdx.x, src + t * 1024 + 16 * threadIdx.x);
            if (bug == 2) ptx::mbarrier_arrive(&full[s]);  // 2: an arrival that does not track the copy
            else ptx::cp_async_mbarrier_arrive_noinc(&full[s]);
        }
    } else if (threadIdx.x < 96) {
        for (int t = 0; t < tiles; ++t) {
            const int s = t % 2;
            if (bug != 3) ptx::mbarrier_wait(&full[s], (t / 2) & 1);  // 3: reads the stage without waiting
            for (int i = threadIdx.x - 64; i < 1024; i += 32) out[t * 1024 + i] = base[s * 1024 + i];
            __syncwarp();
            if (threadIdx.x == 64) ptx::mbarrier_arrive(&empty[s]);
        }
    }
}
"""


def run_cp_async_ring(probes, rng, bug=0, mode="plain", tiles=6):
    src = rng.integers(0, 256, size=tiles * 1024, dtype=np.uint8)
    out = np.zeros_like(src)
    HarnessExecutor(mode, kernels_dir=probes).launch(
        Launch("mbarrier_probe", "cp_async_ring_probe", (1, 1, 1), (96, 1, 1),
               (src, np.array([tiles, bug], np.int32), out), 2048 + 32 + 1024))
    return out, src


@pytest.mark.parametrize("mode", harness.MODES)
def test_cp_async_arrivals_carry_every_tile(probes, rng, mode):
    out, expected = run_cp_async_ring(probes, rng, mode=mode)
    np.testing.assert_array_equal(out, expected)


PLANTED_CP_ASYNC = {
    1: "the full barrier's count misses one producer's arrival",
    2: "a plain arrival that does not wait for the thread's copies",
    3: "the consumer reads a stage without waiting on it",
}


@pytest.mark.parametrize("bug", sorted(PLANTED_CP_ASYNC), ids=[PLANTED_CP_ASYNC[b] for b in PLANTED_CP_ASYNC])
def test_planted_cp_async_arrival_bugs_are_caught(probes, rng, monkeypatch, bug):
    """Each bug leaves a tile (or part of one) unlanded when the consumer reads it, or fails a check."""
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "2")
    try:
        out, expected = run_cp_async_ring(probes, rng, bug=bug)
    except HarnessError as error:
        assert any(word in str(error) for word in ("mbarrier", "deadlock", "arrivals")), error
    else:
        assert not np.array_equal(out, expected), f"planted bug {bug} ({PLANTED_CP_ASYNC[bug]}) went unnoticed"


# ---------------------------------------------------------------- clusters: multicast, remote arrivals

CLUSTER_PROBE = r"""
// (After MBARRIER_PROBE, in the same file.)  Clusters of two CTAs of 64 threads; cluster c owns rows [16 c, 16 c + 16) of a 64-byte-wide matrix.
// Thread 0 of the CTA of rank r multicasts rows [16 c + 8 r, +8) (one 1 KB box) to both CTAs, at
// offset r KB: each CTA's `full` barrier expects both boxes.  Every thread copies the 2 KB slab out of
// its own shared memory.  Then lane 0 of warp 1 arrives on `done` in both CTAs, thread 0 waits on its
// own, and barrier.cluster keeps every CTA until no peer can reach it.  params: 0 planted bug.
extern "C" __global__ void __cluster_dims__(2, 1, 1) cluster_probe(const unsigned char* maps, const int* params,
                                                                    unsigned char* out, unsigned* ranks)
{
    extern __shared__ unsigned char cluster_shared[];
    unsigned char* base = cluster_shared + (1024 - ptx::shared_window_address(cluster_shared) % 1024) % 1024;
    unsigned long long* full = reinterpret_cast<unsigned long long*>(base + 2 * BOX);
    unsigned long long* done = full + 1;
    const int bug = params[0];
    const unsigned rank = ptx::cluster_ctarank();
    if (threadIdx.x == 0) {
        ptx::mbarrier_init(full, 1);
        ptx::mbarrier_init(done, 2);  // one arrival from each CTA
        if (bug == 3) ptx::fence_proxy_async_shared();  // 3: a CTA-scoped fence: the peers may not see the inits
        else ptx::fence_mbarrier_init();
    }
    if (bug != 4) {  // 4: a peer's multicast may reach the barriers before their init
        ptx::cluster_arrive();  // every CTA's barriers initialized before a peer's load or arrival reaches them
        ptx::cluster_wait();
    }
    if (threadIdx.x == 0) {
        ptx::mbarrier_arrive_expect_tx(full, 2 * BOX);
        const unsigned mask = bug == 1 ? 1u << rank : 3u;  // 1: the box goes to this CTA alone
        ptx::tma_load_2d_multicast(base + rank * BOX, maps, 0, 16 * (blockIdx.x / 2) + 8 * rank, full, mask);
    }
    ptx::mbarrier_wait(full, 0);
    for (int i = threadIdx.x; i < 2 * BOX; i += blockDim.x) out[blockIdx.x * 2 * BOX + i] = base[i];
    if (bug == 2 && rank == 0) return;  // 2: rank 0 leaves while rank 1 will still arrive on its barrier
    ptx::cluster_arrive();  // (with bug 2 this completes only once rank 0 has exited)
    ptx::cluster_wait();
    if (threadIdx.x == 32) {
        ranks[blockIdx.x] = rank;
        for (unsigned r = 0; r < 2; ++r) ptx::mbarrier_arrive_cluster(done, r);
    }
    if (threadIdx.x == 0) ptx::mbarrier_wait(done, 0);
    ptx::cluster_arrive();
    ptx::cluster_wait();
}
"""


def run_cluster(probes, rng, clusters=3, bug=0, mode="plain", cluster=(2, 1, 1), resident=2):
    rows = 16 * clusters - 5  # the last box runs 5 rows out: zeros
    matrix, storage = padded_matrix(rng, rows, 64, np.uint16, 64)
    tile = tma.TileMap("bf16", rows, 64, 128, 8, 64, 128)
    buffer = tma.host_maps([(storage, tile)])
    out = np.zeros((2 * clusters, 2 * 1024), np.uint8)
    ranks = np.full(2 * clusters, 7, np.uint32)
    params = np.array([bug], np.int32)
    HarnessExecutor(mode, kernels_dir=probes, resident_blocks=resident).launch(
        Launch("mbarrier_probe", "cluster_probe", (2 * clusters, 1, 1), (64, 1, 1), (buffer, params, out, ranks),
               3 * 1024, cluster=cluster))
    slabs = [np.concatenate([box_image(matrix, tile, 0, 16 * c), box_image(matrix, tile, 0, 16 * c + 8)])
             for c in range(clusters)]
    return out, np.stack([slabs[b // 2] for b in range(2 * clusters)]), ranks


@pytest.mark.parametrize(("mode", "resident"), [("plain", 2), ("plain", 4), ("tsan", 4)])
def test_a_cluster_shares_its_slab_by_multicast(probes, rng, mode, resident):
    """Every CTA of every cluster holds both boxes, its own and its peer's; ranks alternate 0, 1
    (one cluster at a time, or two clusters running at once)."""
    out, expected, ranks = run_cluster(probes, rng, mode=mode, resident=resident)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ranks, [0, 1] * 3)


PLANTED_CLUSTER = {
    1: ("a multicast that leaves the peer out", "deadlock"),
    2: ("a CTA leaves while its peer will still arrive on its barrier", "has exited"),
    3: ("inits published to the CTA only", "no fence.mbarrier_init.release.cluster published"),
    4: ("no barrier.cluster between the inits and the peers' use", "barrier.cluster completed|no mbarrier here"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_CLUSTER), ids=[PLANTED_CLUSTER[b][0] for b in sorted(PLANTED_CLUSTER)])
def test_planted_cluster_bugs_are_caught(probes, rng, monkeypatch, bug):
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "2")
    with pytest.raises(HarnessError, match=PLANTED_CLUSTER[bug][1]):
        run_cluster(probes, rng, clusters=1, bug=bug)


def test_a_launch_must_match_the_kernels_cluster(probes, rng):
    with pytest.raises(ArgumentError, match="declares __cluster_dims__"):
        run_cluster(probes, rng, cluster=(1, 1, 1))
    with pytest.raises(HarnessError, match="whole number of clusters"):
        HarnessExecutor("plain", kernels_dir=probes).launch(
            Launch("mbarrier_probe", "cluster_probe", (3, 1, 1), (64, 1, 1),
                   (np.zeros(256, np.uint8), np.zeros(1, np.int32), np.zeros(1, np.uint8), np.zeros(1, np.uint32)),
                   3 * 1024, cluster=(2, 1, 1)))
