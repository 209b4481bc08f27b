"""The wgmma convolution forward and data gradient (kernels/conv2d_wgmma.cu): on the CPU harness against the
reference, the launcher and the NHWC routing, planted bugs, the sm_90a SASS.

The harness models wgmma, TMA, mbarriers and cp.async.mbarrier.arrive.noinc from the PTX ISA
(dlgpu/testing/cuda_host_sm90.h); each shape runs on a grid of two SMs, so a block walks several tiles and
the ring of stages wraps across them.  Shapes are few but each aims at an edge: channels below, across and
above the 64-tap k-tile (24, 72, 136: chunks of one k-tile from two or three taps), stride 2, padding,
dilation, 1x1 / 3x3 / 7x7 taps, pixel counts and output channels that are not tile multiples (K = 13: y's
rows are not 16-byte multiples, so the TMA stores go through a padded array); dgrad (stride 1) from K = 72
(a partial block of 64 output channels), dilated, 7x7, and into C = 136 (two column tiles).  The harness
build is shared by every test of the module (CI time); so is the one build of the planted bugs.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import dlgpu.reference as R
from dlgpu.cuda import compiler, conv2d_nhwc, sass
from dlgpu.cuda import conv2d_wgmma as cw
from dlgpu.errors import ArgumentError, DtypeError
from dlgpu.testing import assert_close, bf16_bits, harness, random_array, stored_values
from dlgpu.testing.harness import HarnessError, HarnessExecutor
from dlgpu.testing.planted import plant, ring_section

pytestmark = pytest.mark.usefixtures("host_compiler")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def geo(stride=1, padding=0, dilation=1):
    return dict(stride=pair(stride), padding=pair(padding), dilation=pair(dilation))


# (x NCHW, w OIHW, geometry, config): see the module docstring.
CASES = (
    ((2, 24, 9, 9), (72, 24, 3, 3), geo(1, 1), "128x128"),      # C < 64: three taps per k-tile; 162 pixels
    # strided, dilated, rectangular; K = 13: rows of y not 16-byte multiples (stored through a padded array)
    ((1, 16, 11, 7), (13, 16, 3, 2), geo((2, 1), (1, 0), (1, 2)), "128x64"),
    ((1, 8, 13, 13), (16, 8, 7, 7), geo(2, 3), "128x64"),      # 7x7 / 2, C = 8: one chunk per tap
    ((2, 72, 5, 6), (136, 72, 1, 1), geo(), "128x128"),        # 1x1, K = 136: two column tiles
    ((1, 136, 6, 6), (40, 136, 3, 3), geo(1, 1), "128x64"),    # 20 k-tiles: the ring wraps within a tile
)
CASE_IDS = ["c24-3x3", "strided-dilated", "7x7-s2", "1x1-k136", "c136-3x3"]


def stored(values, precision):
    return bf16_bits(values) if precision == "bf16" else values.astype(np.float16)


def to_nhwc(array):
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def inputs(rng, x_shape, w_shape, precision):
    """x, w as stored (NHWC 16-bit), their values (NCHW float64) and a bias."""
    x16, w16 = stored(random_array(rng, x_shape), precision), stored(random_array(rng, w_shape), precision)
    return to_nhwc(x16), to_nhwc(w16), stored_values(x16, precision), stored_values(w16, precision), \
        random_array(rng, w_shape[0])


def check(y, expected, precision):
    """y (NHWC, fp32 or 16-bit) against the float64 reference (NCHW) at the precision's tolerance."""
    values = y if y.dtype == np.float32 else stored_values(y, precision)
    assert_close(np.asarray(values).transpose(0, 3, 1, 2), expected, dtype=np.float32, precision=precision)


@pytest.fixture(scope="module")
def two_sms():
    return HarnessExecutor("plain", multiprocessor_count=2)


# ---------------------------------------------------------------- on the harness


