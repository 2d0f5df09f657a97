"""How long the two busiest threads of a recorded run slept, and what the other one ran meanwhile.

Record a 2-thread bench with the scheduler's switches and CPU-clock samples with call stacks,
then read the script output:

    perf record -o idle.data -e sched:sched_switch -e cpu-clock -c 2000000 \\
        --call-graph dwarf,16384 env UMD_BENCH_THREADS=2 UMD_BENCH_PRESETS=small \\
        UMD_BENCH_STEPS=3 UMD_BENCH_CEILING=0 target/release/deps/train_step-<hash> --bench
    perf script -i idle.data -F tid,time,event,ip,sym,trace > idle.txt
    python3 bench/worker_idle.py idle.txt

The workers are the two threads with the most samples (the rayon pool of the stage). A worker
sleeps from a switch away from it in a state other than running (R) until the next switch to it.
The run counts from the workers' first sample to the last event.
"""
import bisect
import collections
import re
import sys


def records(path):
    """(tid, time, event, trace, stack) for every event of `perf script`'s output."""
    current = None
    for line in open(path):
        if not line.strip():
            if current:
                yield current
            current = None
            continue
        head = re.match(r"\s*(\d+)\s+([0-9.]+):\s+(\S+):\s*(.*)$", line.rstrip())
        if head and not line.startswith("\t"):
            if current:
                yield current
            current = (int(head[1]), float(head[2]), head[3], head[4], [])
        elif current is not None:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                symbol = re.sub(r"::h[0-9a-f]{16}|\+0x[0-9a-f]+$", "", parts[1])
                current[4].append(symbol)
    if current:
        yield current


def main(path):
    events = list(records(path))
    samples = collections.Counter(e[0] for e in events if e[2] == "cpu-clock")
    workers = [tid for tid, _ in samples.most_common(2)]
    start = min(e[1] for e in events if e[0] in workers and e[2] == "cpu-clock")
    end = max(e[1] for e in events)
    sleeps = {w: [] for w in workers}
    since = {w: None for w in workers}
    for _, time, event, trace, _ in events:
        if event != "sched:sched_switch":
            continue
        m = re.search(r"prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)", trace)
        prev, state, following = int(m[1]), m[2], int(m[3])
        if prev in since and not state.startswith("R"):
            since[prev] = time
        if following in since and since[following] is not None:
            sleeps[following].append((since[following], time))
            since[following] = None
    for w in workers:
        if since[w] is not None:
            sleeps[w].append((since[w], end))
    span = end - start
    for w in workers:
        asleep = sum(b - max(a, start) for a, b in sleeps[w] if b > start)
        print(f"worker {w}: asleep {asleep:.2f} s of {span:.2f} s ({100 * asleep / span:.1f} %), "
              f"{len(sleeps[w])} sleeps")
    starts = {w: [a for a, _ in sleeps[w]] for w in workers}

    def asleep_at(w, t):
        i = bisect.bisect_right(starts[w], t) - 1
        return i >= 0 and sleeps[w][i][0] <= t < sleeps[w][i][1]

    alone = collections.Counter()
    total = lonely = 0
    for tid, time, event, _, stack in events:
        if event != "cpu-clock" or tid not in workers:
            continue
        total += 1
        other = workers[1] if tid == workers[0] else workers[0]
        if asleep_at(other, time):
            lonely += 1
            alone[stack[0][:90] if stack else "?"] += 1
    print(f"{total} worker samples, {lonely} ({100 * lonely / max(total, 1):.1f} %) "
          "with the other worker asleep; their innermost functions:")
    for name, n in alone.most_common(10):
        print(f"  {100 * n / max(lonely, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
