#!/usr/bin/env python3
"""`just bench`: how fast, how accurate and how small the runner's client is.

The built-in engine runs pinned to CPU 0, `runner exec` pinned to CPU 1 (taskset), so the client
has exactly one core. Each figure is the median of --runs runs (default 3):

  (a) ceiling: zero-cost engine (--ttft-ms 0 --itl-ms 0), streamed chat, 128 output tokens;
      requests/s, streamed tokens/s, client CPU-seconds per 1000 requests (the cell's getrusage),
      peak RSS (wait4), at concurrency 64 and 256; and wrk's raw HTTP rate on the same engine
  (b) accuracy: engine with 50 ms TTFT and 10 ms per token; the runner's TTFT, TPOT and ITL means
      minus what the engine says it emitted (GET /stats), at concurrency 1 and 256
  (c) memory: peak RSS at 100,000 and 1,000,000 requests, concurrency 256, zero-cost engine
  (d) open loop: dispatch lag p99 at 1,000 and 5,000 requests/s (constant arrivals)

    python3 bench/bench.py [--runs N] [--quick] [--json FILE]

--quick divides every request count by 10 (for trying the script, not for figures).
Needs target/release/runner (`cargo build --release`), taskset (util-linux) and wrk (installed
with apt-get when missing; skipped with a note when it cannot be).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "target" / "release" / "runner"
MAX_TOKENS = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """The built-in engine on CPU 0."""

    def __init__(self, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", str(RUNNER), "engine", "sim", "--port", str(self.port),
             "--model", "sim", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the built-in engine did not start")
                time.sleep(0.05)

    def stats(self) -> dict:
        return json.load(urllib.request.urlopen(self.url + "/stats", timeout=5))

    def reset(self, skip: int = 0):
        """Zeroes the engine's emitted-timing stats; the next `skip` requests are left out."""
        req = urllib.request.Request(f"{self.url}/stats/reset?skip={skip}", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def plan(url: str, load: str, requests: int | None, warmup: int, extra: str = "") -> str:
    stop = f"requests = {requests}" if requests else ""
    return f"""
schema = 1
name = "bench"
[gpu]
enabled = false
[[engine]]
name = "sim"
url = "{url}"
model = "sim"
metrics_path = ""
[[workload]]
name = "chat"
prompts = ["Say something long."]
max_tokens = {MAX_TOKENS}
ignore_eos = true
[workload.load]
{load}
{stop}
warmup = {warmup}
request_timeout = "60s"
max_dispatch_lag = "1s"
{extra}
"""


def run_runner(plan_text: str) -> dict:
    """Runs one single-cell plan on CPU 1; returns its cell summary plus peak RSS and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "plan.toml"
        p.write_text(plan_text)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["taskset", "-c", "1", str(RUNNER), "exec", str(p), "--results",
             str(Path(tmp) / "results"), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        code = os.waitstatus_to_exitcode(status)
        cells = list((Path(tmp) / "results").glob("bench/*/cells/*.summary.json"))
        if not cells:
            raise RuntimeError(f"runner exited {code} without a cell:\n{err}")
        c = json.loads(cells[0].read_text())
        c["_peak_rss_mb"] = usage.ru_maxrss / 1024
        c["_wall_s"] = wall
        c["_exit"] = code
        return c


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ceiling(engine: Engine, conc: int, requests: int, runs: int) -> dict:
    rows = []
    for _ in range(runs):
        c = run_runner(plan(engine.url, f"concurrency = [{conc}]", requests, warmup=conc))
        m, cl = c["metrics"], c["client"]
        rows.append(dict(
            req_s=m["request_per_s"], tok_s=m["output_tok_per_s"],
            cpu_per_1000=1000 * cl["cpu_s"] / max(m["requests_total"], 1),
            rss_mb=c["_peak_rss_mb"], failed=m["requests_failed"], valid=c["valid"]))
    return {k: median([r[k] for r in rows]) for k in rows[0]} | {"runs": len(rows)}


# Requests the runner sends before a cell's warmup: the dialect check (one request, since the
# bench workload sends `ignore_eos`). The engine leaves these and the warmup out of its stats.
PRE_CELL_REQUESTS = 1


def accuracy(engine: Engine, conc: int, requests: int, runs: int) -> dict:
    rows = []
    for _ in range(runs):
        # One wave of warmup, as a measured run would have: the first wave's one-time costs
        # (first use of each connection) are the client's start-up, not its bias.
        warmup = conc
        engine.reset(skip=PRE_CELL_REQUESTS + warmup)
        c = run_runner(plan(engine.url, f"concurrency = [{conc}]", requests, warmup=warmup))
        truth = engine.stats()
        m = c["metrics"]
        if truth["requests"] != m["requests_total"]:
            raise RuntimeError(f"the engine counted {truth['requests']} requests, the runner "
                               f"measured {m['requests_total']}: PRE_CELL_REQUESTS is stale")
        rows.append(dict(
            ttft_bias_ms=m["ttft_ms"]["mean"] - truth["ttft_ms_mean"],
            tpot_bias_ms=m["tpot_ms"]["mean"] - truth["tpot_ms_mean"],
            itl_bias_ms=m["itl_ms"]["mean"] - truth["itl_ms_mean"],
            ttft_engine_ms=truth["ttft_ms_mean"], itl_engine_ms=truth["itl_ms_mean"],
            failed=m["requests_failed"]))
    return {k: median([r[k] for r in rows]) for k in rows[0]} | {"runs": len(rows)}


def memory(engine: Engine, requests: int) -> dict:
    c = run_runner(plan(engine.url, "concurrency = [256]", requests, warmup=256))
    m = c["metrics"]
    return dict(requests=m["requests_total"], rss_mb=c["_peak_rss_mb"], req_s=m["request_per_s"],
                failed=m["requests_failed"])


def open_loop(engine: Engine, rate: int, seconds: int, runs: int) -> dict:
    rows = []
    for _ in range(runs):
        c = run_runner(plan(engine.url, f"rate = [{rate}]\narrival = \"constant\"",
                            None, warmup=0, extra=f'duration = "{seconds}s"'))
        m = c["metrics"]
        lag = m.get("dispatch_lag_ms") or {}
        rows.append(dict(lag_p99_ms=lag.get("p99"), lag_p50_ms=lag.get("p50"),
                         sent_req_s=m.get("sent_req_per_s"), failed=m["requests_failed"]))
    return {k: median([r[k] for r in rows]) for k in rows[0]} | {"runs": len(rows)}


def ensure_wrk() -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("wrk")


def wrk(engine: Engine, conc: int, seconds: int, runs: int) -> float | None:
    """wrk's raw rate on the same engine and request: HTTP only, no SSE parsing."""
    body = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "Say something long."}],
                       "max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True,
                       "stream_options": {"include_usage": True}, "ignore_eos": True})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n")
        script = f.name
    rates = []
    try:
        for _ in range(runs):
            out = subprocess.run(
                ["taskset", "-c", "1", "wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-s", script,
                 engine.url + "/v1/chat/completions"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith("Requests/sec:"):
                    rates.append(float(line.split()[1]))
    finally:
        os.unlink(script)
    return median(rates)


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="runner's client benchmark")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "target" / "bench" / "results.json")
    args = ap.parse_args(argv)
    if not RUNNER.exists():
        sys.exit("bench: build first: cargo build --release")
    if not shutil.which("taskset"):
        sys.exit("bench: taskset (util-linux) is needed to pin engine and client")
    div = 10 if args.quick else 1
    runs = args.runs
    results: dict = {"date": time.strftime("%Y-%m-%d"), "host": platform.node(),
                     "cpu": cpu_model(), "cores": os.cpu_count(), "runs": runs,
                     "quick": args.quick}
    have_wrk = ensure_wrk()

    zero = Engine("--ttft-ms", "0", "--itl-ms", "0")
    try:
        for conc in (64, 256):
            r = ceiling(zero, conc, 100_000 // div, runs)
            r["wrk_req_s"] = wrk(zero, conc, 5, runs) if have_wrk else None
            r["vs_wrk"] = r["req_s"] / r["wrk_req_s"] if r.get("wrk_req_s") else None
            results[f"ceiling_c{conc}"] = r
            print(f"ceiling c={conc}: {r}", file=sys.stderr)
        for n in (100_000 // div, 1_000_000 // div):
            r = memory(zero, n)
            results[f"memory_{n}"] = r
            print(f"memory {n}: {r}", file=sys.stderr)
        for rate in (1000, 5000):
            r = open_loop(zero, rate, 10, runs)
            results[f"open_loop_{rate}"] = r
            print(f"open loop {rate}/s: {r}", file=sys.stderr)
    finally:
        zero.stop()
    timed = Engine("--ttft-ms", "50", "--itl-ms", "10")
    try:
        for conc, n in ((1, max(10 // div, 2)), (256, 1024 // div if div == 1 else 256)):
            r = accuracy(timed, conc, n, runs)
            results[f"accuracy_c{conc}"] = r
            print(f"accuracy c={conc}: {r}", file=sys.stderr)
    finally:
        timed.stop()

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results, have_wrk is not None))
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(r: dict, have_wrk: bool) -> str:
    out = [f"runner client benchmark, {r['date']}, {r['cpu']} ({r['cores']} cores), engine on CPU 0,"
           f" runner on CPU 1, median of {r['runs']} runs{' (QUICK: not for figures)' if r['quick'] else ''}",
           "",
           "| (a) ceiling, zero-cost engine, 128 tokens | req/s | streamed tok/s | CPU-s / 1000 req | peak RSS (MB) | wrk req/s | runner / wrk |",
           "|---|---|---|---|---|---|---|"]
    for c in (64, 256):
        x = r[f"ceiling_c{c}"]
        out.append(f"| concurrency {c} | {fmt(x['req_s'], 0)} | {fmt(x['tok_s'], 0)} | "
                   f"{fmt(x['cpu_per_1000'], 3)} | {fmt(x['rss_mb'])} | "
                   f"{fmt(x.get('wrk_req_s'), 0) if have_wrk else 'wrk missing'} | {fmt(x.get('vs_wrk'), 2)} |")
    out += ["", "| (b) accuracy, 50 ms TTFT + 10 ms/token | TTFT bias (ms) | TPOT bias (ms) | ITL bias (ms) | engine TTFT / ITL (ms) |",
            "|---|---|---|---|---|"]
    for c in (1, 256):
        x = r[f"accuracy_c{c}"]
        out.append(f"| concurrency {c} | {fmt(x['ttft_bias_ms'], 3)} | {fmt(x['tpot_bias_ms'], 3)} | "
                   f"{fmt(x['itl_bias_ms'], 3)} | {fmt(x['ttft_engine_ms'], 2)} / {fmt(x['itl_engine_ms'], 2)} |")
    out += ["", "| (c) memory, concurrency 256 | requests | peak RSS (MB) | req/s |", "|---|---|---|---|"]
    for k in sorted(k for k in r if k.startswith("memory_")):
        x = r[k]
        out.append(f"| {x['requests']:,} requests | {x['requests']:,} | {fmt(x['rss_mb'])} | {fmt(x['req_s'], 0)} |")
    out += ["", "| (d) open loop, constant arrivals | dispatch lag p50 (ms) | p99 (ms) | sent req/s |", "|---|---|---|---|"]
    for rate in (1000, 5000):
        x = r[f"open_loop_{rate}"]
        out.append(f"| {rate:,} req/s | {fmt(x['lag_p50_ms'], 3)} | {fmt(x['lag_p99_ms'], 3)} | {fmt(x['sent_req_s'], 0)} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