@pytest.mark.parametrize("precision", cw.PRECISIONS)
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "config"), CASES, ids=CASE_IDS)
def test_forward_matches_the_reference(two_sms, rng, precision, x_shape, w_shape, geometry, config):
    """Bias + ReLU into a 16-bit y, and no epilogue into fp32, on the configuration named."""
    x, w, x_values, w_values, bias = inputs(rng, x_shape, w_shape, precision)
    two_sms.launched.clear()
    y = cw.forward(x, w, stored(bias, precision), relu=True, precision=precision, config=config, executor=two_sms,
                   **geometry)
    assert two_sms.launched == {(cw.FAMILY, f"conv2d_fwd_wgmma_{config}_{precision}")}
    assert y.dtype == x.dtype and y.shape[-1] == w_shape[0]
    check(y, R.conv2d(x_values, w_values, stored_values(stored(bias, precision), precision), activation="relu",
                      **geometry), precision)
    plain = cw.forward(x, w, precision=precision, out_dtype=np.float32, config=config, executor=two_sms, **geometry)
    assert plain.dtype == np.float32
    check(plain, R.conv2d(x_values, w_values, **geometry), precision)
    assert (plain < 0).any()  # the ReLU above had something to do


# The clustered forward at the same shapes (most have one row of tiles: every cluster's upper CTA is past the
# pixels), and 363 pixels x K = 136: three rows of tiles (the second pair's upper CTA has none) by two columns,
# four cluster units on one cluster, so the ring wraps across units.
CLUSTER_CASES = tuple((x_shape, w_shape, geometry) for x_shape, w_shape, geometry, _ in CASES) + (
    ((3, 16, 11, 11), (136, 16, 3, 3), geo(1, 1)),)
CLUSTER_IDS = CASE_IDS + ["3-tile-rows"]


@pytest.mark.parametrize(("x_shape", "w_shape", "geometry"), CLUSTER_CASES, ids=CLUSTER_IDS)
def test_the_clustered_forward_matches_the_reference(two_sms, rng, x_shape, w_shape, geometry):
    """128x128c2 (bf16; fp16 runs in tests/test_conv2d.py): a cluster of two CTAs on two SMs, sharing each
    weight tile by multicast."""
    config = cw.CLUSTER_CONFIGS[0]
    x, w, x_values, w_values, bias = inputs(rng, x_shape, w_shape, "bf16")
    planned, y = cw.plan(x, w, stored(bias, "bf16"), relu=True, precision="bf16", config=config.name,
                         executor=two_sms, **geometry)
    assert planned.launch.cluster == (2, 1, 1) and planned.launch.grid == (2, 1, 1)
    assert planned.launch.kernel == f"conv2d_fwd_wgmma_{config.name}_bf16"
    two_sms.launch(planned.launch)
    planned.finish()
    check(y, R.conv2d(x_values, w_values, stored_values(stored(bias, "bf16"), "bf16"), activation="relu", **geometry),
          "bf16")


# Stride 1 (dgrad's only): (x NCHW, w OIHW, geometry, config).  C = 24 out of K = 72 (a partial second block of 64
# output channels); dilated and rectangular; 7x7; a 1x1 with C = 136 (two column tiles) from K = 40.
DGRAD_CASES = (
    ((2, 24, 9, 9), (72, 24, 3, 3), geo(1, 1), "128x64"),
    ((1, 16, 11, 7), (24, 16, 3, 2), geo(1, (1, 0), (1, 2)), "128x64"),
    ((1, 8, 13, 13), (16, 8, 7, 7), geo(1, 3), "128x64"),
    ((2, 136, 5, 6), (40, 136, 1, 1), geo(), "128x128"),
)
DGRAD_IDS = ["c24-k72-3x3", "dilated", "7x7", "1x1-c136"]


