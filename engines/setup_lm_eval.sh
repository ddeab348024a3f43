#!/usr/bin/env bash
# Adds lm-evaluation-harness (PyPI `lm-eval`) to the case-study environment, for the `command`
# quality step of plans/cpu_case_study.toml. A step of its own, with its own stamp, so that it
# never rebuilds the vLLM environment (setup_cpu_env.sh's PINS) and reruns take no time. Every
# package already in the environment is held at its version (a constraint from `uv pip freeze`):
# lm-eval only adds packages.
#
#   engines/setup_lm_eval.sh "$(engines/setup_cpu_env.sh)"
set -euo pipefail

ENV_DIR="${1:?usage: setup_lm_eval.sh PYTHON_ENV_DIR}"
PIN="lm-eval[api]==0.4.13"
STAMP="$ENV_DIR/.runner-lm-eval-stamp"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PIN" ]]; then
  exit 0
fi
export PATH="$HOME/.local/bin:$PATH"
log() { echo "setup_lm_eval: $*" >&2; }
held="$(mktemp)"
trap 'rm -f "$held"' EXIT
uv pip freeze --python "$ENV_DIR/bin/python" | grep -v '^-e ' >"$held"
log "installing $PIN into $ENV_DIR (existing packages held)"
uv pip install --quiet --python "$ENV_DIR/bin/python" --constraint "$held" "$PIN" >&2
"$ENV_DIR/bin/python" -c 'import lm_eval, datasets' >&2
echo "$PIN" >"$STAMP"
