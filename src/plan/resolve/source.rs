//! Resolving what a workload sends through `src/workload/`: `tokenizer`, `[workload.synthetic]`
//! with exact lengths and shared prefixes, and `[workload.dataset]` (ShareGPT, JSONL, Mooncake).
//! Every error lands on the key it is about.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::Resolver;
use crate::plan::model::{Message, Prompt, RequestShape};
use crate::plan::raw::{RawDataset, RawSynthetic, RawWorkload};
use crate::workload::dataset::{jsonl, mooncake, select::Selection, sharegpt};
use crate::workload::materialize::{Body, Request};
use crate::workload::synthetic::{self, LengthDist, SyntheticSpec};
use crate::workload::tokenizer::{Counter, Tokenizer};

/// A workload's requests, built by `src/workload/`.
pub(super) struct Built {
    pub source: String,
    pub prompts: Vec<Prompt>,
    pub shapes: Vec<RequestShape>,
    /// The largest `max_tokens` a request carries, where the source sets them.
    pub max_tokens: Option<u32>,
}

/// Most synthetic prompt text a plan may ask for (as today's word generator).
const MAX_TEXT: u64 = 50_000_000;

impl Resolver<'_> {
    /// `tokenizer = "..."`: `Ok(None)` when absent, `Err(())` after reporting a bad one.
    pub(super) fn tokenizer(
        &mut self,
        w: &RawWorkload,
    ) -> Result<Option<(Tokenizer, PathBuf)>, ()> {
        let Some(t) = &w.tokenizer else {
            return Ok(None);
        };
        let path = self.relative(t.get_ref());
        match Tokenizer::load(&path) {
            Ok(tok) => Ok(Some((tok, path))),
            Err(e) => {
                self.error_at(
                    t.span(),
                    e.to_string(),
                    Some("name a `tokenizer.json` or a model folder holding one, relative to the plan".into()),
                );
                Err(())
            }
        }
    }

    /// One length and its spread: `KEY`, `KEY_stddev`, `KEY_range`.
    fn length(
        &mut self,
        key: &str,
        value: &Option<Spanned<i64>>,
        stddev: &Option<Spanned<f64>>,
        range: &Option<Spanned<Vec<i64>>>,
        table: Range<usize>,
    ) -> Option<Option<LengthDist>> {
        let v = match value {
            None => None,
            Some(v) => Some(self.positive(v, &format!("`{key}`"), 1_000_000)? as u32),
        };
        match (v, stddev, range) {
            (_, Some(s), Some(_)) => {
                self.error_at(
                    s.span(),
                    format!("`{key}_stddev` and `{key}_range` cannot both be set"),
                    Some(format!(
                        "draw `{key}` around a mean (`{key}_stddev`) or uniformly in a range (`{key}_range`), not both"
                    )),
                );
                None
            }
            (None, Some(s), None) => {
                self.error_at(
                    s.span(),
                    format!("`{key}_stddev` needs `{key}` (the mean)"),
                    Some(format!("add `{key} = N`")),
                );
                None
            }
            (Some(mean), Some(s), None) => {
                let sd = *s.get_ref();
                if !(sd.is_finite() && sd >= 0.0) {
                    self.error_at(
                        s.span(),
                        format!("`{key}_stddev` must be a finite number >= 0, not {sd}"),
                        None,
                    );
                    return None;
                }
                Some(Some(LengthDist::Normal { mean, stddev: sd }))
            }
            (v, None, Some(r)) => {
                if v.is_some() {
                    let span = value.as_ref().map_or(table, |v| v.span());
                    self.error_at(
                        span,
                        format!("`{key}` and `{key}_range` cannot both be set"),
                        Some(format!("leave `{key}` out: the range gives the lengths")),
                    );
                    return None;
                }
                match r.get_ref().as_slice() {
                    &[lo, hi] if 1 <= lo && lo <= hi && hi <= 1_000_000 => {
                        Some(Some(LengthDist::Range {
                            lo: lo as u32,
                            hi: hi as u32,
                        }))
                    }
                    other => {
                        self.error_at(
                            r.span(),
                            format!("`{key}_range` must be `[a, b]` with 1 <= a <= b <= 1000000, not {other:?}"),
                            None,
                        );
                        None
                    }
                }
            }
            (v, None, None) => Some(v.map(LengthDist::Fixed)),
        }
    }

    /// `[workload.synthetic]` beyond today's word prompts: exact lengths (with a tokenizer),
    /// spreads, a pinned output length and shared prefixes.
    pub(super) fn synthetic(
        &mut self,
        s: &Spanned<RawSynthetic>,
        w: &RawWorkload,
        tokenizer: Option<&(Tokenizer, PathBuf)>,
    ) -> Option<Built> {
        let table = s.span();
        let r = s.get_ref();
        let input = self.length(
            "input_tokens",
            &r.input_tokens,
            &r.input_tokens_stddev,
            &r.input_tokens_range,
            table.clone(),
        );
        let output = self.length(
            "output_tokens",
            &r.output_tokens,
            &r.output_tokens_stddev,
            &r.output_tokens_range,
            table.clone(),
        );
        let count = r
            .count
            .as_ref()
            .map_or(Some(16), |c| self.positive(c, "`count`", 1_000_000));
        let prefix_tokens = match &r.prefix_tokens {
            None => Some(0),
            Some(p) => self.positive(p, "`prefix_tokens`", 1_000_000),
        };
        let prefix_groups = match (&r.prefix_groups, &r.prefix_tokens) {
            (None, _) => Some(1),
            (Some(g), None) => {
                self.error_at(
                    g.span(),
                    "`prefix_groups` needs `prefix_tokens`",
                    Some(
                        "add `prefix_tokens = P`: the length of the prefix each group shares"
                            .into(),
                    ),
                );
                None
            }
            (Some(g), Some(_)) => self.positive(g, "`prefix_groups`", 1_000_000),
        };
        let input = match input {
            Some(Some(d)) => Some(d),
            Some(None) => {
                self.error_at(
                    table.clone(),
                    "`[workload.synthetic]` sets no input length",
                    Some("add `input_tokens = N` (or `input_tokens_range = [a, b]`)".into()),
                );
                None
            }
            None => None,
        };
        let (output, pin_output) = match (output, &w.max_tokens) {
            (Some(Some(_)), Some(m)) => {
                self.error_at(
                    m.span(),
                    "`max_tokens` and `[workload.synthetic] output_tokens` both set the output length",
                    Some("keep `output_tokens` (sent as max_tokens) and remove `max_tokens`".into()),
                );
                (None, false)
            }
            (Some(Some(d)), None) => (Some(Some(d)), true),
            (Some(None), _) => (Some(None), false),
            (None, _) => (None, false),
        };
        let turns = match w.sessions.as_ref().map(|s| (s.span(), &s.get_ref().turns)) {
            None => Some(1),
            Some((_, Some(t))) => self.positive(t, "`turns`", 10_000),
            Some((span, None)) => {
                self.error_at(
                    span,
                    "`[workload.sessions]` with `[workload.synthetic]` needs `turns`",
                    Some("add `turns = T`: the user turns of each session".into()),
                );
                None
            }
        };
        if let (Some(p), Some(t)) = (&r.prefix_tokens, turns) {
            if t > 1 {
                self.error_at(
                    p.span(),
                    "`prefix_tokens` applies to single-turn prompts, not to `[workload.sessions]`",
                    Some(
                        "remove `prefix_tokens`: each session's history is its shared prefix"
                            .into(),
                    ),
                );
                return None;
            }
        }
        let (input, output, count, prefix_tokens, prefix_groups, turns) = (
            input?,
            output?,
            count?,
            prefix_tokens?,
            prefix_groups?,
            turns?,
        );
        if let (Some(p), LengthDist::Fixed(n) | LengthDist::Range { lo: n, .. }) =
            (&r.prefix_tokens, input)
        {
            if prefix_tokens >= u64::from(n) {
                self.error_at(
                    p.span(),
                    format!("`prefix_tokens` ({prefix_tokens}) leaves no room for a prompt's own text (input length {n})"),
                    Some("make every input length at least `prefix_tokens + 1`".into()),
                );
                return None;
            }
        }
        let mean = match input {
            LengthDist::Fixed(n) | LengthDist::Normal { mean: n, .. } => u64::from(n),
            LengthDist::Range { hi, .. } => u64::from(hi),
        };
        if mean * count * turns > MAX_TEXT {
            self.error_at(
                table,
                format!("{count} synthetic prompts of {mean} tokens is more text than a benchmark needs"),
                Some("keep the input length x `count` under 50 million; requests reuse prompts in turn".into()),
            );
            return None;
        }
        let seed = r.seed.unwrap_or(0);
        let spec = SyntheticSpec {
            count: count as usize,
            input,
            // Without `output_tokens` every request takes the workload's `max_tokens`.
            output: output.unwrap_or(LengthDist::Fixed(1)),
            pin_output,
            prefix_tokens: prefix_tokens as u32,
            prefix_groups: prefix_groups as u32,
            turns: turns as u32,
            seed,
        };
        let counter = counter(tokenizer);
        let unit = counter.unit().as_str();
        let mut source = if turns > 1 {
            format!(
                "synthetic {count} sessions x {turns} turns of {} {unit}",
                describe(input)
            )
        } else {
            format!("synthetic {} {unit} x {count}", describe(input))
        };
        if let Some(o) = output {
            source.push_str(&format!(", output {} tokens", describe(o)));
        }
        if prefix_tokens > 0 {
            source.push_str(&format!(
                ", {prefix_groups} shared prefixes of {prefix_tokens} {unit}"
            ));
        }
        source.push_str(&format!(", seed {seed}"));
        if let Some((_, p)) = tokenizer {
            source.push_str(&format!(" ({})", p.display()));
        }
        match synthetic::generate(&spec, &counter) {
            Ok(reqs) => Some(built(source, reqs, pin_output)),
            Err(e) => {
                self.error_at(s.span(), e.to_string(), None);
                None
            }
        }
    }

    /// `[workload.dataset]`.
    pub(super) fn dataset(
        &mut self,
        d: &Spanned<RawDataset>,
        w: &RawWorkload,
        max_tokens: Option<u32>,
        tokenizer: Option<&(Tokenizer, PathBuf)>,
    ) -> Option<Built> {
        let r = d.get_ref();
        let path = self.relative(r.path.get_ref());
        let sample = match &r.sample {
            None => Some(None),
            Some(s) => self
                .positive(s, "`sample`", 100_000_000)
                .map(|v| Some(v as usize)),
        };
        let selection = Selection {
            sample: sample?,
            shuffle: r.shuffle.as_ref().is_some_and(|s| *s.get_ref()),
            seed: r.seed.unwrap_or(0),
        };
        let format = r.format.get_ref().as_str();
        let only = |this: &mut Self, key: &str, v: Option<Range<usize>>, fmt: &str| {
            if let Some(span) = v {
                this.error_at(
                    span,
                    format!("`{key}` applies to `format = \"{fmt}\"` only"),
                    Some(format!("remove `{key}`")),
                );
                false
            } else {
                true
            }
        };
        let filters = [
            r.min_input_tokens.as_ref().map(|v| v.span()),
            r.max_input_tokens.as_ref().map(|v| v.span()),
            r.min_output_tokens.as_ref().map(|v| v.span()),
            r.max_output_tokens.as_ref().map(|v| v.span()),
        ];
        let counter = counter(tokenizer);
        let result = match format {
            "sharegpt" => {
                let ok = only(
                    self,
                    "block_size",
                    r.block_size.as_ref().map(|v| v.span()),
                    "mooncake",
                ) & only(
                    self,
                    "time_scale",
                    r.time_scale.as_ref().map(|v| v.span()),
                    "mooncake",
                );
                let output = match &r.output {
                    None => Some(sharegpt::Output::Fixed(max_tokens?)),
                    Some(o) if o.get_ref() == "reference" => {
                        if let Some(m) = &w.max_tokens {
                            self.error_at(
                                m.span(),
                                "`max_tokens` and `[workload.dataset] output = \"reference\"` both set the output length",
                                Some("keep one: `output = \"reference\"` sends each reference answer's length".into()),
                            );
                            None
                        } else {
                            Some(sharegpt::Output::Reference)
                        }
                    }
                    Some(o) => {
                        self.error_at(
                            o.span(),
                            format!("unknown `output = \"{}\"`", o.get_ref()),
                            Some("use `output = \"reference\"`, or leave it out and set the workload's `max_tokens`".into()),
                        );
                        None
                    }
                };
                let bound = |this: &mut Self, v: &Option<Spanned<i64>>, key: &str| match v {
                    None => Some(None),
                    Some(v) => this
                        .positive(v, &format!("`{key}`"), 100_000_000)
                        .map(|n| Some(n as usize)),
                };
                let filter = (
                    bound(self, &r.min_input_tokens, "min_input_tokens"),
                    bound(self, &r.max_input_tokens, "max_input_tokens"),
                    bound(self, &r.min_output_tokens, "min_output_tokens"),
                    bound(self, &r.max_output_tokens, "max_output_tokens"),
                );
                let (Some(output), Some(a), Some(b), Some(c), Some(e), true) =
                    (output, filter.0, filter.1, filter.2, filter.3, ok)
                else {
                    return None;
                };
                let spec = sharegpt::ShareGptSpec {
                    path: path.clone(),
                    turns: if w.sessions.is_some() {
                        sharegpt::Turns::All
                    } else {
                        sharegpt::Turns::First
                    },
                    output,
                    filter: sharegpt::LengthFilter {
                        min_input: a,
                        max_input: b,
                        min_output: c,
                        max_output: e,
                    },
                    selection,
                };
                sharegpt::read(&spec, &counter)
            }
            "jsonl" => {
                let mut ok = true;
                for (key, span) in [
                    ("output", r.output.as_ref().map(|v| v.span())),
                    ("min_input_tokens", filters[0].clone()),
                    ("max_input_tokens", filters[1].clone()),
                    ("min_output_tokens", filters[2].clone()),
                    ("max_output_tokens", filters[3].clone()),
                ] {
                    ok &= only(self, key, span, "sharegpt");
                }
                ok &= only(
                    self,
                    "block_size",
                    r.block_size.as_ref().map(|v| v.span()),
                    "mooncake",
                );
                ok &= only(
                    self,
                    "time_scale",
                    r.time_scale.as_ref().map(|v| v.span()),
                    "mooncake",
                );
                if !ok {
                    return None;
                }
                jsonl::read(
                    &jsonl::JsonlSpec {
                        path: path.clone(),
                        selection,
                    },
                    &counter,
                )
            }
            "mooncake" => {
                let mut ok = true;
                for (key, span) in [
                    ("output", r.output.as_ref().map(|v| v.span())),
                    ("min_input_tokens", filters[0].clone()),
                    ("max_input_tokens", filters[1].clone()),
                    ("min_output_tokens", filters[2].clone()),
                    ("max_output_tokens", filters[3].clone()),
                ] {
                    ok &= only(self, key, span, "sharegpt");
                }
                if let Some(s) = &r.shuffle {
                    if *s.get_ref() {
                        self.error_at(
                            s.span(),
                            "a trace cannot be shuffled: its order is its timeline",
                            Some("remove `shuffle` (`sample` keeps trace order)".into()),
                        );
                        ok = false;
                    }
                }
                if let Some(m) = &w.max_tokens {
                    self.error_at(
                        m.span(),
                        "a Mooncake trace sets each request's `max_tokens` (its `output_length`)",
                        Some("remove the workload's `max_tokens`".into()),
                    );
                    ok = false;
                }
                let block_size = match &r.block_size {
                    None => Some(mooncake::DEFAULT_BLOCK_SIZE),
                    Some(b) => self
                        .positive(b, "`block_size`", 1_000_000)
                        .map(|v| v as usize),
                };
                let time_scale = match &r.time_scale {
                    None => Some(1.0),
                    Some(t) if t.get_ref().is_finite() && *t.get_ref() > 0.0 => Some(*t.get_ref()),
                    Some(t) => {
                        self.error_at(
                            t.span(),
                            format!(
                                "`time_scale` must be a positive number, not {}",
                                t.get_ref()
                            ),
                            Some("0.5 replays the trace twice as fast, 2 half as fast".into()),
                        );
                        None
                    }
                };
                let (Some(block_size), Some(time_scale), true) = (block_size, time_scale, ok)
                else {
                    return None;
                };
                let spec = mooncake::MooncakeSpec {
                    path: path.clone(),
                    block_size,
                    time_scale,
                    selection,
                    seed: r.seed.unwrap_or(0),
                };
                mooncake::read(&spec, &counter)
            }
            other => {
                self.error_at(
                    r.format.span(),
                    format!("unknown dataset `format = \"{other}\"`"),
                    Some("use \"sharegpt\", \"jsonl\" or \"mooncake\"".into()),
                );
                return None;
            }
        };
        let mut source = format!(
            "{format} {} ({})",
            r.path.get_ref(),
            counter.unit().as_str()
        );
        if let Some(n) = selection.sample {
            source.push_str(&format!(", sample {n}"));
        }
        match result {
            Ok(reqs) if reqs.is_empty() => {
                self.error_at(
                    r.path.span(),
                    format!("{} keeps no request", path.display()),
                    Some("loosen the length filters, or check the file".into()),
                );
                None
            }
            Ok(reqs) => Some(built(source, reqs, true)),
            Err(e) => {
                self.error_at(r.path.span(), e.to_string(), None);
                None
            }
        }
    }
}

