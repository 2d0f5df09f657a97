#!/usr/bin/env python3
"""umdflow vs DVC on the same 100-stage chain of trivial commands (issue 2, "Speed").

Run it through bench/dvc_compare.sh, which installs DVC into bench/out/dvc-venv first.

Each stage i reads stage i-1's output file, copies it and appends "i k" where k is the stage's
parameter. For each tool, in a fresh folder (`git init`, and `dvc init` for DVC), we time:
  first run   every stage runs                       (dvc repro  | umdflow run chain.yaml)
  no-op       nothing runs                           (same command again)
  param edit  s050's k goes 0 -> 1 in the file, so s050..s099 (50 stages) rerun
Each measured command is checked to have run exactly the expected stages. DVC runs with analytics,
update checks and autostage off and no remote. Results: a table on stdout and
bench/out/dvc_compare.json. No randomness is involved.
"""

import argparse
import os
import re
import statistics
import subprocess
from pathlib import Path

import benchlib as bl

STAGES = 100
CHANGED = 50
TARGET_RATIO = 20.0
PHASES = ["first run", "no-op rerun", f"param change in s{CHANGED:03d}"]


def stage_name(i):
    return f"s{i:03d}"


def param_value(i, edited):
    return 1 if edited and i == CHANGED else 0


def dvc_files(edited):
    """dvc.yaml (deps/outs/params per stage) and params.yaml."""
    stages, params = ["stages:"], []
    for i in range(STAGES):
        name = stage_name(i)
        append = f"echo {i} ${{{name}.k}} >> {name}.txt"
        cmd = f"echo {i} ${{{name}.k}} > {name}.txt" if i == 0 else (
            f"cat {stage_name(i - 1)}.txt > {name}.txt && {append}")
        stages += [f"  {name}:", f"    cmd: {cmd}"]
        if i > 0:
            stages.append(f"    deps: [{stage_name(i - 1)}.txt]")
        stages += [f"    params: [{name}.k]", f"    outs: [{name}.txt]"]
        params += [f"{name}:", f"  k: {param_value(i, edited)}"]
    return {"dvc.yaml": "\n".join(stages) + "\n", "params.yaml": "\n".join(params) + "\n"}


def umdflow_files(edited):
    """The same chain as an umdflow pipeline."""
    lines = ["name: chain", "stages:"]
    for i in range(STAGES):
        name = stage_name(i)
        append = f'echo {i} "$UMDFLOW_PARAM_K" >> "$UMDFLOW_OUT/out"'
        run = f'echo {i} "$UMDFLOW_PARAM_K" > "$UMDFLOW_OUT/out"' if i == 0 else (
            f'cat "$UMDFLOW_INPUT_{stage_name(i - 1).upper()}/out" > "$UMDFLOW_OUT/out"; {append}')
        lines += [f"  {name}:", "    kind: cmd"]
        if i > 0:
            lines.append(f"    inputs: [{stage_name(i - 1)}]")
        lines += [f"    run: '{run}'", f"    params: {{k: {param_value(i, edited)}}}"]
    return {"chain.yaml": "\n".join(lines) + "\n"}


def write_files(folder, files):
    for name, text in files.items():
        (folder / name).write_text(text)


class Dvc:
    name = "DVC"

    def __init__(self, dvc):
        self.dvc = str(dvc)
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1")

    def version(self):
        return bl.run_checked([self.dvc, "--version"], bl.REPO, self.env).strip()

    def setup(self, folder):
        bl.run_checked(["git", "init", "-q"], folder)
        bl.run_checked([self.dvc, "init", "-q"], folder, self.env)
        for key, value in [("core.analytics", "false"), ("core.autostage", "false"),
                           ("core.check_update", "false")]:
            bl.run_checked([self.dvc, "config", key, value], folder, self.env)
        write_files(folder, dvc_files(edited=False))

    def edit(self, folder):
        write_files(folder, dvc_files(edited=True))

    def run(self, folder):
        """Wall seconds of `dvc repro`, and how many stages it ran."""
        wall, _, stdout = bl.timed([self.dvc, "repro"], folder, self.env)
        return wall, len(re.findall(r"^Running stage '", stdout, re.MULTILINE))

    def command(self):
        return "dvc repro"


class Umdflow:
    name = "umdflow"

    def __init__(self, binary):
        self.binary = binary

    def version(self):
        return bl.umdflow_version(self.binary)

    def setup(self, folder):
        bl.run_checked(["git", "init", "-q"], folder)
        write_files(folder, umdflow_files(edited=False))

    def edit(self, folder):
        write_files(folder, umdflow_files(edited=True))

    def run(self, folder):
        wall, _, doc = bl.umdflow_json(self.binary, ["run", "chain.yaml"], folder)
        if doc.get("failed"):
            bl.fail(f"umdflow: {doc['failed']} stages failed in {folder}")
        return wall, doc["executed"]

    def command(self):
        return "umdflow run chain.yaml --json -q"


def measure(tool, reps):
    """Per phase, the wall seconds of each repetition (each in a fresh folder)."""
    expected = [STAGES, 0, STAGES - CHANGED]
    samples = {phase: [] for phase in PHASES}
    for _ in range(reps):
        folder = bl.scratch_dir(f"{tool.name.lower()}-chain-")
        try:
            tool.setup(folder)
            for phase, want in zip(PHASES, expected):
                if phase == PHASES[2]:
                    tool.edit(folder)
                seconds, ran = tool.run(folder)
                if ran != want:
                    bl.fail(f"{tool.name} {phase}: expected {want} stages to run, {ran} ran")
                samples[phase].append(seconds)
        finally:
            bl.remove_tree(folder)
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dvc", required=True, help="the dvc executable to compare with")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, each in a fresh folder")
    args = parser.parse_args()
    if args.reps < 1:
        bl.fail("--reps must be at least 1")
    dvc = Dvc(Path(args.dvc).resolve())
    flow = Umdflow(bl.umdflow_binary())
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()

    report = {"machine": bl.machine(), "git": bl.git_state(), "git_version": git,
              "binary": str(flow.binary), "stages": STAGES, "reps": args.reps, "tools": {}}
    for tool in (dvc, flow):
        print(f"measuring {tool.name} ({args.reps} repetitions) ...", flush=True)
        report["tools"][tool.name] = {"version": tool.version(), "command": tool.command(),
                                      "phases": {p: bl.summary(s) for p, s in
                                                 measure(tool, args.reps).items()}}
    report["loadavg_after"] = bl.machine()["loadavg"]

    print("\n" + bl.machine_line(report["machine"], report["loadavg_after"]))
    d, u = report["tools"]["DVC"], report["tools"]["umdflow"]
    print(f"dvc {d['version']}, {u['version']}, {git}\n")
    print(f"{STAGES}-stage chain, median (min) of {args.reps} fresh repetitions")
    print("| phase | DVC | umdflow | speed-up | goal >= 20x |")
    print("|---|---|---|---|---|")
    for phase in PHASES:
        ds, us = d["phases"][phase], u["phases"][phase]
        ratio = ds["median_s"] / us["median_s"]
        report["tools"]["umdflow"]["phases"][phase]["speedup_vs_dvc"] = ratio
        print(f"| {phase} | {ds['median_s']:.2f} s ({ds['min_s']:.2f}) "
              f"| {us['median_s']:.3f} s ({us['min_s']:.3f}) | {ratio:.1f}x "
              f"| {'met' if ratio >= TARGET_RATIO else 'MISSED'} |")
    bl.write_report("dvc_compare", report)


if __name__ == "__main__":
    main()
