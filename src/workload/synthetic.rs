//! Synthetic prompts of an exact length: seeded length draws, corpus text grown and checked against
//! the tokenizer until the count is exact, shared-prefix groups and multi-turn sessions.

use super::corpus::Words;
use super::error::{Result, WorkloadError};
use super::materialize::{Body, Message, Request};
use super::rng::Rng;
use super::tokenizer::Counter;

/// How a length (input or output) is drawn for each request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthDist {
    Fixed(u32),
    /// Normal around `mean`, rounded, clamped to at least 1.
    Normal {
        mean: u32,
        stddev: f64,
    },
    /// Uniform in `[lo, hi]`, both included.
    Range {
        lo: u32,
        hi: u32,
    },
}

impl LengthDist {
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |m: String| Err(WorkloadError::Setting(format!("{what}: {m}")));
        match *self {
            LengthDist::Fixed(0) => bad("a length must be at least 1".into()),
            LengthDist::Normal { mean: 0, .. } => bad("a length must be at least 1".into()),
            LengthDist::Normal { stddev, .. } if !(stddev.is_finite() && stddev >= 0.0) => bad(
                format!("the stddev must be a finite number >= 0, not {stddev}"),
            ),
            LengthDist::Range { lo, hi } if lo == 0 || lo > hi => {
                bad(format!("the range [{lo}, {hi}] needs 1 <= a <= b"))
            }
            _ => Ok(()),
        }
    }

    /// The smallest length a draw can give.
    pub fn min(&self) -> u32 {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Normal { .. } => 1,
            LengthDist::Range { lo, .. } => lo,
        }
    }

    pub fn draw(&self, rng: &mut Rng) -> u32 {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Normal { mean, stddev } => {
                let v = (f64::from(mean) + stddev * rng.normal()).round();
                v.clamp(1.0, f64::from(u32::MAX)) as u32
            }
            LengthDist::Range { lo, hi } => {
                rng.range_inclusive(u64::from(lo), u64::from(hi)) as u32
            }
        }
    }
}

/// `[workload.synthetic]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Prompts to make (sessions, when `turns > 1`).
    pub count: usize,
    pub input: LengthDist,
    pub output: LengthDist,
    /// Send the drawn output length as `min_tokens` too, so answers are exactly that long where the
    /// engine accepts it.
    pub pin_output: bool,
    /// Tokens (words without a tokenizer) every prompt of a group starts with; 0 for none.
    pub prefix_tokens: u32,
    /// How many distinct prefixes; prompt `i` is in group `i % prefix_groups`.
    pub prefix_groups: u32,
    /// User turns per session; 1 for single requests.
    pub turns: u32,
    pub seed: u64,
}

// Stream keys, so each purpose draws from its own stream.
const KEY_LENGTHS: u64 = 1;
const KEY_PREFIX: u64 = 2;
const KEY_TEXT: u64 = 3;

/// Appends corpus words to `start` until `measure` of the text is exactly `target`.
///
/// Appending at a word boundary leaves the tokens before it alone in the pre-tokenizers in use
/// (byte-level, metaspace, whitespace), so counts add up: the text is first grown counting only
/// each appended batch (`plain` of it, with its leading space), which costs about one encoding of
/// the whole, and then measured whole once. Where that check fails (a tokenizer whose tokens
/// cross word boundaries) it is grown again measuring the whole text at every step. Either way
/// the result is measured, never assumed.
pub(crate) fn grow(
    plain: &mut dyn FnMut(&str) -> Result<usize>,
    measure: &mut dyn FnMut(&str) -> Result<usize>,
    start: String,
    target: usize,
    words: &mut Words,
    unit: &'static str,
) -> Result<String> {
    let mut fast = words.clone();
    if let Some(t) = grow_additive(plain, measure, start.clone(), target, &mut fast)? {
        *words = fast;
        return Ok(t);
    }
    grow_measured(measure, start, target, words, unit)
}