@pytest.mark.parametrize("precision", cw.PRECISIONS)
@pytest.mark.parametrize(("x_shape", "w_shape", "geometry", "config"), DGRAD_CASES, ids=DGRAD_IDS)
def test_dgrad_matches_the_reference(two_sms, rng, precision, x_shape, w_shape, geometry, config):
    """grad_x masked by a fused ReLU's y into 16 bits, and unmasked into fp32."""
    x, w, x_values, w_values, _ = inputs(rng, x_shape, w_shape, precision)
    y_values = R.conv2d(x_values, w_values, activation="relu", **geometry)
    grad_y16, y16 = stored(random_array(rng, y_values.shape), precision), stored(y_values, precision)
    grad_y, y = to_nhwc(grad_y16), to_nhwc(y16)
    grad_values = stored_values(grad_y16, precision)
    two_sms.launched.clear()
    masked = cw.dgrad(grad_y, w, x.shape, mask=y, precision=precision, config=config, executor=two_sms, **geometry)
    assert (cw.FAMILY, f"conv2d_dgrad_wgmma_{config}_{precision}") in two_sms.launched
    assert masked.dtype == grad_y.dtype and masked.shape == x.shape
    expected = R.conv2d_backward(grad_values, x_values, w_values, y=stored_values(y16, precision),
                                 activation="relu", **geometry)[0]
    check(masked, expected, precision)
    plain = cw.dgrad(grad_y, w, x.shape, precision=precision, out_dtype=np.float32, config=config,
                     executor=two_sms, **geometry)
    check(plain, R.conv2d_backward(grad_values, x_values, w_values, **geometry)[0], precision)


def test_the_launcher_picks_its_tile_and_refuses_what_the_kernels_cannot_take(two_sms, rng):
    x, w, *_ = inputs(rng, (1, 16, 5, 5), (8, 16, 3, 3), "fp16")
    geometry = conv2d_nhwc.geometry("t", x.shape, w.shape, (1, 1), (1, 1), (1, 1))
    assert cw.choose(geometry).name == "128x64"
    assert cw.choose(dataclasses.replace(geometry, K=65)).name == "128x128"  # 25 pixels: one row of tiles
    assert cw.choose(geometry, "128x128").name == "128x128"
    # Two rows of tiles and more than 64 filters: the forward in clusters; dgrad gathers its weights (no TMA).
    tall = dataclasses.replace(geometry, N=6, K=65, C=72)  # 150 pixels; dgrad's columns are C
    assert cw.choose(tall).name == "128x128c2" and cw.choose(tall, pass_="dgrad").name == "128x128"
    assert cw.choose(dataclasses.replace(tall, K=64)).name == "128x64"
    with pytest.raises(ArgumentError, match="config must be one of"):
        cw.choose(tall, "128x128c2", pass_="dgrad")
    for config in cw.PASS_CONFIGS["forward"]:
        assert cw.shared_bytes(config) <= 227 * 1024  # H100's opt-in limit per block
    assert cw.supports(x, w, "fp16") and not cw.supports(x, w, "bf16") and not cw.supports(x, w, "tf32")
    odd = np.zeros((1, 5, 5, 12), np.float16)  # 12 channels: not whole 16-byte chunks
    assert not cw.supports(odd, np.zeros((8, 3, 3, 12), np.float16), "fp16")
    assert not cw.supports(x.astype(np.float32), w.astype(np.float32), "fp16")  # not in 16-bit storage
    with pytest.raises(ArgumentError, match="multiple of 8"):
        cw.forward(odd, np.zeros((8, 3, 3, 12), np.float16), executor=two_sms)
    with pytest.raises(DtypeError):
        cw.forward(x, w, out_dtype=np.float64, executor=two_sms)
    with pytest.raises(ArgumentError, match="config must be one of"):
        cw.forward(x, w, config="64x64", executor=two_sms)
    wide = dataclasses.replace(geometry, C=72)  # dgrad's columns are C, the forward's K
    assert cw.choose(wide).name == "128x64" and cw.choose(wide, pass_="dgrad").name == "128x128"
    assert cw.supports(x, w, "fp16", "dgrad") and not cw.supports(x, w, "fp16", "dgrad", (2, 1))
    grad_y = np.zeros((1, 3, 3, 8), np.float16)
    with pytest.raises(ArgumentError, match="stride 1"):
        cw.dgrad(grad_y, w, x.shape, stride=(2, 2), padding=(1, 1), executor=two_sms)


