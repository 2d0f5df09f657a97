#!/usr/bin/env bash
# umdflow's Slurm executor vs Snakemake's (snakemake-executor-plugin-slurm) on the same cluster
# (issue 12, section 4). Run from anywhere in the repository, with a Slurm cluster answering
# (`scripts/slurm-ci.sh up`):
#
#   UMDFLOW_BIN=/work/main/target/release/umdflow bench/slurm_vs_snakemake.sh
#
# Two workloads of trivial commands, written for both engines into a fresh temporary folder:
#   chain    CHAIN (default 100) stages; stage i copies stage i-1's output and appends "i"
#   fan-out  one root stage and FANOUT (default 200) leaves that each read the root's output
# For each engine and workload, in a fresh folder (fresh cache / fresh outputs): the time from start
# to all done (`umdflow run --executor slurm`; `snakemake --executor slurm --jobs JOBS`), then the
# no-op rerun (nothing submitted). Checks: umdflow's `--json` reports every instance executed and
# none failed; Snakemake submitted one Slurm job per job of the workload and left every output (the
# chain's last file and the first and last leaf compared with their expected content); each rerun
# ran nothing. Prints a table (markdown) and the load average.
#
# Snakemake and the plugin are installed into the git-ignored venv bench/out/snake-venv on first use
# (SNAKEMAKE_SPEC, SLURM_PLUGIN_SPEC override the pip specs). Settings, chosen so that neither
# engine waits longer than it must on this one-node cluster (and printed with the results):
#   umdflow:   executor.poll_seconds = POLL (default 0.5; umdflow's default is 2)
#   Snakemake: --slurm-init-seconds-before-status-checks INIT (default 1; the plugin's default is
#              40), --slurm-status-command squeue (the cluster has no accounting database: `sacct`
#              exists but answers nothing), --slurm-no-account, --default-resources mem_mb=100
#              (the node has 2000 MB), --jobs JOBS (default 250: every ready job at once)
# The plugin adds 10 s to its status-check interval after each check that saw no job finish, up
# to 180 s; that is its behaviour, not changed here. It makes a chain cost Snakemake about 12 s per
# stage, so each Snakemake first run is limited to LIMIT seconds (default 240): one that is still
# going is interrupted and reported as "> LIMIT s, k of N jobs done" (a lower bound, never an
# estimate); its outputs are then completed with Snakemake's local executor so that the no-op rerun
# through Slurm can still be timed. LIMIT=1500 measures the whole chain (about 20 min here);
# WORKLOADS=chain (or fanout) runs one workload only.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

CHAIN=${CHAIN:-100}
FANOUT=${FANOUT:-200}
POLL=${POLL:-0.5}
INIT=${INIT:-1}
JOBS=${JOBS:-250}
LIMIT=${LIMIT:-240} # seconds for one Snakemake first run; see run_snakemake
WORKLOADS=${WORKLOADS:-chain fanout} # a subset, e.g. WORKLOADS=chain LIMIT=1500
umdflow=$(realpath "${UMDFLOW_BIN:-target/release/umdflow}")
[ -x "$umdflow" ] || { echo "error: no umdflow binary at $umdflow (set UMDFLOW_BIN)" >&2; exit 2; }
sinfo -h >/dev/null 2>&1 || { echo "error: no Slurm cluster answers (sinfo failed)" >&2; exit 2; }

venv=bench/out/snake-venv
if [ ! -x "$venv/bin/snakemake" ]; then
    echo "installing snakemake into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "${SNAKEMAKE_SPEC:-snakemake}" "${SLURM_PLUGIN_SPEC:-snakemake-executor-plugin-slurm}"
fi
snakemake=$(realpath "$venv/bin/snakemake")
export PATH="$(dirname "$snakemake"):$PATH" # jobs start `python -m snakemake` from this venv