/// The additive pass of `grow`: `None` when the whole text does not measure what the batches
/// added up to (or no word fits), so the measured pass decides.
fn grow_additive(
    plain: &mut dyn FnMut(&str) -> Result<usize>,
    measure: &mut dyn FnMut(&str) -> Result<usize>,
    start: String,
    target: usize,
    words: &mut Words,
) -> Result<Option<String>> {
    let mut text = start;
    let mut n = measure(&text)?;
    let empty = if text.is_empty() { n } else { measure("")? };
    let mut per_word = 1.5f64;
    let mut cap = usize::MAX;
    let mut skipped = 0;
    while n < target {
        if skipped > 500 {
            return Ok(None);
        }
        let deficit = target - n;
        let k = ((deficit as f64 * 0.8 / per_word) as usize).clamp(1, cap);
        let batch = words.peek(k).join(" ");
        let added = if text.is_empty() {
            measure(&batch)?.saturating_sub(empty)
        } else {
            plain(&format!(" {batch}"))?
        };
        if n + added <= target {
            if added > 0 {
                per_word = (added as f64 / k as f64).max(1.0);
            }
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&batch);
            n += added;
            words.advance(k);
            cap = usize::MAX;
        } else if k > 1 {
            cap = k / 2;
        } else {
            words.advance(1);
            skipped += 1;
        }
    }
    Ok((measure(&text)? == target).then_some(text))
}

/// Appends corpus words to `start` until `measure` of the text is exactly `target`.
///
/// Each step appends a batch sized from the deficit and the units per word seen so far, and
/// halves it when it overshoots; a single word that overshoots is skipped (a shorter one comes
/// soon: "a", "the"). Appending at a word boundary never changes the tokens before it in the
/// pre-tokenizers in use (byte-level, metaspace, whitespace), so the count only grows; the result
/// is measured, never assumed. Floating point only sizes the batches, with IEEE basic operations.
fn grow_measured(
    measure: &mut dyn FnMut(&str) -> Result<usize>,
    start: String,
    target: usize,
    words: &mut Words,
    unit: &'static str,
) -> Result<String> {
    let mut text = start;
    let mut n = measure(&text)?;
    if n > target {
        return Err(WorkloadError::Length {
            target,
            unit,
            why: format!("its fixed part alone is {n} {unit}"),
        });
    }
    let mut per_word = 1.5f64;
    let mut cap = usize::MAX;
    let mut skipped = 0;
    let mut steps = 0;
    while n < target {
        steps += 1;
        if steps > 10_000 || skipped > 500 {
            return Err(WorkloadError::Length {
                target,
                unit,
                why: format!("stuck at {n} {unit}: no corpus word adds few enough"),
            });
        }
        let deficit = target - n;
        let k = ((deficit as f64 * 0.8 / per_word) as usize).clamp(1, cap);
        let mut cand = text.clone();
        for w in words.peek(k) {
            if !cand.is_empty() {
                cand.push(' ');
            }
            cand.push_str(w);
        }
        let c = measure(&cand)?;
        if c <= target {
            if c > n {
                per_word = ((c - n) as f64 / k as f64).max(1.0);
            }
            text = cand;
            n = c;
            words.advance(k);
            cap = usize::MAX;
        } else if k > 1 {
            cap = k / 2;
        } else {
            words.advance(1);
            skipped += 1;
        }
    }
    Ok(text)
}

/// The opener of text number `n`: its own number, so no two prompts share their first tokens by
/// accident (a shared start would be a prefix-cache hit the workload did not ask for).
fn opener(n: u64) -> String {
    format!("{n}.")
}

/// Grows from `opener`, or from nothing when the opener alone does not fit (tiny lengths).
fn with_opener(
    opener: &str,
    mut grow_from: impl FnMut(String) -> Result<String>,
) -> Result<String> {
    match grow_from(opener.to_string()) {
        Err(WorkloadError::Length { .. }) if !opener.is_empty() => grow_from(String::new()),
        r => r,
    }
}