def test_the_nhwc_passes_take_this_variant_on_a_compute_capability_9_device(rng):
    """conv2d_nhwc.forward and .dgrad route 16-bit operands the kernels take here when the executor plans for
    sm_90, and keep mma.sync for the rest (12 channels; dgrad at stride 2), for other devices, and for a named
    mma.sync tile."""
    x, w, x_values, w_values, bias = inputs(rng, (1, 16, 6, 5), (8, 16, 3, 3), "bf16")
    expected = R.conv2d(x_values, w_values, bias, padding=1, activation="relu")
    odd_x, odd_w, *_ = inputs(rng, (1, 12, 6, 5), (8, 12, 3, 3), "bf16")
    hopper, other = HarnessExecutor("plain", compute_capability=90), HarnessExecutor("plain")
    for executor, args, config, family in ((hopper, (x, w), None, cw.FAMILY), (hopper, (odd_x, odd_w), None,
                                           conv2d_nhwc.FAMILY), (other, (x, w), None, conv2d_nhwc.FAMILY),
                                          (hopper, (x, w), "64x64", conv2d_nhwc.FAMILY)):
        y = conv2d_nhwc.forward(*args, bias, padding=(1, 1), relu=True, precision="bf16", out_dtype=np.float32,
                                config=config, executor=executor)
        families = {f for f, _ in executor.launched}  # 12 channels: gemm_cast pads them first
        assert family in families and (cw.FAMILY in families) == (family == cw.FAMILY), families
        executor.launched.clear()
        if args[0] is x:
            check(y, expected, "bf16")
    # dgrad: stride 1 here, stride 2 on mma.sync.
    for stride in ((1, 1), (2, 2)):
        grad_y, expected = dgrad_operands(rng, x_values, w_values, stride)
        grad_x = conv2d_nhwc.dgrad(grad_y, w, x.shape, stride=stride, padding=(1, 1), precision="bf16",
                                   out_dtype=np.float32, executor=hopper)
        families = {f for f, _ in hopper.launched}
        assert (cw.FAMILY in families) == (stride == (1, 1)) and (conv2d_nhwc.FAMILY in families) != (
            stride == (1, 1)), families
        hopper.launched.clear()
        check(grad_x, expected, "bf16")


def dgrad_operands(rng, x_values, w_values, stride):
    """grad_y (NHWC bf16) for a 3x3 / pad 1 conv at ``stride``, and the reference's grad_x."""
    y_shape = R.conv2d(x_values, w_values, stride=stride, padding=1).shape
    grad_y16 = stored(random_array(rng, y_shape), "bf16")
    expected = R.conv2d_backward(stored_values(grad_y16, "bf16"), x_values, w_values, stride=stride, padding=1)[0]
    return to_nhwc(grad_y16), expected


def test_registry_names_every_kernel():
    assert set(cw.kernel_names()) == set(harness.family_kernels(cw.FAMILY))


# ---------------------------------------------------------------- planted bugs in the real kernel

