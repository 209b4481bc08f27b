"""The wgmma GEMM (kernels/gemm_wgmma.cu): on the CPU harness against the reference, its launcher, its SASS.

Every configuration x layout x precision runs through the harness (wgmma, TMA, mbarriers and
clusters modelled from the PTX ISA: dlgpu/testing/cuda_host_sm90.h) at odd shapes, with outputs
poisoned, on a grid of two SMs so that each block (or cluster of two) walks several tiles and the
ring of stages wraps across them; C leaves by TMA stores (into a padded array where its rows are not
16-byte multiples), and split-K's partial sums meet in a workspace.  Planted bugs in copies of the real kernel (a wrong swizzle, a missing
wait, a wrong parity, an overrunning producer, an early release, a multicast that misses the peer,
a stage freed before the peer's consumers are done) must each fail.  The compile test checks what
the hardware needs: HGMMA, UTMALDG, no local memory, registers within the setmaxnreg budgets.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu.cuda import compiler, sass, tma
from dlgpu.cuda import gemm as cuda_gemm
from dlgpu.cuda import gemm_wgmma as wg
from dlgpu.errors import ArgumentError, DtypeError, ShapeError
from dlgpu.testing import assert_close, bf16_bits, harness, random_array, stored_values
from dlgpu.testing.harness import HarnessError, HarnessExecutor
from dlgpu.testing.planted import plant, ring_section

LAYOUTS = list(itertools.product((False, True), repeat=2))  # (transpose_a, transpose_b)
COMBOS = [
    (config.name, precision, ta, tb)
    for config in wg.CONFIGS
    for precision in ("bf16", "fp16", "tf32")
    for ta, tb in LAYOUTS
    if precision != "tf32" or (not ta and tb)
]
COMBO_IDS = [f"{c}-{p}-{cuda_gemm.layout_name(ta, tb)}" for c, p, ta, tb in COMBOS]
# 1: a single element, one k-tile mostly out of bounds; 67 x 33 x 65: partial tiles everywhere,
# rows of 65 halves (TMA needs 16-byte rows: the launcher pads); 200 x 300 x 450: several tiles
# per block on two SMs, and 8 k-tiles, so the ring of 4 or 6 stages wraps within a tile too.
SHAPES = ((1, 1, 1), (67, 33, 65), (200, 300, 450))


def stored(rng, shape, precision: str):
    values = random_array(rng, shape)
    return {"bf16": bf16_bits, "fp16": lambda v: v.astype(np.float16), "tf32": lambda v: v}[precision](values)


def operands(rng, m, n, k, transpose_a, transpose_b, precision):
    a = stored(rng, (k, m) if transpose_a else (m, k), precision)
    b = stored(rng, (n, k) if transpose_b else (k, n), precision)
    return a, b


def close(out, expected, precision):
    """assert_close for 16-bit results decoded to float64: the precision's tolerance, not float64's."""
    assert_close(out, expected, dtype=np.float32, precision=precision)


def expected_product(a, b, transpose_a, transpose_b, precision):
    return ref.matmul(stored_values(a, precision), stored_values(b, precision), transpose_a=transpose_a,
                      transpose_b=transpose_b)


@pytest.fixture
def two_sms():
    return HarnessExecutor("plain", multiprocessor_count=2)


# ---------------------------------------------------------------- on the harness

pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.mark.parametrize(("config", "precision", "transpose_a", "transpose_b"), COMBOS, ids=COMBO_IDS)
def test_product_matches_the_reference(two_sms, rng, config, precision, transpose_a, transpose_b):
    layout = cuda_gemm.layout_name(transpose_a, transpose_b)
    for m, n, k in SHAPES:
        a, b = operands(rng, m, n, k, transpose_a, transpose_b, precision)
        two_sms.launched.clear()
        c = wg.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, config=config,
                    executor=two_sms)
        assert two_sms.launched == {("gemm_wgmma", f"gemm_wgmma_{config}_{layout}_{precision}")}
        assert c.dtype == np.float32
        assert_close(c, expected_product(a, b, transpose_a, transpose_b, precision), precision=precision)


@pytest.mark.parametrize("precision", ("bf16", "fp16"))
def test_fused_bias_relu_and_16_bit_output(two_sms, rng, precision):
    # C leaves by TMA stores: for N = 130 and 67 (16-bit rows not 16-byte multiples) into a padded array
    # copied into out, for 136 into out itself.
    for m, n, k in ((37, 130, 64), (64, 67, 9), (130, 136, 40)):
        a, b = operands(rng, m, n, k, False, True, precision)
        bias = random_array(rng, n)
        expected = ref.relu(expected_product(a, b, False, True, precision) + bias)
        c = wg.gemm(a, b, transpose_b=True, precision=precision, bias=bias, relu=True, executor=two_sms)
        assert_close(c, expected, precision=precision)
        bias16 = bf16_bits(bias) if precision == "bf16" else bias.astype(np.float16)  # bias in the operands' dtype
        half = wg.gemm(a, b, transpose_b=True, precision=precision, bias=bias16, relu=True, out_dtype=a.dtype,
                       executor=two_sms)
        assert half.dtype == a.dtype
        expected16 = ref.relu(expected_product(a, b, False, True, precision) + stored_values(bias16, precision))
        close(stored_values(half, precision), expected16, precision)
        assert (stored_values(half, precision) >= 0).all()
        plan = wg.plan(a, b, transpose_a=False, transpose_b=True, precision=precision, bias=bias16, relu=True,
                       out=None, out_dtype=a.dtype, config=None, executor=two_sms)
        assert (plan.store is plan.out) == (n % 8 == 0)


def test_backward_products_in_every_layout(two_sms, rng):
    m, n, k = 40, 72, 24
    for transpose_a, transpose_b in LAYOUTS:
        a, b = operands(rng, m, n, k, transpose_a, transpose_b, "bf16")
        grad_c = stored(rng, (m, n), "bf16")
        two_sms.launched.clear()
        grad_a, grad_b = cuda_gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, "bf16", variant="wgmma",
                                                   executor=two_sms)
        assert {family for family, _ in two_sms.launched} == {wg.FAMILY}
        expected_a, expected_b = ref.matmul_backward(stored_values(grad_c, "bf16"), stored_values(a, "bf16"),
                                                     stored_values(b, "bf16"), transpose_a=transpose_a,
                                                     transpose_b=transpose_b)
        assert grad_a.shape == a.shape and grad_a.dtype == np.uint16
        close(stored_values(grad_a, "bf16"), expected_a, "bf16")
        close(stored_values(grad_b, "bf16"), expected_b, "bf16")


def test_masked_linear_backward(two_sms, rng):
    batch, features_in, features_out = 36, 20, 12
    x, weight = stored(rng, (batch, features_in), "fp16"), stored(rng, (features_out, features_in), "fp16")
    y = np.maximum(random_array(rng, (batch, features_out)), 0).astype(np.float16)  # about half masked
    grad_y = stored(rng, (batch, features_out), "fp16")
    two_sms.launched.clear()
    grad_x, grad_w, grad_b = cuda_gemm.linear_backward(grad_y, x, weight, y, "relu", "fp16", variant="wgmma",
                                                       executor=two_sms)
    # One producer pass writes the masked grad_y that both products read.
    assert {k for f, k in two_sms.launched if f == wg.FAMILY} == {"gemm_wgmma_128x128_nn_fp16",
                                                                     "gemm_wgmma_128x128_tn_fp16"}
    assert ("gemm_cast", "cast_fp16_fp16") in two_sms.launched
    expected = ref.linear_backward(grad_y.astype(np.float64), x.astype(np.float64), weight.astype(np.float64),
                                   y=y.astype(np.float64), activation="relu")
    assert grad_x.dtype == grad_w.dtype == np.float16
    for got, want in zip((grad_x, grad_w, grad_b), expected, strict=True):
        close(got.astype(np.float64), want, "fp16")


@pytest.mark.parametrize(("capability", "precision", "transpose_b", "family"), [
    (90, "bf16", False, wg.FAMILY), (90, "fp16", True, wg.FAMILY), (90, "tf32", True, wg.FAMILY),
    (90, "tf32", False, "gemm_tc"),  # wgmma reads tf32 K-major only
    (80, "bf16", False, "gemm_tc"), (None, "bf16", False, "gemm_tc"),  # not a Hopper; the harness by default
    (90, "ieee", False, "gemm"),
])
def test_the_registry_picks_wgmma_on_compute_capability_9(rng, capability, precision, transpose_b, family):
    """dlgpu.cuda.gemm.gemm, which every product of the CUDA backend calls, takes wgmma where the device is
    compute capability 9.0 and wgmma has the layout; fp32 operands at bf16 / fp16 are cast to 16 bits first."""
    executor = HarnessExecutor("plain", multiprocessor_count=2, compute_capability=capability)
    m, n, k = 24, 40, 36
    a = random_array(rng, (m, k))
    b = random_array(rng, (n, k) if transpose_b else (k, n))
    c = cuda_gemm.gemm(a, b, transpose_b=transpose_b, precision=precision, executor=executor)
    assert {f for f, _ in executor.launched} - {"gemm_cast"} == {family}
    assert c.dtype == np.float32
    assert_close(c, ref.matmul(a, b, transpose_b=transpose_b), precision=precision)


def test_default_variant_by_device():
    pick = cuda_gemm.default_variant
    assert pick("bf16", transpose_a=True, transpose_b=False, capability=90) == "wgmma"
    assert pick("tf32", transpose_a=True, transpose_b=True, capability=90) == "tc"
    assert pick("fp16", transpose_a=False, transpose_b=False, capability=100) == "tc"  # no wgmma on Blackwell
    assert pick("ieee", transpose_a=False, transpose_b=False, capability=90) == "simt"
    assert not wg.available(HarnessExecutor("plain", compute_capability=80))
    assert wg.available(HarnessExecutor("plain")) and wg.available(HarnessExecutor("plain", compute_capability=90))


def test_the_registry_refuses_what_wgmma_cannot_do(two_sms, rng):
    a, b = random_array(rng, (8, 16)), random_array(rng, (16, 8))
    with pytest.raises(ArgumentError, match="K-major"):
        cuda_gemm.gemm(a, b, precision="tf32", variant="wgmma", executor=two_sms)
    with pytest.raises(ArgumentError, match="computes"):
        cuda_gemm.gemm(a, b, precision="ieee", variant="wgmma", executor=two_sms)
    with pytest.raises(ArgumentError, match="plans its own"):
        cuda_gemm.choose(8, 8, 16, transpose_a=False, transpose_b=False, precision="bf16", masked=False,
                         aligned=True, sms=2, variant="wgmma")


def test_the_launcher_refuses_what_the_kernels_cannot_do(two_sms, rng):
    a16, b16 = stored(rng, (8, 16), "fp16"), stored(rng, (16, 8), "fp16")
    a32, b32 = random_array(rng, (8, 16)), random_array(rng, (16, 8))
    with pytest.raises(ArgumentError, match="K-major"):
        wg.gemm(a32, b32, precision="tf32", executor=two_sms)  # tf32 needs layout nt
    with pytest.raises(DtypeError, match="share a dtype"):
        wg.gemm(a16, b32, executor=two_sms)
    with pytest.raises(DtypeError, match="say which"):
        wg.gemm(a16.view(np.uint16), b16.view(np.uint16), executor=two_sms)
    with pytest.raises(DtypeError, match="compute at"):
        wg.gemm(a16, b16, precision="bf16", executor=two_sms)
    with pytest.raises(DtypeError, match="out_dtype"):
        wg.gemm(a16, b16, out_dtype=np.float64, executor=two_sms)
    with pytest.raises(ShapeError, match="inner dimensions"):
        wg.gemm(a16, a16, executor=two_sms)
    with pytest.raises(ArgumentError, match="config must be one of"):
        wg.gemm(a16, b16, config="64x64", executor=two_sms)


def test_tile_choice_and_shared_memory():
    assert wg.choose(4096, 4096, 132).name == "128x256"
    assert wg.choose(4096, 128, 132).name == "128x128"  # a 256-wide tile would be half idle
    assert wg.choose(512, 512, 132).name == "128x128"  # 8 wide tiles would leave 124 SMs idle
    for config in wg.CONFIGS:
        assert wg.shared_bytes(config) <= 227 * 1024
    staging = 8 * 2 * 16 * 128  # per consumer warp two TMA-store boxes of 16 rows x 128 bytes
    assert wg.shared_bytes(wg.CONFIGS[0]) == 4 * (128 + 256) * 128 + staging + 64 + 1024


def test_split_k_factors_leave_no_split_empty():
    assert wg.choose_splits(units=64, cluster=2, k_tiles=128, sms=132) == 1  # 128 CTAs: the device is full
    assert wg.choose_splits(units=4, cluster=2, k_tiles=64, sms=132) == 16  # 8 CTAs: 16-way, 4 k-tiles each
    assert wg.choose_splits(units=4, cluster=1, k_tiles=6, sms=132) == 1  # too short to split
    for units, k_tiles in itertools.product((1, 3, 7), range(1, 80)):
        splits = wg.choose_splits(units, 1, k_tiles, 132)
        per_split = -(-k_tiles // splits)
        assert 1 <= splits <= wg.MAX_SPLITS and (splits - 1) * per_split < k_tiles, (units, k_tiles, splits)
        assert splits == 1 or per_split >= wg.MIN_SPLIT_K_TILES


@pytest.mark.parametrize(("config", "precision", "out16"), [("128x256", "bf16", False), ("128x128", "fp16", True)])
def test_split_k_partial_sums_meet_in_order(rng, config, precision, out16):
    """Few tiles, long K: each tile's k-tiles split over blocks whose partial sums the last to finish adds;
    the automatic choice on 132 SMs, and a forced 3-way split on 2 SMs (units outnumbering the grid)."""
    m, n, k = 150, 136, 1100  # 2 x 1 tiles (one cluster tile of 128x256), 18 k-tiles
    a, b = operands(rng, m, n, k, False, True, precision)
    expected = expected_product(a, b, False, True, precision)
    out_dtype = a.dtype if out16 else None
    full_device = HarnessExecutor("plain")
    planned = wg.plan(a, b, transpose_a=False, transpose_b=True, precision=precision, bias=None, relu=False,
                      out=None, out_dtype=out_dtype, config=config, executor=full_device)
    assert planned.launch.args[-1] > 1  # split automatically
    for executor, splits in ((full_device, None), (HarnessExecutor("plain", multiprocessor_count=2), 3)):
        c = wg.gemm(a, b, transpose_b=True, precision=precision, config=config, splits=splits, out_dtype=out_dtype,
                    executor=executor)
        close(stored_values(c, precision) if out16 else c, expected, precision)
    with pytest.raises(ArgumentError, match="empty"):
        wg.gemm(a, b, transpose_b=True, precision=precision, config=config, splits=17, executor=full_device)


def test_split_k_hands_partials_over_through_fences_under_tsan(rng):
    """The partial sums cross blocks through a relaxed atomic counter: ThreadSanitizer sees the writers'
    and the last warp's __threadfence order them (the harness tells it nothing more), and no race."""
    m, n, k = 100, 72, 640  # one 128x128 tile, 10 k-tiles: 3 splits on 2 SMs, the units outnumbering the grid
    a, b = operands(rng, m, n, k, False, True, "fp16")
    c = wg.gemm(a, b, transpose_b=True, precision="fp16", config="128x128", splits=3,
                executor=HarnessExecutor("tsan", multiprocessor_count=2))
    close(c, expected_product(a, b, False, True, "fp16"), "fp16")


