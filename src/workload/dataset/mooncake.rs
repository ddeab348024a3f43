//! Mooncake traces (one `{"timestamp", "input_length", "output_length", "hash_ids"}` object a
//! line): prompts built from hash blocks, so the trace's prefix reuse is reuse on the wire, and the
//! offsets each request is scheduled at.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::select::{select, Selection};
use crate::workload::corpus::Words;
use crate::workload::error::{Result, WorkloadError};
use crate::workload::materialize::{Body, Request};
use crate::workload::rng::Rng;
use crate::workload::synthetic::grow;
use crate::workload::tokenizer::Counter;

/// Mooncake's block size: each hash id stands for this many tokens.
pub const DEFAULT_BLOCK_SIZE: usize = 512;

/// `[workload.dataset] format = "mooncake"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MooncakeSpec {
    pub path: PathBuf,
    /// Tokens (words without a tokenizer) per hash block.
    pub block_size: usize,
    /// Multiplies every timestamp: 0.5 sends the trace twice as fast.
    pub time_scale: f64,
    /// `shuffle` must be false: a trace's order is its timeline.
    pub selection: Selection,
    /// Seeds the text of the blocks (the same seed and hash id give the same block).
    pub seed: u64,
}

// Real traces may carry more fields; the four used here are required.
#[derive(Deserialize)]
struct Line {
    timestamp: u64,
    input_length: usize,
    output_length: u32,
    hash_ids: Vec<u64>,
}

const KEY_BLOCK: u64 = 21;

/// The text of hash blocks, built once per id.
struct Blocks<'c> {
    counter: &'c Counter<'c>,
    size: usize,
    seed: u64,
    text: HashMap<u64, String>,
}

impl Blocks<'_> {
    fn words(&self, id: u64) -> Words {
        Words::new(Rng::derive(self.seed, &[KEY_BLOCK, id]))
    }

    /// A full block: `size` plain units as it stands after a space (how it sits in a prompt
    /// behind the block before it).
    fn full(&mut self, id: u64) -> Result<&str> {
        if !self.text.contains_key(&id) {
            let counter = self.counter;
            let t = grow(
                &mut |t| counter.plain(t),
                &mut |t| counter.plain(&format!(" {t}")),
                String::new(),
                self.size,
                &mut self.words(id),
                counter.unit().as_str(),
            )?;
            self.text.insert(id, t);
        }
        Ok(self.text.get(&id).map(String::as_str).unwrap_or_default())
    }

    /// A prompt of exactly `target` from `ids`: every block but the last in full, then the last
    /// block's text grown until the whole prompt is exact (so it is cut from that block's words).
    fn prompt(&mut self, ids: &[u64], target: usize) -> Result<String> {
        let Some((&last, full)) = ids.split_last() else {
            return Ok(String::new());
        };
        let mut head = String::new();
        for &id in full {
            let b = self.full(id)?;
            if !head.is_empty() {
                head.push(' ');
            }
            head.push_str(b);
        }
        let counter = self.counter;
        let unit = counter.unit().as_str();
        let join = |head: &str, t: &str| match (head.is_empty(), t.is_empty()) {
            (true, _) => t.to_string(),
            (false, true) => head.to_string(),
            (false, false) => format!("{head} {t}"),
        };
        // Fast path: grow the last block alone for what the full blocks leave (measured, not
        // assumed: the first block stands without its leading space), then check the whole once.
        if !head.is_empty() {
            if let Some(rest) = target.checked_sub(counter.prompt(&head)?) {
                let t = grow(
                    &mut |t| counter.plain(t),
                    &mut |t| counter.plain(&format!(" {t}")),
                    String::new(),
                    rest,
                    &mut self.words(last),
                    unit,
                )?;
                let p = join(&head, &t);
                if counter.prompt(&p)? == target {
                    return Ok(p);
                }
            }
        }
        let t = grow(
            &mut |t| counter.plain(t),
            &mut |t| counter.prompt(&join(&head, t)),
            String::new(),
            target,
            &mut self.words(last),
            unit,
        )?;
        Ok(join(&head, &t))
    }
}

