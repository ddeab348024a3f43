//! Stream transcripts written from the formats real servers document (vLLM, SGLang, TGI,
//! llama.cpp, Ollama, OpenAI) and from the SSE specification's framing rules. Each must give
//! the expected verdict and counts; splitting it at every byte boundary, or reading it one
//! byte at a time, must change nothing; and `runner probe` against `runner engine replay` of
//! it (real sockets, 7-byte writes) must report the same.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use runner::load::client::{blank_record, Failure, StreamReader};
use runner::metrics::record::{ErrorClass, TokenSource};

struct Expect {
    file: &'static str,
    /// `None` for success, else the class and a piece of the server's message.
    error: Option<(ErrorClass, &'static str)>,
    output_tokens: u64,
    source: TokenSource,
    chunks: u64,
    finish: Option<&'static str>,
    text: &'static str,
    input_tokens: Option<u64>,
}

const fn ok(
    file: &'static str,
    output_tokens: u64,
    source: TokenSource,
    chunks: u64,
    finish: &'static str,
    text: &'static str,
    input_tokens: Option<u64>,
) -> Expect {
    Expect {
        file,
        error: None,
        output_tokens,
        source,
        chunks,
        finish: Some(finish),
        text,
        input_tokens,
    }
}

const fn fails(file: &'static str, class: ErrorClass, message: &'static str) -> Expect {
    Expect {
        file,
        error: Some((class, message)),
        output_tokens: 0,
        source: TokenSource::Chunks,
        chunks: 0,
        finish: None,
        text: "",
        input_tokens: None,
    }
}

use TokenSource::{Chunks, Usage};

const CASES: &[Expect] = &[
    ok(
        "vllm_empty_deltas.sse",
        4,
        Usage,
        3,
        "length",
        "😀 ok!",
        Some(9),
    ),
    ok("vllm_no_text.sse", 3, Usage, 0, "length", "", Some(9)),
    ok(
        "vllm_chat.sse",
        3,
        Usage,
        3,
        "length",
        "Hello there!",
        Some(12),
    ),
    ok(
        "vllm_completions.sse",
        4,
        Usage,
        4,
        "length",
        " Paris is the capital",
        Some(5),
    ),
    ok("vllm_reasoning.sse", 4, Usage, 3, "stop", "42", Some(9)),
    ok(
        "vllm_reasoning_field.sse",
        2,
        Usage,
        2,
        "stop",
        "Yes",
        Some(4),
    ),
    fails(
        "vllm_error.sse",
        ErrorClass::ServerError,
        "longer than the maximum model length",
    ),
    ok(
        "sglang_chat.sse",
        3,
        Usage,
        3,
        "length",
        "Bonjour le monde",
        Some(20),
    ),
    ok(
        "tgi_chat.sse",
        3,
        Usage,
        3,
        "length",
        "Deep learning is",
        Some(15),
    ),
    fails(
        "tgi_error.sse",
        ErrorClass::ServerError,
        "CUDA out of memory",
    ),
    ok(
        "llamacpp_chat.sse",
        3,
        Usage,
        3,
        "length",
        "The sky is",
        Some(11),
    ),
    fails(
        "llamacpp_error.sse",
        ErrorClass::ServerError,
        "the context size was exceeded",
    ),
    ok("ollama_chat.sse", 3, Chunks, 3, "stop", "Why not?", None),
    fails(
        "ollama_error.sse",
        ErrorClass::ServerError,
        "model runner has unexpectedly stopped",
    ),
    ok("openai_chat.sse", 2, Usage, 2, "stop", "Hi 👋", Some(8)),
    ok(
        "openai_tool_calls.sse",
        3,
        Chunks,
        3,
        "tool_calls",
        "",
        None,
    ),
    fails(
        "openai_error_event.sse",
        ErrorClass::ServerError,
        "The server had an error",
    ),
    ok(
        "framing_crlf_bom.sse",
        2,
        Usage,
        2,
        "length",
        "ok!",
        Some(3),
    ),
    ok("framing_cr_only.sse", 2, Usage, 2, "length", "ab", Some(2)),
    ok(
        "no_done_after_finish.sse",
        2,
        Usage,
        2,
        "stop",
        "Done.",
        Some(3),
    ),
    fails(
        "truncated.sse",
        ErrorClass::Truncated,
        "without a finish reason or [DONE]",
    ),
    fails(
        "vllm_empty_stop.sse",
        ErrorClass::EmptyOutput,
        "usage completion_tokens 0, finish_reason stop",
    ),
    fails(
        "vllm_abort.sse",
        ErrorClass::Aborted,
        "finish_reason \"abort\"",
    ),
    fails(
        "error_field_then_done.sse",
        ErrorClass::StreamError,
        "CUDA out of memory",
    ),
    ok(
        "packed_tokens.sse",
        8,
        Usage,
        4,
        "length",
        "one two three four five six seven eight",
        Some(4),
    ),
    ok(
        "multibyte.sse",
        5,
        Usage,
        3,
        "length",
        "東京は晴れ☀️ ça va",
        Some(6),
    ),
];

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transcripts")
        .join(file)
}

