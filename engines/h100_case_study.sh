#!/usr/bin/env bash
# Runs plans/h100_case_study.toml on a GPU machine that has torch and transformers but no internet
# (the lent H100): installs the carried wheels, builds the 7B-shaped random Llama once, then runs
# the plan with the runner binary built elsewhere.
#
#   engines/h100_case_study.sh [setup|run|all|multi]     (default: all)
#
# `multi` runs plans/multi_gpu.toml instead (issue 19: engines placed on the GPUs of one host,
# `[run] parallel`; needs 2 or more GPUs and accelerate for `--device-map auto`).
#
# Environment:
#   RUNNER   the runner binary (default: .devbin/runner, a stripped x86-64 release build)
#   WHEELS   a folder of wheels for `transformers serve` and torchao (default: .devbin/wheels),
#            made on a machine with internet by:
#              pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#                --abi cp312 --abi abi3 --abi none --platform manylinux2014_x86_64 \
#                --platform manylinux_2_28_x86_64 -d .devbin/wheels \
#                fastapi uvicorn pydantic openai torchao==0.18.0 accelerate
#   RESULTS  where the bundle goes (default: results)
set -euo pipefail
cd "$(dirname "$0")/.."
step="${1:-all}"
RUNNER="${RUNNER:-.devbin/runner}"
WHEELS="${WHEELS:-.devbin/wheels}"
RESULTS="${RESULTS:-results}"
MODELS=target/h100-models

setup() {
  if ! python3 -c 'import fastapi, uvicorn, openai, torchao' 2>/dev/null; then
    echo "== installing carried wheels from $WHEELS"
    python3 -m pip install --quiet --no-index --find-links "$WHEELS" fastapi uvicorn pydantic openai torchao
  fi
  if [[ "$step" == multi ]] && ! python3 -c 'import accelerate' 2>/dev/null; then
    echo "== installing accelerate from $WHEELS (for --device-map auto)"
    python3 -m pip install --quiet --no-index --find-links "$WHEELS" accelerate
  fi
  if [[ ! -f "$MODELS/llama-7b/model.safetensors" ]]; then
    echo "== building the 7B-shaped model in $MODELS"
    time python3 engines/make_tiny_models.py "$MODELS" --shape 7b --variants bf16 --threads "$(nproc)"
  fi
  du -sh "$MODELS/llama-7b"
}

run() {
  "$RUNNER" exec plans/h100_case_study.toml --results "$RESULTS"
}

multi() {
  nvidia-smi -L || true
  "$RUNNER" exec plans/multi_gpu.toml --results "$RESULTS"
}

case "$step" in
  setup) setup ;;
  run) run ;;
  all) setup; run ;;
  multi) setup; multi ;;
  *) echo "usage: $0 [setup|run|all|multi]" >&2; exit 2 ;;
esac
