#!/usr/bin/env bash
# benchmarks/gpu_run.sh [OUT_DIR] -- the whole GPU pass in one command, in about 6 minutes (issue 12).
#
# Run it on the GPU machine from the repository root.  That machine's copy of the tree has no
# .git, so the commit is passed in; OUT_DIR (the argument, else $OUT) is the folder that comes back:
#
#     DLGPU_COMMIT=<sha> bash benchmarks/gpu_run.sh "$OUT"
#
# and give the call a limit of 7 minutes (420 s) or more: the script ends by itself within
# DLGPU_BUDGET + 30 seconds.
#
# Steps, in order of priority -- correctness, then the sanitizers, then speed:
#   info        dlgpu info, then the probe: without a GPU the run ends here, with a record saying so
#   compile     dlgpu compile --jobs <CPUs> --json: every kernel module for the device's own target,
#               in parallel, into the kernel cache the tests and benchmarks then read (no test waits
#               on NVRTC)
#   tests       pytest -m gpu, under pytest-xdist (a worker per CPU) when it is importable, with a
#               per-test timeout when pytest-timeout is; every result is a JSON line written as the
#               test ends (benchmarks/results_plugin.py), so a cut step still says what passed, what
#               failed and what was running.  Hypothesis draws examples in proportion to the step's
#               time: 200 per property at the full 150 s (DLGPU_HYPOTHESIS_EXAMPLES overrides), with a
#               seed from the clock that the record keeps (DLGPU_HYPOTHESIS_SEED overrides)
#   sanitizers  compute-sanitizer memcheck, racecheck and initcheck, the three at once, each on the
#               short list in benchmarks/sanitizer_plugin.py (every kernel family and variant once, at
#               small shapes); "absent" in the record when the machine has no compute-sanitizer
#   bench       dlgpu bench --quick --json
#   train       the training-step rows (PyTorch eager, our eager step, our CUDA-graph step): today
#               benchmarks/bench_train.py, one line below (TRAIN_BENCH), until dlgpu bench has them
# Then benchmarks/make_record.py writes ONE record, benchmarks/results/<date>-<device>.json, and puts
# into OUT_DIR the record, tests.jsonl (the per-test results) and logs.tar.gz (every log and JSON the
# steps left).  A record marked incomplete is also written after every step, and the final one by an
# exit trap, so the run leaves a record whatever stops it.  Exit 0 only when the record says passed.
#
# Time, in seconds.  A step gets at most its cap, and never so much that a later step would be left
# less than its floor; a step whose floor (at most its cap) no longer fits is not run and is recorded
# as timed out.
# Every step ends within DLGPU_BUDGET (360) seconds of the start and the record follows within 25,
# so the run takes at most about 6.5 minutes and, with the machine's start (about 40 s), two runs
# fit in a 15-minute window.  The "seen" column is the second run on an NVIDIA H100 80GB HBM3 (16 CPUs,
# 2026-11-27, commit d79ec2a; 251 s in all, the machine's start about 40 s more).
#
#   step        cap  floor  seen
#   info         20     5     2   imports, and the probe right after
#   compile      45    15    32   17 modules for sm_90a, 177 s of NVRTC 13.0 CPU time; the largest,
#                                 gemm_wgmma (32 s on one core), bounds it
#   tests       150    60    87   1,091 tests on 16 workers
#   sanitizers  120    25    60+  28 tests under each tool, the three side by side: memcheck 11 s,
#                                 racecheck 24 s, initcheck cut at the then cap of 60 s with 17 done
#   bench        90    30    40   about 110 GPU rows; its JSON is rewritten after every case, so a
#                                 cut step keeps the rows it measured
#   train        25    15    20
#   sweep        60    15     -   informational: GEMM and convolution target rows once per tile
#                                 (dlgpu bench --sweep, ~56 rows); its rows go into the record, never
#                                 its failures.  DLGPU_T_SWEEP=0 leaves it out
#
# Knobs (environment):
#   DLGPU_BUDGET, DLGPU_T_<STEP>   the budget, and a step's cap (DLGPU_T_TESTS=300 ...)
#   DLGPU_JOBS                     compile processes and pytest-xdist workers (default: the CPUs)
#   DLGPU_TEST_TIMEOUT             seconds one GPU test may take (default 60; needs pytest-timeout)
#   DLGPU_COMPUTE_SANITIZER        the tool (default: on PATH, else in $CUDA_HOME/bin); "none": recorded absent
#   DLGPU_HYPOTHESIS_EXAMPLES, DLGPU_HYPOTHESIS_SEED   see tests above
#   DLGPU_PYTHON                   interpreter (default /opt/torch/.venv/bin/python3 if present, else python3)
#   DLGPU_COMMIT                   the commit being run
#   DLGPU_RESULTS_DIR              where the record goes (default benchmarks/results)
#   DLGPU_CACHE_DIR                the kernel cache (default: a folder in the run's work directory)
# dlgpu is used from this checkout through PYTHONPATH rather than installed: no network, no build
# backend, no write into the interpreter's site-packages, and exactly the sources that
# kernels_sha256 hashes run.
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
export DLGPU_HYPOTHESIS_PROFILE=${DLGPU_HYPOTHESIS_PROFILE:-gpu}