/// The counter a workload's lengths are measured with.
pub(super) fn counter(tokenizer: Option<&(Tokenizer, PathBuf)>) -> Counter<'_> {
    match tokenizer {
        Some((t, _)) => Counter::Tokens(t),
        None => Counter::Words,
    }
}

/// The client-side length of a prompt given by the plan itself (inline, a file, documents, word
/// synthetic), counted as `src/workload/` counts materialized ones.
pub(super) fn shape_of(prompt: &Prompt, counter: &Counter) -> Result<RequestShape, String> {
    let n = match prompt {
        Prompt::Text(t) => counter.prompt(t),
        Prompt::Messages(m) => counter.messages(m.iter().map(|m| m.content.as_str())),
    }
    .map_err(|e| e.to_string())?;
    Ok(RequestShape {
        prompt_len: n as u64,
        ..RequestShape::default()
    })
}

fn describe(d: LengthDist) -> String {
    match d {
        LengthDist::Fixed(n) => n.to_string(),
        LengthDist::Normal { mean, stddev } => format!("{mean}±{stddev}"),
        LengthDist::Range { lo, hi } => format!("{lo}-{hi}"),
    }
}

/// `src/workload/` requests as the plan's prompts and shapes. `own_max_tokens` false: the
/// requests' drawn output lengths are placeholders (synthetic without `output_tokens`), and the
/// workload's `max_tokens` is sent instead.
fn built(source: String, reqs: Vec<Request>, own_max_tokens: bool) -> Built {
    let mut prompts = Vec::with_capacity(reqs.len());
    let mut shapes = Vec::with_capacity(reqs.len());
    let mut max_tokens = None::<u32>;
    for r in reqs {
        prompts.push(match r.body {
            Body::Text(t) => Prompt::Text(t),
            Body::Messages(m) => Prompt::Messages(
                m.into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            ),
        });
        let own = r.max_tokens.filter(|_| own_max_tokens);
        if let Some(m) = own {
            max_tokens = Some(max_tokens.map_or(m, |x| x.max(m)));
        }
        shapes.push(RequestShape {
            max_tokens: own,
            min_tokens: r.min_tokens.filter(|_| own_max_tokens),
            prompt_len: r.prompt_len as u64,
            scheduled_offset_us: r.scheduled_offset_us,
            session: r.session,
            turn: r.turn,
        });
    }
    Built {
        source,
        prompts,
        shapes,
        max_tokens,
    }
}
