//! The built-in engine's text: which token it generates at each position, with which logprob,
//! and the logprobs of a prompt's own tokens (`echo`). All of it is a pure function of the
//! prompt, the position and the engine's flags, so tests can pin agreement and perplexity.
//!
//! Default mode: the output is the same word cycle for every prompt. `--text`: each position's
//! token is drawn from [`VOCAB`] by a hash of the prompt and the position, so different prompts
//! get different outputs and the same prompt always the same. `--perturb P`: a share P of the
//! positions (chosen by another hash) get a different token, and every logprob is lowered by P,
//! like a lossy quantization of the same model.

/// Words `--text` draws from, each a token with its leading space.
pub const VOCAB: &[&str] = &[
    " the",
    " model",
    " serves",
    " tokens",
    " quickly",
    " under",
    " load",
    " and",
    " every",
    " request",
    " gets",
    " its",
    " answer",
    " from",
    " a",
    " batch",
    " of",
    " sequences",
    " on",
    " one",
    " device",
    " while",
    " memory",
    " holds",
    " cache",
    " for",
    " each",
    " step",
    " in",
    " order",
    " with",
    " care",
];

/// How a sim engine chooses its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TextMode {
    /// `--text`: tokens depend on the prompt.
    pub text: bool,
    /// `--perturb P`: the share of positions whose token is changed.
    pub perturb: f64,
    /// `--no-prompt-logprobs`: `echo` is ignored, as llama.cpp's server does.
    pub no_prompt_logprobs: bool,
}

/// FNV-1a over the key, then the position, then a salt: stable across platforms and versions.
fn hash(key: &str, i: u64, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(i.to_le_bytes()).chain(salt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix: FNV's low bits are weak for short keys.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl TextMode {
    /// Whether anything differs from the default word cycle.
    pub fn is_default(&self) -> bool {
        !self.text && self.perturb <= 0.0
    }

    /// Whether position `i` (1-based) of the output for `key` is perturbed.
    pub fn perturbed(&self, key: &str, i: u64) -> bool {
        self.perturb > 0.0 && (hash(key, i, 2) % 1_000_000) < (self.perturb * 1e6) as u64
    }

    /// The token at position `i` (1-based) of the output for prompt `key`, and its logprob.
    /// `cycle` is the default mode's word for the position.
    pub fn token(&self, key: &str, i: u64, cycle: &'static str) -> (&'static str, f64) {
        let (word, lp) = if self.text {
            let h = hash(key, i, 1);
            let lp = -(((h >> 20) % 8 + 1) as f64) / 8.0;
            (VOCAB[(h % VOCAB.len() as u64) as usize], lp)
        } else {
            (cycle, -((((i - 1) % 4) + 1) as f64) / 4.0)
        };
        if !self.perturbed(key, i) {
            return (word, lp - self.perturb.max(0.0));
        }
        // A different token, always.
        let at = VOCAB.iter().position(|w| *w == word).unwrap_or(0);
        let step = 1 + (hash(key, i, 3) % (VOCAB.len() as u64 - 1)) as usize;
        (VOCAB[(at + step) % VOCAB.len()], lp - 1.0 - self.perturb)
    }

    /// A prompt's tokens (its whitespace-separated words, each after the first with a leading
    /// space) and their logprobs: none for the first, `-(1 + len % 4) / 4 - P` for the others.
    pub fn prompt_logprobs(&self, prompt: &str) -> Vec<(String, Option<f64>)> {
        prompt
            .split_whitespace()
            .enumerate()
            .map(|(j, w)| {
                if j == 0 {
                    (w.to_string(), None)
                } else {
                    let lp = -((1 + w.chars().count() % 4) as f64) / 4.0 - self.perturb.max(0.0);
                    (format!(" {w}"), Some(lp))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_same_tokens_and_perturb_changes_a_share() {
        let t = TextMode {
            text: true,
            ..TextMode::default()
        };
        let a: Vec<_> = (1..=50).map(|i| t.token("hello", i, "x").0).collect();
        let b: Vec<_> = (1..=50).map(|i| t.token("hello", i, "x").0).collect();
        assert_eq!(a, b);
        let other: Vec<_> = (1..=50).map(|i| t.token("bye", i, "x").0).collect();
        assert_ne!(a, other);
        let p = TextMode { perturb: 0.5, ..t };
        let changed = (1..=1000)
            .filter(|&i| t.token("k", i, "x").0 != p.token("k", i, "x").0)
            .count();
        assert!((400..600).contains(&changed), "{changed}");
        let all = TextMode { perturb: 1.0, ..t };
        assert!((1..=100).all(|i| t.token("k", i, "x").0 != all.token("k", i, "x").0));
    }

    #[test]
    fn prompt_logprobs_are_known() {
        let t = TextMode::default();
        let lp = t.prompt_logprobs("aa bbb c");
        assert_eq!(
            lp,
            [
                ("aa".to_string(), None),
                (" bbb".to_string(), Some(-1.0)),
                (" c".to_string(), Some(-0.5))
            ]
        );
    }
}