START_S=$(date +%s)
STARTED=$(date -u -d "@$START_S" +%Y-%m-%dT%H:%M:%S+00:00)
BUDGET=${DLGPU_BUDGET:-360}
DEADLINE_S=$(( START_S + BUDGET ))
JOBS=${DLGPU_JOBS:-$(nproc 2> /dev/null || echo 4)}
TEST_TIMEOUT=${DLGPU_TEST_TIMEOUT:-60}
HYPOTHESIS_SEED=${DLGPU_HYPOTHESIS_SEED:-$START_S}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dlgpu-gpu-run.XXXXXX")
# The kernel cache in the run's own folder: a bare machine has nothing cached, and its image need not
# have platformdirs (the default folder's finder), which the machine cannot fetch.
export DLGPU_CACHE_DIR=${DLGPU_CACHE_DIR:-$WORK/kernel-cache}
: > "$WORK/steps.tsv"
echo "dlgpu GPU run: repo $REPO, python $PY, $JOBS CPUs, budget $BUDGET s, work $WORK, out ${OUT_DIR:-(none)}"

# The steps' caps and floors (see the table above); a step reserves the floors of those after it.
PLAN="info 20 5
compile 45 15
tests 150 60
sanitizers 120 25
bench 90 30
train 25 15
sweep 60 15"
SANITIZER_TOOLS=(memcheck racecheck initcheck)
# Today's training-step benchmark; when `dlgpu bench` carries these rows, this step goes.
TRAIN_BENCH=("$PY" -m pytest -p no:cacheprovider -q benchmarks/bench_train.py -m gpu --benchmark-only
             --benchmark-json "$WORK/train.json")

cap_of() {
    local var="DLGPU_T_${1^^}"
    if [ -n "${!var:-}" ]; then echo "${!var}"; else awk -v n="$1" '$1 == n {print $2}' <<< "$PLAN"; fi
}
floor_of() { awk -v n="$1" '$1 == n {print $3}' <<< "$PLAN"; }
reserve_after() { awk -v n="$1" 'after {s += $3} $1 == n {after = 1} END {print s + 0}' <<< "$PLAN"; }

# limit_for STEP: the seconds STEP may run now, or 0 when its floor (at most its cap) no longer fits.
limit_for() {
    local cap floor left
    cap=$(cap_of "$1")
    floor=$(floor_of "$1")
    [ "$floor" -gt "$cap" ] && floor=$cap
    left=$(( DEADLINE_S - $(date +%s) - $(reserve_after "$1") - 5 ))  # 5: timeout's --kill-after
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt "$floor" ]; then echo 0; else echo "$cap"; fi
}

note_step() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$WORK/steps.tsv"; }

not_run() {
    echo "== $1: not run, the time budget is spent" | tee "$WORK/$1.log"
    note_step "$1" 124 0
}

# Children run in the background and are waited for, so that a TERM reaches the trap at once;
# timeout makes each its own process group, which the trap kills.
CHILDREN=()

# run_step NAME LIMIT CMD...: CMD under its timeout, output in $WORK/NAME.log, exit code and seconds
# in steps.tsv, then a record marked incomplete.
run_step() {
    local name=$1 limit=$2
    shift 2
    local start rc
    start=$(date +%s)
    echo "== $name (limit $limit s)"
    timeout --kill-after=5 "$limit" "$@" < /dev/null > "$WORK/$name.log" 2>&1 &
    CHILDREN=($!)
    wait "${CHILDREN[0]}"
    rc=$?
    CHILDREN=()
    note_step "$name" "$rc" "$(( $(date +%s) - start ))"
    tail -n 4 "$WORK/$name.log" | sed 's/^/   | /'
    echo "   -> exit $rc after $(( $(date +%s) - start )) s"
    partial_record
}

# After the probe has named the device (the record's file name), a record after every step.
PROBED=""
partial_record() { [ -n "$PROBED" ] && record --partial --quiet; }