SOURCE = compiler.source_path(cw.FAMILY)
PLANTED = {  # name: (pass it breaks, text in kernels/conv2d_wgmma.cu or wgmma_tile.cuh's ring, its replacement)
    "the gathered tiles are not swizzled": (
        "forward", "return ((chunk ^ (first % 8)) * 16) + first * 128;", "return (chunk * 16) + first * 128;"),
    "padding taps are not zero-filled": (
        "forward", "ok ? x + (corner[i] + offset) : x, ok ? 16u : 0u", "ok ? x + (corner[i] + offset) : x, 16u"),
    "`full` counts the producer threads' arrivals only": (
        "forward", "static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS + 1;",
        "static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS;"),
    "the producers overrun the ring": (
        "forward", "ptx::mbarrier_wait(&empty[stage], phase ^ 1);", ""),
    "a k-tile's chunks step by the wrong number of taps": (
        "forward", "tap.advance(t % CONV_WGMMA_CHUNKS * 8, g.C, g);",
        "tap.advance(t % CONV_WGMMA_CHUNKS * 16, g.C, g);"),
    "dgrad's B tile read as K-major": (
        "dgrad", "Gather::kBNMajor ? 1 : 0>", "0>"),
    "dgrad's B tile is not swizzled": (
        "dgrad", "b + (chunk / 8) * 64 * 128 + swizzled_chunk(chunk % 8, first)",
        "b + (chunk / 8) * 64 * 128 + (chunk % 8) * 16 + first * 128"),
    "the consumers read the gathered stage without fence.proxy.async": (
        "forward", "            ptx::fence_proxy_async_shared();  // the producers' cp.async writes, visible to wgmma's "
        "reads\n", ""),
    "dgrad's taps not mirrored": (
        "dgrad", "k - ((long long)tap.dh * g.Q + tap.dw) * g.K", "k + ((long long)tap.dh * g.Q + tap.dw) * g.K"),
    "a clustered CTA releases a stage in its own `empty` only": (
        "clustered", "for (int r = 0; r < CLUSTER; ++r) ptx::mbarrier_arrive_cluster(&empty[s], r);",
        "ptx::mbarrier_arrive(&empty[s]);"),
}
BUGS = sorted(PLANTED)
# Bugs that one check of the harness must name (others may show as wrong numbers instead).
CAUGHT_BY = {"the consumers read the gathered stage without fence.proxy.async": "after the last fence.proxy.async"}
SECTION_START = "// Where a chunk of the k-tile stands in the reduction"
SECTION_END = "// ---------------------------------------------------------------- named instances"
FORWARD_PARAMS = ("const unsigned char *maps, const unsigned short *x, const float *bias, CONV_GEOMETRY_PARAMS, "
                  "int flags")
KERNELS = {  # pass: (its configuration, parameters, the gather's construction, the output's map)
    "forward": (cw.CONFIGS[-1], FORWARD_PARAMS, "ForwardGather<64, 1> gather(x, maps, geo);", "maps + 128, bias"),
    "dgrad": (cw.CONFIGS[-1], "const unsigned char *maps, const unsigned short *grad_y, const unsigned short *w, "
              "CONV_GEOMETRY_PARAMS, int flags, unsigned hw_mul, unsigned hw_shift, unsigned w_mul, unsigned w_shift",
              "DgradGather<64> gather(grad_y, w, geo, hw_mul, hw_shift, w_mul, w_shift);", "maps, nullptr"),
    "clustered": (cw.CLUSTER_CONFIGS[0], FORWARD_PARAMS, "ForwardGather<128, 2> gather(x, maps, geo);",
                  "maps + 128, bias"),
}


def planted_kernel(name: str, pass_: str, scope: str) -> str:
    config, params, gather, out = KERNELS[pass_]
    return (f'extern "C" __global__ void WGMMA_CLUSTER_DIMS({cw.CLUSTER[config.name]}) '
            f"__launch_bounds__(WGMMA_THREADS, 1) {name}({params})\n{{\n"
            f"    const ConvGeometry geo = CONV_GEOMETRY;\n    {scope}{gather}\n"
            f"    {scope}wgmma_conv<ptx::Precision::bf16, {config.block_n}, {cw.STAGES[config.name]}>(gather, {out}, "
            "flags);\n}\n")


def control_name(pass_: str) -> str:
    """The real kernel that the planted copies of a pass stand in for."""
    return cw.kernel_name("dgrad" if pass_ == "dgrad" else "forward", KERNELS[pass_][0], "bf16")