mkdir -p bench/out/work
work=$(mktemp -d "$repo/bench/out/work/slurm-snake-XXXXXX")
[ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$work"' EXIT # KEEP_WORK=1 keeps every log

# ---- the workloads --------------------------------------------------------------------------
write_umdflow_chain() { # $1 = folder
    {
        echo "name: chain"
        echo "executor: {poll_seconds: $POLL}"
        echo "stages:"
        for ((i = 0; i < CHAIN; i++)); do
            printf '  s%03d:\n    kind: cmd\n' "$i"
            if ((i == 0)); then
                echo "    run: 'echo 0 > \"\$UMDFLOW_OUT/out\"'"
            else
                printf '    inputs: [s%03d]\n' $((i - 1))
                printf "    run: 'cat \"\$UMDFLOW_INPUT_S%03d/out\" > \"\$UMDFLOW_OUT/out\"; echo %d >> \"\$UMDFLOW_OUT/out\"'\n" $((i - 1)) "$i"
            fi
        done
    } >"$1/p.yaml"
}

write_umdflow_fanout() {
    cat >"$1/p.yaml" <<EOF
name: fanout
seeds: $FANOUT
executor: {poll_seconds: $POLL}
stages:
  root:
    kind: cmd
    run: 'echo root > "\$UMDFLOW_OUT/out"'
  leaf:
    kind: cmd
    inputs: [root]
    params: {i: "\${seed}"}
    run: 'cat "\$UMDFLOW_INPUT_ROOT/out" > "\$UMDFLOW_OUT/out"; echo "\$UMDFLOW_PARAM_I" >> "\$UMDFLOW_OUT/out"'
EOF
}

write_snakemake_chain() {
    {
        printf 'rule all:\n    input: "s%03d.txt"\n    localrule: True\n\n' $((CHAIN - 1))
        printf 'rule s000:\n    output: "s000.txt"\n    shell: "echo 0 > {output}"\n\n'
        for ((i = 1; i < CHAIN; i++)); do
            printf 'rule s%03d:\n    input: "s%03d.txt"\n    output: "s%03d.txt"\n' "$i" $((i - 1)) "$i"
            printf '    shell: "cat {input} > {output}; echo %d >> {output}"\n\n' "$i"
        done
    } >"$1/Snakefile"
}

write_snakemake_fanout() {
    cat >"$1/Snakefile" <<EOF
rule all:
    input: expand("leaf/{i}.txt", i=range($FANOUT))
    localrule: True

rule root:
    output: "root.txt"
    shell: "echo root > {output}"

rule leaf:
    input: "root.txt"
    output: "leaf/{i}.txt"
    shell: "cat {input} > {output}; echo {wildcards.i} >> {output}"
EOF
}

# ---- checks: every output there with the content it should have -------------------------------
expected_chain() { echo 0; for ((i = 1; i < CHAIN; i++)); do echo "$i"; done; }

check_umdflow() { # $1 = workload, $2 = --json document of the first run: all ran, none failed
    local want=$((CHAIN)) got
    [ "$1" = fanout ] && want=$((FANOUT + 1))
    got=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["executed"], d["failed"])' "$2")
    [ "$got" = "$want 0" ] || { echo "error: umdflow $1: executed/failed = $got, expected $want 0" >&2; exit 1; }
}

check_snakemake() { # $1 = workload, $2 = folder
    if [ "$1" = chain ]; then
        diff <(expected_chain) "$2/$(printf s%03d.txt $((CHAIN - 1)))" >/dev/null ||
            { echo "error: snakemake chain: the last output is wrong or missing" >&2; exit 1; }
    else
        local n
        n=$(find "$2/leaf" -name '*.txt' -type f | wc -l)
        [ "$n" = "$FANOUT" ] || { echo "error: snakemake fan-out: $n of $FANOUT leaves" >&2; exit 1; }
        for i in 0 $((FANOUT - 1)); do
            [ "$(cat "$2/leaf/$i.txt")" = "$(printf 'root\n%d' "$i")" ] ||
                { echo "error: snakemake fan-out: leaf/$i.txt is wrong" >&2; exit 1; }
        done
    fi
}

# ---- timing ---------------------------------------------------------------------------------
now() { date +%s.%N; }
declare -A result

run_umdflow() { # $1 = workload
    local dir="$work/umdflow-$1" t0 t1 t2
    mkdir -p "$dir"
    "write_umdflow_$1" "$dir"
    t0=$(now)
    (cd "$dir" && "$umdflow" run p.yaml --executor slurm --cache cache --no-lock-file --json -q) \
        >"$dir/first.json" 2>"$dir/first.log" ||
        { tail -20 "$dir/first.log" >&2; echo "error: umdflow $1 failed (log above)" >&2; exit 1; }
    t1=$(now)
    (cd "$dir" && "$umdflow" run p.yaml --executor slurm --cache cache --no-lock-file --json -q) \
        >"$dir/rerun.json" 2>"$dir/rerun.log" ||
        { tail -20 "$dir/rerun.log" >&2; echo "error: umdflow $1 rerun failed" >&2; exit 1; }
    t2=$(now)
    check_umdflow "$1" "$dir/first.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["executed"] != 0)' "$dir/rerun.json" ||
        { echo "error: umdflow $1: the rerun executed something" >&2; exit 1; }
    result[umdflow-$1-first]=$(echo "$t1 - $t0" | bc)
    result[umdflow-$1-rerun]=$(echo "$t2 - $t1" | bc)
}

snakemake_args=(--executor slurm --jobs "$JOBS" --slurm-status-command squeue --slurm-no-account
    --slurm-init-seconds-before-status-checks "$INIT" --default-resources mem_mb=100 --quiet progress)

