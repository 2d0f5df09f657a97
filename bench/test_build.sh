#!/usr/bin/env bash
# The cold test build that CI pays for: `cargo test --workspace --locked --no-run` into an empty
# target folder, timed, then the slowest compilation units from cargo's `--timings` report.
#
#   bench/test_build.sh [--run] [--keep] [TARGET_DIR]
#
# --run also runs the tests afterwards (the README's test command, with that target folder) and
# times them; --keep leaves the target folder (default: removed at the end, it takes 6-8 GB).
# TARGET_DIR defaults to bench/out/test-build-target; it must not exist yet. Results go to
# bench/out/test_build.txt (git-ignored) and to stdout.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

run_tests=0 keep=0 target=bench/out/test-build-target
for arg in "$@"; do
    case "$arg" in
        --run) run_tests=1 ;;
        --keep) keep=1 ;;
        -*) echo "usage: bench/test_build.sh [--run] [--keep] [TARGET_DIR]" >&2; exit 2 ;;
        *) target=$arg ;;
    esac
done
if [ -e "$target" ]; then
    echo "error: $target exists; the build must start from an empty target folder" >&2
    exit 2
fi
mkdir -p bench/out
out=bench/out/test_build.txt
log=bench/out/test_build.log

timed() { # label, command...: runs it, appends "label: wall, user, sys" to $out
    local label=$1; shift
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o bench/out/test_build.time "$@" >>"$log" 2>&1
    end=$(date +%s.%N)
    read -r user sys <bench/out/test_build.time
    awk -v l="$label" -v s="$start" -v e="$end" -v u="$user" -v y="$sys" \
        'BEGIN { printf "%s: %.0f s wall, %.0f s user, %.0f s system\n", l, e - s, u, y }' | tee -a "$out"
}

: >"$log"
trap 'echo "error: a step failed; its output is in $log" >&2' ERR
{
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(rustc --version)"
} | tee "$out"
timed "cold test build" env CARGO_TARGET_DIR="$target" cargo test --workspace --locked --no-run --timings
if [ "$run_tests" = 1 ]; then
    timed "test run" env CARGO_TARGET_DIR="$target" cargo test --workspace --locked
    grep '^test result' "$log" |
        awk '{ p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' | tee -a "$out"
fi

# cargo's timings report holds one JSON record per compilation unit.
report=$(ls -t "$target"/cargo-timings/cargo-timing-*.html | head -1)
python3 - "$report" <<'EOF' | tee -a "$out"
import json, re, sys
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);\n", open(sys.argv[1]).read(), re.S).group(1))
total = sum(u["duration"] for u in units)
print(f"{len(units)} units, {total:.0f} s of compilation in all; the slowest:")
for u in sorted(units, key=lambda u: -u["duration"])[:15]:
    print(f"  {u['duration']:6.1f} s  {u['name']} {u['version']} {u['target'].strip()}")
EOF
if [ "$keep" = 0 ]; then
    rm -rf "$target"
fi
