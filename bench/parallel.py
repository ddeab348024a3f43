#!/usr/bin/env python3
"""`just bench-parallel`: four single-GPU engines on four GPUs, alone and side by side.

Four built-in engines (fixed timing: --ttft-ms 50 --itl-ms 10, 64 output tokens, concurrency 4)
are placed on four fake GPUs (RUNNER_FAKE_GPU naming a directory of four device files), one GPU
each (`gpus = 1`). Each engine is run alone (`runner exec PLAN --engine NAME`), then all four
with `[run] parallel = true`. Printed: each engine's wall time alone, the longest, the sum (what
a sequential run costs), the parallel run's wall time, and parallel / longest alone (the target
of issue 18: at most 1.2). Wall times are those of the whole `runner exec` process: launch,
readiness, the cell, teardown and the report.

    python3 bench/parallel.py [--requests N] [--runs N] [--runner PATH]

The figure is a benchmark, not a test: a loaded machine moves it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ["e0", "e1", "e2", "e3"]


def plan(parallel: bool, requests: int) -> str:
    engines = "".join(
        f"""
[[engine]]
name = "{name}"
gpus = 1
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 50 --itl-ms 10"
model = "m"
[engine.health]
interval = "20ms"
"""
        for name in ENGINES
    )
    return f"""schema = 1
name = "parallel-bench"
[run]
parallel = {"true" if parallel else "false"}
[gpu]
interval = "100ms"
{engines}
[[workload]]
name = "w"
prompts = ["hello there"]
max_tokens = 64
[workload.load]
concurrency = [4]
requests = {requests}
warmup = 0
max_dispatch_lag = "10s"
"""


def timed(runner: Path, work: Path, plan_file: str, *extra: str) -> float:
    env = {"RUNNER_FAKE_GPU": str(work / "gpu"), "PATH": "/usr/bin:/bin"}
    t0 = time.monotonic()
    out = subprocess.run(
        [str(runner), "exec", plan_file, "--results", "results", "--quiet", *extra],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"runner exec {plan_file} {' '.join(extra)} failed ({out.returncode}):\n{out.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=80, help="requests per engine (default 80)")
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs (default 3)")
    ap.add_argument("--runner", type=Path, default=ROOT / "target" / "release" / "runner")
    args = ap.parse_args()
    args.runner = args.runner.resolve()
    if not args.runner.is_file():
        sys.exit(f"{args.runner} is missing: cargo build --release --locked")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "gpu").mkdir()
        for i in range(4):
            (work / "gpu" / str(i)).write_text("0\n")
        (work / "alone.toml").write_text(plan(False, args.requests))
        (work / "parallel.toml").write_text(plan(True, args.requests))
        alone = {e: [] for e in ENGINES}
        side_by_side = []
        for _ in range(args.runs):
            for e in ENGINES:
                alone[e].append(timed(args.runner, work, "alone.toml", "--engine", e))
            side_by_side.append(timed(args.runner, work, "parallel.toml"))
    med = {e: statistics.median(v) for e, v in alone.items()}
    longest = max(med.values())
    par = statistics.median(side_by_side)
    print(f"four engines, {args.requests} requests each at concurrency 4, median of {args.runs} runs")
    for e in ENGINES:
        print(f"  {e} alone on its GPU      {med[e]:7.2f} s")
    print(f"  longest alone            {longest:7.2f} s")
    print(f"  sum (one after another)  {sum(med.values()):7.2f} s")
    print(f"  all four side by side    {par:7.2f} s")
    print(f"  parallel / longest alone {par / longest:7.2f}x  (target: at most 1.20x)")


if __name__ == "__main__":
    main()