record() {
    local args=(build "$WORK" --started "$STARTED" --results-dir "$RESULTS_DIR")
    [ -n "$OUT_DIR" ] && args+=(--out-dir "$OUT_DIR")
    timeout --kill-after=5 20 "$PY" benchmarks/make_record.py "${args[@]}" "$@"
}

finish() {
    trap - EXIT TERM INT HUP
    local pid
    for pid in "${CHILDREN[@]}"; do kill -TERM -- "-$pid" 2> /dev/null; done
    echo "== record"
    record ${INTERRUPTED:+--partial}
    local rc=$?
    echo "total $(( $(date +%s) - START_S )) s"
    if [ "$rc" -ne 0 ]; then echo "GPU RUN FAILED (see FAILURE lines above)"; exit 1; fi
    echo "GPU RUN PASSED"
    exit 0
}
INTERRUPTED=""
trap finish EXIT
trap 'INTERRUPTED=1; exit 143' TERM HUP
trap 'INTERRUPTED=1; exit 130' INT

json_string() { if [ -n "$1" ]; then printf '"%s"' "$(sed 's/[\\"]/\\&/g' <<< "$1")"; else printf null; fi; }

# write_run_json [EXAMPLES]: the run's settings, for the record.
write_run_json() {
    local timeout_s=null
    [ -n "$TIMEOUT_METHOD" ] && timeout_s=$TEST_TIMEOUT
    cat > "$WORK/run.json" << EOF
{"budget_s": $BUDGET, "jobs": $JOBS, "xdist": $(json_string "$XDIST_DIST"), "test_timeout_s": $timeout_s,
 "timeout_method": $(json_string "$TIMEOUT_METHOD"), "hypothesis_profile": $(json_string "$DLGPU_HYPOTHESIS_PROFILE"),
 "hypothesis_examples": ${1:-null}, "hypothesis_seed": $HYPOTHESIS_SEED,
 "compute_sanitizer": $(json_string "$SANITIZER"), "host_compiler": $(json_string "$HOST_COMPILER"),
 "python": $(json_string "$PY")}
EOF
}

# ---------------------------------------------------------------- info and the probe

limit=$(limit_for info)
if [ "$limit" -gt 0 ]; then run_step info "$limit" "$PY" -m dlgpu.cli info; else not_run info; fi

if ! timeout --kill-after=5 20 "$PY" benchmarks/make_record.py probe "$WORK"; then
    exit 1    # the trap writes the record: "no GPU found"
fi
PROBED=1

# What the machine offers: each is optional, and the record says which were there.
XDIST_DIST=$("$PY" -c "import xdist; v = tuple(int(p) for p in xdist.__version__.split('.')[:2]); \
print('worksteal' if v >= (3, 2) else 'load')" 2> /dev/null)
TIMEOUT_METHOD=""
if "$PY" -c "import pytest_timeout" 2> /dev/null; then
    # A hung kernel blocks in C, where a signal never lands; the thread method ends the worker, and xdist
    # reports the test as crashed and starts another.  Without xdist that would end the whole run.
    if [ -n "$XDIST_DIST" ]; then TIMEOUT_METHOD=thread; else TIMEOUT_METHOD=signal; fi
fi
SANITIZER=${DLGPU_COMPUTE_SANITIZER:-$(command -v compute-sanitizer)}
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -z "$SANITIZER" ] && [ -x "$candidate" ] && SANITIZER=$candidate
done
[ "$SANITIZER" = none ] && SANITIZER=""
HOST_COMPILER=$("$PY" -c "from dlgpu.testing import harness; print(harness.find_compiler())" 2> /dev/null)
write_run_json ""

# ---------------------------------------------------------------- compile

limit=$(limit_for compile)
if [ "$limit" -gt 0 ]; then
    run_step compile "$limit" bash -c '"$0" -m dlgpu.cli compile --jobs "$1" --json > "$2"' \
        "$PY" "$JOBS" "$WORK/compile.json"
else
    not_run compile
fi

# ---------------------------------------------------------------- the GPU tests

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfE)
limit=$(limit_for tests)
if [ "$limit" -gt 0 ]; then
    if [ -n "${DLGPU_HYPOTHESIS_EXAMPLES:-}" ]; then
        examples=$DLGPU_HYPOTHESIS_EXAMPLES
    else  # 200 at the full 150 s; never fewer than 20, never more than 1000
        examples=$(( limit * 4 / 3 ))
        [ "$examples" -lt 20 ] && examples=20
        [ "$examples" -gt 1000 ] && examples=1000
    fi
    export DLGPU_HYPOTHESIS_EXAMPLES=$examples
    write_run_json "$examples"
    TESTS=("${PYTEST[@]}" -m gpu tests -p benchmarks.results_plugin --results-jsonl "$WORK/tests.jsonl"
           --junitxml "$WORK/tests.junit.xml" --hypothesis-seed "$HYPOTHESIS_SEED")
    [ -n "$XDIST_DIST" ] && TESTS+=(-n "$JOBS" --dist "$XDIST_DIST")
    [ -n "$TIMEOUT_METHOD" ] && TESTS+=(--timeout "$TEST_TIMEOUT" --timeout-method "$TIMEOUT_METHOD")
    run_step tests "$limit" "${TESTS[@]}"
