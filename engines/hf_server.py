#!/usr/bin/env python3
"""The HuggingFace transformers baseline engine: one request at a time through `model.generate`.

This is the naive server the serving guides start from (no batching, no paged KV cache), written to
be a correct OpenAI-compatible endpoint so it can be measured like any other engine:

  POST /v1/completions, POST /v1/chat/completions  (non-streaming and SSE streaming, with `usage`;
       `stream_options.include_usage` adds the usage chunk; `ignore_eos` and `min_tokens` become
       `min_new_tokens`, so output lengths can be fixed)
  GET  /health, GET /v1/models, GET /metrics (Prometheus text: running, waiting, tokens)

    python engines/hf_server.py --model DIR --port 8000 [--dtype bfloat16] [--device cpu]
        [--threads 1] [--quantize int4|int8] [--served-model-name NAME]

Offline only (HF_HUB_OFFLINE is forced): --model is a local folder. Requests queue on one lock, so
concurrency shows up as waiting time, exactly as in the guides' baseline. Only the Python standard
library's HTTP server is used, so the server runs wherever torch and transformers are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


# Fields of the OpenAI request bodies this server reads; any other field is accepted and ignored,
# as vLLM does (`n` > 1, `tools` are refused since they would change the work done). `logprobs`
# (the chosen token's only: `top_logprobs` is refused) and `echo` are served without streaming,
# for runner's quality steps (agreement, perplexity).
REFUSED = ("top_logprobs", "tools", "tool_choice", "response_format")


class Engine:
    """The model, its tokenizer, the one-at-a-time lock and the counters /metrics reports."""

    def __init__(self, args):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if args.threads:
            torch.set_num_threads(args.threads)
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {
            "auto": "auto",
            "float32": torch.float32,
            "float16": torch.float16,
            "bfloat16": torch.bfloat16,
        }[args.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
        # --device-map auto: the layers spread over every visible GPU (accelerate places them);
        # inputs then go to `device`, where the embedding is.
        placed = {"device_map": args.device_map} if args.device_map else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(
                args.model, dtype=dtype, local_files_only=True, **placed
            )
        except TypeError:  # transformers 4.x names it torch_dtype
            model = AutoModelForCausalLM.from_pretrained(
                args.model, torch_dtype=dtype, local_files_only=True, **placed
            )
        if not args.device_map:
            model.to(device)
        else:
            print(f"hf_server: device map {getattr(model, 'hf_device_map', None)}", file=sys.stderr)
        model.eval()
        if args.quantize:
            quantize(model, args.quantize)
            if device.startswith("cuda"):
                # The full-precision weights are gone; hand their cached blocks back so the
                # memory the engine holds is what it uses.
                torch.cuda.empty_cache()
        self.model = model
        self.device = device
        self.name = args.served_model_name or args.model
        self.lock = threading.Lock()
        self.stats_lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        eos = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos

    # -- request -> token ids ------------------------------------------------------------------

    def prompt_ids(self, body: dict, chat: bool) -> list[int]:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest("`messages` must be a non-empty list", "messages")
            for m in messages:
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise BadRequest("each message needs `role` and `content`", "messages")
                if not isinstance(m["content"], str):  # content parts: keep the text parts
                    m["content"] = "".join(
                        p.get("text", "") for p in m["content"] if isinstance(p, dict)
                    )
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if not isinstance(prompt, str):
            raise BadRequest("`prompt` must be a string, one string, or a list of token ids", "prompt")
        return self.tokenizer(prompt)["input_ids"]

    def generation_kwargs(self, body: dict) -> dict:
        for f in REFUSED:
            if body.get(f):
                raise BadRequest(f"`{f}` is not supported by this server", f)
        if body.get("n", 1) != 1:
            raise BadRequest("only `n` = 1 is supported", "n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("`max_tokens` must be a positive integer", "max_tokens")
        min_tokens = body.get("min_tokens", 0) or 0
        if not isinstance(min_tokens, int) or min_tokens < 0:
            raise BadRequest("`min_tokens` must be a non-negative integer", "min_tokens")
        if body.get("ignore_eos"):
            min_tokens = max_tokens
        temperature = body.get("temperature", 1.0)
        if temperature is None:
            temperature = 1.0
        kw = dict(
            max_new_tokens=max_tokens,
            min_new_tokens=min(min_tokens, max_tokens),
            pad_token_id=self.pad_id,
        )
        if temperature and temperature > 0:
            kw.update(do_sample=True, temperature=float(temperature))
            if body.get("top_p") is not None:
                kw["top_p"] = float(body["top_p"])
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if body.get("seed") is not None:
            self.torch.manual_seed(int(body["seed"]))
        return kw

    # -- generation ------------------------------------------------------------------------------

    def prompt_logprobs(self, ids: list[int]) -> list:
        """The logprob of each prompt token given the ones before it (None for the first), from
        one forward pass under the lock."""
        torch = self.torch
        with self.lock:
            with torch.inference_mode():
                input_ids = torch.tensor([ids], device=self.device)
                logits = self.model(input_ids=input_ids).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1)
                out = [None]
                for i in range(1, len(ids)):
                    out.append(float(lp[i - 1, ids[i]]))
        return out

    def generate(self, ids: list[int], kw: dict, on_token, cancelled: threading.Event,
                 logprobs: list | None = None) -> str:
        """Runs one generation under the lock, calling on_token(token_id) for each new token.
        With `logprobs` (a list), appends each generated token's logprob to it. Returns the
        finish reason."""
        import transformers

        torch = self.torch
        engine = self

        class Streamer(transformers.generation.streamers.BaseStreamer):
            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() hands the prompt over first
                    self.prompt_seen = True
                    return
                for t in value.reshape(-1).tolist():
                    on_token(int(t))

            def end(self):
                pass

        class Stop(transformers.StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        with self.stats_lock:
            self.waiting += 1
        self.lock.acquire()
        with self.stats_lock:
            self.waiting -= 1
            self.running += 1
            self.requests_total += 1
            self.prompt_tokens_total += len(ids)
        try:
            input_ids = torch.tensor([ids], device=self.device)
            extra = {}
            if logprobs is not None:
                extra = dict(output_logits=True, return_dict_in_generate=True)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=Streamer(),
                    stopping_criteria=transformers.StoppingCriteriaList([Stop()]),
                    **kw,
                    **extra,
                )
            if logprobs is not None:
                seq = out.sequences
                for step, logits in enumerate(out.logits):
                    lp = torch.log_softmax(logits[0].float(), dim=-1)
                    logprobs.append(float(lp[int(seq[0, len(ids) + step])]))
                out = seq
            new = out.shape[1] - len(ids)
            last = int(out[0, -1]) if new > 0 else None
            eos = engine.tokenizer.eos_token_id
            return "stop" if last is not None and last == eos and new < kw["max_new_tokens"] else "length"
        finally:
            with self.stats_lock:
                self.running -= 1
            self.lock.release()

    def count_generated(self, n: int):
        with self.stats_lock:
            self.generation_tokens_total += n

    def metrics_text(self) -> str:
        with self.stats_lock:
            rows = [
                ("hf_server:num_requests_running", "gauge", self.running),
                ("hf_server:num_requests_waiting", "gauge", self.waiting),
                ("hf_server:request_success_total", "counter", self.requests_total),
                ("hf_server:prompt_tokens_total", "counter", self.prompt_tokens_total),
                ("hf_server:generation_tokens_total", "counter", self.generation_tokens_total),
            ]
        out = []
        for name, kind, value in rows:
            out.append(f"# TYPE {name} {kind}\n{name}{{model_name=\"{self.name}\"}} {value}\n")
        return "".join(out)


class Detokenizer:
    """Incremental decoding: text deltas per token, holding back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