/// A whole prompt of exactly `target` (prompt convention: the tokenizer's specials counted):
/// `head` (a shared prefix, or empty), then `opener` and corpus words.
///
/// The tail is first grown on its own (cheap: the head is not re-encoded each step) and the whole
/// checked once; only if the join changed the count is the tail grown against the whole text.
pub(crate) fn exact_prompt(
    counter: &Counter,
    head: &str,
    opener: &str,
    target: usize,
    rng: Rng,
) -> Result<String> {
    let unit = counter.unit().as_str();
    if head.is_empty() {
        let text = with_opener(opener, |start| {
            grow(
                &mut |t| counter.plain(t),
                &mut |t| counter.prompt(t),
                start,
                target,
                &mut Words::new(rng.clone()),
                unit,
            )
        })?;
        if text.is_empty() {
            return Err(WorkloadError::Length {
                target,
                unit,
                why: "the tokenizer's own special tokens alone are that long: ask for more".into(),
            });
        }
        return Ok(text);
    }
    let have = counter.prompt(head)?;
    if have == target {
        return Ok(head.to_string());
    }
    let fast = target.checked_sub(have).and_then(|tail| {
        let piece = with_opener(opener, |start| {
            grow(
                &mut |t| counter.plain(t),
                &mut |t| counter.plain(&format!(" {t}")),
                start,
                tail,
                &mut Words::new(rng.clone()),
                unit,
            )
        })
        .ok()?;
        Some(format!("{head} {piece}"))
    });
    if let Some(p) = fast {
        if counter.prompt(&p)? == target {
            return Ok(p);
        }
    }
    with_opener(opener, |start| {
        let start = if start.is_empty() {
            head.to_string()
        } else {
            format!("{head} {start}")
        };
        grow(
            &mut |t| counter.plain(t),
            &mut |t| counter.prompt(t),
            start,
            target,
            &mut Words::new(rng.clone()),
            unit,
        )
    })
}

/// A piece of exactly `target` plain units (no special tokens), e.g. one chat turn's content.
pub(crate) fn exact_piece(
    counter: &Counter,
    opener: &str,
    target: usize,
    rng: Rng,
) -> Result<String> {
    with_opener(opener, |start| {
        grow(
            &mut |t| counter.plain(t),
            &mut |t| counter.plain(t),
            start,
            target,
            &mut Words::new(rng.clone()),
            counter.unit().as_str(),
        )
    })
}