/// What reading a transcript yields, instants aside.
#[derive(Debug, PartialEq)]
struct Digest {
    result: Result<(), Failure>,
    output_tokens: u64,
    source: TokenSource,
    chunks: u64,
    content_events: usize,
    finish: Option<String>,
    input_tokens: Option<u64>,
    text: String,
}

fn read(parts: &[&[u8]]) -> Digest {
    read_keeping(parts, true)
}

/// Reads a stream keeping the text (the serde chunk reader, as `runner probe` does) or not
/// (the scan a load run uses).
fn read_keeping(parts: &[&[u8]], keep_text: bool) -> Digest {
    let mut rec = blank_record(0);
    let mut text = String::new();
    let result = {
        let mut reader = StreamReader::new(true, keep_text.then_some(&mut text));
        let mut failed = None;
        for p in parts {
            if let Err(f) = reader.feed(p, 1, &mut rec) {
                failed = Some(f);
                break;
            }
            if reader.is_done() {
                break;
            }
        }
        match failed {
            Some(f) => Err(f),
            None => reader.finish(2, &mut rec),
        }
    };
    Digest {
        result,
        output_tokens: rec.output_tokens,
        source: rec.output_tokens_source,
        chunks: rec.chunks,
        content_events: rec.content_us.len(),
        finish: rec.finish_reason,
        input_tokens: rec.input_tokens,
        text,
    }
}

fn check(e: &Expect, d: &Digest) {
    match (&e.error, &d.result) {
        (None, Ok(())) => {
            assert_eq!(
                d.output_tokens, e.output_tokens,
                "{}: output tokens",
                e.file
            );
            assert_eq!(d.source, e.source, "{}: token source", e.file);
            assert_eq!(d.chunks, e.chunks, "{}: chunks", e.file);
            assert_eq!(d.finish.as_deref(), e.finish, "{}: finish reason", e.file);
            assert_eq!(d.text, e.text, "{}: text", e.file);
            assert_eq!(d.input_tokens, e.input_tokens, "{}: input tokens", e.file);
        }
        (Some((class, msg)), Err((got, message))) => {
            assert_eq!(got, class, "{}: class", e.file);
            assert!(message.contains(msg), "{}: message {message:?}", e.file);
        }
        (want, got) => panic!("{}: expected {want:?}, got {got:?}", e.file),
    }
}

#[test]
fn every_transcript_reads_as_expected() {
    for e in CASES {
        let bytes = std::fs::read(path(e.file)).expect("transcript");
        check(e, &read(&[&bytes]));
    }
}

#[test]
fn a_load_run_reads_every_transcript_as_probe_does() {
    for e in CASES {
        let bytes = std::fs::read(path(e.file)).expect("transcript");
        let probe = read_keeping(&[&bytes], true);
        let load = read_keeping(&[&bytes], false);
        assert_eq!(
            Digest {
                text: String::new(),
                ..probe
            },
            load,
            "{}",
            e.file
        );
    }
}

