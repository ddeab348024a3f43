//! ShareGPT conversations (`[{"conversations": [{"from": "human"|"gpt", "value": ...}]}]`): first
//! turns or whole conversations, length filters, and `output = "reference"`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::select::{select, Selection};
use crate::workload::error::{Result, WorkloadError};
use crate::workload::materialize::{Body, Message, Request};
use crate::workload::tokenizer::Counter;

/// Which part of each conversation is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turns {
    /// The first user message alone (vLLM's ShareGPT benchmark).
    First,
    /// Every user turn, as a session: the driver sends them in order with the history.
    All,
}

/// Each request's `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The reference answer's length in tokens (vLLM's convention), words without a tokenizer.
    Reference,
    Fixed(u32),
}

/// Bounds on a turn's lengths, both ends included; a conversation is kept when every turn used
/// passes. Prompt lengths follow the prompt convention, reference lengths the plain one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LengthFilter {
    pub min_input: Option<usize>,
    pub max_input: Option<usize>,
    pub min_output: Option<usize>,
    pub max_output: Option<usize>,
}

impl LengthFilter {
    fn is_empty(&self) -> bool {
        *self == LengthFilter::default()
    }

    fn keeps(&self, input: usize, output: usize) -> bool {
        self.min_input.is_none_or_le(input)
            && self.max_input.is_none_or_ge(input)
            && self.min_output.is_none_or_le(output)
            && self.max_output.is_none_or_ge(output)
    }
}

trait Bound {
    fn is_none_or_le(&self, v: usize) -> bool;
    fn is_none_or_ge(&self, v: usize) -> bool;
}

impl Bound for Option<usize> {
    fn is_none_or_le(&self, v: usize) -> bool {
        self.map_or(true, |b| b <= v)
    }
    fn is_none_or_ge(&self, v: usize) -> bool {
        self.map_or(true, |b| b >= v)
    }
}

/// `[workload.dataset] format = "sharegpt"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareGptSpec {
    pub path: PathBuf,
    pub turns: Turns,
    pub output: Output,
    pub filter: LengthFilter,
    pub selection: Selection,
}