def test_tensor_maps_follow_the_driver_rules():
    tma.TileMap("bf16", 10, 64, 128, 8, 64, 128).validate()
    for bad, why in ((dict(pitch=120), "pitch"), (dict(box_rows=300), "box"), (dict(box_cols=32), "swizzle"),
                     (dict(swizzle=16), "swizzle"), (dict(dtype="f64"), "dtype")):
        fields = dict(dtype="bf16", rows=10, cols=64, pitch=128, box_rows=8, box_cols=64, swizzle=128) | bad
        with pytest.raises(ArgumentError, match=why):
            tma.TileMap(**fields).validate()


def test_the_driver_is_asked_for_the_same_map_innermost_first(monkeypatch):
    """No driver here: the encoder's call is captured and checked against cuTensorMapEncodeTiled's signature,
    every size in the binding's own integer type (cuda-bindings 13.0 on the first GPU run took no plain int)."""
    from cuda.bindings import driver

    calls = []

    def encode(*args):
        calls.append(args)
        return driver.CUresult.CUDA_SUCCESS, driver.CUtensorMap()

    monkeypatch.setattr(driver, "cuTensorMapEncodeTiled", encode)
    tile = tma.TileMap("bf16", 300, 72, 160, 128, 64, 128)
    assert len(tma.driver_encode(tile, 0x7F0000001000)) == tma.MAP_BYTES
    (data_type, rank, address, dims, strides, box, element_strides, interleave, swizzle, _, fill), = calls
    u32, u64 = driver.cuuint32_t, driver.cuuint64_t
    assert isinstance(rank, u32) and all(isinstance(v, u64) for v in (*dims, *strides))
    assert all(isinstance(v, u32) for v in (*box, *element_strides))
    rank, dims, strides, box, element_strides = (int(rank), *([int(v) for v in values]
                                                              for values in (dims, strides, box, element_strides)))
    assert data_type == driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 and rank == 2
    assert address == 0x7F0000001000 and dims == [72, 300] and strides == [160] and box == [64, 128]
    assert element_strides == [1, 1] and swizzle == driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B
    assert interleave == driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE
    assert fill == driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE


