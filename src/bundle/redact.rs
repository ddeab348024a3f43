//! Keeping secrets out of the bundle. A secret is the value of an `[engine.env]` variable or of
//! the runner's own environment whose name looks secret, or the API key `api_key_env` names.
//! Every file the bundle writer writes (the plan copy, the resolved plan, the manifest, cell
//! summaries, the reports, the engine logs the runner copies) passes through `Redactor`, which
//! replaces each such value by `<redacted>`; the manifest keeps the sha256 of the original plan.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::plan::model::{EngineTarget, Plan};

/// What a secret is replaced by.
pub const REDACTED: &str = "<redacted>";

/// Parts of a variable's name (matched case-insensitively) that mark its value as a secret.
pub const SECRET_NAME_PARTS: [&str; 8] = [
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "AUTH",
    "CREDENTIAL",
    "PRIVATE",
];

/// A value shorter than this is not searched for in free text (a 3-letter "secret" would
/// mangle every file); it is still replaced where its place is known: the `[engine.env]` tables
/// of the plan copy and the resolved plan.
pub const MIN_FREE_TEXT_LEN: usize = 6;

/// Whether an environment variable's name marks its value as secret (`HF_TOKEN`, `db_passwd`,
/// `AWS_CREDENTIALS`, `X-Auth`...).
pub fn secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|p| up.contains(p))
}

