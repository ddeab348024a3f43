"""Tests of engines/check_case_study.py --deaths: which bundles make engines/cpu_case_study.sh
run the plan once more (an engine failed), and what it prints of the failure."""

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import check_case_study as ccs  # noqa: E402


def bundle(root: Path, engines, logs=None) -> Path:
    (root / "logs").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"engines": engines}))
    for name, text in (logs or {}).items():
        (root / "logs" / name).write_text(text)
    return root


def deaths(root: Path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = ccs.deaths(root)
    return rc, out.getvalue()


class Deaths(unittest.TestCase):
    def test_a_bundle_whose_engines_all_stopped_is_not_run_again(self):
        with tempfile.TemporaryDirectory() as d:
            b = bundle(Path(d), [{"name": "a", "status": "stopped"}, {"name": "b", "status": "stopped"}])
            self.assertEqual(deaths(b), (1, ""))

    def test_a_failed_engine_is_named_with_its_failure_and_the_end_of_its_log(self):
        log = "".join(f"line {i}\n" for i in range(100))
        with tempfile.TemporaryDirectory() as d:
            b = bundle(Path(d), [
                {"name": "hf", "status": "stopped"},
                {"name": "vllm-awq", "status": "failed", "log": "logs/vllm-awq.log",
                 "failure": "engine `vllm-awq` stopped listening on its port 36323 during cell vllm-awq.chat.c1"},
            ], {"vllm-awq.log": log})
            rc, out = deaths(b)
        self.assertEqual(rc, 0)
        self.assertIn("engine vllm-awq failed: engine `vllm-awq` stopped listening", out)
        self.assertNotIn("engine hf", out)
        self.assertIn("  | line 99\n", out)
        self.assertIn(f"  | line {100 - ccs.LOG_LINES}\n", out)
        self.assertNotIn(f"  | line {99 - ccs.LOG_LINES}\n", out)

    def test_without_its_log_file_the_recorded_tail_is_printed(self):
        with tempfile.TemporaryDirectory() as d:
            b = bundle(Path(d), [{"name": "e", "status": "failed", "failure": "exited with 1",
                                  "log_tail": "Traceback\nRuntimeError: boom"}])
            rc, out = deaths(b)
        self.assertEqual(rc, 0)
        self.assertIn("  | RuntimeError: boom\n", out)


if __name__ == "__main__":
    unittest.main()
