//! `perplexity`: each passage of a local text sent to `/v1/completions` with `echo` and
//! `logprobs` (one generated token), the logprobs of the passage's own tokens summed. The
//! first answer tells whether the engine gives prompt logprobs at all.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::record::PerplexityResult;

/// One passage's score, as `quality/<step>/<engine>.scores.jsonl` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub passage: usize,
    /// Prompt tokens with a logprob (the first has none).
    pub tokens: u64,
    /// The sum of their logprobs, in nats.
    pub sum_logprob: f64,
}

/// The request scoring one passage.
pub fn body(model: &str, passage: &str) -> Value {
    json!({
        "model": model,
        "prompt": passage,
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": true,
        "logprobs": 1,
        "stream": false,
    })
}

/// The said reason when an answer has no prompt logprobs.
pub const NOT_SUPPORTED: &str = "not supported by this engine";

/// Reads one answer: the passage's score, or why the engine gives none (`Err`, starting with
/// [`NOT_SUPPORTED`]).
pub fn parse(passage: usize, v: &Value) -> Result<Score, String> {
    let lp = &v["choices"][0]["logprobs"];
    let Some(all) = lp["token_logprobs"].as_array() else {
        return Err(format!(
            "{NOT_SUPPORTED}: its answer to `echo` with `logprobs` has no `token_logprobs`"
        ));
    };
    // The prompt's tokens come first; `usage.prompt_tokens` says how many (else all but the one
    // generated token).
    let n_prompt = v["usage"]["prompt_tokens"]
        .as_u64()
        .map_or(all.len().saturating_sub(1), |n| n as usize);
    if n_prompt == 0 || all.len() < n_prompt {
        return Err(format!(
            "{NOT_SUPPORTED}: it returned {} logprobs for a prompt of {n_prompt} tokens (no prompt logprobs with `echo`)",
            all.len()
        ));
    }
    let scored: Vec<f64> = all[..n_prompt].iter().filter_map(Value::as_f64).collect();
    if scored.is_empty() && n_prompt > 1 {
        return Err(format!(
            "{NOT_SUPPORTED}: the prompt's tokens came back without logprobs"
        ));
    }
    Ok(Score {
        passage,
        tokens: scored.len() as u64,
        sum_logprob: scored.iter().sum(),
    })
}

/// Every passage's score pooled: perplexity over all scored tokens.
pub fn summarize(scores: &[Score]) -> PerplexityResult {
    let tokens: u64 = scores.iter().map(|s| s.tokens).sum();
    let sum: f64 = scores.iter().map(|s| s.sum_logprob).sum();
    let mean_nll = if tokens == 0 {
        0.0
    } else {
        -sum / tokens as f64
    };
    PerplexityResult {
        passages: scores.len(),
        tokens_scored: tokens,
        mean_nll,
        perplexity: mean_nll.exp(),
        increase: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_only_the_prompt_tokens() {
        let v = json!({"choices": [{"logprobs": {"token_logprobs": [null, -1.0, -0.5, -9.0]}}], "usage": {"prompt_tokens": 3}});
        let s = parse(0, &v).expect("supported");
        assert_eq!((s.tokens, s.sum_logprob), (2, -1.5));
        let r = summarize(&[s]);
        assert_eq!(r.mean_nll, 0.75);
        assert_eq!(r.perplexity, 0.75f64.exp());
    }

    #[test]
    fn an_answer_without_prompt_logprobs_is_not_supported() {
        let v = json!({"choices": [{"logprobs": {"token_logprobs": [-1.0]}}], "usage": {"prompt_tokens": 3}});
        assert!(parse(0, &v)
            .expect_err("unsupported")
            .starts_with(NOT_SUPPORTED));
        let v = json!({"choices": [{"text": "x"}]});
        assert!(parse(0, &v)
            .expect_err("unsupported")
            .starts_with(NOT_SUPPORTED));
    }
}