#[test]
fn splitting_a_stream_at_any_byte_changes_no_result() {
    for e in CASES {
        let bytes = std::fs::read(path(e.file)).expect("transcript");
        let whole = read(&[&bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(
                read(&[&bytes[..i], &bytes[i..]]),
                whole,
                "{} split at {i}",
                e.file
            );
        }
        // Three reads: every pair of split points of a coarser grid.
        for i in (0..=bytes.len()).step_by(5) {
            for j in (i..=bytes.len()).step_by(11) {
                let parts = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(read(&parts), whole, "{} split at {i}, {j}", e.file);
            }
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(read(&bytewise), whole, "{} one byte at a time", e.file);
    }
}

/// Reads a transcript one event per read, event `i` arriving at `at_ms[i]` (the end of the body
/// at the last instant), as a request scheduled at 0.
fn read_at(file: &str, at_ms: &[u64]) -> runner::metrics::record::RequestRecord {
    let bytes = std::fs::read(path(file)).expect("transcript");
    let text = String::from_utf8(bytes).expect("utf-8");
    let events: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(
        events.len() + 1,
        at_ms.len(),
        "{file}: one instant per event, then the end"
    );
    let mut rec = blank_record(0);
    let mut reader = StreamReader::new(true, None);
    for (e, at) in events.iter().zip(at_ms) {
        reader
            .feed(e.as_bytes(), at * 1000, &mut rec)
            .expect("a well-formed event");
    }
    let end = at_ms[at_ms.len() - 1] * 1000;
    reader.finish(end, &mut rec).expect("a successful stream");
    rec.end_us = end;
    rec.ok = true;
    rec
}

/// Both definitions of first token and of inter-token latency, pinned on a vLLM stream whose
/// role chunk and first delta carry no text (a byte-level tokenizer holding back a partial
/// character): `ttft` is the role chunk, `ttft_text` the first visible text.
#[test]
fn first_token_and_first_text_follow_their_definitions() {
    // Role chunk at 10 ms, empty delta at 12, text at 30, 45 and 60 ms, usage at 61, [DONE] at
    // 62, end at 62.
    let r = read_at("vllm_empty_deltas.sse", &[10, 12, 30, 45, 60, 61, 62, 62]);
    assert_eq!(r.token_us, [10_000, 12_000, 30_000, 45_000, 60_000]);
    assert_eq!(r.content_us, [30_000, 45_000, 60_000]);
    assert_eq!(r.ttft_us(), Some(10_000));
    assert_eq!(r.ttft_text_us(), Some(30_000));
    assert_eq!(
        r.itl_us().collect::<Vec<_>>(),
        [2_000, 18_000, 15_000, 15_000]
    );
    assert_eq!(r.itl_text_us().collect::<Vec<_>>(), [15_000, 15_000]);
    // Four tokens by usage: (62 - 10) / 3 ms from the first token.
    assert_eq!(r.tpot_us(), Some(52_000.0 / 3.0));

    // Every delta empty, three tokens by usage: a success without visible text, timed to its
    // first token, counted in the cell and never dropped.
    let none = read_at("vllm_no_text.sse", &[5, 20, 35, 50, 51, 52, 52]);
    assert_eq!(none.token_us, [5_000, 20_000, 35_000, 50_000]);
    assert!(none.content_us.is_empty() && none.without_text());
    assert_eq!((none.ttft_us(), none.ttft_text_us()), (Some(5_000), None));
    let mut acc = runner::metrics::summary::Accumulator::default();
    acc.add(&r);
    acc.add(&none);
    let m = acc.finish();
    assert_eq!((m.requests_ok, m.requests_without_text), (2, 1));
    let ttft = m.ttft_ms.expect("ttft");
    assert_eq!(ttft.count, 2);
    assert!((ttft.mean - 7.5).abs() < 1e-9, "{ttft:?}");
    let text = m.ttft_text_ms.expect("ttft_text");
    assert_eq!(text.count, 1);
    assert!((text.mean - 30.0).abs() < 1e-9, "{text:?}");
    // 4 + 3 token gaps, 2 text gaps.
    assert_eq!(m.itl_ms.expect("itl").count, 7);
    assert_eq!(m.itl_text_ms.expect("itl_text").count, 2);
}

struct Replay(Child);

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replay(file: &str) -> (Replay, u16) {
    let mut child = Command::new(common::RUNNER)
        .args(["engine", "replay"])
        .arg(path(file))
        .args(["--port", "0", "--chunk-bytes", "7"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the replay engine");
    // The engine prints its address once it listens: read it, no waiting by the clock.
    let stdout = child.stdout.take().expect("stdout");
    let guard = Replay(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (guard, port)
}

#[test]
fn probe_reports_the_same_over_real_sockets() {
    for e in CASES {
        let (_server, port) = replay(e.file);
        let out = Command::new(common::RUNNER)
            .args([
                "probe",
                &format!("http://127.0.0.1:{port}"),
                "--json",
                "--model",
                "replay",
            ])
            .output()
            .expect("run probe");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "{}: probe printed no JSON ({err}): {}",
                e.file,
                common::text(&out)
            )
        });
        assert_eq!(
            out.status.success(),
            e.error.is_none(),
            "{}: exit code",
            e.file
        );
        assert_eq!(v["ok"], e.error.is_none(), "{}", e.file);
        match &e.error {
            None => {
                assert_eq!(v["output_tokens"], e.output_tokens, "{}", e.file);
                assert_eq!(v["chunks"], e.chunks, "{}", e.file);
                assert_eq!(v["output_text"], e.text, "{}", e.file);
                let src = if e.source == Usage { "usage" } else { "chunks" };
                assert_eq!(v["output_tokens_source"], src, "{}", e.file);
                assert!(
                    v["ttft_ms"].as_f64().is_some() || e.chunks == 0,
                    "{}",
                    e.file
                );
                assert!(v["e2e_ms"].as_f64().is_some(), "{}", e.file);
            }
            Some((class, msg)) => {
                assert_eq!(v["error_class"], class.as_str(), "{}", e.file);
                assert!(
                    v["error_message"].as_str().is_some_and(|m| m.contains(msg)),
                    "{}: {v}",
                    e.file
                );
            }
        }
    }
}
