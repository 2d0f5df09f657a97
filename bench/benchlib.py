"""Shared helpers for the umdflow benchmark scripts (python3 standard library only).

Everything a benchmark writes goes under bench/out/ (git-ignored), so the scripts can be rerun
from the repository root of a fresh clone without leaving anything behind in tracked paths.
"""

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def umdflow_binary():
    """The release binary to benchmark: $UMDFLOW_BIN, or `cargo build --release -p umdflow`.

    Cargo is always asked (it does nothing when the binary is up to date), so a stale binary is
    not measured by accident. If the build fails (e.g. a half-edited shared tree) but a binary
    exists, that binary is used with a loud warning; with no binary at all the benchmark stops.
    """
    given = os.environ.get("UMDFLOW_BIN")
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            fail(f"UMDFLOW_BIN={given} is not a file")
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    path = target / "release" / "umdflow"
    print("building the release binary: cargo build --release -p umdflow", file=sys.stderr)
    build = subprocess.run(["cargo", "build", "--release", "-p", "umdflow"], cwd=REPO)
    if build.returncode != 0:
        if not path.is_file():
            fail("`cargo build --release -p umdflow` failed and there is no binary to measure")
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime))
        print(f"WARNING: the build failed; measuring the existing {path} (built {built})",
              file=sys.stderr)
    if not path.is_file():
        fail(f"the build finished but {path} does not exist")
    return path


def scratch_dir(prefix):
    """A fresh folder under bench/out/work, on the repository's filesystem (fsync costs match)."""
    base = OUT / "work"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def run_checked(argv, cwd, env=None, quiet=True):
    """Run a command, fail loudly (with its output) if it exits non-zero; return its stdout."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        fail(f"`{' '.join(str(a) for a in argv)}` exited with {proc.returncode} in {cwd}")
    if not quiet:
        sys.stderr.write(proc.stderr)
    return proc.stdout


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, cwd, env=None):
    """Wall seconds and CPU seconds (user + system, its children included) of one checked run,
    and its stdout. CPU time separates the engine's own work from waiting (disk syncs, or other
    processes on a busy machine)."""
    cpu = children_cpu()
    start = time.perf_counter()
    stdout = run_checked(argv, cwd, env)
    return time.perf_counter() - start, children_cpu() - cpu, stdout


def umdflow_json(binary, args, cwd):
    """Time `umdflow <args> --json -q` and return (wall seconds, CPU seconds, parsed document)."""
    seconds, cpu, stdout = timed([str(binary), *args, "--json", "-q"], cwd)
    try:
        return seconds, cpu, json.loads(stdout)
    except json.JSONDecodeError as err:
        fail(f"umdflow {' '.join(args)} --json printed no JSON document ({err})")


def expect_counts(doc, what, executed, cached):
    """Fail unless a `run --json` document executed/cached exactly the expected numbers."""
    got = (doc.get("executed"), doc.get("cached"), doc.get("failed"))
    if got != (executed, cached, 0):
        fail(f"{what}: expected executed={executed} cached={cached} failed=0, got {got}")


def summary(samples):
    return {
        "n": len(samples),
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
    }


def read_first(path, key):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def fdatasync_latency(count=50):
    """Median seconds of one 4 KiB write + fdatasync in bench/out/work: the disk's price for each
    durability barrier at the time of the run (it rises a lot while others compile)."""
    folder = scratch_dir("fsync-")
    samples = []
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for i in range(count):
                start = time.perf_counter()
                os.pwrite(fd, bytes([i % 256]) * 4096, 4096 * i)
                os.fdatasync(fd)
                samples.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    finally:
        remove_tree(folder)
    return statistics.median(samples)


def machine():
    """What the numbers were measured on; load average and sync latency matter on a shared
    2-core machine."""
    mem_kib = read_first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": read_first("/proc/cpuinfo", "model name"),
        "mem_gib": round(int(mem_kib) / 2**20, 1) if mem_kib.isdigit() else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "fdatasync_median_s": fdatasync_latency(),
    }


def git_state():
    """The commit measured, and whether engine/cache/stage-interface sources had local edits."""
    def git(*args):
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else "unknown"

    dirty = git("status", "--porcelain", "--", "engine", "cache", "stages/core")
    return {"commit": git("rev-parse", "--short", "HEAD"), "engine_dirty": bool(dirty)}


def umdflow_version(binary):
    return run_checked([str(binary), "--version"], REPO).strip()


def write_report(name, report):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nraw results: {path.relative_to(REPO)}")


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


def machine_line(before, after_loadavg):
    return (f"machine: {before['nproc']} cores, {before['cpu']}, {before['mem_gib']} GiB; "
            f"load {' '.join(before['loadavg'])} -> {' '.join(after_loadavg)}; "
            f"fdatasync {ms(before['fdatasync_median_s'])} (median of 50)")


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"
