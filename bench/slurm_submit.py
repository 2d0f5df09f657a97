#!/usr/bin/env python3
"""Slurm submission overhead (issue 12, section 4: "500 ready instances submitted in under 2 s").

Run from the repository root with a Slurm cluster answering (`scripts/slurm-ci.sh up`):

    UMDFLOW_BIN=target/debug/umdflow python3 bench/slurm_submit.py          # 200 and 500, 2 runs
    COUNTS=500 RUNS=3 UMDFLOW_BIN=... python3 bench/slurm_submit.py

For each count N: a pipeline of N independent trivial `cmd` instances (`seeds: N`, one stage that
writes its instance id), run with `umdflow run p.yaml --executor slurm --json -q --no-lock-file`
from an empty cache in a fresh folder, `executor.poll_seconds` 0.5. Measured per run:
  - start to submitted: from starting the process to the driver's "submitted N Slurm jobs" line
    (loading, planning against the empty cache, the driver lock, the submission);
  - submission: the time the driver itself reports for the `sbatch` calls and writing its job list;
  - start to all done: until the process exits (every job finished and read back).
Checks: the run executed all N instances, and the driver submitted N jobs. Without $UMDFLOW_BIN
the release binary is built (benchlib.umdflow_binary).
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SUBMITTED = re.compile(r"submitted (\d+) Slurm jobs in ([0-9.]+) s")


def pipeline(count):
    return (
        f"name: submit-bench-{count}-{os.getpid()}-{time.time_ns()}\n"
        f"seeds: {count}\n"
        "stages:\n"
        "  work:\n"
        "    kind: cmd\n"
        "    run: 'echo \"$UMDFLOW_INSTANCE\" > \"$UMDFLOW_OUT/id.txt\"'\n"
        "    params: {seed: \"${seed}\"}\n"
        "executor: {poll_seconds: 0.5}\n"
    )


def one_run(binary, count):
    folder = benchlib.scratch_dir(f"slurm-submit-{count}-")
    try:
        (folder / "p.yaml").write_text(pipeline(count))
        argv = [str(binary), "run", "p.yaml", "--executor", "slurm", "--json", "-q",
                "--no-lock-file"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        submitted_at, reported, jobs = None, None, None
        lines = []
        # The --json document of 500 instances fills a pipe: read it alongside stderr.
        stdout_parts = []
        reader = threading.Thread(target=lambda: stdout_parts.append(proc.stdout.read()))
        reader.start()
        for line in proc.stderr:
            lines.append(line)
            found = SUBMITTED.search(line)
            if found and submitted_at is None:
                submitted_at = time.monotonic() - start
                jobs, reported = int(found.group(1)), float(found.group(2))
        reader.join()
        stdout = stdout_parts[0]
        code = proc.wait()
        done = time.monotonic() - start
        if code != 0:
            sys.stderr.write("".join(lines[-20:]))
            benchlib.fail(f"umdflow exited with {code} for {count} instances")
        doc = json.loads(stdout)
        if doc["executed"] != count or jobs != count:
            benchlib.fail(f"expected {count} executed and submitted; got {doc['executed']} "
                          f"executed, {jobs} submitted")
        return {"start_to_submitted_s": submitted_at, "submission_s": reported,
                "start_to_done_s": done}
    finally:
        benchlib.remove_tree(folder)


def main():
    counts = [int(c) for c in os.environ.get("COUNTS", "200,500").split(",")]
    runs = int(os.environ.get("RUNS", "2"))
    binary = benchlib.umdflow_binary()
    before = benchlib.machine()
    results = {}
    for count in counts:
        results[count] = []
        for _ in range(runs):
            sample = one_run(binary, count)
            print(f"{count} instances: {json.dumps(sample)}", file=sys.stderr, flush=True)
            results[count].append(sample)
    print(f"binary: {binary} ({benchlib.umdflow_version(binary)}), "
          f"{benchlib.git_state()}")
    print("| instances | start to submitted | submission (driver) | start to all done |")
    print("|---:|---:|---:|---:|")
    for count, samples in results.items():
        def column(key):
            return " / ".join(f"{s[key]:.2f}" for s in samples) + " s"
        print(f"| {count} | {column('start_to_submitted_s')} | {column('submission_s')} | "
              f"{column('start_to_done_s')} |")
    after = open("/proc/loadavg").read().split()[:3]
    print(benchlib.machine_line(before, after))
    benchlib.write_report("slurm_submit", {"machine": before, "loadavg_after": after,
                                            "results": {str(k): v for k, v in results.items()}})


if __name__ == "__main__":
    main()