def planted_source(original: str) -> str:
    """kernels/conv2d_wgmma.cu with one kernel per planted bug, ``planted_<i>`` (bf16, 128 x 64, or 128x128c2 for
    the clustered forward), each built on a copy of the kernels' code and of the ring (dlgpu.testing.planted) with
    that bug in a namespace of its own, and the real kernels they stand for (the controls).  One build."""
    head, rest = original.split(SECTION_START)
    section, _ = (SECTION_START + rest).split(SECTION_END)
    parts = [head, section]
    ring = ring_section(SOURCE.parent)
    for index, bug in enumerate(BUGS):
        pass_, text, replacement = PLANTED[bug]
        code = "".join(plant([ring, section], text, replacement))
        parts.append(f"namespace bug_{index} {{\n{code}}}\n")
        parts.append(planted_kernel(f"planted_{index}", pass_, f"bug_{index}::"))
    parts += [planted_kernel(control_name(p), p, "") for p in KERNELS]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def planted_kernels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted_conv_wgmma")
    (folder / SOURCE.name).write_text(planted_source(SOURCE.read_text()))
    return folder


def run_planted(folder, kernel: str, pass_: str):
    """A 3x3 / pad 1 conv of 2 x 40 channels x 9 x 9 into 24 (bf16), or its data gradient: 162 pixels (two tiles
    on one block, so the ring of 8 stages wraps), chunks of a forward k-tile from two taps, padding taps on
    every edge.  Clustered: into 136 filters, one cluster of two CTAs on two SMs (the two rows of tiles), each
    walking two column tiles of 6 k-tiles through 6 stages.  Returns the output and the reference's."""
    clustered = pass_ == "clustered"
    executor = HarnessExecutor("plain", kernels_dir=folder, multiprocessor_count=2 if clustered else 1)
    x, w, x_values, w_values, bias = inputs(np.random.default_rng(5), (2, 40, 9, 9),
                                            (136 if clustered else 24, 40, 3, 3), "bf16")
    if pass_ != "dgrad":
        planned, out = cw.plan(x, w, bias, padding=(1, 1), precision="bf16", out_dtype=np.float32,
                               config=KERNELS[pass_][0].name, executor=executor)
        expected = R.conv2d(x_values, w_values, bias, padding=1)
    else:
        grad_y16 = stored(random_array(np.random.default_rng(6), (2, 24, 9, 9)), "bf16")
        planned, out = cw.plan_dgrad(to_nhwc(grad_y16), w, x.shape, padding=(1, 1), precision="bf16",
                                     out_dtype=np.float32, config="128x64", executor=executor)
        expected = R.conv2d_backward(stored_values(grad_y16, "bf16"), x_values, w_values, padding=1)[0]
    assert planned.launch.grid == ((2 if clustered else 1), 1, 1)
    executor.launch(dataclasses.replace(planned.launch, kernel=kernel))
    planned.finish()
    return out, expected


@pytest.mark.parametrize("pass_", KERNELS)
def test_the_planted_copy_runs_clean_without_a_bug(planted_kernels, pass_):
    check(*run_planted(planted_kernels, control_name(pass_), pass_), "bf16")


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bugs_in_the_kernel_are_caught(planted_kernels, monkeypatch, bug):
    """Each bug fails a harness check or corrupts y; it never passes."""
    monkeypatch.setenv("DLGPU_HARNESS_MBARRIER_TIMEOUT_S", "3")
    if bug in CAUGHT_BY:
        with pytest.raises(HarnessError, match=CAUGHT_BY[bug]):
            run_planted(planted_kernels, f"planted_{BUGS.index(bug)}", PLANTED[bug][0])
        return
    try:
        y, expected = run_planted(planted_kernels, f"planted_{BUGS.index(bug)}", PLANTED[bug][0])
    except HarnessError:
        return
    with pytest.raises(AssertionError):
        check(y, expected, "bf16")


# ---------------------------------------------------------------- what the compiler made of it