snakemake_done() { # $1 = workload, $2 = folder: how many of the workload's jobs left their output
    if [ "$1" = chain ]; then
        find "$2" -maxdepth 1 -name 's[0-9][0-9][0-9].txt' -type f | wc -l
    else
        echo $(($(find "$2/leaf" -name '*.txt' -type f 2>/dev/null | wc -l) + $([ -f "$2/root.txt" ] && echo 1 || echo 0)))
    fi
}

# A Snakemake first run still going after LIMIT seconds is interrupted (SIGINT: Snakemake cancels its
# jobs), reported as "> LIMIT s" with how many jobs had finished, and its outputs are completed with
# Snakemake's local executor, so that the no-op rerun (through Slurm, as always) can still be timed.
run_snakemake() { # $1 = workload
    local dir="$work/snakemake-$1" t0 t1 t2 rc=0 total=$CHAIN
    [ "$1" = fanout ] && total=$((FANOUT + 1))
    mkdir -p "$dir"
    "write_snakemake_$1" "$dir"
    t0=$(now)
    (cd "$dir" && timeout -s INT -k 60 "$LIMIT" "$snakemake" "${snakemake_args[@]}") >"$dir/first.log" 2>&1 || rc=$?
    t1=$(now)
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        result[snakemake-$1-first]=">$LIMIT"
        result[snakemake-$1-note]="stopped after $LIMIT s with $(snakemake_done "$1" "$dir") of $total jobs done"
        echo "snakemake $1: ${result[snakemake-$1-note]}; completing it locally" >&2
        while squeue -h -n "$(sed -n 's/^SLURM run ID: //p' "$dir/first.log" | head -1)" | grep -q .; do sleep 1; done
        (cd "$dir" && "$snakemake" --cores 2 --quiet progress) >"$dir/complete.log" 2>&1 ||
            { tail -30 "$dir/complete.log" >&2; echo "error: snakemake $1: local completion failed" >&2; exit 1; }
    elif [ "$rc" != 0 ]; then
        tail -30 "$dir/first.log" >&2; echo "error: snakemake $1 failed (log above)" >&2; exit 1
    else
        local submitted
        submitted=$(grep -c 'has been submitted with SLURM jobid' "$dir/first.log" || true)
        [ "$submitted" = "$total" ] ||
            { echo "error: snakemake $1: $submitted Slurm jobs submitted, expected $total" >&2; exit 1; }
        result[snakemake-$1-first]=$(echo "$t1 - $t0" | bc)
    fi
    t1=$(now)
    (cd "$dir" && "$snakemake" "${snakemake_args[@]}") >"$dir/rerun.log" 2>&1 ||
        { tail -30 "$dir/rerun.log" >&2; echo "error: snakemake $1 rerun failed" >&2; exit 1; }
    t2=$(now)
    check_snakemake "$1" "$dir"
    grep -q "Nothing to be done" "$dir/rerun.log" ||
        { tail -30 "$dir/rerun.log" >&2; echo "error: snakemake $1: the rerun did something" >&2; exit 1; }
    result[snakemake-$1-rerun]=$(echo "$t2 - $t1" | bc)
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "umdflow: $umdflow ($("$umdflow" --version))" >&2
echo "snakemake $("$snakemake" --version), $("$venv/bin/pip" show snakemake-executor-plugin-slurm 2>/dev/null |
    sed -n 's/^Version: /snakemake-executor-plugin-slurm /p'), $(sinfo -V)" >&2
load_before=$(load)
started=$(date -u +%H:%M:%S)
for workload in $WORKLOADS; do
    echo "umdflow $workload ..." >&2
    run_umdflow "$workload"
    echo "snakemake $workload ..." >&2
    run_snakemake "$workload"
done
echo
echo "$(date -u +%F) $started-$(date -u +%H:%M:%S) UTC, $(nproc) CPUs, load $load_before -> $(load)"
echo "umdflow poll_seconds $POLL; snakemake --jobs $JOBS, init status check $INIT s"
echo
echo "| workload | phase | umdflow | Snakemake | Snakemake / umdflow |"
echo "|---|---|---:|---:|---:|"
for workload in $WORKLOADS; do
    label="$CHAIN-stage chain"
    [ "$workload" = fanout ] && label="1 + $FANOUT fan-out"
    for phase in first rerun; do
        u=${result[umdflow-$workload-$phase]}
        s=${result[snakemake-$workload-$phase]}
        name="start to all done"
        [ "$phase" = rerun ] && name="no-op rerun"
        if [[ $s == ">"* ]]; then
            printf '| %s | %s | %.2f s | > %s s (%s) | > %.1fx |\n' "$label" "$name" "$u" "${s#>}" \
                "${result[snakemake-$workload-note]}" "$(echo "${s#>} / $u" | bc -l)"
        else
            printf '| %s | %s | %.2f s | %.2f s | %.1fx |\n' "$label" "$name" "$u" "$s" "$(echo "$s / $u" | bc -l)"
        fi
    done
done
