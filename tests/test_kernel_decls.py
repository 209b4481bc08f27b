"""The C and Python sides agree: every constant Python mirrors from a kernel source equals it.

Tile configurations, GEMM layouts and tensor-core precisions are read from the
sources (dlgpu.cuda.kernel_decls), so they cannot drift; the integer constants
a launcher still writes out are tied here, one row each, to the #define they
mirror (parsed from the header).  And the registries name exactly the kernels
the sources define once the preprocessor has expanded their tile lists.
"""

from __future__ import annotations

import importlib

import pytest

from dlgpu.cuda import bias_grad, compiler, gemm, gemm_wgmma, kernel_decls, softmax
from dlgpu.precision import PRECISIONS

conv2d = importlib.import_module("dlgpu.cuda.conv2d")  # the module, not the function dlgpu.cuda.conv2d
conv2d_nhwc = importlib.import_module("dlgpu.cuda.conv2d_nhwc")

# (the Python value, kernel source, what the source says): every mirrored #define, once.
MIRRORS = [
    (gemm.FLAG_BIAS, "common.cuh", "EPILOGUE_BIAS"),
    (gemm.FLAG_RELU, "common.cuh", "EPILOGUE_RELU"),
    (gemm.FLAG_MASK_A, "gemm_tile.cuh", "GEMM_MASK_A"),
    (gemm.FLAG_STORE_HALF, "gemm_tile.cuh", "GEMM_STORE_HALF"),
    (conv2d.FLAG_MASK, "conv2d_common.cuh", "CONV_MASK"),
    (conv2d.TC_BK, "conv2d_tc.cu", "CONV_TC_BK"),
    (conv2d.TC_PAD, "conv2d_tc.cu", "CONV_TC_PAD"),
    (conv2d.TC_TAP_BYTES, "conv2d_tc.cu", "CONV_TC_TAP_BYTES"),
    (conv2d.WGRAD_TILE, "conv2d.cu", "WGRAD_TILE"),
    (conv2d.WGRAD_STEP, "conv2d.cu", "WGRAD_STEP"),
    (conv2d.WGRAD_THREADS, "conv2d.cu", "WGRAD_THREADS"),
    (bias_grad.PARTIAL_BLOCK // 32, "bias_grad.cu", "BIAS_GRAD_WARPS"),
]


@pytest.mark.parametrize("value, source, define", MIRRORS, ids=[f"{s}:{d}" for _, s, d in MIRRORS])
def test_every_mirrored_define_equals_its_python_constant(value, source, define):
    assert kernel_decls.integer_defines(source)[define] == value


def test_bias_grad_columns_follow_the_kernels_vector_width():
    # The kernel's pass-1 block covers one 16-byte vector per lane: bias_grad_columns<T> = 32 * per_vector<T>.
    assert "bias_grad_columns = 32 * per_vector<T>;" in compiler.source_path("bias_grad").read_text()
    vector = kernel_decls.integer_defines("storage.cuh")["VECTOR_BYTES"]
    assert [bias_grad.partial_columns(t) for t in ("float32", "float16")] == [32 * vector // 4, 32 * vector // 2]


def test_the_other_flags_stay_clear_of_the_epilogue_bits():
    epilogue = gemm.FLAG_BIAS | gemm.FLAG_RELU
    assert gemm.FLAG_BIAS & gemm.FLAG_RELU == 0
    for load_flag in (gemm.FLAG_MASK_A, gemm.FLAG_STORE_HALF, conv2d.FLAG_MASK, conv2d_nhwc.FLAG_STORE_HALF):
        assert load_flag & epilogue == 0
    assert gemm.FLAG_MASK_A & gemm.FLAG_STORE_HALF == 0 and conv2d.FLAG_MASK & conv2d_nhwc.FLAG_STORE_HALF == 0


def test_softmax_warp_widths_are_the_kernel_list():
    assert softmax.WARP_VALUES == tuple(int(v) for (v,) in kernel_decls.x_macro("softmax.cu", "SOFTMAX_WARP_VALUES"))


def test_the_precision_enum_is_every_tensor_core_precision_and_every_build():
    assert kernel_decls.enumerators("ptx.cuh", "Precision") == gemm.TC_PRECISIONS
    assert set(gemm.TC_PRECISIONS) == set(PRECISIONS) - {"ieee"}
    for family, define in (("gemm_tc", "GEMM_TC_PRECISION"), ("conv2d_tc", "CONV_TC_PRECISION")):
        builds = compiler.build_configurations(compiler.source_path(family).read_text())
        assert builds == [((define, precision),) for precision in gemm.TC_PRECISIONS]


def test_tile_configurations_come_from_the_kernel_lists():
    assert [c.name for c in gemm.SIMT_CONFIGS] == ["128x128", "128x64", "64x64"]
    assert [(c.block_m, c.block_n, c.threads) for c in gemm.TC_CONFIGS] == [(128, 256, 256), (128, 128, 128),
                                                                             (64, 64, 128)]
    assert gemm.TC_STAGES == {"128x256": 3, "128x128": 4, "64x64": 4}
    assert [(c.name, c.threads) for c in conv2d.NHWC_CONFIGS] == [("128x128", 128), ("128x64", 128), ("64x64", 128)]
    assert conv2d_nhwc.STAGES == {"128x128": 4, "128x64": 4, "64x64": 4}
    assert [(c.name, c.threads) for c in conv2d.SIMT_CONFIGS] == [("128x128", 256), ("128x64", 128), ("128x32", 128)]
    assert [(c.name, c.threads) for c in conv2d.TC_CONFIGS] == [("128x64", 128), ("64x32", 64)]
    assert [(c.name, c.threads) for c in gemm_wgmma.CONFIGS] == [("128x256", 384), ("128x128", 384)]
    assert gemm_wgmma.STAGES == {"128x256": 4, "128x128": 6}
    # The pass-through __VA_ARGS__ of the layout lists is not an entry's argument.
    assert kernel_decls.x_macro("gemm_tile.cuh", "GEMM_PLAIN_LAYOUTS")[0] == ("nn", "false", "false", "false")
    assert gemm.LAYOUTS == ("nn", "nt", "tn", "tt") and gemm.MASK_LAYOUTS == ("nn", "tn")


def test_an_unknown_list_or_enum_is_an_error_not_an_empty_registry():
    with pytest.raises(LookupError, match="NO_SUCH_CONFIGS"):
        kernel_decls.x_macro("gemm.cu", "NO_SUCH_CONFIGS")
    with pytest.raises(LookupError, match="NoSuchEnum"):
        kernel_decls.enumerators("ptx.cuh", "NoSuchEnum")


@pytest.mark.usefixtures("host_compiler")
def test_the_conv2d_registry_names_every_kernel_of_its_families():
    from dlgpu.testing import harness

    for family in ("conv2d", "conv2d_tc"):
        registered = {k for name, v in conv2d.VARIANTS.items() if v.family == family for k in conv2d.kernel_names(name)}
        extra = {conv2d.WGRAD_FINISH} if family == "conv2d" else set()
        assert set(harness.family_kernels(family)) == registered | extra
