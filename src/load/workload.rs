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
        .map(|p| Bytes::from(body(engine, workload, p).to_string()))
        .collect()
}

fn body(engine: &EngineSpec, w: &WorkloadSpec, prompt: &Prompt) -> Value {
    let mut b = json!({
        "model": engine.model,
        "max_tokens": w.max_tokens,
        "temperature": w.temperature,
        "stream": w.stream,
    });
    match engine.api {
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
    if w.stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    if w.ignore_eos {
        b["ignore_eos"] = json!(true);
    }
    b
}
