//! JSONL prompts: one `{"prompt": ...}` or `{"messages": [...]}` object a line, with an optional
//! `max_tokens` per line.

use std::path::PathBuf;

use serde::Deserialize;

use super::select::{select, Selection};
use crate::workload::error::{Result, WorkloadError};
use crate::workload::materialize::{Body, Message, Request};
use crate::workload::tokenizer::Counter;

/// `[workload.dataset] format = "jsonl"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlSpec {
    pub path: PathBuf,
    pub selection: Selection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    messages: Option<Vec<Message>>,
    max_tokens: Option<u32>,
}

const SHAPE: &str = "each line is {\"prompt\": \"...\"} or {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}, with an optional \"max_tokens\"";

/// Reads the file's requests; blank lines are skipped. A line without `max_tokens` takes the
/// workload's (`Request::max_tokens` is `None`).
pub fn read(spec: &JsonlSpec, counter: &Counter) -> Result<Vec<Request>> {
    let path = &spec.path;
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: path.clone(),
        source,
    })?;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |m: String| WorkloadError::Record {
            path: path.clone(),
            line: i + 1,
            message: format!("{m} ({SHAPE})"),
        };
        let l: Line = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let body = match (l.prompt, l.messages) {
            (Some(t), None) => Body::Text(t),
            (None, Some(m)) if !m.is_empty() => Body::Messages(m),
            _ => {
                return Err(bad(
                    "needs exactly one of `prompt` or a non-empty `messages`".into(),
                ))
            }
        };
        if l.max_tokens == Some(0) {
            return Err(bad("`max_tokens` must be at least 1".into()));
        }
        lines.push((body, l.max_tokens));
    }
    let chosen = select(&spec.selection, lines.len(), path)?;
    let mut out = Vec::new();
    for i in chosen {
        let (body, max_tokens) = lines[i].clone();
        let prompt_len = match &body {
            Body::Text(t) => counter.prompt(t)?,
            Body::Messages(m) => counter.messages(m.iter().map(|x| x.content.as_str()))?,
        };
        out.push(Request {
            index: out.len(),
            session: None,
            turn: None,
            scheduled_offset_us: None,
            body,
            max_tokens,
            min_tokens: None,
            prompt_len,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/prompts.jsonl")
    }

    #[test]
    fn lines_carry_prompts_messages_and_their_own_max_tokens() {
        let s = JsonlSpec {
            path: fixture(),
            selection: Selection::ALL,
        };
        let reqs = read(&s, &Counter::Words).expect("read");
        assert_eq!(reqs.len(), 4);
        assert!(matches!(&reqs[0].body, Body::Text(t) if t.starts_with("Summarize")));
        assert_eq!(reqs[0].max_tokens, Some(64));
        assert!(matches!(&reqs[1].body, Body::Messages(m) if m.len() == 2));
        assert_eq!(reqs[1].max_tokens, None);
        let sel = JsonlSpec {
            selection: Selection {
                sample: Some(2),
                shuffle: false,
                seed: 9,
            },
            ..s
        };
        let a = read(&sel, &Counter::Words).expect("sample");
        assert_eq!(a, read(&sel, &Counter::Words).expect("again"));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("p.jsonl");
        std::fs::write(&p, "{\"prompt\": \"a\"}\n\n{\"promt\": \"b\"}\n").expect("write");
        let s = JsonlSpec {
            path: p.clone(),
            selection: Selection::ALL,
        };
        let msg = read(&s, &Counter::Words).expect_err("typo").to_string();
        assert!(msg.starts_with(&format!("{}:3: ", p.display())), "{msg}");
        assert!(msg.contains("promt"), "{msg}");
        std::fs::write(&p, "{\"prompt\": \"a\", \"max_tokens\": 0}\n").expect("write");
        let msg = read(&s, &Counter::Words).expect_err("zero").to_string();
        assert!(
            msg.contains("p.jsonl:1: `max_tokens` must be at least 1"),
            "{msg}"
        );
    }
}
