#!/usr/bin/env bash
# benchmarks/gpu_run.sh [OUT_DIR] -- the whole GPU pass in one command (issue 3, section 5).
#
#   dlgpu info; the GPU tests (pytest -m gpu, the harness-vs-GPU cross-checks included);
#   compute-sanitizer memcheck and racecheck over a short GPU selection; dlgpu bench --quick;
#   then ONE JSON record in benchmarks/results/<date>-<device>.json and in OUT_DIR (argument,
#   else $OUT), with the logs (at most 8 files there).  Exit 0 only when the record says passed:
#   no GPU, a failed test, a sanitizer error, a timeout or a failed benchmark all exit 1.
#
# Made for the GPU machines we test on (one H100/H200, no network, Python 3.12 with CuPy,
# torch, pytest preinstalled).  dlgpu is used from this checkout through PYTHONPATH rather
# than `pip install --no-deps --no-build-isolation -e .`: that needs no network, no build
# backend, no write into the interpreter's site-packages, and runs exactly the sources that
# kernels_sha256 hashes (kernels/ found beside the package by dlgpu.kernels_dir).
#
# Every step has its own timeout (seconds; override through the environment):
# DLGPU_T_INFO=30 DLGPU_T_TESTS=180 DLGPU_T_MEMCHECK=75 DLGPU_T_RACECHECK=75 DLGPU_T_BENCH=75,
# and all of them together stay inside DLGPU_BUDGET=450 seconds: a step gets at most what
# is left of it less 20 s, so even when every step hangs the steps end by 435 s and the
# record (30 s timeout) by 470 s, inside 8 minutes.  A step with no time left is not run
# and counts as timed out.
# Other knobs:
#   DLGPU_PYTHON       interpreter (default /opt/torch/.venv/bin/python3 if present, else python3)
#   DLGPU_COMMIT       the commit being run (the device machine's copy has no .git)
#   DLGPU_RESULTS_DIR  where the record goes (default benchmarks/results)
#   DLGPU_SANITIZER_TESTS, DLGPU_SANITIZER_K   the sanitizer selection: test files and a
#                      pytest -k expression (defaults below)
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
OUT_DIR=${1:-${OUT:-}}
RESULTS_DIR=${DLGPU_RESULTS_DIR:-$REPO/benchmarks/results}

PY=${DLGPU_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3; else PY=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
# The property tests draw 200 examples per op on the GPU (30 in CI).
export DLGPU_HYPOTHESIS_PROFILE=${DLGPU_HYPOTHESIS_PROFILE:-gpu}

START_S=$(date +%s)
DEADLINE_S=$(( START_S + ${DLGPU_BUDGET:-450} - 20 ))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlgpu-gpu-run.XXXXXX")
: > "$WORK/steps.tsv"
echo "dlgpu GPU run: repo $REPO, python $PY, work $WORK, out ${OUT_DIR:-(none)}"

# step NAME LIMIT_S CMD...: run CMD under its own timeout (cut to what the budget has left),
# log to $WORK/NAME.log, note its exit code and seconds in $WORK/steps.tsv.
step() {
    local name=$1 limit=$2
    shift 2
    local start rc left
    start=$(date +%s)
    left=$(( DEADLINE_S - start - 5 ))    # 5 s for timeout's --kill-after
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        echo "== $name: not run, the time budget is spent" | tee "$WORK/$name.log"
        printf '%s\t%s\t%s\n' "$name" 124 0 >> "$WORK/steps.tsv"
        return 0
    fi
    echo "== $name (limit ${limit} s)"
    timeout --kill-after=5 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$WORK/steps.tsv"
    tail -n 4 "$WORK/$name.log" | sed 's/^/   | /'
    echo "   -> exit $rc after $(( $(date +%s) - start )) s"
    return 0
}

finish() {
    echo "== record"
    local args=(build "$WORK" --results-dir "$RESULTS_DIR")
    [ -n "$OUT_DIR" ] && args+=(--out-dir "$OUT_DIR")
    timeout --kill-after=5 30 "$PY" benchmarks/make_record.py "${args[@]}"
    local rc=$?
    echo "total $(( $(date +%s) - START_S )) s"
    if [ "$rc" -ne 0 ]; then echo "GPU RUN FAILED (see FAILURE lines above)"; exit 1; fi
    echo "GPU RUN PASSED"
    exit 0
}

step info "${DLGPU_T_INFO:-30}" "$PY" -m dlgpu.cli info

if ! timeout --kill-after=5 30 "$PY" benchmarks/make_record.py probe "$WORK"; then
    finish    # records "no GPU found" and exits 1
fi

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfE)
# One hanging test must not take the whole step's report with it.
if "$PY" -c "import pytest_timeout" 2> /dev/null; then PYTEST+=(--timeout=90); fi

step tests "${DLGPU_T_TESTS:-180}" "${PYTEST[@]}" -m gpu tests --junitxml="$WORK/tests.junit.xml"

# The sanitizers watch a short selection: the memory-bound families' GPU tests without
# the large sizes (compute-sanitizer slows every access).  The plugin turns CuPy's memory
# pool off so that each array is its own allocation and memcheck sees its real bounds.
# DLGPU_SANITIZER_TESTS (paths, space-separated) replaces the default file list.
SANITIZER_FILES=()
MEMORY_BOUND_TESTS="tests/test_elementwise.py tests/test_sgd.py tests/test_bias_grad.py tests/test_softmax.py tests/test_pool.py"
for f in ${DLGPU_SANITIZER_TESTS:-$MEMORY_BOUND_TESTS}; do
    [ -e "$f" ] && SANITIZER_FILES+=("$f")
done
# None of them yet: every GPU test but the benchmark machinery's own (cuBLAS ceilings are slow under it).
[ ${#SANITIZER_FILES[@]} -eq 0 ] && SANITIZER_FILES=(tests --ignore=tests/test_bench.py)
SANITIZER_K=${DLGPU_SANITIZER_K:-not large and not huge and not slow}
for tool in memcheck racecheck; do
    limit_var=DLGPU_T_${tool^^}
    step "$tool" "${!limit_var:-75}" compute-sanitizer --tool "$tool" --error-exitcode 86 \
        --target-processes all --print-limit 50 \
        "${PYTEST[@]}" -p benchmarks.sanitizer_plugin -m "gpu and not slow" -k "$SANITIZER_K" \
        "${SANITIZER_FILES[@]}" --junitxml="$WORK/$tool.junit.xml"
done

step bench "${DLGPU_T_BENCH:-75}" "$PY" -m dlgpu.cli bench --quick --json "$WORK/bench.json" --plot "$WORK/bench.png"

finish