/// The secret values to keep out of a bundle.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// The secrets of a run: secret-named `[engine.env]` values (as given and as expanded),
    /// the API keys the engines' `api_key_env` name, and the values of secret-named variables
    /// of `environment` (the runner's own; a `version_command` inherits it).
    pub fn for_plan(
        plan: &Plan,
        plan_source: &[u8],
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Redactor {
        let mut secrets = Vec::new();
        for e in &plan.engines {
            if let EngineTarget::Launch(l) = &e.target {
                secrets.extend(
                    l.env
                        .iter()
                        .filter(|(k, _)| secret_name(k))
                        .map(|(_, v)| v.clone()),
                );
            }
        }
        // A quality command's `env` (an evaluator's API key).
        for q in &plan.quality {
            if let crate::plan::quality::QualityKind::Command(c) = &q.kind {
                secrets.extend(
                    c.env
                        .iter()
                        .filter(|(k, _)| secret_name(k))
                        .map(|(_, v)| v.clone()),
                );
            }
        }
        if let Some(spans) = env_spans(plan_source) {
            secrets.extend(spans.into_iter().map(|(_, _, v)| v));
        }
        let env: BTreeMap<String, String> = environment.into_iter().collect();
        for e in &plan.engines {
            if let Some(v) = e.api_key_env.as_ref().and_then(|k| env.get(k)) {
                secrets.push(v.clone());
            }
        }
        secrets.extend(
            env.iter()
                .filter(|(k, _)| secret_name(k))
                .map(|(_, v)| v.clone()),
        );
        Redactor::new(secrets)
    }

    /// A redactor of exactly these values.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_FREE_TEXT_LEN && s.as_str() != REDACTED)
            .collect();
        // The form a JSON or TOML string escapes a secret to, too (a `"` or `\` in it).
        let escaped: Vec<String> = secrets
            .iter()
            .filter_map(|s| {
                let j = serde_json::to_string(s).ok()?;
                let inner = j[1..j.len() - 1].to_string();
                (inner != *s).then_some(inner)
            })
            .collect();
        secrets.extend(escaped);
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
        out
    }

    /// `bytes` with every secret replaced (bytes that are not UTF-8 are searched as bytes).
    pub fn bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secrets.is_empty() {
            return Cow::Borrowed(bytes);
        }
        match std::str::from_utf8(bytes) {
            Ok(t) => match self.text(t) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            },
            Err(_) => {
                let mut out = bytes.to_vec();
                for s in &self.secrets {
                    out = replace_bytes(&out, s.as_bytes(), REDACTED.as_bytes());
                }
                Cow::Owned(out)
            }
        }
    }

    /// Replaces secrets in every string (and object key) of a JSON value.
    pub fn json(&self, value: &mut serde_json::Value) {
        if self.secrets.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.text(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| self.json(v)),
            serde_json::Value::Object(o) => {
                let keys: Vec<String> = o.keys().cloned().collect();
                for k in keys {
                    let Some(mut v) = o.remove(&k) else { continue };
                    self.json(&mut v);
                    o.insert(self.text(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// The plan file as kept in the bundle: each secret-named `[engine.env]` value replaced in
    /// place (whatever its length), then every secret in the rest of the text.
    pub fn plan_source(&self, source: &[u8]) -> Vec<u8> {
        let mut out = source.to_vec();
        if let Some(mut spans) = env_spans(source) {
            // Back to front, so earlier spans stay where they are.
            spans.sort_by_key(|s| std::cmp::Reverse(s.0));
            for (start, end, _) in spans {
                if end <= out.len() && start <= end {
                    out.splice(start..end, format!("\"{REDACTED}\"").into_bytes());
                }
            }
        }
        self.bytes(&out).into_owned()
    }
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while let Some(at) = memchr::memmem::find(&hay[i..], needle) {
        out.extend_from_slice(&hay[i..i + at]);
        out.extend_from_slice(with);
        i += at + needle.len();
    }
    out.extend_from_slice(&hay[i..]);
    out
}

/// Only the `[engine.env]` tables of a plan, with where each value is written.
#[derive(Deserialize)]
struct EnvOnly {
    #[serde(default)]
    engine: Vec<EnvEngine>,
}

#[derive(Deserialize)]
struct EnvEngine {
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
}

/// Byte spans (start, end, value) of the secret-named `[engine.env]` values of a plan file.
fn env_spans(source: &[u8]) -> Option<Vec<(usize, usize, String)>> {
    let text = std::str::from_utf8(source).ok()?;
    let parsed: EnvOnly = toml::from_str(text).ok()?;
    Some(
        parsed
            .engine
            .into_iter()
            .flat_map(|e| e.env.into_iter())
            .filter(|(k, _)| secret_name(k))
            .map(|(_, v)| {
                let span = v.span();
                (span.start, span.end, v.into_inner())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_in_any_case() {
        for n in [
            "HF_TOKEN",
            "hf_token",
            "MY_API_KEY",
            "db_passwd",
            "PASSWORD",
            "X_AUTH",
            "Authorization",
            "AWS_CREDENTIALS",
            "gcp_credential",
            "client_secret",
        ] {
            assert!(secret_name(n), "{n}");
        }
        for n in ["CUDA_VISIBLE_DEVICES", "PATH", "VLLM_PORT", "PWD"] {
            assert!(!secret_name(n), "{n}");
        }
    }

    #[test]
    fn plan_env_values_are_replaced_in_place_even_when_short() {
        let src = "schema = 1\n[[engine]]\nname = \"e\"\nenv = { db_passwd = \"abc\", MODE = \"abc\" }\n\n[engine.health]\npath = \"/abc\"\n";
        let r = Redactor::new(Vec::new());
        let out = String::from_utf8(r.plan_source(src.as_bytes())).expect("utf8");
        assert_eq!(
            out,
            "schema = 1\n[[engine]]\nname = \"e\"\nenv = { db_passwd = \"<redacted>\", MODE = \"abc\" }\n\n[engine.health]\npath = \"/abc\"\n"
        );
    }

    #[test]
    fn free_text_json_and_escaped_forms() {
        let r = Redactor::new(["sk-verysecret".to_string(), "pa\"ss\\word1".to_string()]);
        assert_eq!(r.text("key sk-verysecret!"), "key <redacted>!");
        let mut v =
            serde_json::json!({"a": ["x sk-verysecret", 1], "sk-verysecret": "pa\"ss\\word1"});
        r.json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x <redacted>", 1], "<redacted>": "<redacted>"})
        );
        let toml_line = br#"K = "pa\"ss\\word1""#;
        assert_eq!(&*r.bytes(toml_line), br#"K = "<redacted>""#);
        assert_eq!(r.text("short"), "short");
    }
}