def quantize(model, how: str):
    """Weight-only quantization with torchao (int4 needs a CUDA device and bf16 or fp16)."""
    try:
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError as e:
        sys.exit(f"hf_server: --quantize {how} needs torchao ({e})")
    if how == "int4":
        try:
            # tinygemm's tile-packed layout runs on PyTorch's own int4 kernel; torchao's default
            # layout needs the separate `mslk` kernels package.
            config = Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
        except TypeError:  # torchao before 0.14 has one layout, the tinygemm one
            config = Int4WeightOnlyConfig(group_size=128)
    else:
        config = Int8WeightOnlyConfig()
    quantize_(model, config)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: Engine = None  # set in main()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    # -- plumbing ----------------------------------------------------------------------------------

    def send_json(self, status: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status: int, message: str, param: str | None = None):
        kind = "invalid_request_error" if status < 500 else "server_error"
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param,
                                          "code": status}})

    def chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, obj) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self.chunk(f"data: {payload}\n\n".encode())

    # -- routes ------------------------------------------------------------------------------------

    def do_GET(self):
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": self.engine.name, "object": "model", "owned_by": "hf_server",
                 "created": int(time.time())}]})
        elif self.path == "/metrics":
            data = self.engine.metrics_text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_error_json(404, f"no route {self.path}")

    def do_POST(self):
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            self.send_error_json(404, f"no route {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            model = body.get("model")
            if model is not None and model != self.engine.name:
                raise BadRequest(f"model `{model}` is not served here; this server serves "
                                 f"`{self.engine.name}`", "model", 404)
            ids = self.engine.prompt_ids(body, chat)
            kw = self.engine.generation_kwargs(body)
        except json.JSONDecodeError as e:
            self.send_error_json(400, f"the request body is not JSON: {e}")
            return
        except BadRequest as e:
            self.send_error_json(e.status, str(e), e.param)
            return
        stream = bool(body.get("stream"))
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        want_logprobs = body.get("logprobs") not in (None, False)
        echo = bool(body.get("echo")) and not chat
        if stream and (want_logprobs or echo):
            self.send_error_json(400, "`logprobs` and `echo` are served without streaming only",
                                 "logprobs" if want_logprobs else "echo")
            return
        if stream:
            self.stream(chat, ids, kw, usage_wanted)
        else:
            self.complete(chat, ids, kw, want_logprobs, echo,
                          bool(body.get("return_tokens_as_token_ids")))

    def envelope(self, chat: bool, rid: str, created: int) -> dict:
        return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created, "model": self.engine.name}

    def complete(self, chat: bool, ids: list[int], kw: dict, want_logprobs: bool = False,
                 echo: bool = False, token_ids: bool = False):
        detok = Detokenizer(self.engine.tokenizer)
        parts: list[str] = []
        generated: list[int] = []
        count = [0]

        def on_token(t):
            count[0] += 1
            generated.append(t)
            parts.append(detok.push(t))

        # vLLM's `return_tokens_as_token_ids`: each logprob's token as `token_id:N`.
        def names(token_list, texts):
            return [f"token_id:{t}" for t in token_list] if token_ids else texts

        lps: list | None = [] if want_logprobs else None
        finish = self.engine.generate(ids, kw, on_token, threading.Event(), lps)
        self.engine.count_generated(count[0])
        text = "".join(parts)
        logprobs = None
        if want_logprobs and chat:
            logprobs = {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                                     "top_logprobs": []}
                                    for t, lp in zip(names(generated, parts), lps)]}
        elif want_logprobs or echo:
            tokens, token_lps = [], []
            if echo:
                # The prompt's own tokens first, as vLLM gives them: the first has no logprob.
                pdetok = Detokenizer(self.engine.tokenizer)
                tokens = names(ids, [pdetok.push(t) for t in ids])
                token_lps = self.engine.prompt_logprobs(ids)
                text = pdetok.text + text
            tokens += names(generated, parts)
            token_lps += lps if lps is not None else [None] * len(parts)
            logprobs = {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": None,
                        "text_offset": []}
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        out = self.envelope(chat, rid, int(time.time()))
        out["object"] = "chat.completion" if chat else "text_completion"
        choice = {"index": 0, "finish_reason": finish, "logprobs": logprobs}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out["choices"] = [choice]
        out["usage"] = {"prompt_tokens": len(ids), "completion_tokens": count[0],
                        "total_tokens": len(ids) + count[0]}
        self.send_json(200, out)

    def stream(self, chat: bool, ids: list[int], kw: dict, usage_wanted: bool):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        env = self.envelope(chat, rid, int(time.time()))
        detok = Detokenizer(self.engine.tokenizer)
        events: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        count = [0]

        def on_token(t):
            count[0] += 1
            events.put(("delta", detok.push(t)))

        def run():
            try:
                events.put(("finish", self.engine.generate(ids, kw, on_token, cancelled)))
            except Exception as e:  # reported in the stream, as OpenAI servers do
                events.put(("error", f"{type(e).__name__}: {e}"))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            if chat:
                self.event({**env, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                      "content": ""},
                                                "finish_reason": None}]})
            pending = ""
            while True:
                kind, value = events.get()
                if kind == "delta":
                    pending += value
                    if not pending:
                        continue  # an incomplete character: sent with the next token
                    piece = {"delta": {"content": pending}} if chat else {"text": pending}
                    self.event({**env, "choices": [{"index": 0, **piece, "finish_reason": None}]})
                    pending = ""
                elif kind == "finish":
                    piece = {"delta": {}} if chat else {"text": pending}
                    self.event({**env, "choices": [{"index": 0, **piece, "finish_reason": value}]})
                    break
                else:
                    self.event({"error": {"message": value, "type": "server_error"}})
                    break
            if usage_wanted:
                self.event({**env, "choices": [], "usage": {
                    "prompt_tokens": len(ids), "completion_tokens": count[0],
                    "total_tokens": len(ids) + count[0]}})
            self.event("[DONE]")
            self.chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            cancelled.set()  # the client left: stop generating for it
        finally:
            worker.join()
            self.engine.count_generated(count[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="HuggingFace transformers baseline server "
                                             "(one request at a time, OpenAI-compatible)")
    ap.add_argument("--model", required=True, help="local model folder")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--device-map", default=None,
                    help="`auto`: spread the model over every visible GPU (needs accelerate)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 is fastest on a 2-core machine)")
    ap.add_argument("--quantize", choices=["int4", "int8"], default=None,
                    help="torchao weight-only quantization after loading")
    ap.add_argument("--served-model-name", default=None,
                    help="the model name clients send (default: --model as given)")
    args = ap.parse_args(argv)

    started = time.time()
    Handler.engine = Engine(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"hf_server: serving {Handler.engine.name} on http://{args.host}:{args.port} "
          f"({Handler.engine.device}, loaded in {time.time() - started:.1f} s)", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
