#!/usr/bin/env python3
"""Checks a bundle of plans/cpu_case_study.toml (CI runs it after the plan):

  * the run is complete and every cell was measured (status ok, valid, no failed request);
  * every engine got ready, was stopped, and has its memory recorded (idle and per cell);
  * both vLLM engines' output tokens/s beat the HF baseline's at concurrency 16, per workload;
  * vLLM's own /metrics were scraped during its cells;
  * the quality steps: perplexity and agreement figures present for every engine, vLLM AWQ's
    agreement with the HF baseline below vLLM BF16's, lm-eval's accuracy read, every gate
    evaluated.
  * the exact-length workload: every prompt the client counted at exactly its length with the
    model's tokenizer, every request answered with `usage.prompt_tokens`, and the difference
    (server minus client: the chat template's tokens) printed and the same for every request.

    python3 engines/check_case_study.py BUNDLE_DIR

Prints what it checked and exits 1 listing every failed check.

    python3 engines/check_case_study.py --deaths BUNDLE_DIR

Prints every engine that failed in the bundle (launch, death under a cell, or a port it
stopped listening on), with its failure and log tail, and exits 0 when there was one, else 1:
engines/cpu_case_study.sh runs the plan once more after such a run (a crash of the engine's, not
a result of the runner's), keeping the first bundle.
"""

import json
import sys
from pathlib import Path

BASELINE = "hf-bf16"
CANDIDATES = ("vllm-bf16", "vllm-awq")
LEVEL = 16
# Lines of a failed engine's log that --deaths prints.
LOG_LINES = 60


def check_quality(manifest, check):
    """The [[quality]] steps: numbers present, AWQ's agreement with the baseline below BF16's,
    every gate evaluated."""
    records = {(r["step"], r["engine"]): r for r in manifest.get("quality", [])}
    engines = [e["name"] for e in manifest["engines"]]
    for e in engines:
        r = records.get(("perplexity", e)) or {}
        p = (r.get("perplexity") or {}).get("perplexity")
        check(r.get("status") == "ok" and p is not None and p > 0,
              f"quality perplexity on {e}: {r.get('status')}, perplexity {p}"
              + (f" ({r.get('reason')})" if r.get("reason") else ""))
        if e == BASELINE:
            continue
        r = records.get(("agreement", e)) or {}
        a = r.get("agreement") or {}
        check(r.get("status") == "ok" and a.get("prompts", 0) > 0
              and a.get("mean_abs_logprob_diff") is not None,
              f"quality agreement on {e}: {r.get('status')}, agreement {a.get('agreement')}, "
              f"common prefix {a.get('mean_common_prefix')} {a.get('unit')}, "
              f"mean |logprob diff| {a.get('mean_abs_logprob_diff')}")
    bf16 = (records.get(("agreement", "vllm-bf16")) or {}).get("agreement") or {}
    awq = (records.get(("agreement", "vllm-awq")) or {}).get("agreement") or {}
    key = lambda a: (a.get("agreement", 1.0), a.get("mean_common_prefix", 0.0))
    check(bool(bf16) and bool(awq) and key(awq) < key(bf16),
          f"quality agreement: vllm-awq {key(awq)} below vllm-bf16 {key(bf16)} "
          "(share identical, then mean common prefix)")
    r = records.get(("lm-eval", "vllm-bf16")) or {}
    c = r.get("command") or {}
    check(r.get("status") == "ok" and c.get("metric") is not None and c.get("version"),
          f"quality lm-eval on vllm-bf16: {r.get('status')}, acc {c.get('metric')}, "
          f"{c.get('version')}" + (f" ({r.get('reason')})" if r.get("reason") else ""))
    gated = [g for r in records.values() for g in r.get("gates", [])]
    check(bool(gated) and all(g.get("passed") is not None for g in gated),
          f"quality gates evaluated: {len(gated)}, "
          f"{sum(1 for g in gated if g.get('passed'))} passed")


def deaths(bundle) -> int:
    manifest = json.loads((bundle / "manifest.json").read_text())
    died = [e for e in manifest["engines"] if e.get("status") == "failed"]
    for e in died:
        print(f"engine {e['name']} failed: {e.get('failure')}")
        for r in e.get("restarts") or []:
            print(f"  restarted after {r.get('after_cell')}: {r.get('failure')}")
        log = bundle / e["log"] if e.get("log") else None
        tail = (log.read_text(errors="replace").splitlines()[-LOG_LINES:] if log and log.is_file()
                else (e.get("log_tail") or "").splitlines())
        for line in tail:
            print(f"  | {line}")
        if log:
            print(f"  (the last {len(tail)} lines of {log})")
    return 0 if died else 1