def test_registry_names_every_kernel():
    assert set(wg.kernel_names()) == set(harness.family_kernels(wg.FAMILY))


# ---------------------------------------------------------------- planted bugs in the real kernel

SOURCE = compiler.source_path(wg.FAMILY)
PLANTED = {  # name: (text in kernels/gemm_wgmma.cu's kernel or wgmma_tile.cuh's ring, its replacement)
    "wrong swizzle mode in A's descriptor": (
        "ptx::wgmma_descriptor(a_stage + consumer * 64 * 128 + 32 * j, 16, 1024, 128)",
        "ptx::wgmma_descriptor(a_stage + consumer * 64 * 128 + 32 * j, 16, 1024, 64)"),
    "no wgmma.wait_group before releasing a stage": ("ptx::wgmma_wait<1>();", ""),
    "no wgmma.wait_group before the epilogue": ("ptx::wgmma_wait<0>();", ""),
    "consumers wait on the wrong parity": (
        "ptx::mbarrier_wait(&full[stage], phase);", "ptx::mbarrier_wait(&full[stage], phase ^ 1);"),
    "producer overruns the ring": ("ptx::mbarrier_wait(&empty[stage], phase ^ 1);", ""),
    "consumers release the stage their wgmmas still read": (
        "if (has_previous && releases) release(previous);", "if (releases) release(stage);"),
    "producer expects the A tile's bytes only": (
        "ptx::mbarrier_arrive_expect_tx(&full[stage], T::kStageBytes);",
        "ptx::mbarrier_arrive_expect_tx(&full[stage], T::kABytes);"),
    "a multicast that leaves the peer CTA out": (
        "&full[stage], (1u << CLUSTER) - 1);", "&full[stage], 1u << rank);"),
    "a stage freed once this CTA's consumers are done with it": (
        "ptx::mbarrier_init(&empty[s], WGMMA_CONSUMERS * CLUSTER);", "ptx::mbarrier_init(&empty[s], WGMMA_CONSUMERS);"),
    "consumers release the stage in their own CTA only": (
        "for (int r = 0; r < CLUSTER; ++r) ptx::mbarrier_arrive_cluster(&empty[s], r);",
        "ptx::mbarrier_arrive(&empty[s]);"),
}
BUGS = sorted(PLANTED)


