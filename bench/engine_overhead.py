#!/usr/bin/env python3
"""Engine overhead benchmarks of issue 2 ("Speed"), run from the repository root:

    python3 bench/engine_overhead.py [--reps 15] [--stages 100] [--overhead-reps 3]

(a) No-op rerun of a 500-instance pipeline (goal: under 50 ms). Two shapes, each run once to fill
    the cache, then rerun `--reps` times with `umdflow run FILE -q`; median and min wall time:
      sweep:       a sweep over 250 values feeding 2 stages (a[v] -> b[v]): 250 x 2 = 500 instances
      independent: 500 independent stages, one instance each
(b) Overhead per trivial `cmd` stage (goal: under 5 ms). A first run (fresh cache) of N independent
    stages that each write one small file, `--jobs 1`; minus the time to spawn the same `sh -c`
    commands N times directly (same environment variables, folders made beforehand); divided by N.

With strace installed, one extra traced run of each kind counts the fsync/fdatasync calls and the
time spent waiting in them (the traced runs are not part of the timings).
Results: a table on stdout and bench/out/engine_overhead.json. No randomness is involved.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import benchlib as bl

NOOP_GOAL_S = 0.050
STAGE_GOAL_S = 0.005
INSTANCES = 500
WRITE_ONE_FILE = 'echo "$UMDFLOW_PARAM_I" > "$UMDFLOW_OUT/out"'


def sweep_pipeline():
    values = ", ".join(str(v) for v in range(INSTANCES // 2))
    return f"""name: noop-sweep
sweep:
  v: [{values}]
stages:
  a:
    kind: cmd
    run: 'echo "$UMDFLOW_PARAM_V" > "$UMDFLOW_OUT/out"'
    params: {{v: "${{v}}"}}
  b:
    kind: cmd
    inputs: [a]
    run: 'cat "$UMDFLOW_INPUT_A/out" > "$UMDFLOW_OUT/out"'
"""


def independent_pipeline(name, count):
    """`count` independent stages; the distinct param gives each its own key."""
    lines = [f"name: {name}", "stages:"]
    for i in range(count):
        lines += [
            f"  s{i:03d}:",
            "    kind: cmd",
            f"    run: '{WRITE_ONE_FILE}'",
            f"    params: {{i: {i}}}",
        ]
    return "\n".join(lines) + "\n"


def noop_rerun(binary, shape, text, reps):
    work = bl.scratch_dir(f"noop-{shape}-")
    try:
        (work / "p.yaml").write_text(text)
        first_s, _, doc = bl.umdflow_json(binary, ["run", "p.yaml"], work)
        bl.expect_counts(doc, f"{shape}: first run", INSTANCES, 0)
        # An untimed warm-up that also checks that nothing reruns.
        _, _, doc = bl.umdflow_json(binary, ["run", "p.yaml"], work)
        bl.expect_counts(doc, f"{shape}: no-op rerun", 0, INSTANCES)
        runs = [bl.timed([str(binary), "run", "p.yaml", "-q"], work)[:2] for _ in range(reps)]
        plans = [bl.timed([str(binary), "plan", "p.yaml", "-q"], work)[0] for _ in range(reps)]
        traced = trace_syncs([str(binary), "run", "p.yaml", "-q"], work)
        return {
            "shape": shape,
            "instances": INSTANCES,
            "first_run_s": first_s,
            "noop_run": bl.summary([wall for wall, _ in runs]),
            "noop_run_cpu": bl.summary([cpu for _, cpu in runs]),
            "noop_plan": bl.summary(plans),
            "samples_run_s": [wall for wall, _ in runs],
            "strace": traced,
        }
    finally:
        bl.remove_tree(work)


def direct_spawns(count, reps):
    """Seconds to run the stages' `sh -c` command `count` times without umdflow (median of reps)."""
    work = bl.scratch_dir("spawn-")
    try:
        samples, cpus = [], []
        for rep in range(reps):
            outs = []
            for i in range(count):
                out = work / f"r{rep}" / f"s{i:03d}"
                out.mkdir(parents=True)
                outs.append(out)
            cpu = bl.children_cpu()
            start = time.perf_counter()
            for i, out in enumerate(outs):
                env = dict(os.environ, UMDFLOW_OUT=str(out), UMDFLOW_PARAM_I=str(i))
                subprocess.run(["sh", "-c", WRITE_ONE_FILE], cwd=work, env=env, check=True)
            samples.append(time.perf_counter() - start)
            cpus.append(bl.children_cpu() - cpu)
        return samples, cpus
    finally:
        bl.remove_tree(work)


def stage_overhead(binary, count, reps):
    text = independent_pipeline("trivial-stages", count)
    samples, cpus, stage_seconds, traced = [], [], [], None
    for rep in range(reps + 1):
        work = bl.scratch_dir("overhead-")
        try:
            (work / "p.yaml").write_text(text)
            if rep == reps:  # the last, traced run is not timed
                traced = trace_syncs([str(binary), "run", "p.yaml", "-q", "--jobs", "1"], work)
                break
            seconds, cpu, doc = bl.umdflow_json(binary, ["run", "p.yaml", "--jobs", "1"], work)
            bl.expect_counts(doc, "trivial stages: first run", count, 0)
            samples.append(seconds)
            cpus.append(cpu)
            stage_seconds += [s["seconds"] for s in doc["stages"]]
        finally:
            bl.remove_tree(work)
    direct, direct_cpus = direct_spawns(count, reps)
    raw = statistics.median(samples)
    base = statistics.median(direct)
    cpu_net = statistics.median(cpus) - statistics.median(direct_cpus)
    return {
        "stages": count,
        "jobs": 1,
        "command": WRITE_ONE_FILE,
        "umdflow_first_run": bl.summary(samples),
        "umdflow_first_run_cpu": bl.summary(cpus),
        "direct_sh_spawns": bl.summary(direct),
        "direct_sh_spawns_cpu": bl.summary(direct_cpus),
        "net_cpu_per_stage_s": cpu_net / count,
        "raw_per_stage_s": raw / count,
        "direct_per_spawn_s": base / count,
        "net_overhead_per_stage_s": (raw - base) / count,
        "engine_reported_stage_seconds_median": statistics.median(stage_seconds),
        "strace": traced,
    }


