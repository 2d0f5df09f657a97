#!/usr/bin/env bash
# One MR-Pretrain training step, umdflow (candle) against a PyTorch mirror of the same model,
# alternated in one run so that machine noise hits both; run from anywhere in the repository:
#
#   bench/train_step_vs_pytorch.sh [--rounds 3] [--steps 6] [--presets tiny,small] \
#       [--threads 1,2] [--compile] [--before PATH] [--max-steal PCT] [--retries 3]
#
# Ours: the `train_step` bench of umdflow-model (release build, `cargo bench --no-run`), one
# process per (preset, threads) with `UMD_BENCH_THREADS` = threads; the bench sets candle's
# thread variables as the `umdflow` binary does (`CANDLE_NUM_THREADS=1`, `RAYON_NUM_THREADS` =
# threads) unless they are in the environment.
# PyTorch: bench/train_step_vs_pytorch.py with $TORCH_PYTHON (default /work/venv-torch/bin/python;
# torch is needed by this benchmark only, never by the tests or CI). Each round runs every
# (preset, threads) cell once per framework, the framework that goes first alternating by round.
# `--compile` adds a `torch.compile` arm (slow to compile). `--before PATH` adds an earlier build
# of the bench executable as a third arm (`ours-before`), e.g. a copy made before a change; it
# runs with its own defaults for candle's thread variables, after the pair in odd rounds and
# before it in even ones.
# Both matrix-product ceilings (2048³, best of 5) are measured at the start. Prints the per-cell ranges (min–max of the per-process
# median step times) and the ratio of the medians; raw rows go to
# bench/out/train_step_vs_pytorch.tsv. Every row also records the CPU time the hypervisor took
# from this machine while the process ran (the `steal` column of /proc/stat, as a share of all
# CPU time): on a shared virtual machine a run with a high share measured the neighbours too.
# `--max-steal PCT` runs a round's ours/PyTorch pair again, up to `--retries` times, while either
# run's share was above PCT; the discarded pairs stay in the TSV (`kept` 0) and the summary counts
# them; after the last retry the pair is kept whatever its share.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 steps=6 presets=tiny,small threads=1,2 compile=0 before= max_steal= retries=3
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --presets) presets="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --compile) compile=1; shift ;;
        --before) before="$2"; shift 2 ;;
        --max-steal) max_steal="$2"; shift 2 ;;
        --retries) retries="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--steps N] [--presets tiny,small] [--threads 1,2] [--compile] [--before PATH] [--max-steal PCT] [--retries N]" >&2
           exit 2 ;;
    esac
done
. bench/model_bench_lib.sh
find_torch_python
build_model_bench train_step

mkdir -p bench/out
tsv=bench/out/train_step_vs_pytorch.tsv
printf 'round\tpreset\tthreads\tframework\tms_per_step\tsteal_pct\tkept\n' >"$tsv"
IFS=, read -ra preset_list <<<"$presets"
IFS=, read -ra thread_list <<<"$threads"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $("$python" -c 'import torch; print(torch.__version__)'), bench $bench"
for t in "${thread_list[@]}"; do
    ours=$(UMD_BENCH_THREADS=$t UMD_BENCH_PRESETS= "$bench" |
        sed -n 's/.*threads: \([0-9.]*\) GFLOP\/s/\1/p')
    theirs=$("$python" bench/train_step_vs_pytorch.py --threads "$t" --ceiling | sed -n 's/ceiling_gflops=//p')
    echo "sgemm 2048³ ceiling, $t threads: candle $ours GFLOP/s, PyTorch $theirs GFLOP/s"
done

if [ -n "$before" ] && [ ! -x "$before" ]; then
    echo "error: --before $before is not an executable" >&2
    exit 2
fi
run_ours() { # preset threads [executable]
    UMD_BENCH_THREADS=$2 UMD_BENCH_PRESETS=$1 UMD_BENCH_STEPS=$steps \
        UMD_BENCH_CEILING=0 "${3:-$bench}" | awk -F'|' -v p="$1" '$2 ~ " "p" " {gsub(/ /, "", $4); print $4}'
}
run_torch() { # preset threads [--compile]
    "$python" bench/train_step_vs_pytorch.py --preset "$1" --threads "$2" --steps "$steps" ${3:-} |
        sed -n 's/^median_ms=\([0-9.]*\).*/\1/p'
}
cpu_times() { # steal and total CPU time of the machine so far, in clock ticks
    awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}