def main(argv) -> int:
    if len(argv) == 3 and argv[1] == "--deaths":
        return deaths(Path(argv[2]))
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bundle = Path(argv[1])
    manifest = json.loads((bundle / "manifest.json").read_text())
    cells = {}
    for index in manifest["cells"]:
        cells[index["id"]] = json.loads((bundle / "cells" / f"{index['id']}.summary.json").read_text())
    failed = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failed.append(what)

    check(manifest["status"] == "complete", f"run status is complete ({manifest['status']})")
    for cid, c in sorted(cells.items()):
        m = c.get("metrics") or {}
        check(c["status"] == "ok" and c.get("valid", True) and m.get("requests_failed", 1) == 0
              and m.get("requests_ok", 0) > 0,
              f"cell {cid}: {c['status']}, {m.get('requests_ok')} ok, "
              f"{m.get('requests_failed')} failed, valid={c.get('valid')}"
              + (f" ({c.get('reason')})" if c.get("reason") else ""))
        rss = (c.get("resources") or {}).get("rss_peak_bytes")
        check(bool(rss), f"cell {cid}: engine memory recorded ({rss} bytes RSS peak)")
    for e in manifest["engines"]:
        idle = (e.get("idle") or {}).get("rss_peak_bytes")
        check(e.get("ready_s") is not None and e["status"] == "stopped",
              f"engine {e['name']}: ready in {e.get('ready_s')} s, {e['status']}")
        check(bool(idle), f"engine {e['name']}: idle memory recorded ({idle} bytes)")
        if e["name"].startswith("vllm"):
            check(bool(e.get("metrics_url")), f"engine {e['name']}: /metrics scraped")

    check_prompt_tokens(bundle, cells, check)

    # Throughput at concurrency 16, for the workloads that run that level.
    workloads = sorted({c["workload"] for c in cells.values() if c["level"] == {"concurrency": LEVEL}})
    for w in workloads:
        def tok(engine):
            c = cells.get(f"{engine}.{w}.c{LEVEL}") or {}
            return (c.get("metrics") or {}).get("output_tok_per_s", 0.0)

        base = tok(BASELINE)
        for cand in CANDIDATES:
            check(tok(cand) > base,
                  f"{w} at concurrency {LEVEL}: {cand} {tok(cand):.1f} tok/s > {BASELINE} "
                  f"{base:.1f} tok/s ({tok(cand) / base if base else float('inf'):.2f}x)")
    check_quality(manifest, check)
    if failed:
        print(f"\n{len(failed)} check(s) failed", file=sys.stderr)
        return 1
    print(f"\nall checks passed: {bundle}")
    return 0


EXACT = "exact_tokens"
EXACT_LEN = 96


def check_prompt_tokens(bundle, cells, check):
    """The exact-length workload: client counts exact, server counts present, their difference
    constant per cell; prints the difference per engine."""
    mine = {cid: c for cid, c in cells.items() if c["workload"] == EXACT}
    check(bool(mine), f"workload {EXACT} was run ({len(mine)} cells)")
    diffs = {}
    for cid, c in sorted(mine.items()):
        m = c.get("metrics") or {}
        check(m.get("client_prompt_tokens_mean") == EXACT_LEN,
              f"cell {cid}: the client counted every prompt at {EXACT_LEN} tokens "
              f"(mean {m.get('client_prompt_tokens_mean')})")
        records = [json.loads(l) for l in
                   (bundle / "cells" / f"{cid}.records.jsonl").read_text().splitlines() if l.strip()]
        ok = [r for r in records if r.get("ok")]
        served = [r for r in ok if r.get("input_tokens") is not None]
        check(bool(ok) and len(served) == len(ok),
              f"cell {cid}: {len(served)} of {len(ok)} successful requests carry usage.prompt_tokens")
        per = sorted({r["input_tokens"] - r["client_prompt_tokens"] for r in served
                      if r.get("client_prompt_tokens") is not None})
        check(len(per) == 1,
              f"cell {cid}: server usage.prompt_tokens - client count = {per} "
              f"(server mean {m.get('server_prompt_tokens_mean')}, client {m.get('client_prompt_tokens_mean')}, "
              f"mean difference {m.get('prompt_tokens_diff_mean')})")
        if per:
            diffs[c["engine"]] = per
    for engine, d in sorted(diffs.items()):
        n = d[0] if len(d) == 1 else d
        print(f"note {EXACT}: {engine} counts {n} more prompt tokens than the client "
              f"(its chat template around one {EXACT_LEN}-token message)")
    vllm = {tuple(d) for e, d in diffs.items() if e.startswith("vllm")}
    check(len(vllm) <= 1, f"{EXACT}: both vLLM engines add the same template tokens ({sorted(vllm)})")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