SYNC_LINE = re.compile(r"\b(fsync|fdatasync)\(.*<([0-9.]+)>$")


def trace_syncs(argv, cwd):
    """Count fsync/fdatasync calls of one run under strace and the seconds spent waiting in them."""
    if shutil.which("strace") is None:
        return None
    log = Path(cwd) / "strace.log"
    argv = ["strace", "-f", "-T", "-e", "trace=fsync,fdatasync,openat", "-o", str(log), *argv]
    start = time.perf_counter()
    bl.run_checked(argv, cwd)
    wall = time.perf_counter() - start
    calls, waited, index_opens = 0, 0.0, 0
    for line in log.read_text().splitlines():
        match = SYNC_LINE.search(line)
        if match:
            calls += 1
            waited += float(match.group(2))
        elif "index.redb" in line and "openat(" in line:
            index_opens += 1
    return {"wall_s": wall, "sync_calls": calls, "sync_wait_s": waited, "index_opens": index_opens}


def verdict(value, goal):
    return "met" if value < goal else "MISSED"


def print_report(report):
    print("\n" + bl.machine_line(report["machine"], report["loadavg_after"]))
    g = report["git"]
    print(f"{report['umdflow_version']}, binary {report['binary']}; tree at {g['commit']}"
          f"{' with local edits in engine/cache/stages/core' if g['engine_dirty'] else ''}\n")
    print("(a) no-op rerun, 500 instances, `umdflow run p.yaml -q`")
    print("| shape | first run | no-op run median | min | CPU median | plan median "
          "| goal < 50 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in report["noop"]:
        print(
            f"| {r['shape']} | {r['first_run_s']:.2f} s | {bl.ms(r['noop_run']['median_s'])} "
            f"| {bl.ms(r['noop_run']['min_s'])} | {bl.ms(r['noop_run_cpu']['median_s'])} "
            f"| {bl.ms(r['noop_plan']['median_s'])} "
            f"| {verdict(r['noop_run']['median_s'], NOOP_GOAL_S)} |"
        )
    o = report["stage_overhead"]
    print(f"\n(b) per-stage overhead, {o['stages']} trivial stages, first run, --jobs 1")
    print("| umdflow run (median) | its CPU | raw per stage | sh -c spawns (median) "
          "| per spawn | net per stage | net CPU per stage | goal < 5 ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {o['umdflow_first_run']['median_s']:.2f} s "
        f"| {o['umdflow_first_run_cpu']['median_s']:.2f} s | {bl.ms(o['raw_per_stage_s'])} "
        f"| {o['direct_sh_spawns']['median_s']:.3f} s | {bl.ms(o['direct_per_spawn_s'])} "
        f"| {bl.ms(o['net_overhead_per_stage_s'])} | {bl.ms(o['net_cpu_per_stage_s'])} "
        f"| {verdict(o['net_overhead_per_stage_s'], STAGE_GOAL_S)} |"
    )
    traces = [(f"no-op rerun ({r['shape']})", r["strace"], 1) for r in report["noop"]]
    traces.append((f"first run of {o['stages']} stages", o["strace"], o["stages"]))
    if any(t for _, t, _ in traces):
        print("\nfsync/fdatasync under strace (one extra run each, slower than untraced):")
        print("| run | wall | sync calls | waiting in syncs | index.redb opens | per stage |")
        print("|---|---|---|---|---|---|")
        for name, t, stages in traces:
            if t:
                per_stage = (f"{t['sync_calls'] / stages:.0f} syncs, "
                             f"{bl.ms(t['sync_wait_s'] / stages)}" if stages > 1 else "")
                print(f"| {name} | {bl.ms(t['wall_s'])} | {t['sync_calls']} "
                      f"| {bl.ms(t['sync_wait_s'])} | {t['index_opens']} | {per_stage} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="no-op reruns timed per shape (>= 10)")
    parser.add_argument("--stages", type=int, default=100, help="trivial stages for (b)")
    parser.add_argument("--overhead-reps", type=int, default=3, help="first runs timed for (b)")
    parser.add_argument("--shapes", default="sweep,independent", help="shapes for (a)")
    args = parser.parse_args()
    if args.reps < 10:
        bl.fail("--reps must be at least 10")
    if args.stages < 1 or args.overhead_reps < 1:
        bl.fail("--stages and --overhead-reps must be at least 1")
    pipelines = {
        "sweep": sweep_pipeline,
        "independent": lambda: independent_pipeline("noop-independent", INSTANCES),
    }
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in pipelines]
    if unknown:
        bl.fail(f"--shapes: unknown {unknown}; expected some of {sorted(pipelines)}")

    binary = bl.umdflow_binary()
    report = {
        "machine": bl.machine(),
        "umdflow_version": bl.umdflow_version(binary),
        "binary": str(binary),
        "git": bl.git_state(),
        "noop": [noop_rerun(binary, s, pipelines[s](), args.reps) for s in shapes],
        "stage_overhead": stage_overhead(binary, args.stages, args.overhead_reps),
    }
    report["loadavg_after"] = bl.machine()["loadavg"]
    print_report(report)
    bl.write_report("engine_overhead", report)


if __name__ == "__main__":
    main()