def planted_source(original: str) -> str:
    """kernels/gemm_wgmma.cu with one kernel per planted bug, ``planted_<i>`` (bf16, 128 x 256 in clusters of
    two, layout nt), each calling a copy of the kernel template and of the ring (dlgpu.testing.planted) with that
    bug in a namespace of its own; the real instances are dropped but one (gemm_wgmma_128x256_nt_bf16, the
    control).  One build serves every bug."""
    head, _ = original.split("// ---------------------------------------------------------------- named instances")
    template_start = head.index("template <ptx::Precision P, int BN, int STAGES, int CLUSTER, bool kTransA, "
                                "bool kTransB>\n__device__ __forceinline__ void wgmma_gemm(")
    template = head[template_start:]
    parts = [head, "#define WGMMA_PARAMS const unsigned char *maps, const float *bias, float *workspace, "
             "int *counters, int M, int N, int K, int flags, int splits\n"
             "#define WGMMA_ARGS maps, bias, workspace, counters, M, N, K, flags, splits\n"
             "#define WGMMA_PLANTED __global__ void WGMMA_CLUSTER_DIMS(2) __launch_bounds__(WGMMA_THREADS, 1)\n"]
    ring = ring_section(SOURCE.parent)
    for index, bug in enumerate(BUGS):
        code = "".join(plant([ring, template], *PLANTED[bug]))
        parts.append(f"namespace bug_{index} {{\n{code}}}\n")
        parts.append(f'extern "C" WGMMA_PLANTED planted_{index}(WGMMA_PARAMS)\n{{\n'
                     f"    bug_{index}::wgmma_gemm<ptx::Precision::bf16, 256, 4, 2, false, true>(WGMMA_ARGS);\n}}\n")
    parts.append('extern "C" WGMMA_PLANTED gemm_wgmma_128x256_nt_bf16(WGMMA_PARAMS)\n'
                 "{\n    wgmma_gemm<ptx::Precision::bf16, 256, 4, 2, false, true>(WGMMA_ARGS);\n}\n")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def planted_kernels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted_wgmma")
    (folder / SOURCE.name).write_text(planted_source(SOURCE.read_text()))
    return folder