timed() { # command...: prints the command's ms per step and the steal share while it ran
    local before_ticks after_ticks ms steal
    before_ticks=$(cpu_times)
    ms=$("$@")
    after_ticks=$(cpu_times)
    steal=$(echo "$before_ticks $after_ticks" |
        awk '{d = $4 - $2; printf "%.1f", (d > 0 ? 100 * ($3 - $1) / d : 0)}')
    echo "${ms:-none} $steal"
}
emit() { # round preset threads framework ms steal kept
    if [ "$5" = none ]; then
        echo "error: the $4 run of $2 at $3 threads printed no time" >&2
        exit 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$tsv"
    printf '  round %s  %-5s  %s threads  %-13s %9.1f ms/step  (steal %s %%)%s\n' \
        "$1" "$2" "$3" "$4" "$5" "$6" "$([ "$7" = 1 ] || echo '  discarded')"
}
measure() { # round preset threads framework command...: one run, recorded
    local result
    result=$(timed "${@:5}")
    # shellcheck disable=SC2086 # "ms steal" splits into two arguments
    emit "$1" "$2" "$3" "$4" $result 1
}
run_arm() { # framework preset threads
    case "$1" in
        ours) run_ours "$2" "$3" ;;
        pytorch) run_torch "$2" "$3" ;;
        *) echo "error: unknown arm $1" >&2; return 1 ;;
    esac
}
pair() { # round preset threads: ours and PyTorch, the first alternating by round
    local round=$1 preset=$2 t=$3 first=ours second=pytorch attempt=0 a b kept
    if [ $((round % 2)) -eq 0 ]; then
        first=pytorch second=ours
    fi
    while :; do
        a=$(timed run_arm "$first" "$preset" "$t")
        b=$(timed run_arm "$second" "$preset" "$t")
        kept=1
        if [ -n "$max_steal" ] && [ "$attempt" -lt "$retries" ] &&
            ! awk -v a="${a#* }" -v b="${b#* }" -v m="$max_steal" 'BEGIN { exit !(a <= m && b <= m) }'; then
            kept=0
        fi
        # shellcheck disable=SC2086 # "ms steal" splits into two arguments
        emit "$round" "$preset" "$t" "$first" $a "$kept"
        # shellcheck disable=SC2086
        emit "$round" "$preset" "$t" "$second" $b "$kept"
        if [ "$kept" = 1 ]; then
            return
        fi
        attempt=$((attempt + 1))
    done
}

for round in $(seq 1 "$rounds"); do
    for preset in "${preset_list[@]}"; do
        for t in "${thread_list[@]}"; do
            # The ours-before arm runs after the pair in odd rounds and before it in even ones.
            if [ -n "$before" ] && [ $((round % 2)) -eq 0 ]; then
                measure "$round" "$preset" "$t" ours-before run_ours "$preset" "$t" "$before"
            fi
            pair "$round" "$preset" "$t"
            if [ -n "$before" ] && [ $((round % 2)) -eq 1 ]; then
                measure "$round" "$preset" "$t" ours-before run_ours "$preset" "$t" "$before"
            fi
            if [ "$compile" = 1 ] && [ "$round" = 1 ]; then
                measure "$round" "$preset" "$t" torch.compile run_torch "$preset" "$t" --compile
            fi
        done
    done
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$tsv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cells, steal, discarded = {}, {}, {}
for r in rows:
    key = (r["preset"], int(r["threads"]))
    if r["kept"] != "1":
        discarded[key] = discarded.get(key, 0) + 1
        continue
    cells.setdefault(key, {}).setdefault(r["framework"], []).append(float(r["ms_per_step"]))
    steal.setdefault(key, []).append(float(r["steal_pct"]))
def span(v):
    return f"{min(v):.0f}–{max(v):.0f}" if len(v) > 1 else f"{v[0]:.0f}"
print("\n| preset | threads | ours before (ms/step) | ours | PyTorch eager | ours / PyTorch (medians) | torch.compile | steal % (min–max) | runs discarded |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (preset, t), f in sorted(cells.items(), key=lambda kv: (kv[0][0] != "tiny", kv[0][1])):
    ours, torch_ = f.get("ours", []), f.get("pytorch", [])
    ratio = statistics.median(ours) / statistics.median(torch_) if ours and torch_ else float("nan")
    comp = span(f["torch.compile"]) if "torch.compile" in f else "–"
    earlier = span(f["ours-before"]) if "ours-before" in f else "–"
    st = steal[(preset, t)]
    print(f"| {preset} | {t} | {earlier} | {span(ours)} | {span(torch_)} | {ratio:.2f}× | {comp} | {min(st):.0f}–{max(st):.0f} | {discarded.get((preset, t), 0)} |")
EOF
