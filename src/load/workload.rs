//! Request bodies: a workload's prompts rendered once per cell into the JSON each engine's API
//! expects, so the load loop only clones bytes.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::plan::{Api, EngineSpec, Prompt, WorkloadSpec};

/// One body per prompt, in prompt order.
pub fn bodies(engine: &EngineSpec, workload: &WorkloadSpec) -> Vec<Bytes> {
    workload
        .prompts
        .iter()
        .map(|p| {
            let b = BodySpec {
                api: engine.api,
                model: &engine.model,
                max_tokens: workload.max_tokens,
                min_tokens: workload.min_tokens,
                temperature: workload.temperature,
                stream: workload.stream,
                ignore_eos: workload.ignore_eos,
            };
            Bytes::from(b.render(p).to_string())
        })
        .collect()
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
}

impl BodySpec<'_> {
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
        b
    }
}