/// Reads a trace into requests with `scheduled_offset_us = timestamp x time_scale`.
pub fn read(spec: &MooncakeSpec, counter: &Counter) -> Result<Vec<Request>> {
    let path = &spec.path;
    if spec.selection.shuffle {
        return Err(WorkloadError::Setting(format!(
            "{}: a trace is sent in its own order; drop `shuffle`",
            path.display()
        )));
    }
    if spec.block_size == 0 || !(spec.time_scale.is_finite() && spec.time_scale > 0.0) {
        return Err(WorkloadError::Setting(format!(
            "{}: block_size must be at least 1 and time_scale a number > 0",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
        path: path.clone(),
        source,
    })?;
    let mut lines: Vec<(usize, Line)> = Vec::new();
    let mut last_ts = 0;
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |message: String| WorkloadError::Record {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let l: Line = serde_json::from_str(raw).map_err(|e| {
            bad(format!(
                "{e} (each line is {{\"timestamp\": ms, \"input_length\": n, \"output_length\": n, \"hash_ids\": [...]}})"
            ))
        })?;
        if l.input_length == 0 || l.output_length == 0 {
            return Err(bad(
                "input_length and output_length must be at least 1".into()
            ));
        }
        let blocks = l.input_length.div_ceil(spec.block_size);
        if l.hash_ids.len() != blocks {
            return Err(bad(format!(
                "input_length {} needs {blocks} hash blocks of {} tokens, the line has {}",
                l.input_length,
                spec.block_size,
                l.hash_ids.len()
            )));
        }
        if l.timestamp < last_ts {
            return Err(bad(format!(
                "timestamp {} is before the previous line's {last_ts}: a trace is in time order",
                l.timestamp
            )));
        }
        last_ts = l.timestamp;
        lines.push((i + 1, l));
    }
    let chosen = select(&spec.selection, lines.len(), path)?;
    let mut blocks = Blocks {
        counter,
        size: spec.block_size,
        seed: spec.seed,
        text: HashMap::new(),
    };
    let mut out = Vec::new();
    for i in chosen {
        let (line, l) = &lines[i];
        let prompt =
            blocks
                .prompt(&l.hash_ids, l.input_length)
                .map_err(|e| WorkloadError::Record {
                    path: path.clone(),
                    line: *line,
                    message: e.to_string(),
                })?;
        // ms -> us, scaled: IEEE multiplication and rounding, the same on every machine.
        let offset = (l.timestamp as f64 * 1000.0 * spec.time_scale).round() as u64;
        out.push(Request {
            index: out.len(),
            session: None,
            turn: None,
            scheduled_offset_us: Some(offset),
            body: Body::Text(prompt),
            max_tokens: Some(l.output_length),
            min_tokens: None,
            prompt_len: l.input_length,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tokenizer::tests::{tiny, tiny_without_bos};
    use std::path::Path;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/mooncake.jsonl")
    }

    fn spec(block_size: usize) -> MooncakeSpec {
        MooncakeSpec {
            path: fixture(),
            block_size,
            time_scale: 1.0,
            selection: Selection::ALL,
            seed: 0,
        }
    }

    fn text(r: &Request) -> &str {
        match &r.body {
            Body::Text(t) => t,
            Body::Messages(_) => panic!("a trace sends text"),
        }
    }

    #[test]
    fn trace_prompts_are_exact_and_shared_hash_ids_are_shared_tokens() {
        // The fixture's lengths assume 32-token blocks; its lines share hash ids 1 and 2.
        for t in [tiny(), tiny_without_bos()] {
            let reqs = read(&spec(32), &Counter::Tokens(&t)).expect("read");
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(fixture())
                .expect("fixture")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect();
            assert_eq!(reqs.len(), lines.len());
            let ids: Vec<Vec<u32>> = reqs
                .iter()
                .map(|r| t.prompt_ids(text(r)).expect("ids"))
                .collect();
            for (r, l) in reqs.iter().zip(&lines) {
                assert_eq!(t.count(text(r)).expect("count") as u64, l["input_length"]);
                assert_eq!(r.max_tokens.map(u64::from), l["output_length"].as_u64());
                assert_eq!(
                    r.scheduled_offset_us,
                    l["timestamp"].as_u64().map(|ms| ms * 1000)
                );
            }
            // Lines 0 and 1 both start with hash ids [1, 2]: the same 64 tokens (plus the BOS).
            let shared = 2 * 32 + t.added_specials().expect("specials");
            assert_eq!(ids[0][..shared], ids[1][..shared]);
            assert!(text(&reqs[1]).starts_with(&text(&reqs[0])[..100]));
            // Line 2 starts with another block: its text differs from the first words on.
            assert_ne!(ids[2][..8], ids[0][..8]);
        }
    }

    #[test]
    fn mooncake_sized_blocks_of_512_tokens_are_exact_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("trace.jsonl");
        std::fs::write(
            &p,
            "{\"timestamp\": 0, \"input_length\": 1100, \"output_length\": 5, \"hash_ids\": [1, 2, 3]}\n{\"timestamp\": 10, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1, 9]}\n",
        )
        .expect("write");
        let t = tiny();
        let s = MooncakeSpec {
            path: p,
            ..spec(DEFAULT_BLOCK_SIZE)
        };
        let reqs = read(&s, &Counter::Tokens(&t)).expect("read");
        let ids: Vec<Vec<u32>> = reqs
            .iter()
            .map(|r| t.prompt_ids(text(r)).expect("ids"))
            .collect();
        assert_eq!(ids[0].len(), 1100);
        assert_eq!(ids[1].len(), 600);
        assert_eq!(
            ids[0][..513],
            ids[1][..513],
            "block 1 (and the BOS) is shared"
        );
        assert_ne!(ids[0][513..520], ids[1][513..520]);
    }

    #[test]
    fn time_scale_and_sample_keep_the_trace_order() {
        let s = MooncakeSpec {
            time_scale: 0.5,
            selection: Selection {
                sample: Some(2),
                shuffle: false,
                seed: 4,
            },
            ..spec(32)
        };
        let reqs = read(&s, &Counter::Words).expect("read");
        assert_eq!(reqs.len(), 2);
        let offs: Vec<u64> = reqs.iter().filter_map(|r| r.scheduled_offset_us).collect();
        assert!(offs[0] <= offs[1]);
        assert_eq!(reqs, read(&s, &Counter::Words).expect("again"));
        // Without a tokenizer a block is 32 words, and a prompt input_length words.
        let all = read(&spec(32), &Counter::Words).expect("words");
        for r in &all {
            assert_eq!(text(r).split_whitespace().count(), r.prompt_len);
        }
        let e = read(
            &MooncakeSpec {
                selection: Selection {
                    shuffle: true,
                    ..Selection::ALL
                },
                ..spec(32)
            },
            &Counter::Words,
        )
        .expect_err("shuffle");
        assert!(e.to_string().contains("drop `shuffle`"), "{e}");
    }

    #[test]
    fn a_bad_trace_line_is_named_by_file_and_line() {
        // 512-token blocks (the default) do not fit the fixture's 32-token lengths.
        let msg = read(&spec(DEFAULT_BLOCK_SIZE), &Counter::Words)
            .expect_err("block size")
            .to_string();
        assert!(msg.contains("mooncake.jsonl:1: input_length"), "{msg}");
        assert!(
            msg.contains("needs 1 hash blocks of 512 tokens, the line has 3"),
            "{msg}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"timestamp\": 5, \"input_length\": 3, \"output_length\": 1, \"hash_ids\": [0]}\n{\"timestamp\": 4, \"input_length\": 3, \"output_length\": 1, \"hash_ids\": [0]}\n",
        )
        .expect("write");
        let s = MooncakeSpec {
            path: p.clone(),
            ..spec(32)
        };
        let msg = read(&s, &Counter::Words).expect_err("order").to_string();
        assert!(
            msg.starts_with(&format!("{}:2: timestamp 4", p.display())),
            "{msg}"
        );
    }
}
