"""Where a client's wall time goes on a vLLM server: run a command while polling the server's
/metrics, and report when the engine first and last had work, how long it sat idle in between,
its step count, the tokens it generated, and the command's own CPU time (children included).

    BASE_URL=http://127.0.0.1:8011/v1 python benchmarks/engine_timeline.py NAME -- CMD...

Prints one JSON line: ``wall`` (around CMD), ``first_busy`` / ``last_busy`` (seconds after CMD
started at which the server had a request running or waiting), ``idle_in_span`` (polls inside
that span with nothing running or waiting, times the interval), ``steps``
(``vllm:iteration_tokens_total`` count: engine steps), ``gen`` (generated tokens) and
``client_cpu`` (user + system seconds of CMD and its children). The prefix cache is reset first.
``POLL`` (seconds, default 0.25) sets the interval: polling costs the server a little CPU.

Used for BENCHMARKS.md's "where our wall time goes" (arms interleaved on one server).
"""

from __future__ import annotations

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
    return out


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
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    rc = subprocess.call(cmd)
    wall, r1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(2 * POLL)
    stop.set()
    poller.join()
    after = scrape()
    busy = [p for p in polls if p[1] > 0 or p[2] > 0]
    first, last = (busy[0][0], busy[-1][0]) if busy else (t0, t0)
    idle = sum(1 for p in polls if first <= p[0] <= last and p[1] == 0 and p[2] == 0) * POLL

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    print(json.dumps({
        "arm": name, "rc": rc, "wall": round(wall, 2), "first_busy": round(first - t0, 2),
        "last_busy": round(last - t0, 2), "idle_in_span": round(idle, 2),
        "steps": delta("vllm:iteration_tokens_total_count"), "gen": delta("vllm:generation_tokens_total"),
        "client_cpu": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 2),
    }), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
