//! Request bodies: a workload's prompts rendered once per cell into the JSON each engine's API
//! expects, so the load loop only clones bytes.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::plan::model::{Api, EngineSpec, Prompt, RequestShape, WorkloadSpec};

/// One body per prompt, in prompt order, each with its own request shape (`max_tokens`, a
/// pinned `min_tokens`) where the workload's source set one.
pub fn bodies(engine: &EngineSpec, workload: &WorkloadSpec) -> Vec<Bytes> {
    let base = BodySpec::new(engine, workload);
    workload
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let b = match workload.shapes.get(i) {
                Some(s) => base.shaped(engine, s),
                None => base,
            };
            Bytes::from(b.render(p).to_string())
        })
        .collect()
}

/// The request fields outside the OpenAI API that a body for this engine and workload carries:
/// the ones a strict engine may refuse.
pub fn nonstandard_fields(engine: &EngineSpec, workload: &WorkloadSpec) -> Vec<String> {
    let b = BodySpec::new(engine, workload);
    let pinned = workload
        .shapes
        .iter()
        .find(|s| s.min_tokens.is_some())
        .map(|s| b.shaped(engine, s));
    let mut out = Vec::new();
    if b.ignore_eos || pinned.is_some_and(|p| p.ignore_eos) {
        out.push("ignore_eos".to_string());
    }
    if b.min_tokens.is_some() || pinned.is_some_and(|p| p.min_tokens.is_some()) {
        out.push("min_tokens".to_string());
    }
    out.extend(engine.extra_body.keys().cloned());
    out
}

/// Everything a request body depends on besides its prompt.
#[derive(Debug, Clone, Copy)]
pub struct BodySpec<'a> {
    pub api: Api,
    pub model: &'a str,
    pub max_tokens: u32,
    pub min_tokens: Option<u32>,
    pub temperature: f64,
    pub stream: bool,
    pub ignore_eos: bool,
    /// The engine's `[engine.extra_body]`, merged in last.
    pub extra: Option<&'a serde_json::Map<String, Value>>,
}

impl<'a> BodySpec<'a> {
    /// What a workload's requests to an engine carry: the workload's settings, less the
    /// non-standard fields the engine does not accept, plus its `extra_body`.
    pub fn new(engine: &'a EngineSpec, workload: &WorkloadSpec) -> BodySpec<'a> {
        BodySpec {
            api: engine.api,
            model: &engine.model,
            max_tokens: workload.max_tokens,
            min_tokens: workload.min_tokens.filter(|_| engine.accepts.min_tokens),
            temperature: workload.temperature,
            stream: workload.stream,
            ignore_eos: workload.ignore_eos && engine.accepts.ignore_eos,
            extra: Some(&engine.extra_body),
        }
    }

    /// This body for one request of the workload's source: its own `max_tokens`, and a pinned
    /// output length sent as `min_tokens` with `ignore_eos`, each only where the engine
    /// accepts it.
    pub fn shaped(self, engine: &EngineSpec, shape: &RequestShape) -> BodySpec<'a> {
        let pinned = shape.min_tokens.filter(|_| engine.accepts.min_tokens);
        BodySpec {
            max_tokens: shape.max_tokens.unwrap_or(self.max_tokens),
            min_tokens: pinned.or(self.min_tokens),
            ignore_eos: self.ignore_eos
                || (shape.min_tokens.is_some() && engine.accepts.ignore_eos),
            ..self
        }
    }

    /// The JSON body for one prompt.
    pub fn render(&self, prompt: &Prompt) -> Value {
        let mut b = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": self.stream,
        });
        match self.api {
            Api::Chat => {
                b["messages"] = match prompt {
                    Prompt::Text(t) => json!([{"role": "user", "content": t}]),
                    Prompt::Messages(m) => json!(m),
                }
            }
            Api::Completions => {
                b["prompt"] = match prompt {
                    Prompt::Text(t) => json!(t),
                    // A conversation sent to a completions API: its contents, one per line.
                    Prompt::Messages(m) => json!(m
                        .iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")),
                }
            }
        }
        if self.stream {
            b["stream_options"] = json!({"include_usage": true});
        }
        if self.ignore_eos {
            b["ignore_eos"] = json!(true);
        }
        if let Some(m) = self.min_tokens {
            b["min_tokens"] = json!(m);
        }
        for (k, v) in self.extra.into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    }
}
