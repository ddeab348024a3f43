//! `agreement`: each prompt sent at temperature 0 (with `logprobs` where the engine takes them),
//! the outputs kept; then each engine's outputs compared with the baseline's (`compare`, pure).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::record::{AgreementResult, Divergence};
use crate::plan::model::{Api, EngineSpec, Prompt};

/// One prompt's output, as `quality/<step>/<engine>.outputs.jsonl` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub prompt: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The engine's tokens, when it returned logprobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<f64>>,
    /// Why there is no output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a request asks for besides the text, from most to least: an engine that refuses one
/// (HTTP 4xx) is asked for the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Logprobs, with each token as `token_id:N` (vLLM's `return_tokens_as_token_ids`): the
    /// exact token identity, whatever each engine's detokenizer makes of a partial character.
    TokenIds,
    /// Logprobs, tokens as text.
    Logprobs,
    /// The text alone.
    Text,
}

impl Ask {
    /// The next thing to ask an engine that refused this.
    pub fn fallback(self) -> Option<Ask> {
        match self {
            Ask::TokenIds => Some(Ask::Logprobs),
            Ask::Logprobs => Some(Ask::Text),
            Ask::Text => None,
        }
    }
}

/// The request body for one prompt.
pub fn body(spec: &EngineSpec, prompt: &Prompt, max_tokens: u32, ask: Ask) -> Value {
    let logprobs = ask != Ask::Text;
    let mut b = serde_json::Map::new();
    for (k, v) in &spec.extra_body {
        b.insert(k.clone(), v.clone());
    }
    b.insert("model".into(), spec.model.clone().into());
    b.insert("max_tokens".into(), max_tokens.into());
    b.insert("temperature".into(), 0.0.into());
    b.insert("stream".into(), false.into());
    match (spec.api, prompt) {
        (Api::Chat, Prompt::Text(t)) => {
            b.insert("messages".into(), json!([{"role": "user", "content": t}]));
        }
        (Api::Chat, Prompt::Messages(m)) => {
            b.insert(
                "messages".into(),
                serde_json::to_value(m).unwrap_or_default(),
            );
        }
        (Api::Completions, p) => {
            let text = match p {
                Prompt::Text(t) => t.clone(),
                Prompt::Messages(m) => m
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            b.insert("prompt".into(), text.into());
        }
    }
    if logprobs {
        match spec.api {
            Api::Chat => {
                b.insert("logprobs".into(), true.into());
            }
            Api::Completions => {
                b.insert("logprobs".into(), 1.into());
            }
        }
    }
    if ask == Ask::TokenIds {
        b.insert("return_tokens_as_token_ids".into(), true.into());
    }
    Value::Object(b)
}

/// Reads a response body: the text, and the tokens and logprobs when present.
pub fn parse(api: Api, prompt: usize, v: &Value) -> Output {
    let choice = &v["choices"][0];
    let text = match api {
        Api::Chat => choice["message"]["content"].as_str(),
        Api::Completions => choice["text"].as_str(),
    };
    let Some(text) = text else {
        return Output {
            prompt,
            error: Some("the response has no choices[0] text".into()),
            ..Output::default()
        };
    };
    let (tokens, logprobs) = match api {
        Api::Chat => {
            let content = choice["logprobs"]["content"].as_array();
            (
                content.map(|c| {
                    c.iter()
                        .map(|t| t["token"].as_str().unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                }),
                content.and_then(|c| c.iter().map(|t| t["logprob"].as_f64()).collect()),
            )
        }
        Api::Completions => {
            let lp = &choice["logprobs"];
            (
                lp["tokens"].as_array().map(|a| {
                    a.iter()
                        .map(|t| t.as_str().unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                }),
                lp["token_logprobs"]
                    .as_array()
                    .and_then(|a| a.iter().map(Value::as_f64).collect()),
            )
        }
    };
    Output {
        prompt,
        text: Some(text.to_string()),
        tokens,
        logprobs,
        error: None,
    }
}

/// One engine's outputs against the baseline's, prompt by prompt (matched by index).
pub fn compare(baseline: &[Output], engine: &[Output]) -> AgreementResult {
    let answered = || baseline.iter().chain(engine).filter(|o| o.error.is_none());
    // Tokens are compared in one form only: every answer's as `token_id:N`, or every answer's
    // as text (an engine that ignores `return_tokens_as_token_ids` gives text).
    let ids = |o: &Output| {
        o.tokens
            .as_ref()
            .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t.starts_with("token_id:")))
    };
    let both_tokens =
        answered().all(|o| o.tokens.is_some()) && (answered().all(ids) || !answered().any(ids));
    let unit = if both_tokens { "tokens" } else { "words" };
    let units = |o: &Output| -> Vec<String> {
        match (&o.tokens, both_tokens) {
            (Some(t), true) => t.clone(),
            _ => o
                .text
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
        }
    };
    let (mut prompts, mut identical, mut failed, mut prefix_sum) = (0, 0, 0, 0usize);
    let (mut lp_sum, mut lp_n, mut lp_all) = (0.0, 0usize, both_tokens);
    let mut first = None;
    for b in baseline {
        let e = engine.iter().find(|e| e.prompt == b.prompt);
        let (Some(e), None) = (e, &b.error) else {
            failed += 1;
            continue;
        };
        if e.error.is_some() {
            failed += 1;
            continue;
        }
        prompts += 1;
        if b.text == e.text {
            identical += 1;
        }
        let (bu, eu) = (units(b), units(e));
        let common = bu.iter().zip(&eu).take_while(|(x, y)| x == y).count();
        prefix_sum += common;
        if first.is_none() && (common < bu.len() || common < eu.len()) {
            first = Some(Divergence {
                prompt: b.prompt,
                position: common,
                baseline: bu.get(common).cloned(),
                engine: eu.get(common).cloned(),
            });
        }
        match (&b.logprobs, &e.logprobs) {
            (Some(bl), Some(el)) if both_tokens => {
                for (x, y) in bl.iter().zip(el).take(common) {
                    lp_sum += (x - y).abs();
                    lp_n += 1;
                }
            }
            _ => lp_all = false,
        }
    }
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
    AgreementResult {
        prompts,
        prompts_identical: identical,
        agreement: mean(identical as f64, prompts),
        mean_common_prefix: mean(prefix_sum as f64, prompts),
        unit: unit.into(),
        first_divergence: first,
        mean_abs_logprob_diff: (lp_all && lp_n > 0).then(|| lp_sum / lp_n as f64),
        logprob_tokens: if lp_all { lp_n } else { 0 },
        prompts_failed: failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(prompt: usize, toks: &[&str], lps: &[f64]) -> Output {
        Output {
            prompt,
            text: Some(toks.concat()),
            tokens: Some(toks.iter().map(|t| t.to_string()).collect()),
            logprobs: Some(lps.to_vec()),
            error: None,
        }
    }

    #[test]
    fn compares_prompt_by_prompt() {
        let base = [
            out(0, &["a", " b", " c"], &[-1.0, -1.0, -1.0]),
            out(1, &["x", " y"], &[-0.5, -0.5]),
        ];
        let eng = [
            out(0, &["a", " b", " c"], &[-1.5, -1.0, -0.5]),
            out(1, &["x", " z"], &[-0.25, -2.0]),
        ];
        let r = compare(&base, &eng);
        assert_eq!(r.prompts, 2);
        assert_eq!(r.prompts_identical, 1);
        assert_eq!(r.agreement, 0.5);
        assert_eq!(r.mean_common_prefix, 2.0);
        assert_eq!(r.unit, "tokens");
        assert_eq!(
            r.first_divergence,
            Some(Divergence {
                prompt: 1,
                position: 1,
                baseline: Some(" y".into()),
                engine: Some(" z".into())
            })
        );
        // |0.5| + 0 + |0.5| over prompt 0's three tokens, |0.25| over prompt 1's common one.
        assert_eq!(r.logprob_tokens, 4);
        assert_eq!(r.mean_abs_logprob_diff, Some(1.25 / 4.0));
    }

    #[test]
    fn without_tokens_compares_words_and_has_no_logprob_figure() {
        let base = [Output {
            prompt: 0,
            text: Some("one two three".into()),
            ..Output::default()
        }];
        let eng = [Output {
            prompt: 0,
            text: Some("one two four".into()),
            ..Output::default()
        }];
        let r = compare(&base, &eng);
        assert_eq!(r.unit, "words");
        assert_eq!(r.mean_common_prefix, 2.0);
        assert_eq!(r.mean_abs_logprob_diff, None);
    }

    #[test]
    fn token_ids_and_token_texts_are_never_compared_with_each_other() {
        let base = [out(0, &["token_id:5", "token_id:7"], &[-1.0, -1.0])];
        let same = [out(0, &["token_id:5", "token_id:7"], &[-1.0, -0.5])];
        let r = compare(&base, &same);
        assert_eq!((r.unit.as_str(), r.mean_common_prefix), ("tokens", 2.0));
        // An engine that ignored `return_tokens_as_token_ids` answered token texts: the two
        // are compared on words of their texts, without a logprob figure.
        let texts = [out(0, &["a", " b"], &[-1.0, -1.0])];
        let r = compare(&base, &texts);
        assert_eq!(r.unit, "words");
        assert_eq!(r.mean_abs_logprob_diff, None);
    }

    #[test]
    fn parses_both_apis() {
        let c = json!({"choices": [{"text": "a b", "logprobs": {"tokens": ["a", " b"], "token_logprobs": [-0.5, -1.0]}}]});
        let o = parse(Api::Completions, 3, &c);
        assert_eq!(
            o.tokens.as_deref(),
            Some(&["a".to_string(), " b".to_string()][..])
        );
        assert_eq!(o.logprobs, Some(vec![-0.5, -1.0]));
        let ch = json!({"choices": [{"message": {"content": "hi"}, "logprobs": {"content": [{"token": "hi", "logprob": -0.1}]}}]});
        let o = parse(Api::Chat, 0, &ch);
        assert_eq!(o.text.as_deref(), Some("hi"));
        assert_eq!(o.logprobs, Some(vec![-0.1]));
        let none = json!({"choices": [{"message": {"content": "hi"}, "logprobs": null}]});
        assert_eq!(parse(Api::Chat, 0, &none).tokens, None);
    }
}