def run_planted(folder, kernel: str):
    """300 x 200 x 330 (bf16, nt) through ``kernel``: one cluster of two CTAs walks two cluster tiles (the
    second's upper CTA past M), 6 k-tiles each through 4 stages; C by TMA stores."""
    executor = HarnessExecutor("plain", kernels_dir=folder, multiprocessor_count=2)
    a, b = operands(np.random.default_rng(5), 300, 200, 330, False, True, "bf16")
    planned = wg.plan(a, b, transpose_a=False, transpose_b=True, precision="bf16", bias=None, relu=False,
                      out=None, out_dtype=None, config="128x256", executor=executor)
    assert planned.launch.grid == (2, 1, 1) and planned.store is planned.out
    executor.launch(dataclasses.replace(planned.launch, kernel=kernel))
    return planned.finish(), expected_product(a, b, False, True, "bf16")


def test_the_planted_copy_runs_clean_without_a_bug(planted_kernels):
    assert_close(*run_planted(planted_kernels, "gemm_wgmma_128x256_nt_bf16"), precision="bf16")


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bugs_in_the_kernel_are_caught(planted_kernels, monkeypatch, bug):
    """Each bug fails a harness check (most name the broken rule) or corrupts C; it never passes."""
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "3")
    try:
        c, expected = run_planted(planted_kernels, f"planted_{BUGS.index(bug)}")
    except HarnessError:
        return
    with pytest.raises(AssertionError):
        assert_close(c, expected, precision="bf16")


