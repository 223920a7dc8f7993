#!/bin/sh
# Builds and runs the libFuzzer targets (see docs/reliability.md).
#
#   tests/fuzz/run.sh build                 build every target into build/fuzz/
#   tests/fuzz/run.sh TARGET SECONDS [ARGS] run one target (request, api, appyaml)
#   tests/fuzz/run.sh all SECONDS           run each target for SECONDS
#   tests/fuzz/run.sh ci                    run each target briefly (20 s; FUZZ_CI_SECONDS)
#   tests/fuzz/run.sh regress               replay the committed corpora and the
#                                           reproducers of tests/fuzz/regress/ once
#
# New inputs that reach new code go to build/fuzz/corpus/TARGET (not
# committed); the committed seeds in tests/fuzz/corpus/TARGET and the crash
# reproducers in tests/fuzz/regress/TARGET are only read.
# A crash leaves build/fuzz/crash-* and a non-zero exit status. The last
# line printed per target is "TARGET: N execs in S s (R execs/s)".
set -eu
cd "$(dirname "$0")/../.."
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
JOBS=${JOBS:-2}

build() {
    # FUZZ_SKIP_BUILD=1 runs the binaries already built (e.g. while a
    # source file is mid-edit).
    [ "${FUZZ_SKIP_BUILD:-0}" = 1 ] && return 0
    make --no-print-directory -s -j"$JOBS" -f tests/fuzz/Makefile FUZZ_BUILD="$FUZZ_BUILD" >&2
}

targets() {
    for f in tests/fuzz/fuzz_*.c; do
        t=${f#tests/fuzz/fuzz_}
        echo "${t%.c}"
    done
}

# ASan: leaks are checked per input by libFuzzer; the quarantine is kept
# small so RSS measures the code, not the allocator.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=16:detect_leaks=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}${UBSAN_OPTIONS:+:}print_stacktrace=1:halt_on_error=1"

run_one() {
    t=$1
    secs=$2
    shift 2
    bin=$FUZZ_BUILD/fuzz_$t
    [ -x "$bin" ] || { echo "no target '$t' (have: $(targets | tr '\n' ' '))" >&2; exit 2; }
    work=$FUZZ_BUILD/corpus/$t
    mkdir -p "$work"
    dict=
    [ -f tests/fuzz/$t.dict ] && dict=-dict=tests/fuzz/$t.dict
    log=$FUZZ_BUILD/$t.log
    set +e
    regress=
    [ -d tests/fuzz/regress/"$t" ] && regress=tests/fuzz/regress/$t
    "$bin" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len="${FUZZ_MAX_LEN:-65536}" -print_final_stats=1 \
        -artifact_prefix="$FUZZ_BUILD/" "$@" "$work" tests/fuzz/corpus/"$t" $regress >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*\(corp: [^ ]*\).*/\1 \2 \3/p')
    if [ $rc -ne 0 ]; then
        tail -60 "$log" >&2
        echo "$t: FAILED (exit $rc) after ${execs:-?} execs; log in $log" >&2
        return $rc
    fi
    echo "$t: ${execs:-?} execs in $secs s (${rate:-?} execs/s) $cov"
}

cmd=${1:-ci}
case $cmd in
build)
    build
    ;;
all|ci)
    secs=${2:-20}
    [ "$cmd" = ci ] && secs=${FUZZ_CI_SECONDS:-20}
    build
    status=0
    for t in $(targets); do
        run_one "$t" "$secs" || status=1
    done
    exit $status
    ;;
regress)
    build
    status=0
    for t in $(targets); do
        # One process per input, so that every failing input is reported,
        # not only the first.
        n=0
        failed=0
        for f in tests/fuzz/corpus/"$t"/* tests/fuzz/regress/"$t"/*; do
            [ -f "$f" ] || continue
            n=$((n + 1))
            if ! "$FUZZ_BUILD/fuzz_$t" "$f" >"$FUZZ_BUILD/$t.log" 2>&1; then
                failed=$((failed + 1))
                why=$(grep -m1 -E "invariant violated|SUMMARY:|runtime error" "$FUZZ_BUILD/$t.log")
                echo "$t: $f: $why" >&2
            fi
        done
        echo "$t: $n inputs replayed, $failed failed"
        [ $failed -eq 0 ] || status=1
    done
    exit $status
    ;;
*)
    [ $# -ge 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
    build
    t=$1
    secs=$2
    shift 2
    run_one "$t" "$secs" "$@"
    ;;
esac
