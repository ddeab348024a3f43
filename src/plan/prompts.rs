//! Prompt sources: plain-text and JSONL files, `[DOC]`-separated documents put into a
//! template, and synthetic prompts of a given length.

use std::path::Path;

use serde::Deserialize;

use super::model::{Message, Prompt};

/// A prompt-source problem, with a hint for the plan error.
#[derive(Debug)]
pub struct SourceError {
    pub message: String,
    pub hint: Option<String>,
}

fn read(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|e| SourceError {
        message: format!("cannot read {}: {e}", path.display()),
        hint: Some("the path is relative to the plan's directory".into()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlPrompt {
    prompt: Option<String>,
    messages: Option<Vec<Message>>,
}

/// Reads prompts from a file: `.jsonl` files hold one object a line with `prompt` (text) or
/// `messages` (a chat); any other file holds one prompt a line. Blank lines are skipped.
pub fn from_file(path: &Path) -> Result<Vec<Prompt>, SourceError> {
    let text = read(path)?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            out.push(Prompt::Text(line.to_string()));
            continue;
        }
        let bad = |why: String| {
            SourceError {
            message: format!("{}:{}: {why}", path.display(), i + 1),
            hint: Some(
                "each line is {\"prompt\": \"...\"} or {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}"
                    .into(),
            ),
        }
        };
        let p: JsonlPrompt = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        out.push(match (p.prompt, p.messages) {
            (Some(t), None) => Prompt::Text(t),
            (None, Some(m)) if !m.is_empty() => Prompt::Messages(m),
            _ => {
                return Err(bad(
                    "needs exactly one of `prompt` or a non-empty `messages`".into(),
                ))
            }
        });
    }
    Ok(out)
}

/// Splits a file on `marker` and puts each non-empty document into `template` at `{doc}`.
pub fn from_documents(
    path: &Path,
    marker: &str,
    template: &str,
) -> Result<Vec<Prompt>, SourceError> {
    if marker.is_empty() {
        return Err(SourceError {
            message: "the documents `marker` is empty".into(),
            hint: Some("leave it out for the default \"[DOC]\"".into()),
        });
    }
    let text = read(path)?;
    Ok(text
        .split(marker)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| Prompt::Text(template.replace("{doc}", d)))
        .collect())
}

/// `count` prompts of `words` words each, drawn from a fixed vocabulary by a seeded generator.
/// A hand-written xorshift rather than a `rand` generator: the same seed must give the same
/// prompts in every runner version, which a crate's algorithm choice does not promise.
pub fn synthetic(words: usize, count: usize, seed: u64) -> Vec<Prompt> {
    const VOCAB: &[&str] = &[
        "the",
        "model",
        "serves",
        "tokens",
        "under",
        "load",
        "while",
        "latency",
        "grows",
        "with",
        "batch",
        "size",
        "memory",
        "cache",
        "request",
        "queue",
        "server",
        "client",
        "stream",
        "prefill",
        "decode",
        "kernel",
        "throughput",
        "engine",
        "prompt",
        "answer",
        "quickly",
        "slowly",
        "every",
        "second",
        "report",
        "value",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let text: Vec<&str> = (0..words)
                .map(|_| VOCAB[(next() % VOCAB.len() as u64) as usize])
                .collect();
            Prompt::Text(text.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_and_templated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("docs.txt");
        std::fs::write(&p, "[DOC]\nfirst doc\n[DOC]\n\n[DOC] second").expect("write");
        let got = from_documents(&p, "[DOC]", "Summarize: {doc}").expect("reads");
        assert_eq!(
            got,
            [
                Prompt::Text("Summarize: first doc".into()),
                Prompt::Text("Summarize: second".into())
            ]
        );
    }

    #[test]
    fn jsonl_reads_prompts_and_chats_and_names_the_bad_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("p.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"a\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"b\"}]}\n",
        )
        .expect("write");
        let got = from_file(&p).expect("reads");
        assert_eq!(got.len(), 2);
        std::fs::write(&p, "{\"prompt\": \"a\"}\n{\"promt\": 1}\n").expect("write");
        let err = from_file(&p).expect_err("bad line");
        assert!(err.message.contains("p.jsonl:2:"), "{}", err.message);
    }

    #[test]
    fn synthetic_prompts_are_deterministic_and_sized() {
        let a = synthetic(50, 3, 7);
        assert_eq!(a, synthetic(50, 3, 7));
        assert_ne!(a, synthetic(50, 3, 8));
        let Prompt::Text(t) = &a[0] else {
            panic!("text")
        };
        assert_eq!(t.split_whitespace().count(), 50);
    }
}
