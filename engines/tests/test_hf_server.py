"""Tests of engines/hf_server.py against a tiny model built by make_tiny_models.py, with the
server running as its own process on a free port, as `runner` launches it."""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
import make_tiny_models as mtm  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        mtm.main([cls.tmp.name, "--variants", "bf16"])
        cls.port = free_port()
        cls.log = open(Path(cls.tmp.name) / "server.log", "w+")
        cls.proc = subprocess.Popen(
            [sys.executable, str(HERE / "hf_server.py"), "--model",
             str(Path(cls.tmp.name) / "tiny-llama"), "--port", str(cls.port), "--threads", "1",
             "--served-model-name", "tiny", "--device", "cpu", "--dtype", "float32"],
            stdout=cls.log, stderr=subprocess.STDOUT)
        # Readiness: the server listens only once the model is loaded; poll its health route.
        deadline = time.monotonic() + 120
        while True:
            if cls.proc.poll() is not None:
                cls.log.seek(0)
                raise RuntimeError(f"hf_server exited: {cls.log.read()}")
            try:
                if cls.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hf_server not healthy in 120 s")
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(10)
        cls.log.close()
        cls.tmp.cleanup()

    @classmethod
    def conn(cls):
        return http.client.HTTPConnection("127.0.0.1", cls.port, timeout=60)

    @classmethod
    def get(cls, path):
        c = cls.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def post(self, path, body):
        c = self.conn()
        try:
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def sse(self, path, body):
        """The data payloads of a streamed response, in order."""
        status, raw = self.post(path, body)
        self.assertEqual(status, 200, raw)
        events = [e[len("data: "):] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        return [json.loads(e) for e in events[:-1]]

    def test_completion_with_ignore_eos_has_exact_length(self):
        status, raw = self.post("/v1/completions", {"model": "tiny", "prompt": "Hello world",
                                                    "max_tokens": 24, "ignore_eos": True,
                                                    "temperature": 0})
        self.assertEqual(status, 200, raw)
        out = json.loads(raw)
        self.assertEqual(out["usage"]["completion_tokens"], 24)
        self.assertEqual(out["choices"][0]["finish_reason"], "length")
        self.assertGreater(len(out["choices"][0]["text"]), 0)

    def test_logprobs_and_echo_for_quality_steps(self):
        # Generated tokens' logprobs (runner's agreement step), greedy: the same both times.
        body = {"model": "tiny", "prompt": "Hello world", "max_tokens": 6, "ignore_eos": True,
                "temperature": 0, "logprobs": 1}
        outs = []
        for _ in range(2):
            status, raw = self.post("/v1/completions", body)
            self.assertEqual(status, 200, raw)
            outs.append(json.loads(raw)["choices"][0])
        lp = outs[0]["logprobs"]
        self.assertEqual(len(lp["tokens"]), 6)
        self.assertEqual("".join(lp["tokens"]), outs[0]["text"])
        self.assertTrue(all(x <= 0 for x in lp["token_logprobs"]))
        self.assertEqual(outs[0], outs[1])
        # Prompt logprobs with echo (the perplexity step): the first prompt token has none.
        status, raw = self.post("/v1/completions", {"model": "tiny", "prompt": "Hello world again",
                                                    "max_tokens": 1, "temperature": 0,
                                                    "echo": True, "logprobs": 1})
        self.assertEqual(status, 200, raw)
        out = json.loads(raw)
        lps = out["choices"][0]["logprobs"]["token_logprobs"]
        n = out["usage"]["prompt_tokens"]
        self.assertEqual(len(lps), n + 1)
        self.assertIsNone(lps[0])
        self.assertTrue(all(x is not None and x <= 0 for x in lps[1:]))
        self.assertTrue(out["choices"][0]["text"].startswith("Hello world again"))
        # Tokens as ids, as vLLM's `return_tokens_as_token_ids` gives them.
        status, raw = self.post("/v1/completions", {**body, "return_tokens_as_token_ids": True})
        self.assertEqual(status, 200, raw)
        toks = json.loads(raw)["choices"][0]["logprobs"]["tokens"]
        self.assertEqual(len(toks), 6)
        self.assertTrue(all(t.startswith("token_id:") and t[9:].isdigit() for t in toks), toks)
        # Chat logprobs.
        status, raw = self.post("/v1/chat/completions", {
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "ignore_eos": True, "temperature": 0, "logprobs": True})
        self.assertEqual(status, 200, raw)
        content = json.loads(raw)["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), 4)

    def test_streamed_chat_counts_match_usage(self):
        events = self.sse("/v1/chat/completions", {
            "model": "tiny", "messages": [{"role": "user", "content": "Summarize: a b c"}],
            "max_tokens": 12, "min_tokens": 12, "stream": True,
            "stream_options": {"include_usage": True}})
        self.assertEqual(events[0]["choices"][0]["delta"]["role"], "assistant")
        content = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
        self.assertGreaterEqual(len(content), 1)
        self.assertLessEqual(len(content), 12)  # incomplete characters merge into the next token
        self.assertEqual(events[-2]["choices"][0]["finish_reason"], "length")
        usage = events[-1]["usage"]
        self.assertEqual(events[-1]["choices"], [])
        self.assertEqual(usage["completion_tokens"], 12)
        self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + 12)

    def test_stream_without_usage_option_has_no_usage_chunk(self):
        events = self.sse("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 3,
                                              "ignore_eos": True, "stream": True})
        self.assertTrue(all("usage" not in e for e in events))
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "length")

    def test_errors_name_the_field(self):
        status, raw = self.post("/v1/completions", {"model": "tiny", "prompt": "x",
                                                    "max_tokens": 0})
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(raw)["error"]["param"], "max_tokens")
        status, raw = self.post("/v1/chat/completions", {"model": "tiny", "messages": []})
        self.assertEqual((status, json.loads(raw)["error"]["param"]), (400, "messages"))
        status, raw = self.post("/v1/completions", {"model": "other", "prompt": "x"})
        self.assertEqual(status, 404)
        self.assertIn("`tiny`", json.loads(raw)["error"]["message"])
        status, _ = self.post("/v1/nothing", {})
        self.assertEqual(status, 404)

    def test_models_and_metrics(self):
        status, raw = self.get("/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(raw)["data"][0]["id"], "tiny")
        status, raw = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn("hf_server:num_requests_running{model_name=\"tiny\"}", raw.decode())

    def test_requests_run_one_at_a_time_and_a_dropped_client_frees_the_lock(self):
        # A client that leaves mid-stream must not keep the one generation slot busy.
        c = self.conn()
        c.request("POST", "/v1/completions", json.dumps({
            "model": "tiny", "prompt": "x", "max_tokens": 3000, "ignore_eos": True,
            "stream": True}), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.fp.readline()  # the first chunk arrived: generation is running
        seen_waiting = []

        def second():
            seen_waiting.append(self.post("/v1/completions", {
                "model": "tiny", "prompt": "y", "max_tokens": 2, "ignore_eos": True})[0])

        t = threading.Thread(target=second)
        t.start()
        deadline = time.monotonic() + 30
        while b"num_requests_waiting{model_name=\"tiny\"} 1" not in self.get("/metrics")[1]:
            self.assertLess(time.monotonic(), deadline, "second request never queued")
            time.sleep(0.05)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        t.join(60)
        self.assertFalse(t.is_alive(), "the dropped stream kept the lock")
        self.assertEqual(seen_waiting, [200])


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    unittest.main()