# ---------------------------------------------------------------- what the compiler made of it


def test_sm90a_build_fits_the_register_budgets():
    """ptxas keeps every kernel within 168 registers (384 threads, one block per SM), spills nothing and
    honours setmaxnreg; the budgets themselves fit the 64K-register file."""
    text = SOURCE.read_text()
    producer = int(re.search(r"#define WGMMA_PRODUCER_REGISTERS (\d+)", text).group(1))
    consumer = int(re.search(r"#define WGMMA_CONSUMER_REGISTERS (\d+)", text).group(1))
    assert 128 * (producer + 2 * consumer) <= 65536  # one producer and two consumer warpgroups
    module = compiler.compile_family(wg.FAMILY, arch="sm_90a", announce=False)
    assert set(module.resources) == set(wg.kernel_names())
    for name, resources in module.resources.items():
        assert resources.registers * 384 <= 65536, (name, resources.registers)
        assert resources.spill_bytes == 0 and resources.stack_frame == 0, (name, resources)
    assert "setmaxnreg" not in module.log.lower(), module.log  # ptxas says so when it ignores one
    listing = sass.disassemble(module.image)
    patterns = ("HGMMA", "UTMALDG", "UTMALDG.MULTICAST", "UTMASTG", "UCGABAR_ARV", "USETMAXREG", "LDL", "STL")
    for name, opcodes in listing.items():
        counts = sass.count_instructions(opcodes, patterns)
        assert counts["USETMAXREG"] == 2 and counts["HGMMA"] >= 4 and counts["UTMALDG"] >= 2, (name, counts)
        assert counts["UTMASTG"] >= 1 and counts["LDL"] == counts["STL"] == 0, (name, counts)
        # The clustered configuration multicasts B and holds its CTAs together; the other has no cluster.
        clustered = wg.CLUSTER[name.split("_")[2]] > 1
        assert (counts["UTMALDG.MULTICAST"] >= 1) == clustered and (counts["UCGABAR_ARV"] >= 2) == clustered, (
            name, counts)


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize(("transpose_a", "transpose_b"), LAYOUTS)
def test_wgmma_on_the_gpu_matches_the_harness_and_cupy(transpose_a, transpose_b):
    import cupy

    from dlgpu.cuda.executor import default_executor

    if not wg.available(default_executor()):
        pytest.skip("wgmma needs a compute capability 9.0 GPU")

    # The chosen configuration in every layout; in nt also the clustered 128x256 (multicast) and a
    # 3-way split-K, which the chosen configuration at this size does not reach.
    cases = [(None, None)] + ([("128x256", None), ("128x128", 3)] if (transpose_a, transpose_b) == (False, True)
                              else [])

    def run(executor):
        rng = np.random.default_rng(11)
        a, b = operands(rng, 300, 520, 264, transpose_a, transpose_b, "fp16")
        a, b = executor.xp.asarray(a), executor.xp.asarray(b)
        return tuple(wg.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, config=config, splits=splits,
                             executor=executor) for config, splits in cases)

    harness.cross_check(run, tolerance=1e-5)
    rng = np.random.default_rng(12)
    a, b = operands(rng, 1000, 700, 900, transpose_a, transpose_b, "fp16")
    a, b = cupy.asarray(a), cupy.asarray(b)
    c = wg.gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    expected = (a.T if transpose_a else a).astype(cupy.float64) @ (b.T if transpose_b else b).astype(cupy.float64)
    assert_close(c, cupy.asnumpy(expected), precision="fp16")