else
    not_run tests
fi

# ---------------------------------------------------------------- compute-sanitizer

limit=$(limit_for sanitizers)
SANITIZER_IDS=()
[ -n "$SANITIZER" ] && [ "$limit" -gt 0 ] && mapfile -t SANITIZER_IDS < <("$PY" benchmarks/sanitizer_plugin.py)
if [ -z "$SANITIZER" ]; then
    echo "== sanitizers: compute-sanitizer is absent on this machine"
    for tool in "${SANITIZER_TOOLS[@]}"; do note_step "$tool" 127 0; done
elif [ "$limit" -eq 0 ]; then
    for tool in "${SANITIZER_TOOLS[@]}"; do not_run "$tool"; done
elif [ ${#SANITIZER_IDS[@]} -eq 0 ]; then  # never the whole suite under the tools
    echo "== sanitizers: benchmarks/sanitizer_plugin.py named no test" | tee "$WORK/sanitizers.log"
    for tool in "${SANITIZER_TOOLS[@]}"; do note_step "$tool" 2 0; done
else
    echo "== sanitizers: ${SANITIZER_TOOLS[*]} at once on ${#SANITIZER_IDS[@]} tests (limit $limit s)"
    start=$(date +%s)
    CHILDREN=()
    for tool in "${SANITIZER_TOOLS[@]}"; do
        mapfile -t TOOL_IDS < <("$PY" benchmarks/sanitizer_plugin.py "$tool")  # initcheck skips the TMA stores
        # sanitizer_plugin turns CuPy's memory pool off, so that memcheck sees each array's own bounds.
        # --tb=short: a failing test's report shows no arguments, whose repr would copy device arrays to
        # the host (the first GPU run's initcheck counted 12,546 such copies of arrays no kernel had filled).
        # --report-api-errors no: cuda-bindings asks the driver for every entry point it knows when it
        # loads, and a 580 driver lacks some, which memcheck counted as 34 errors (second GPU run).  An
        # API call of ours that fails raises in CuPy or cuda-bindings and fails its test instead.
        timeout --kill-after=5 "$limit" "$SANITIZER" --tool "$tool" --error-exitcode 86 --target-processes all \
            --report-api-errors no --print-limit 50 \
            "${PYTEST[@]}" --tb=short -p benchmarks.sanitizer_plugin -p benchmarks.results_plugin \
            --results-jsonl "$WORK/$tool.jsonl" --junitxml "$WORK/$tool.junit.xml" "${TOOL_IDS[@]}" \
            < /dev/null > "$WORK/$tool.log" 2>&1 &
        CHILDREN+=($!)
    done
    for index in "${!SANITIZER_TOOLS[@]}"; do
        wait "${CHILDREN[$index]}"
        rc=$?
        note_step "${SANITIZER_TOOLS[$index]}" "$rc" "$(( $(date +%s) - start ))"
        echo "   ${SANITIZER_TOOLS[$index]}: exit $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' \
            "$WORK/${SANITIZER_TOOLS[$index]}.log" | tail -n 1)"
    done
    CHILDREN=()
    partial_record
fi

# ---------------------------------------------------------------- benchmarks

limit=$(limit_for bench)
if [ "$limit" -gt 0 ]; then
    run_step bench "$limit" "$PY" -m dlgpu.cli bench --quick --json "$WORK/bench.json" --plot "$WORK/bench.png"
else
    not_run bench
fi

limit=$(limit_for train)
if [ "$limit" -gt 0 ]; then run_step train "$limit" "${TRAIN_BENCH[@]}"; else not_run train; fi

# Informational (never fails the run): the GEMM and convolution target rows once per tile configuration.
limit=$(limit_for sweep)
if [ "$limit" -gt 0 ]; then
    run_step sweep "$limit" "$PY" -m dlgpu.cli bench gemm conv2d --sweep --quick --json "$WORK/sweep.json"
else
    not_run sweep
fi

exit 0    # the trap writes the record and sets the exit status
