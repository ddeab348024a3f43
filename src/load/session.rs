//! Multi-turn sessions on the wire: each turn's body is its own messages after the session's
//! history, which holds the engine's actual answers to the turns before it.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::body::BodySpec;
use crate::plan::model::{Api, EngineSpec, Message, Prompt, WorkloadSpec};
use crate::workload::tokenizer::CountUnit;

/// What a level of a `[workload.sessions]` workload sends.
#[derive(Debug)]
pub struct SessionPlan {
    /// Per session (the workload's conversation), its turns in order.
    pub sessions: Vec<Vec<TurnPlan>>,
    pub think_time: Duration,
    api: Api,
    /// What `client_prompt_tokens` counts: an answer's length is its words, or its tokens as
    /// the engine counted them (`usage.completion_tokens`).
    unit: CountUnit,
}

/// One turn, before its history is known.
#[derive(Debug)]
pub struct TurnPlan {
    pub session: u64,
    pub turn: u32,
    /// The body for this turn alone (its shape: `max_tokens`, pinned outputs, extra fields).
    template: Value,
    /// The messages this turn adds.
    own: Vec<Message>,
    /// The client's count of `own`, in the workload's unit.
    pub own_len: u64,
}

/// A session's conversation so far, as sent: every earlier turn's messages and the engine's
/// answer to it.
#[derive(Debug, Default, Clone)]
pub struct History {
    messages: Vec<Message>,
    /// The client-side length of `messages` (docs/metrics.md "Prompt token counts").
    len: u64,
}

impl History {
    /// The client-side prompt length of `turn` sent after this history.
    pub fn prompt_len(&self, turn: &TurnPlan) -> u64 {
        self.len + turn.own_len
    }

    /// Adds a finished turn and the engine's answer (`text`, `output_tokens` by the engine).
    pub fn push(&mut self, turn: &TurnPlan, text: String, output_tokens: u64, unit: CountUnit) {
        let answer = match unit {
            CountUnit::Words => text.split_whitespace().count() as u64,
            CountUnit::Tokens => output_tokens,
        };
        self.len += turn.own_len + answer;
        self.messages.extend(turn.own.iter().cloned());
        self.messages.push(Message {
            role: "assistant".into(),
            content: text,
        });
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
}

impl SessionPlan {
    /// The sessions of `workload` for `engine`; `None` when the workload has no
    /// `[workload.sessions]`. Requests are grouped by their `session` in order of first
    /// appearance, turns in their order.
    pub fn of(engine: &EngineSpec, workload: &WorkloadSpec) -> Option<SessionPlan> {
        let spec = workload.sessions?;
        let base = BodySpec::new(engine, workload);
        let mut sessions: Vec<Vec<TurnPlan>> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        for (i, p) in workload.prompts.iter().enumerate() {
            let shape = workload.shapes.get(i).cloned().unwrap_or_default();
            let own = match p {
                Prompt::Text(t) => vec![Message {
                    role: "user".into(),
                    content: t.clone(),
                }],
                Prompt::Messages(m) => m.clone(),
            };
            let template = base
                .shaped(engine, &shape)
                .render(&Prompt::Messages(own.clone()));
            let session = shape.session.unwrap_or(i as u64);
            let turn = TurnPlan {
                session,
                turn: shape.turn.unwrap_or(0),
                template,
                own,
                own_len: shape.prompt_len,
            };
            match ids.iter().position(|s| *s == session) {
                Some(at) => sessions[at].push(turn),
                None => {
                    ids.push(session);
                    sessions.push(vec![turn]);
                }
            }
        }
        Some(SessionPlan {
            sessions,
            think_time: spec.think_time,
            api: engine.api,
            unit: workload.unit,
        })
    }

    pub fn unit(&self) -> CountUnit {
        self.unit
    }

    /// `turn`'s body after `history`: the history's messages, then the turn's own. A
    /// completions API gets their contents one per line, as a conversation prompt is sent.
    pub fn body(&self, turn: &TurnPlan, history: &History) -> Bytes {
        let mut b = turn.template.clone();
        let all = history.messages.iter().chain(turn.own.iter());
        match self.api {
            Api::Chat => b["messages"] = json!(all.collect::<Vec<_>>()),
            Api::Completions => {
                b["prompt"] = json!(all
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
        Bytes::from(b.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(own: &str, len: u64) -> TurnPlan {
        let own = vec![Message {
            role: "user".into(),
            content: own.into(),
        }];
        TurnPlan {
            session: 0,
            turn: 0,
            template: json!({"model": "m", "max_tokens": 4, "messages": own}),
            own,
            own_len: len,
        }
    }

    #[test]
    fn a_turn_is_sent_after_the_history_with_the_engine_s_answers() {
        let plan = SessionPlan {
            sessions: vec![vec![turn("hello there", 2), turn("and then", 2)]],
            think_time: Duration::ZERO,
            api: Api::Chat,
            unit: CountUnit::Words,
        };
        let t = &plan.sessions[0];
        let mut h = History::default();
        assert_eq!(h.prompt_len(&t[0]), 2);
        h.push(&t[0], "an answer of five words".into(), 9, CountUnit::Words);
        let body: Value = serde_json::from_slice(&plan.body(&t[1], &h)).expect("json");
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "an answer of five words"},
                {"role": "user", "content": "and then"},
            ])
        );
        assert_eq!(body["max_tokens"], 4);
        // Words: the answer's own words; tokens: the engine's count of what it generated.
        assert_eq!(h.prompt_len(&t[1]), 2 + 5 + 2);
        let mut h2 = History::default();
        h2.push(
            &t[0],
            "an answer of five words".into(),
            9,
            CountUnit::Tokens,
        );
        assert_eq!(h2.prompt_len(&t[1]), 2 + 9 + 2);
        let completions = SessionPlan {
            api: Api::Completions,
            ..plan
        };
        let body: Value =
            serde_json::from_slice(&completions.body(&completions.sessions[0][1], &h))
                .expect("json");
        assert_eq!(
            body["prompt"],
            "hello there\nan answer of five words\nand then"
        );
    }
}
