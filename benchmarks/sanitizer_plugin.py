"""The GPU run's compute-sanitizer selection, and the pytest plugin loaded under it.

:data:`SANITIZER_TESTS` is the one list of GPU tests that benchmarks/gpu_run.sh runs under
compute-sanitizer (memcheck, racecheck, initcheck): each kernel family at least once, each
registered variant at least once, each precision of the mma.sync variants (each its own
build) and each convolution pass, at small shapes where the tests offer them (the tools
slow every access a hundred times or more).  tests/test_gpu_run.py checks it against the
registries (dlgpu.cuda.compiler.families(), dlgpu.cuda.gemm.VARIANTS (wgmma included),
dlgpu.cuda.conv2d_wgmma.VARIANT (NHWC only, outside conv2d's registry),
dlgpu.cuda.conv2d.VARIANTS) and that every id still names
a collected test, so a new family or variant, or a renamed test, fails there until the
list follows.

``python benchmarks/sanitizer_plugin.py [TOOL]`` prints the ids, one per line, of every case or
of those TOOL runs (gpu_run.sh reads them per tool).  As a plugin (``-p
benchmarks.sanitizer_plugin``) it turns CuPy's memory pools off: the pool hands out slices of
large blocks, so a kernel writing past the end of one array lands in memory the pool owns and
memcheck stays silent; with the pool off every array is its own cudaMalloc and memcheck sees
its true bounds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SanitizerCase:
    """One test of the selection and what it exercises: the family (kernels/<family>.cu), the
    registered variant ("-" for a family without variants), the precision, and for the
    convolution the pass; ``initcheck`` False keeps it from that tool (below: the TMA-store tests)."""

    test: str
    family: str
    variant: str = "-"
    precision: str = "ieee"
    pass_: str = ""
    initcheck: bool = True

    def runs_under(self, tool: str) -> bool:
        return self.initcheck or tool != "initcheck"


# The first GPU runs (H100, compute-sanitizer of CUDA 13.0, 2026-11-27): under initcheck the wgmma GEMM's
# test reported every 32-byte sector of its 300 x 520 output as uninitialized when the host copied it
# back, and it had not finished after 150 s, leaving the tests after it unstarted.  That output is
# written only by the TMA-store epilogue (cp.async.bulk.tensor, wgmma_tile.cuh's store_tma), which the
# tool appears not to count as a write: the same test passes memcheck and racecheck, and the wgmma tests
# that poison every output with NaN find each element written.  So the two TMA-store tests run under
# memcheck and racecheck only (initcheck=False).


_GEMM = "tests/test_gemm.py::test_linear_fused_epilogue_is_one_launch"  # (256, 784, 512) and (100, 36, 12)
_CONV = "x1x1x29x31-w1x1x3x3-s11-p11-d11"  # one image, one channel, one filter
_CONV_FORWARD = "tests/test_conv2d.py::test_forward_on_the_gpu"
_CONV_BACKWARD = "tests/test_conv2d.py::test_backward_passes_on_the_gpu"
_SGD = "tests/test_sgd.py::test_sgd_step_on_the_gpu"
_BIAS_GRAD = "tests/test_bias_grad.py::test_bias_grad_on_the_gpu"
_SOFTMAX = "tests/test_softmax.py::test_softmax_cross_entropy_on_the_gpu"
_POOL = "tests/test_pool.py::test_max_pool2d_on_the_gpu"

SANITIZER_TESTS: tuple[SanitizerCase, ...] = (
    # 65 elements, input and output one float off 16-byte alignment: the scalar head and tail
    *(SanitizerCase(f"tests/test_elementwise.py::test_activation_on_the_gpu[1-1-65-{op}]", "elementwise")
      for op in ("relu", "tanh", "sigmoid")),
    SanitizerCase(f"{_SGD}[0.9-0.0005-1-1021]", "sgd"),  # momentum kernel, misaligned
    SanitizerCase(f"{_SGD}[0.0-0.01-1-1021]", "sgd"),  # plain kernel
    SanitizerCase(f"{_BIAS_GRAD}[True-1-shape6]", "bias_grad"),  # (2, 3, 5, 5) with the ReLU mask
    SanitizerCase(f"{_BIAS_GRAD}[False-0-shape3]", "bias_grad"),  # (33, 1000)
    SanitizerCase(f"{_SOFTMAX}[int64-shape4]", "softmax"),  # (7, 33): a warp per row
    SanitizerCase(f"{_SOFTMAX}[int32-shape7]", "softmax"),  # (5, 1025): a block per row
    SanitizerCase(f"{_POOL}[shape1-kernel1-stride1-padding1]", "pool"),  # (2, 3, 7, 5), padded
    SanitizerCase("tests/test_mse.py::test_squared_error_on_the_gpu[shape3]", "mse"),  # (31, 33): odd sizes
    # float32 operands at bf16: the producer pass (family gemm_cast) rounds and pads them for the tc kernel
    SanitizerCase("tests/test_gemm.py::test_product_matches_the_reference_on_the_gpu[tc-bf16-64x64-nt]",
                  "gemm_cast", "tc", "bf16"),
    SanitizerCase(f"{_GEMM}[naive-ieee-any]", "gemm", "naive"),
    SanitizerCase(f"{_GEMM}[simt-ieee-64x64]", "gemm", "simt"),
    *(SanitizerCase(f"{_GEMM}[tc-{p}-64x64]", "gemm_tc", "tc", p) for p in ("tf32", "bf16", "fp16")),
    # Hopper only (skips elsewhere); its one GPU test runs fp16, layout nt (both operands K-major), and
    # cross-checks the CPU harness on a 300 x 520 x 264 product before a 1000 x 700 x 900 one
    SanitizerCase("tests/test_gemm_wgmma.py::test_wgmma_on_the_gpu_matches_the_harness_and_cupy[False-True]",
                  "gemm_wgmma", "wgmma", "fp16", initcheck=False),
    # Hopper only, as the wgmma GEMM: a 2 x 72 x 9 x 9 conv by 136 3x3 filters and its dgrad, against the harness
    SanitizerCase("tests/test_conv2d_wgmma.py::test_forward_on_the_gpu_matches_the_harness_and_the_reference[bf16]",
                  "conv2d_wgmma", "wgmma", "bf16", "forward", initcheck=False),
    SanitizerCase(f"{_CONV_FORWARD}[naive-ieee-any-{_CONV}]", "conv2d", "naive", pass_="forward"),
    SanitizerCase(f"{_CONV_BACKWARD}[dgrad-naive-ieee-{_CONV}]", "conv2d", "naive", pass_="dgrad"),
    SanitizerCase(f"{_CONV_BACKWARD}[wgrad-naive-ieee-{_CONV}]", "conv2d", "naive", pass_="wgrad"),
    SanitizerCase(f"{_CONV_FORWARD}[simt-ieee-128x32-{_CONV}]", "conv2d", "simt", pass_="forward"),
    SanitizerCase(f"{_CONV_BACKWARD}[dgrad-simt-ieee-{_CONV}]", "conv2d", "simt", pass_="dgrad"),
    SanitizerCase(f"{_CONV_BACKWARD}[wgrad-simt-ieee-{_CONV}]", "conv2d", "simt", pass_="wgrad"),
    SanitizerCase(f"{_CONV_FORWARD}[tc-tf32-64x32-{_CONV}]", "conv2d_tc", "tc", "tf32", "forward"),
    SanitizerCase(f"{_CONV_BACKWARD}[dgrad-tc-bf16-{_CONV}]", "conv2d_tc", "tc", "bf16", "dgrad"),
    SanitizerCase(f"{_CONV_BACKWARD}[wgrad-tc-fp16-{_CONV}]", "conv2d_tc", "tc", "fp16", "wgrad"),
)


def pytest_configure(config):
    try:
        import cupy
    except ImportError:
        return
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)


def selection(tool: str | None = None) -> list[str]:
    """The ids of every case, or of those ``tool`` runs."""
    return [case.test for case in SANITIZER_TESTS if tool is None or case.runs_under(tool)]


if __name__ == "__main__":
    import sys

    print("\n".join(selection(sys.argv[1] if len(sys.argv) > 1 else None)))
