//! The materialized request list: what a workload sends, one canonical JSON object a line, and its
//! sha256, so a bundle holds exactly what was sent and two machines can compare byte for byte.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::tokenizer::CountUnit;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: String) -> Message {
        Message {
            role: "user".into(),
            content,
        }
    }
}

/// What a request carries as its prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A text prompt: the completions `prompt`, or one user message for chat.
    Text(String),
    /// Chat messages. For a session's turn, only the messages this turn adds: the driver puts the
    /// session's history (earlier turns and the engine's actual answers) before them.
    Messages(Vec<Message>),
}

/// One request of a workload, before it meets an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Position in the workload's list, from 0.
    pub index: usize,
    /// The conversation a turn belongs to (multi-turn workloads).
    pub session: Option<u64>,
    /// The turn's index in its session, from 0.
    pub turn: Option<u32>,
    /// When a trace sends it, from the start of the measured phase (microseconds).
    pub scheduled_offset_us: Option<u64>,
    pub body: Body,
    /// `None`: the workload's `max_tokens`.
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
    /// The client-side prompt length in the list's unit (tokenizer.rs defines the counts).
    pub prompt_len: usize,
}

/// A workload's requests and the unit their lengths are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    pub unit: CountUnit,
    pub requests: Vec<Request>,
}

/// The line written for one request. Field order is the key order of the file: serde writes a
/// struct's fields in declaration order whatever serde_json's features, so the bytes are stable.
#[derive(Serialize)]
struct Line<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    turn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_offset_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_words: Option<usize>,
}

impl Materialized {
    /// The canonical JSONL: one object a line in request order, keys in a fixed order, no spaces,
    /// `\n` after every line. The length is `prompt_tokens` when counted by a tokenizer and
    /// `prompt_words` when not.
    pub fn jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for r in &self.requests {
            let (prompt, messages) = match &r.body {
                Body::Text(t) => (Some(t.as_str()), None),
                Body::Messages(m) => (None, Some(m.as_slice())),
            };
            let line = Line {
                index: r.index,
                session: r.session,
                turn: r.turn,
                scheduled_offset_us: r.scheduled_offset_us,
                prompt,
                messages,
                max_tokens: r.max_tokens,
                min_tokens: r.min_tokens,
                prompt_tokens: (self.unit == CountUnit::Tokens).then_some(r.prompt_len),
                prompt_words: (self.unit == CountUnit::Words).then_some(r.prompt_len),
            };
            // Serializing plain strings and integers into a Vec cannot fail.
            if serde_json::to_writer(&mut out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }
}

/// A resolved workload's requests, as sent: its prompts with each request's shape (the plan's
/// own prompts included, so every bundle stores what was sent).
pub fn of_workload(w: &crate::plan::model::WorkloadSpec) -> Materialized {
    let requests = w
        .prompts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let shape = w.shapes.get(index).cloned().unwrap_or_default();
            Request {
                index,
                session: shape.session,
                turn: shape.turn,
                scheduled_offset_us: shape.scheduled_offset_us,
                body: match p {
                    crate::plan::model::Prompt::Text(t) => Body::Text(t.clone()),
                    crate::plan::model::Prompt::Messages(m) => Body::Messages(
                        m.iter()
                            .map(|m| Message {
                                role: m.role.clone(),
                                content: m.content.clone(),
                            })
                            .collect(),
                    ),
                },
                max_tokens: shape.max_tokens,
                min_tokens: shape.min_tokens,
                prompt_len: shape.prompt_len as usize,
            }
        })
        .collect();
    Materialized {
        unit: w.unit,
        requests,
    }
}

/// Lowercase hex sha256 of `bytes` (the manifest's form).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::synthetic::{generate, LengthDist, SyntheticSpec};
    use crate::workload::tokenizer::tests::tiny;
    use crate::workload::tokenizer::Counter;

    fn build() -> Materialized {
        let t = tiny();
        let spec = SyntheticSpec {
            count: 6,
            input: LengthDist::Range { lo: 10, hi: 40 },
            output: LengthDist::Fixed(8),
            pin_output: true,
            prefix_tokens: 0,
            prefix_groups: 1,
            turns: 1,
            seed: 3,
        };
        Materialized {
            unit: CountUnit::Tokens,
            requests: generate(&spec, &Counter::Tokens(&t)).expect("generate"),
        }
    }

    #[test]
    fn the_same_inputs_give_byte_identical_jsonl_and_hash() {
        let a = build().jsonl();
        let b = build().jsonl();
        assert_eq!(a, b);
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
        assert_eq!(sha256_hex(&a).len(), 64);
        let text = String::from_utf8(a).expect("utf8");
        assert_eq!(text.lines().count(), 6);
        assert!(text.ends_with('\n'));
        let first = text.lines().next().expect("line");
        assert!(
            first.starts_with(r#"{"index":0,"prompt":""#),
            "keys in their fixed order: {first}"
        );
        assert!(first.contains(r#""max_tokens":8,"min_tokens":8,"prompt_tokens":"#));
    }

    #[test]
    fn a_workload_s_bytes_are_pinned_across_runner_versions() {
        // Changing the corpus, the PRNG, the growth rule or the file layout changes what every plan
        // sends: this hash makes that a deliberate act (update it, and say so in the changelog).
        let a = build().jsonl();
        let words = Materialized {
            unit: CountUnit::Words,
            requests: generate(
                &SyntheticSpec {
                    count: 4,
                    input: LengthDist::Normal {
                        mean: 30,
                        stddev: 8.0,
                    },
                    output: LengthDist::Range { lo: 4, hi: 9 },
                    pin_output: false,
                    prefix_tokens: 6,
                    prefix_groups: 2,
                    turns: 1,
                    seed: 11,
                },
                &Counter::Words,
            )
            .expect("words"),
        };
        let w = words.jsonl();
        assert_eq!(sha256_hex(&w), PINNED_WORDS);
        assert_eq!(sha256_hex(&a), PINNED_TOKENS);
    }

    const PINNED_WORDS: &str = "1aeaa6c5c3b878656dacd23abe532c013ea4d980681051ef16feeebfc2202db2";
    const PINNED_TOKENS: &str = "616150ebe20a443d44905d54ca9e240127956ab20d0a0a4fca49b2e722a37ebd";

    #[test]
    fn sessions_offsets_and_messages_are_written_and_words_named_as_words() {
        let m = Materialized {
            unit: CountUnit::Words,
            requests: vec![Request {
                index: 0,
                session: Some(2),
                turn: Some(1),
                scheduled_offset_us: Some(1500),
                body: Body::Messages(vec![Message::user("hi \"there\"".into())]),
                max_tokens: None,
                min_tokens: None,
                prompt_len: 2,
            }],
        };
        assert_eq!(
            String::from_utf8(m.jsonl()).expect("utf8"),
            "{\"index\":0,\"session\":2,\"turn\":1,\"scheduled_offset_us\":1500,\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"there\\\"\"}],\"prompt_words\":2}\n"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