def test_sm90a_build_has_hgmma_and_no_local_memory():
    """ptxas keeps every kernel within 168 registers (384 threads, one block per SM: no setmaxnreg, as the
    kernel's header explains), spills nothing; the SASS has the wgmma, the TMA loads (forward) and stores, the
    cp.async gathers, and no local memory; the clustered forward multicasts the weights and holds its CTAs
    together."""
    module = compiler.compile_family(cw.FAMILY, arch="sm_90a", announce=False)
    assert set(module.resources) == set(cw.kernel_names())
    for name, resources in module.resources.items():
        assert resources.registers * 384 <= 65536, (name, resources.registers)
        assert resources.spill_bytes == 0 and resources.stack_frame == 0, (name, resources)
    listing = sass.disassemble(module.image)
    patterns = ("HGMMA", "UTMALDG", "UTMALDG.MULTICAST", "UTMASTG", "LDGSTS", "USETMAXREG", "UCGABAR_ARV", "LDL",
                "STL")
    for name, opcodes in listing.items():
        counts = sass.count_instructions(opcodes, patterns)
        # The forward's weights come by TMA; dgrad gathers both operands (8 chunks of A, BN / 16 of B per thread).
        forward = name.startswith("conv2d_fwd_")
        assert counts["HGMMA"] >= 4 and counts["UTMASTG"] >= 1 and (counts["UTMALDG"] >= 1) == forward, (name, counts)
        assert counts["LDGSTS"] >= (8 if forward else 12) and counts["USETMAXREG"] == 0, (name, counts)
        assert counts["LDL"] == counts["STL"] == 0, (name, counts)
        clustered = cw.CLUSTER[name.split("_")[3]] > 1
        assert (counts["UTMALDG.MULTICAST"] >= 1) == clustered and (counts["UCGABAR_ARV"] >= 2) == clustered, (
            name, counts)
    # the family's dlgpu-sass lines cover both passes
    text = SOURCE.read_text()
    assert re.search(r"conv2d_fwd_wgmma_\*", text) and re.search(r"conv2d_dgrad_wgmma_\*", text)


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("precision", cw.PRECISIONS)
def test_forward_on_the_gpu_matches_the_harness_and_the_reference(precision):
    """The same launches on the GPU and on the harness (3x3 / pad 1, C = 72 and K = 136: chunks of a k-tile from
    two taps, two column tiles; forward, on the clustered 128x128c2, and dgrad), then a ResNet-like 3x3 layer
    against the float64 reference through the NHWC forward, which chooses this variant (clustered) on an H100."""
    import cupy

    from dlgpu.cuda.executor import default_executor

    if not cw.available(default_executor()):
        pytest.skip("wgmma needs a compute capability 9.0 GPU")

    def run(executor):
        rng = np.random.default_rng(21)
        x, w, _, _, bias = inputs(rng, (2, 72, 9, 9), (136, 72, 3, 3), precision)
        grad_y = to_nhwc(stored(random_array(rng, (2, 136, 9, 9)), precision))
        xp = executor.xp
        y = cw.forward(xp.asarray(x), xp.asarray(w), xp.asarray(bias), padding=(1, 1), relu=True,
                       precision=precision, out_dtype=np.float32, executor=executor)
        grad_x = cw.dgrad(xp.asarray(grad_y), xp.asarray(w), x.shape, padding=(1, 1), precision=precision,
                          out_dtype=np.float32, executor=executor)
        return y, grad_x

    harness.cross_check(run, tolerance=1e-5)
    x, w, x_values, w_values, bias = inputs(np.random.default_rng(22), (4, 64, 14, 14), (128, 64, 3, 3), precision)
    y = conv2d_nhwc.forward(cupy.asarray(x), cupy.asarray(w), cupy.asarray(bias), padding=(1, 1), relu=True,
                            precision=precision, out_dtype=np.float32)
    check(cupy.asnumpy(y), R.conv2d(x_values, w_values, bias, padding=1, activation="relu"), precision)
