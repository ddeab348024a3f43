//! Resolving `[[quality]]` tables: the kind, the keys that apply to it, the engines it runs
//! against and its baseline, its prompts or text file, its command and gates.

use std::collections::BTreeSet;
use std::ops::Range;

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::Resolver;
use crate::plan::model::{EngineSpec, Prompt};
use crate::plan::placeholder;
use crate::plan::prompts;
use crate::plan::quality::*;

/// A key of `[[quality]]`, where it is written, and the kinds it applies to.
type KeyUse<'a> = (&'a str, Option<Range<usize>>, &'a [&'a str]);

const KINDS: &str = "`agreement`, `perplexity` or `command`";

impl Resolver<'_> {
    /// Every `[[quality]]` table; `engines` are the plan's resolved engines.
    pub(super) fn quality_steps(
        &mut self,
        raw: &[Spanned<RawQuality>],
        engines: &[EngineSpec],
    ) -> Vec<QualitySpec> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for q in raw {
            let q = q.get_ref();
            if !seen.insert(q.name.get_ref().clone()) {
                self.error_at(
                    q.name.span(),
                    format!("quality step name `{}` is used twice", q.name.get_ref()),
                    Some(
                        "give every quality step a unique name; it names its folder in the bundle"
                            .into(),
                    ),
                );
            }
            if let Some(spec) = self.quality(q, engines) {
                out.push(spec);
            }
        }
        out
    }

    fn quality(&mut self, q: &RawQuality, engines: &[EngineSpec]) -> Option<QualitySpec> {
        let name_ok = self.safe_name(&q.name, "quality step");
        let kind = q.kind.get_ref().as_str();
        let keys: [KeyUse; 12] = [
            (
                "prompts",
                q.prompts.as_ref().map(Spanned::span),
                &["agreement"],
            ),
            (
                "prompts_file",
                q.prompts_file.as_ref().map(Spanned::span),
                &["agreement"],
            ),
            (
                "max_tokens",
                q.max_tokens.as_ref().map(Spanned::span),
                &["agreement"],
            ),
            (
                "min_agreement",
                q.min_agreement.as_ref().map(Spanned::span),
                &["agreement"],
            ),
            ("file", q.file.as_ref().map(Spanned::span), &["perplexity"]),
            (
                "max_perplexity_increase",
                q.max_perplexity_increase.as_ref().map(Spanned::span),
                &["perplexity"],
            ),
            (
                "command",
                q.command.as_ref().map(Spanned::span),
                &["command"],
            ),
            (
                "version_command",
                q.version_command.as_ref().map(Spanned::span),
                &["command"],
            ),
            ("metric", q.metric.as_ref().map(Spanned::span), &["command"]),
            (
                "timeout",
                q.timeout.as_ref().map(Spanned::span),
                &["command"],
            ),
            ("files", q.files.as_ref().map(Spanned::span), &["command"]),
            ("env", q.env.as_ref().map(Spanned::span), &["command"]),
        ];
        if !matches!(kind, "agreement" | "perplexity" | "command") {
            self.error_at(
                q.kind.span(),
                format!("unknown quality kind `{kind}`"),
                Some(format!("`kind` is one of {KINDS}")),
            );
            return None;
        }
        let mut misplaced = false;
        for (key, span, kinds) in keys.iter().chain(
            [
                ("min", q.min.as_ref().map(Spanned::span), &["command"][..]),
                ("max", q.max.as_ref().map(Spanned::span), &["command"][..]),
            ]
            .iter(),
        ) {
            if let Some(span) = span {
                if !kinds.contains(&kind) {
                    misplaced = true;
                    self.error_at(
                        span.clone(),
                        format!("`{key}` does not apply to a `{kind}` step"),
                        Some(format!(
                            "`{key}` belongs to a `kind = \"{}\"` step (docs/plan.md)",
                            kinds[0]
                        )),
                    );
                }
            }
        }

        // The engines it runs against, and its baseline among them.
        let names: Vec<String> = match &q.engines {
            None => engines.iter().map(|e| e.name.clone()).collect(),
            Some(list) => {
                let mut v = Vec::new();
                for n in list.get_ref() {
                    if engines.iter().any(|e| &e.name == n.get_ref()) {
                        v.push(n.get_ref().clone());
                    } else {
                        self.error_at(
                            n.span(),
                            format!(
                                "quality step `{}` names engine `{}`, which the plan does not have",
                                q.name.get_ref(),
                                n.get_ref()
                            ),
                            Some(format!("engines: {}", engine_list(engines))),
                        );
                    }
                }
                if list.get_ref().is_empty() {
                    self.error_at(
                        list.span(),
                        "`engines` is empty",
                        Some("name the engines the step runs against, or leave `engines` out for every engine".into()),
                    );
                }
                v
            }
        };
        let baseline = match &q.baseline {
            None => names.first().cloned().unwrap_or_default(),
            Some(b) if names.contains(b.get_ref()) => b.get_ref().clone(),
            Some(b) => {
                self.error_at(
                    b.span(),
                    format!(
                        "baseline `{}` is not an engine this step runs against",
                        b.get_ref()
                    ),
                    Some(format!("engines of this step: {}", names.join(", "))),
                );
                String::new()
            }
        };

        let fraction = |r: &mut Self, v: &Option<Spanned<f64>>, key: &str, hint: &str| {
            v.as_ref().and_then(|v| {
                let x = *v.get_ref();
                if x.is_finite() && x >= 0.0 && (key != "min_agreement" || x <= 1.0) {
                    Some(x)
                } else {
                    r.error_at(v.span(), format!("`{key}` must be {hint}, not {x}"), None);
                    None
                }
            })
        };
        let gates = Gates {
            min_agreement: fraction(self, &q.min_agreement, "min_agreement", "between 0 and 1"),
            max_perplexity_increase: fraction(
                self,
                &q.max_perplexity_increase,
                "max_perplexity_increase",
                "a non-negative number (0.05 allows 5 % over the baseline)",
            ),
            min: self.finite(&q.min, "min"),
            max: self.finite(&q.max, "max"),
        };
        if let (Some(lo), Some(hi), Some(span)) = (gates.min, gates.max, q.max.as_ref()) {
            if lo > hi {
                self.error_at(
                    span.span(),
                    format!("`max` ({hi}) is below `min` ({lo}): no metric can pass"),
                    None,
                );
            }
        }

        let kind = match kind {
            "agreement" => self.agreement(q)?,
            "perplexity" => self.perplexity(q)?,
            _ => QualityKind::Command(self.quality_command(q)?),
        };
        (name_ok && !misplaced).then(|| QualitySpec {
            name: q.name.get_ref().clone(),
            engines: names,
            baseline,
            kind,
            gates,
        })
    }

    fn finite(&mut self, v: &Option<Spanned<f64>>, key: &str) -> Option<f64> {
        let v = v.as_ref()?;
        if v.get_ref().is_finite() {
            Some(*v.get_ref())
        } else {
            self.error_at(v.span(), format!("`{key}` must be a finite number"), None);
            None
        }
    }

    fn agreement(&mut self, q: &RawQuality) -> Option<QualityKind> {
        let max_tokens = q
            .max_tokens
            .as_ref()
            .map_or(Some(DEFAULT_MAX_TOKENS as u64), |m| {
                self.positive(m, "`max_tokens`", 100_000)
            })? as u32;
        let (source, prompts) = match (&q.prompts, &q.prompts_file) {
            (Some(p), None) => (
                "inline".to_string(),
                p.get_ref().iter().cloned().map(Prompt::Text).collect(),
            ),
            (None, Some(f)) => match prompts::from_file(&self.relative(f.get_ref())) {
                Ok(p) => (format!("file {}", f.get_ref()), p),
                Err(e) => {
                    self.error_at(f.span(), e.message, e.hint);
                    return None;
                }
            },
            (Some(_), Some(f)) => {
                self.error_at(
                    f.span(),
                    "an agreement step has both `prompts` and `prompts_file`",
                    Some("use one of them".into()),
                );
                return None;
            }
            (None, None) => {
                self.error_at(
                    q.name.span(),
                    format!("agreement step `{}` has no prompts", q.name.get_ref()),
                    Some("add `prompts = [\"...\"]` or `prompts_file = \"...\"`".into()),
                );
                return None;
            }
        };
        if prompts.is_empty() {
            let span = q
                .prompts
                .as_ref()
                .map(Spanned::span)
                .or(q.prompts_file.as_ref().map(Spanned::span))
                .unwrap_or(q.name.span());
            self.error_at(
                span,
                "the agreement step's prompts are empty",
                Some("give at least one prompt".into()),
            );
            return None;
        }
        Some(QualityKind::Agreement {
            source,
            prompts,
            max_tokens,
        })
    }

    fn perplexity(&mut self, q: &RawQuality) -> Option<QualityKind> {
        let Some(f) = &q.file else {
            self.error_at(
                q.name.span(),
                format!("perplexity step `{}` has no `file`", q.name.get_ref()),
                Some("add `file = \"text.txt\"`: a local text, scored passage by passage (split at blank lines)".into()),
            );
            return None;
        };
        let path = self.relative(f.get_ref());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.error_at(
                    f.span(),
                    format!("cannot read {}: {e}", path.display()),
                    Some("the path is relative to the plan's directory".into()),
                );
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let passages: Vec<String> = text
            .split("\n\n")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if passages.is_empty() {
            self.error_at(
                f.span(),
                format!("{} holds no text", path.display()),
                Some("a perplexity file holds passages separated by blank lines".into()),
            );
            return None;
        }
        Some(QualityKind::Perplexity {
            file: path,
            passages,
            sha256: super::hex(&Sha256::digest(&bytes)),
        })
    }

    fn quality_command(&mut self, q: &RawQuality) -> Option<CommandSpec> {
        let step = q.name.get_ref();
        let Some(c) = &q.command else {
            self.error_at(
                q.name.span(),
                format!("command step `{step}` has no `command`"),
                Some("add `command = \"lm_eval ... --output_path {out}\"`".into()),
            );
            return None;
        };
        let Some(metric) = &q.metric else {
            self.error_at(
                q.name.span(),
                format!("command step `{step}` has no `metric`"),
                Some("add `metric = { file = \"**/results*.json\", pointer = \"/results/TASK/acc,none\" }`".into()),
            );
            return None;
        };
        let argv = self.quality_argv(c, "command")?;
        let version_command = match &q.version_command {
            None => None,
            Some(v) => Some(self.quality_argv(v, "version_command")?),
        };
        let m = metric.get_ref();
        if !m.pointer.get_ref().is_empty() && !m.pointer.get_ref().starts_with('/') {
            self.error_at(
                m.pointer.span(),
                format!("`{}` is not a JSON pointer", m.pointer.get_ref()),
                Some("a JSON pointer starts with `/`: \"/results/TASK/acc,none\" (`~1` stands for a `/` in a key)".into()),
            );
        }
        if m.file.get_ref().is_empty()
            || m.file.get_ref().starts_with('/')
            || m.file.get_ref().split('/').any(|p| p == "..")
        {
            self.error_at(
                m.file.span(),
                format!(
                    "metric `file` `{}` must be a glob relative to `{{out}}`",
                    m.file.get_ref()
                ),
                Some(
                    "e.g. \"**/results_*.json\"; `*` matches within a name, `**` any folders"
                        .into(),
                ),
            );
        }
        let mut files = Vec::new();
        for f in q
            .files
            .as_ref()
            .map(|f| f.get_ref().as_slice())
            .unwrap_or_default()
        {
            let p = self.relative(f.get_ref());
            if p.is_file() {
                files.push(p);
            } else {
                self.error_at(
                    f.span(),
                    format!("task file {} does not exist", p.display()),
                    Some("the path is relative to the plan's directory".into()),
                );
            }
        }
        Some(CommandSpec {
            argv,
            version_command,
            env: q
                .env
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_default(),
            cwd: self.abs_dir(),
            timeout: self.duration(&q.timeout, DEFAULT_TIMEOUT),
            metric_file: m.file.get_ref().clone(),
            metric_pointer: m.pointer.get_ref().clone(),
            files,
        })
    }

    /// A command's argv, its placeholders checked but kept (they are filled in per engine);
    /// `{plan_dir}` is filled in now.
    fn quality_argv(
        &mut self,
        c: &Spanned<crate::plan::raw::RawCommand>,
        key: &str,
    ) -> Option<Vec<String>> {
        let words = self.command_words(c, key)?;
        let dir = self.abs_dir().display().to_string();
        let mut out = Vec::new();
        for w in words {
            let expanded = placeholder::scan(&w, true, |k| match k {
                "plan_dir" => Ok(Some(dir.clone())),
                k if COMMAND_PLACEHOLDERS.contains(&k) => Ok(None),
                k => Err(k.to_string()),
            });
            match expanded {
                Ok(s) => out.push(s),
                Err(unknown) => {
                    self.error_at(
                        c.span(),
                        format!("`{key}` uses unknown placeholder `{{{unknown}}}`"),
                        Some("a quality command knows {url}, {model}, {api}, {out}, {name} and {plan_dir}; write {{ for a literal {".into()),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn engine_list(engines: &[EngineSpec]) -> String {
    engines
        .iter()
        .map(|e| format!("`{}`", e.name))
        .collect::<Vec<_>>()
        .join(", ")
}
