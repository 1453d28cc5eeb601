"""Where a client's wall time goes on a vLLM server: run a command while polling the server's
/metrics, and report when the engine first and last had work, how long it sat idle in between,
its step count, the tokens it generated, and the command's own CPU time (children included),
split by phase: before the engine's first work, while it works, after its last.

    BASE_URL=http://127.0.0.1:8011/v1 python benchmarks/engine_timeline.py NAME -- CMD...

Prints one JSON line: ``wall`` (around CMD), ``first_busy`` / ``last_busy`` (seconds after CMD
started at which the server had a request running or waiting), ``idle_in_span`` (polls inside
that span with nothing running or waiting, times the interval), ``steps``
(``vllm:iteration_tokens_total`` count: engine steps), ``gen`` (generated tokens) and
``client_cpu`` (user + system seconds of CMD and its children); ``sec_per_ktok`` (wall per
1,000 generated tokens: arms whose draws ran longer or shorter compare on it); and, from
polling ``/proc`` (Linux) every ``POLL`` seconds, ``main_cpu`` and ``children_cpu``: the CPU
seconds of CMD's own process and of its descendants (a grading worker) before ``first_busy``,
between it and ``last_busy``, and after (a descendant's last poll counts, so a child that
lives less than a poll is missed). The prefix cache is reset first. ``POLL`` (seconds, default
0.25) sets the interval: polling costs the server a little CPU.

Used for BENCHMARKS.md's "where our wall time goes" (arms interleaved on one server).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.environ.get("BASE_URL", "http://127.0.0.1:8011/v1").rsplit("/v1", 1)[0]
POLL = float(os.environ.get("POLL", "0.25"))


def scrape() -> dict[str, float]:
    """Every ``vllm:*`` sample summed by name (labels dropped; histogram buckets skipped)."""
    out: dict[str, float] = {}
    text = urllib.request.urlopen(ROOT + "/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        m = re.match(r"(vllm:[\w:]+)(\{[^}]*\})?\s+(\S+)$", line)
        if m and not m.group(1).endswith(("_bucket", "_created")):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            source = re.search(r'source="(\w+)"', m.group(2) or "")
            if source:  # prefill computed vs served from the prefix cache
                key = f"{m.group(1)}:{source.group(1)}"
                out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and each of its live descendants, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return {pid: cpu[pid] for pid in tree if pid in cpu}


def main() -> int:
    if "--" not in sys.argv[2:3]:
        sys.exit("usage: engine_timeline.py NAME -- CMD...")
    name, cmd = sys.argv[1], sys.argv[3:]
    reset = urllib.request.Request(ROOT + "/reset_prefix_cache", method="POST")
    urllib.request.urlopen(reset, timeout=30).read()
    polls: list[tuple[float, float, float]] = []  # (time, running, waiting)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                d = scrape()
                polls.append((t, d.get("vllm:num_requests_running", 0.0), d.get("vllm:num_requests_waiting", 0.0)))
            except OSError:
                pass
            stop.wait(POLL)

    before = scrape()
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.Popen(cmd)
    cpu_polls: list[tuple[float, dict[int, float]]] = []  # (time, {pid: cpu seconds})

    def poll_cpu() -> None:
        while not stop.is_set():
            cpu_polls.append((time.monotonic(), tree_cpu(proc.pid)))
            stop.wait(POLL)

    pollers = [threading.Thread(target=poll, daemon=True), threading.Thread(target=poll_cpu, daemon=True)]
    for poller in pollers:
        poller.start()
    rc = proc.wait()
    wall, r1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(2 * POLL)
    stop.set()
    for poller in pollers:
        poller.join()
    after = scrape()
    busy = [p for p in polls if p[1] > 0 or p[2] > 0]
    first, last = (busy[0][0], busy[-1][0]) if busy else (t0, t0)
    idle = sum(1 for p in polls if first <= p[0] <= last and p[1] == 0 and p[2] == 0) * POLL

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    def cpu_until(t: float) -> tuple[float, float]:
        """(main, descendants) CPU seconds as last polled at or before ``t``."""
        latest: dict[int, float] = {}
        for polled, by_pid in cpu_polls:
            if polled <= t:
                latest.update(by_pid)
        main_cpu = latest.get(proc.pid, 0.0)
        return main_cpu, sum(latest.values()) - main_cpu

    marks = [cpu_until(first), cpu_until(last), cpu_until(float("inf"))]
    phases = [marks[0], *((b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks))]
    gen = delta("vllm:generation_tokens_total")
    print(json.dumps({
        "arm": name, "rc": rc, "wall": round(wall, 2), "first_busy": round(first - t0, 2),
        "last_busy": round(last - t0, 2), "idle_in_span": round(idle, 2),
        "steps": delta("vllm:iteration_tokens_total_count"), "gen": gen,
        "prefill_computed": delta("vllm:prompt_tokens_by_source_total:local_compute"),
        "sec_per_ktok": round(1000 * wall / gen, 3) if gen else None,
        "client_cpu": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 2),
        "main_cpu": [round(p[0], 2) for p in phases], "children_cpu": [round(p[1], 2) for p in phases],
    }), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
