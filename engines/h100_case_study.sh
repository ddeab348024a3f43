#!/usr/bin/env bash
# Runs plans/h100_case_study.toml on a GPU machine that has torch and transformers but no internet
# (the lent H100): installs the carried wheels, builds the 7B-shaped random Llama once, then runs
# the plan with the runner binary built elsewhere.
#
#   engines/h100_case_study.sh [setup|run|all]     (default: all)
#
# Environment:
#   RUNNER   the runner binary (default: .devbin/runner, a stripped x86-64 release build)
#   WHEELS   a folder of wheels for `transformers serve` and torchao (default: .devbin/wheels),
#            made on a machine with internet by:
#              pip download --only-binary=:all: --python-version 3.12 --implementation cp \
#                --abi cp312 --abi abi3 --abi none --platform manylinux2014_x86_64 \
#                --platform manylinux_2_28_x86_64 -d .devbin/wheels \
#                fastapi uvicorn pydantic openai torchao==0.18.0
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
  if [[ ! -f "$MODELS/llama-7b/model.safetensors" ]]; then
    echo "== building the 7B-shaped model in $MODELS"
    time python3 engines/make_tiny_models.py "$MODELS" --shape 7b --variants bf16 --threads "$(nproc)"
  fi
  du -sh "$MODELS/llama-7b"
}

run() {
  "$RUNNER" exec plans/h100_case_study.toml --results "$RESULTS"
}

case "$step" in
  setup) setup ;;
  run) run ;;
  all) setup; run ;;
  *) echo "usage: $0 [setup|run|all]" >&2; exit 2 ;;
esac