// Other fields of a record (`id`, ...) are real ShareGPT data, not typos: they are allowed.
#[derive(Deserialize)]
struct Record {
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Turn {
    from: String,
    value: String,
}

/// One user message and the reference answer after it.
struct Exchange {
    user: String,
    reference: String,
}

struct Conversation {
    system: Option<String>,
    exchanges: Vec<Exchange>,
}

enum Role {
    System,
    User,
    Assistant,
}

fn role(from: &str) -> Option<Role> {
    match from {
        "system" => Some(Role::System),
        "human" | "user" => Some(Role::User),
        "gpt" | "chatgpt" | "bard" | "bing" | "assistant" | "model" => Some(Role::Assistant),
        _ => None,
    }
}

/// Pairs user messages with the answer after each; a leading system message is kept. Returns
/// `None` for a record that holds no user-then-answer pair (it is skipped, as vLLM skips them).
fn conversation(rec: Record) -> std::result::Result<Option<Conversation>, String> {
    let mut system = None;
    let mut exchanges = Vec::new();
    let mut pending: Option<String> = None;
    for (i, t) in rec.conversations.into_iter().enumerate() {
        match role(&t.from) {
            None => {
                return Err(format!(
                    "turn {} has `from = {:?}`; expected \"human\" or \"gpt\" (or system, user, assistant)",
                    i + 1,
                    t.from
                ))
            }
            Some(Role::System) if i == 0 => system = Some(t.value),
            Some(Role::System) => {}
            Some(Role::User) => pending = Some(t.value),
            Some(Role::Assistant) => {
                if let Some(user) = pending.take() {
                    exchanges.push(Exchange {
                        user,
                        reference: t.value,
                    });
                } else if exchanges.is_empty() {
                    // A conversation that opens with the model is not a prompt: skip the record.
                    return Ok(None);
                }
            }
        }
    }
    Ok((!exchanges.is_empty()).then_some(Conversation { system, exchanges }))
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A conversation's turns ready to send, each with its reference answer's length.
type Counted = Vec<(Prepared, usize)>;

/// One turn ready to send, with its lengths.
struct Prepared {
    body: Body,
    input: usize,
    max_tokens: u32,
}

fn prepare(
    conv: &Conversation,
    turns: Turns,
    output: Output,
    counter: &Counter,
) -> Result<Counted> {
    let used = match turns {
        Turns::First => &conv.exchanges[..1],
        Turns::All => &conv.exchanges[..],
    };
    let mut out = Vec::new();
    for (k, ex) in used.iter().enumerate() {
        let system = conv.system.as_ref().filter(|_| k == 0);
        let (body, input) = match (turns, system) {
            (Turns::First, None) => (Body::Text(ex.user.clone()), counter.prompt(&ex.user)?),
            (_, sys) => {
                let mut m = Vec::new();
                if let Some(s) = sys {
                    m.push(Message {
                        role: "system".into(),
                        content: s.clone(),
                    });
                }
                m.push(Message::user(ex.user.clone()));
                let n = counter.messages(m.iter().map(|x| x.content.as_str()))?;
                (Body::Messages(m), n)
            }
        };
        let reference = counter.plain(&ex.reference)?;
        let max_tokens = match output {
            Output::Reference => u32::try_from(reference).unwrap_or(u32::MAX),
            Output::Fixed(n) => n,
        };
        out.push((
            Prepared {
                body,
                input,
                max_tokens,
            },
            reference,
        ));
    }
    Ok(out)
}

/// Reads a ShareGPT file into requests: one per conversation (`Turns::First`), or one per turn
/// with `session` and `turn` set (`Turns::All`). A conversation whose reference answer is empty is
/// skipped when `output = "reference"` (it would ask for 0 tokens).
pub fn read(spec: &ShareGptSpec, counter: &Counter) -> Result<Vec<Request>> {
    let path = &spec.path;
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: path.clone(),
        source,
    })?;
    let raws: Vec<&RawValue> = serde_json::from_str(&text).map_err(|e| WorkloadError::Record {
        path: path.clone(),
        line: e.line(),
        message: format!("not a ShareGPT file (a JSON array of {{\"conversations\": [...]}}): {e}"),
    })?;
    let mut convs = Vec::new();
    for raw in raws {
        let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let bad = |message: String| WorkloadError::Record {
            path: path.clone(),
            line: line_of(&text, offset),
            message,
        };
        let rec: Record = serde_json::from_str(raw.get())
            .map_err(|e| bad(format!("a record is {{\"conversations\": [{{\"from\": \"human\", \"value\": \"...\"}}, ...]}}: {e}")))?;
        if let Some(c) = conversation(rec).map_err(bad)? {
            convs.push(c);
        }
    }
    // Without filters only the selected conversations need counting.
    let needs_reference = spec.output == Output::Reference;
    let kept: Vec<(Conversation, Option<Counted>)> = if spec.filter.is_empty() && !needs_reference {
        convs.into_iter().map(|c| (c, None)).collect()
    } else {
        let mut kept = Vec::new();
        for c in convs {
            let p = prepare(&c, spec.turns, spec.output, counter)?;
            let ok = p
                .iter()
                .all(|(t, r)| spec.filter.keeps(t.input, *r) && (!needs_reference || *r > 0));
            if ok {
                kept.push((c, Some(p)));
            }
        }
        kept
    };
    let chosen = select(&spec.selection, kept.len(), path)?;
    let mut slots: Vec<Option<(Conversation, Option<Counted>)>> =
        kept.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for (session, i) in chosen.into_iter().enumerate() {
        let Some((c, p)) = slots[i].take() else {
            continue;
        };
        let prepared = match p {
            Some(p) => p,
            None => prepare(&c, spec.turns, spec.output, counter)?,
        };
        for (turn, (t, _)) in prepared.into_iter().enumerate() {
            let multi = spec.turns == Turns::All;
            out.push(Request {
                index: out.len(),
                session: multi.then_some(session as u64),
                turn: multi.then_some(turn as u32),
                scheduled_offset_us: None,
                body: t.body,
                max_tokens: Some(t.max_tokens),
                min_tokens: None,
                prompt_len: t.input,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tokenizer::tests::tiny;
    use std::path::Path;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/sharegpt.json")
    }

    fn spec(turns: Turns, output: Output) -> ShareGptSpec {
        ShareGptSpec {
            path: fixture(),
            turns,
            output,
            filter: LengthFilter::default(),
            selection: Selection::ALL,
        }
    }

    fn text(r: &Request) -> String {
        match &r.body {
            Body::Text(t) => t.clone(),
            Body::Messages(m) => m
                .iter()
                .map(|x| x.content.as_str())
                .collect::<Vec<_>>()
                .join("|"),
        }
    }

    #[test]
    fn first_turns_with_reference_lengths_as_max_tokens() {
        let t = tiny();
        let c = Counter::Tokens(&t);
        let reqs = read(&spec(Turns::First, Output::Reference), &c).expect("read");
        // The fixture has 6 records: one opens with the model and one has no answer.
        assert_eq!(reqs.len(), 4);
        let first = &reqs[0];
        assert!(
            text(first).starts_with("How do lighthouses"),
            "{}",
            text(first)
        );
        let answer = "A lighthouse uses a lamp and a large lens to focus the light into a beam. The lens turns, so sailors see a flash at regular intervals, and each lighthouse has its own pattern.";
        assert_eq!(
            first.max_tokens,
            Some(t.count_plain(answer).expect("count") as u32)
        );
        assert_eq!(first.prompt_len, t.count(&text(first)).expect("count"));
        assert!(reqs.iter().all(|r| r.session.is_none()));
        let fixed = read(&spec(Turns::First, Output::Fixed(32)), &c).expect("fixed");
        assert!(fixed.iter().all(|r| r.max_tokens == Some(32)));
    }

    #[test]
    fn filters_keep_only_conversations_whose_turns_fit() {
        let t = tiny();
        let c = Counter::Tokens(&t);
        let all = read(&spec(Turns::First, Output::Reference), &c).expect("all");
        let mut lens: Vec<usize> = all.iter().map(|r| r.prompt_len).collect();
        lens.sort_unstable();
        let mut s = spec(Turns::First, Output::Reference);
        s.filter.min_input = Some(lens[1]);
        let kept = read(&s, &c).expect("filtered");
        assert_eq!(
            kept.len(),
            all.iter().filter(|r| r.prompt_len >= lens[1]).count()
        );
        assert!(kept.iter().all(|r| r.prompt_len >= lens[1]));
        let mut s = spec(Turns::First, Output::Reference);
        s.filter.max_output = Some(20);
        let short = read(&s, &c).expect("short answers");
        assert!(!short.is_empty() && short.len() < all.len());
        assert!(short.iter().all(|r| r.max_tokens.is_some_and(|m| m <= 20)));
    }

    #[test]
    fn whole_conversations_become_sessions_of_turns() {
        let t = tiny();
        let reqs = read(&spec(Turns::All, Output::Reference), &Counter::Tokens(&t)).expect("all");
        let sessions: Vec<(Option<u64>, Option<u32>)> =
            reqs.iter().map(|r| (r.session, r.turn)).collect();
        assert_eq!(sessions[0], (Some(0), Some(0)));
        assert_eq!(sessions[1], (Some(0), Some(1)));
        // The system message rides on its conversation's first turn only.
        let sys = reqs
            .iter()
            .find(|r| matches!(&r.body, Body::Messages(m) if m[0].role == "system"))
            .expect("a system turn");
        assert_eq!(sys.turn, Some(0));
        assert!(reqs.iter().all(|r| matches!(&r.body, Body::Messages(_))));
        let sel = ShareGptSpec {
            selection: Selection {
                sample: Some(2),
                shuffle: true,
                seed: 5,
            },
            ..spec(Turns::All, Output::Fixed(10))
        };
        let a = read(&sel, &Counter::Words).expect("a");
        assert_eq!(a, read(&sel, &Counter::Words).expect("b"));
        assert_eq!(a.iter().filter(|r| r.turn == Some(0)).count(), 2);
    }

    #[test]
    fn a_bad_record_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.json");
        std::fs::write(
            &p,
            "[\n  {\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"yo\"}]},\n  {\"conversations\": [{\"from\": \"human\", \"value\": 3}]}\n]\n",
        )
        .expect("write");
        let s = ShareGptSpec {
            path: p.clone(),
            ..spec(Turns::First, Output::Reference)
        };
        let e = read(&s, &Counter::Words).expect_err("bad value");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", p.display())), "{msg}");
        std::fs::write(
            &p,
            "[\n {\"conversations\": [{\"from\": \"robot\", \"value\": \"x\"}]}]",
        )
        .expect("write");
        let msg = read(&s, &Counter::Words).expect_err("role").to_string();
        assert!(
            msg.contains("bad.json:2: ") && msg.contains("\"robot\""),
            "{msg}"
        );
        std::fs::write(&p, "[\n {\"conversations\": [\n").expect("write");
        let msg = read(&s, &Counter::Words)
            .expect_err("truncated")
            .to_string();
        assert!(msg.contains("bad.json:"), "{msg}");
    }
}