/// Builds the requests of a synthetic workload. Prompt `i`'s lengths and text depend only on the
/// seed and `i` (and its group's prefix on the seed and the group), never on other prompts.
pub fn generate(spec: &SyntheticSpec, counter: &Counter) -> Result<Vec<Request>> {
    spec.input.validate("input_tokens")?;
    spec.output.validate("output_tokens")?;
    if spec.prefix_groups == 0 {
        return Err(WorkloadError::Setting(
            "prefix_groups must be at least 1".into(),
        ));
    }
    if spec.turns == 0 {
        return Err(WorkloadError::Setting("turns must be at least 1".into()));
    }
    if spec.prefix_tokens > 0 && spec.turns > 1 {
        return Err(WorkloadError::Setting(
            "prefix_tokens applies to single-turn prompts; use turns = 1 with a prefix".into(),
        ));
    }
    if spec.prefix_tokens > 0 && !matches!(spec.input, LengthDist::Normal { .. }) {
        let min = spec.input.min();
        if min <= spec.prefix_tokens {
            return Err(WorkloadError::Setting(format!(
                "input_tokens (at least {min}) must be longer than prefix_tokens = {}: each prompt is its prefix plus a unique suffix",
                spec.prefix_tokens
            )));
        }
    }
    let prefixes: Vec<String> = if spec.prefix_tokens > 0 {
        (0..spec.prefix_groups)
            .map(|g| {
                exact_prompt(
                    counter,
                    "",
                    "",
                    spec.prefix_tokens as usize,
                    Rng::derive(spec.seed, &[KEY_PREFIX, u64::from(g)]),
                )
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for i in 0..spec.count {
        let mut lengths = Rng::derive(spec.seed, &[KEY_LENGTHS, i as u64]);
        if spec.turns == 1 {
            let mut input = spec.input.draw(&mut lengths) as usize;
            let output = spec.output.draw(&mut lengths);
            let head = match prefixes.get(i % prefixes.len().max(1)) {
                Some(p) => {
                    // A normal draw may fall at or below the prefix: keep one suffix token.
                    input = input.max(spec.prefix_tokens as usize + 1);
                    p.as_str()
                }
                None => "",
            };
            let text = exact_prompt(
                counter,
                head,
                &opener(out.len() as u64 + 1),
                input,
                Rng::derive(spec.seed, &[KEY_TEXT, i as u64, 0]),
            )?;
            out.push(Request {
                index: out.len(),
                session: None,
                turn: None,
                scheduled_offset_us: None,
                body: Body::Text(text),
                max_tokens: Some(output),
                min_tokens: spec.pin_output.then_some(output),
                prompt_len: input,
            });
        } else {
            for turn in 0..spec.turns {
                let input = spec.input.draw(&mut lengths) as usize;
                let output = spec.output.draw(&mut lengths);
                let content = exact_piece(
                    counter,
                    &opener(out.len() as u64 + 1),
                    input,
                    Rng::derive(spec.seed, &[KEY_TEXT, i as u64, u64::from(turn)]),
                )?;
                out.push(Request {
                    index: out.len(),
                    session: Some(i as u64),
                    turn: Some(turn),
                    scheduled_offset_us: None,
                    body: Body::Messages(vec![Message::user(content)]),
                    max_tokens: Some(output),
                    min_tokens: spec.pin_output.then_some(output),
                    prompt_len: input,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::tokenizer::tests::{tiny, tiny_without_bos};
    use crate::workload::tokenizer::Tokenizer;

    fn spec(input: LengthDist) -> SyntheticSpec {
        SyntheticSpec {
            count: 24,
            input,
            output: LengthDist::Fixed(16),
            pin_output: false,
            prefix_tokens: 0,
            prefix_groups: 1,
            turns: 1,
            seed: 7,
        }
    }

    fn text(r: &Request) -> &str {
        match &r.body {
            Body::Text(t) => t,
            Body::Messages(m) => &m[0].content,
        }
    }

    fn assert_exact(t: &Tokenizer, s: &SyntheticSpec) -> Vec<Request> {
        let reqs = generate(s, &Counter::Tokens(t)).expect("generate");
        assert_eq!(reqs.len(), s.count);
        for r in &reqs {
            let n = t.count(text(r)).expect("count");
            assert_eq!(n, r.prompt_len, "prompt {}: {:?}", r.index, text(r));
        }
        reqs
    }

    #[test]
    fn every_prompt_of_an_exact_length_workload_tokenizes_to_its_length() {
        for t in [tiny(), tiny_without_bos()] {
            let reqs = assert_exact(&t, &spec(LengthDist::Fixed(100)));
            assert!(reqs.iter().all(|r| r.prompt_len == 100));
            // Each is language from the corpus, and no two prompts are the same.
            assert!(text(&reqs[0]).split_whitespace().count() > 30);
            let mut texts: Vec<&str> = reqs.iter().map(text).collect();
            texts.sort_unstable();
            texts.dedup();
            assert_eq!(texts.len(), reqs.len());
            // Each opens with its own number, so no two share their first tokens by accident.
            let mut firsts: Vec<&str> = reqs
                .iter()
                .filter_map(|r| text(r).split_whitespace().next())
                .collect();
            firsts.sort_unstable();
            firsts.dedup();
            assert_eq!(firsts.len(), reqs.len());
            // The smallest prompts too: one token (the BOS) plus one, and a single token.
            let min = t.added_specials().expect("specials") + 1;
            assert_exact(&t, &spec(LengthDist::Fixed(min as u32)));
            let ranged = assert_exact(&t, &spec(LengthDist::Range { lo: 5, hi: 300 }));
            assert!(ranged.iter().any(|r| r.prompt_len != ranged[0].prompt_len));
            let normal = assert_exact(
                &t,
                &spec(LengthDist::Normal {
                    mean: 60,
                    stddev: 20.0,
                }),
            );
            assert!(normal.iter().all(|r| r.prompt_len >= 1));
        }
    }

    #[test]
    fn shared_prefixes_are_exact_and_shared_token_for_token() {
        for t in [tiny(), tiny_without_bos()] {
            let mut s = spec(LengthDist::Range { lo: 80, hi: 140 });
            s.prefix_tokens = 64;
            s.prefix_groups = 3;
            let reqs = assert_exact(&t, &s);
            let ids: Vec<Vec<u32>> = reqs
                .iter()
                .map(|r| t.prompt_ids(text(r)).expect("ids"))
                .collect();
            for (i, r) in reqs.iter().enumerate() {
                let same = &ids[i % 3][..64];
                assert_eq!(&ids[i][..64], same, "prompt {i} leaves its group's prefix");
                if i >= 3 {
                    assert_ne!(text(r), text(&reqs[i - 3]), "suffixes are unique");
                }
            }
            assert_ne!(ids[0][..64], ids[1][..64], "groups have distinct prefixes");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_prompts_and_another_seed_others() {
        let t = tiny();
        let s = spec(LengthDist::Normal {
            mean: 50,
            stddev: 10.0,
        });
        let a = generate(&s, &Counter::Tokens(&t)).expect("a");
        assert_eq!(a, generate(&s, &Counter::Tokens(&t)).expect("b"));
        let mut other = s.clone();
        other.seed = 8;
        assert_ne!(a, generate(&other, &Counter::Tokens(&t)).expect("c"));
        // Prompt 3 does not depend on how many prompts there are.
        let mut fewer = s.clone();
        fewer.count = 4;
        assert_eq!(a[3], generate(&fewer, &Counter::Tokens(&t)).expect("d")[3]);
    }

    #[test]
    fn without_a_tokenizer_lengths_are_words_and_sessions_have_turns() {
        let mut s = spec(LengthDist::Fixed(40));
        s.prefix_tokens = 10;
        s.prefix_groups = 2;
        s.pin_output = true;
        let reqs = generate(&s, &Counter::Words).expect("words");
        for r in &reqs {
            assert_eq!(text(r).split_whitespace().count(), 40);
            assert_eq!(r.min_tokens, Some(16));
        }
        let w0: Vec<&str> = text(&reqs[0]).split_whitespace().take(10).collect();
        let w2: Vec<&str> = text(&reqs[2]).split_whitespace().take(10).collect();
        assert_eq!(w0, w2);
        let mut m = spec(LengthDist::Fixed(20));
        m.count = 2;
        m.turns = 3;
        let t = tiny();
        let reqs = generate(&m, &Counter::Tokens(&t)).expect("turns");
        assert_eq!(reqs.len(), 6);
        assert_eq!(
            reqs.iter().map(|r| (r.session, r.turn)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1]
                .iter()
                .zip([0, 1, 2, 0, 1, 2])
                .map(|(s, t)| (Some(*s), Some(t)))
                .collect::<Vec<_>>()
        );
        for r in &reqs {
            assert_eq!(t.count_plain(text(r)).expect("count"), 20);
        }
    }

    #[test]
    fn a_count_that_does_not_add_up_over_words_is_still_met_exactly() {
        // One "token" per started 4 bytes: joining pieces changes the sum, so the additive pass
        // fails its check and the measured pass must decide.
        let mut quarter = |t: &str| -> Result<usize> { Ok(t.len().div_ceil(4)) };
        let mut plain = |t: &str| -> Result<usize> { Ok(t.len().div_ceil(4)) };
        for target in [1, 7, 50, 333] {
            let mut w = Words::new(Rng::new(target as u64));
            let t = grow(
                &mut plain,
                &mut quarter,
                String::new(),
                target,
                &mut w,
                "units",
            )
            .expect("grow");
            assert_eq!(t.len().div_ceil(4), target, "{t:?}");
        }
    }

    #[test]
    fn impossible_settings_are_refused_with_the_reason() {
        let mut s = spec(LengthDist::Fixed(10));
        s.prefix_tokens = 10;
        let e = generate(&s, &Counter::Words).expect_err("prefix too long");
        assert!(e.to_string().contains("longer than prefix_tokens"), "{e}");
        let e = generate(&spec(LengthDist::Range { lo: 9, hi: 3 }), &Counter::Words)
            .expect_err("range");
        assert!(e.to_string().contains("[9, 3]"), "{e}");
        let t = tiny();
        // A prompt of one token is only its BOS: no text can have that length.
        let e = generate(&spec(LengthDist::Fixed(1)), &Counter::Tokens(&t)).expect_err("bos");
        assert!(e.to_string().contains("exactly 1 tokens"), "{e}");
    }
}
