#!/usr/bin/env bash
# Where the machine's CPU time went during a window in the middle of a command's run: the shares of
# user, system, idle and steal (hypervisor) time in /proc/stat between DELAY and DELAY + WINDOW
# seconds after the command started. Used for issue 13 (docs/benchmarks.md, "Session 10") to see
# whether a 2-thread training step leaves a vCPU idle, which on a busy host turns into steal time.
#
#   bench/cpu_window.sh DELAY WINDOW command [args...]
#
# Prints one line: the four shares (whole percent, rounded down), then the command's last output
# line that contains "median", "| small" or "| tiny" (the step time of the train_step bench or of
# the PyTorch mirror).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 DELAY WINDOW command [args...]" >&2
    exit 2
fi
delay=$1 window=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1 &
pid=$!
sleep "$delay"
read -r -a a < <(head -1 /proc/stat)
sleep "$window"
read -r -a b < <(head -1 /proc/stat)
wait "$pid"
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal
python3 - "${a[@]:1:8}" "${b[@]:1:8}" <<'PY'
import sys
v = list(map(int, sys.argv[1:]))
d = [y - x for x, y in zip(v[:8], v[8:])]
total = sum(d) or 1
share = lambda n: 100 * n // total  # whole percent, rounded down
print(f"user {share(d[0] + d[1])} % system {share(d[2] + d[5] + d[6])} % "
      f"idle {share(d[3] + d[4])} % steal {share(d[7])} %", end="  ")
PY
grep -E 'median|\| small|\| tiny' "$out" | tail -1 || echo "(no step time in the output)"
