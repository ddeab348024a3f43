//! The quality steps of one engine, run while it is up (after its cells and searches): each
//! step's requests or command, its raw outputs written under `quality/<step>/`, its record
//! handed to the ledger. Comparing with the baseline and gating come at the end of the run
//! (`quality::judge`), once every engine ran.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::RunError;
use super::orchestrator::Run;
use super::session::Up;
use crate::bundle::layout;
use crate::engine::ready;
use crate::plan::model::{Api, EngineSpec};
use crate::plan::quality::{CommandSpec, QualityKind, QualitySpec};
use crate::quality::agreement::{self, Output};
use crate::quality::command;
use crate::quality::perplexity::{self, Score};
use crate::quality::record::{CommandResult, QualityRecord, QualityStatus, TaskFile};

/// The longest one quality request may take (an agreement generation, a passage's scoring).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A request that got no usable answer.
struct Refused {
    /// The HTTP status, when the engine answered.
    status: Option<u16>,
    message: String,
}

/// The steps of `plan` that run against `spec`.
fn steps_of<'p>(plan: &'p crate::plan::model::Plan, spec: &EngineSpec) -> Vec<&'p QualitySpec> {
    plan.quality
        .iter()
        .filter(|q| q.engines.contains(&spec.name))
        .collect()
}

impl Run<'_> {
    /// Records every step of `spec` as not run, and why.
    pub(super) fn quality_skipped(&self, spec: &EngineSpec, why: &str) -> Result<(), RunError> {
        for step in steps_of(self.plan, spec) {
            let rec = QualityRecord::skipped(step, &spec.name, why);
            self.ledger().quality_done(rec)?;
        }
        Ok(())
    }

    /// Runs every step of `spec` against the ready engine at `up`, unless it died (`dead`) or
    /// the run is stopping.
    pub(super) async fn quality(
        &self,
        spec: &EngineSpec,
        up: &Up,
        dead: Option<&str>,
    ) -> Result<(), RunError> {
        for step in steps_of(self.plan, spec) {
            let rec = if self.cancel.is_stopping() {
                QualityRecord::skipped(step, &spec.name, "not run: the run was interrupted")
            } else if let Some(why) = dead {
                QualityRecord::skipped(step, &spec.name, &format!("not run: {why}"))
            } else {
                match &step.kind {
                    QualityKind::Agreement {
                        prompts,
                        max_tokens,
                        ..
                    } => self.agreement(step, spec, up, prompts, *max_tokens).await?,
                    QualityKind::Perplexity { passages, .. } => {
                        self.perplexity(step, spec, up, passages).await?
                    }
                    QualityKind::Command(c) => self.command(step, spec, up, c).await?,
                }
            };
            self.ledger().quality_done(rec)?;
        }
        Ok(())
    }

    /// `quality/<step>/`, created once.
    fn step_dir(&self, step: &QualitySpec) -> Result<(), RunError> {
        let dir = self
            .ledger()
            .bundle()
            .path(&format!("{}/{}", layout::QUALITY, step.name));
        std::fs::create_dir_all(&dir).map_err(|e| {
            RunError::from(crate::bundle::write::WriteError {
                path: dir.clone(),
                source: e,
            })
        })
    }

    async fn post(&self, spec: &EngineSpec, url: &str, body: &Value) -> Result<Value, Refused> {
        let mut req = self.client.post(url).timeout(REQUEST_TIMEOUT).json(body);
        if let Some(key) = ready::api_key(spec) {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| Refused {
            status: None,
            message: crate::error::error_chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| Refused {
            status: Some(status.as_u16()),
            message: crate::error::error_chain(&e),
        })?;
        if !status.is_success() {
            let mut message = text.trim().to_string();
            message.truncate(
                message
                    .char_indices()
                    .nth(300)
                    .map_or(message.len(), |(i, _)| i),
            );
            return Err(Refused {
                status: Some(status.as_u16()),
                message: format!("HTTP {status}: {message}"),
            });
        }
        serde_json::from_str(&text).map_err(|e| Refused {
            status: Some(status.as_u16()),
            message: format!("the answer is not JSON: {e}"),
        })
    }

    async fn agreement(
        &self,
        step: &QualitySpec,
        spec: &EngineSpec,
        up: &Up,
        prompts: &[crate::plan::model::Prompt],
        max_tokens: u32,
    ) -> Result<QualityRecord, RunError> {
        let mut rec = QualityRecord::new(step, &spec.name);
        let url = format!("{}{}", up.base_url, spec.api.path());
        let mut ask = agreement::Ask::TokenIds;
        let mut outputs = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            if self.cancel.is_stopping() {
                return Ok(QualityRecord::skipped(
                    step,
                    &spec.name,
                    "not run to the end: the run was interrupted",
                ));
            }
            let mut answer = self
                .post(spec, &url, &agreement::body(spec, p, max_tokens, ask))
                .await;
            // An engine that refuses token ids or logprobs (4xx) is asked for less, from then
            // on; if it refuses even the text alone, the first refusal is what is recorded.
            let mut less = ask;
            while matches!(&answer, Err(r) if r.status.is_some_and(|s| (400..500).contains(&s))) {
                let Some(next) = less.fallback() else {
                    break;
                };
                less = next;
                let again = self
                    .post(spec, &url, &agreement::body(spec, p, max_tokens, less))
                    .await;
                if again.is_ok() {
                    ask = less;
                    answer = again;
                }
            }
            outputs.push(match answer {
                Ok(v) => agreement::parse(spec.api, i, &v),
                Err(r) => Output {
                    prompt: i,
                    error: Some(r.message),
                    ..Output::default()
                },
            });
        }
        let rel = layout::quality_outputs(&step.name, &spec.name);
        self.step_dir(step)?;
        let lines: String = outputs
            .iter()
            .filter_map(|o| serde_json::to_string(o).ok())
            .map(|l| l + "\n")
            .collect();
        self.ledger().bundle().write(&rel, lines.as_bytes())?;
        rec.files.push(rel);
        match outputs.iter().find_map(|o| o.error.clone()) {
            Some(e) if outputs.iter().all(|o| o.error.is_some()) => {
                rec.status = QualityStatus::Failed;
                rec.reason = Some(format!("every prompt failed: {e}"));
            }
            _ => rec.measured = true,
        }
        Ok(rec)
    }

    async fn perplexity(
        &self,
        step: &QualitySpec,
        spec: &EngineSpec,
        up: &Up,
        passages: &[String],
    ) -> Result<QualityRecord, RunError> {
        let mut rec = QualityRecord::new(step, &spec.name);
        let url = format!("{}{}", up.base_url, Api::Completions.path());
        let mut scores: Vec<Score> = Vec::with_capacity(passages.len());
        let mut failure: Option<(QualityStatus, String)> = None;
        for (i, text) in passages.iter().enumerate() {
            if self.cancel.is_stopping() {
                return Ok(QualityRecord::skipped(
                    step,
                    &spec.name,
                    "not run to the end: the run was interrupted",
                ));
            }
            let answer = self
                .post(spec, &url, &perplexity::body(&spec.model, text))
                .await;
            let scored = match answer {
                Ok(v) => perplexity::parse(i, &v).map_err(|why| (QualityStatus::NotSupported, why)),
                // The first request is the support check: a refusal of `echo` or `logprobs`
                // means the engine does not give prompt logprobs.
                Err(r) if i == 0 && r.status.is_some_and(|s| (400..500).contains(&s)) => Err((
                    QualityStatus::NotSupported,
                    format!(
                        "{}: it refused the scoring request ({})",
                        perplexity::NOT_SUPPORTED,
                        r.message
                    ),
                )),
                Err(r) => Err((QualityStatus::Failed, format!("passage {i}: {}", r.message))),
            };
            match scored {
                Ok(s) => scores.push(s),
                Err((status, why)) => {
                    // Past the first passage, a missing score is a failure, not a verdict on
                    // support.
                    let status = if i == 0 {
                        status
                    } else {
                        QualityStatus::Failed
                    };
                    failure = Some((status, why));
                    break;
                }
            }
        }
        let rel = layout::quality_scores(&step.name, &spec.name);
        self.step_dir(step)?;
        let lines: String = scores
            .iter()
            .filter_map(|s| serde_json::to_string(s).ok())
            .map(|l| l + "\n")
            .collect();
        self.ledger().bundle().write(&rel, lines.as_bytes())?;
        rec.files.push(rel);
        match failure {
            Some((status, why)) => {
                rec.status = status;
                rec.reason = Some(why);
            }
            None => {
                rec.perplexity = Some(perplexity::summarize(&scores));
                rec.measured = true;
            }
        }
        Ok(rec)
    }

    async fn command(
        &self,
        step: &QualitySpec,
        spec: &EngineSpec,
        up: &Up,
        c: &CommandSpec,
    ) -> Result<QualityRecord, RunError> {
        let mut rec = QualityRecord::new(step, &spec.name);
        let bundle = self.ledger().bundle().clone();
        let dir_rel = layout::quality_engine_dir(&step.name, &spec.name);
        let out_rel = format!("{dir_rel}/out");
        // Absolute: the command runs in the plan's directory, not the runner's.
        let out =
            std::path::absolute(bundle.path(&out_rel)).unwrap_or_else(|_| bundle.path(&out_rel));
        std::fs::create_dir_all(&out).map_err(|e| crate::bundle::write::WriteError {
            path: out.clone(),
            source: e,
        })?;
        let mut task_files = Vec::new();
        for f in &c.files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let rel = layout::quality_file(&step.name, &name);
            let bytes = std::fs::read(f).map_err(|e| crate::bundle::write::WriteError {
                path: f.clone(),
                source: e,
            })?;
            if let Some(parent) = bundle.path(&rel).parent() {
                std::fs::create_dir_all(parent).map_err(|e| crate::bundle::write::WriteError {
                    path: parent.to_path_buf(),
                    source: e,
                })?;
            }
            bundle.write(&rel, &bytes)?;
            task_files.push(TaskFile {
                path: rel,
                sha256: Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            });
        }
        let vars = BTreeMap::from([
            ("url", up.base_url.clone()),
            ("model", spec.model.clone()),
            ("api", spec.api.path().to_string()),
            ("out", out.display().to_string()),
            ("name", spec.name.clone()),
        ]);
        let argv = command::expand(&c.argv, &vars);
        let (version, version_error) = match &c.version_command {
            None => (None, None),
            Some(v) => {
                match crate::engine::version::capture(&command::expand(v, &vars), &c.cwd).await {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                }
            }
        };
        let (stdout, stderr) = (
            format!("{dir_rel}/stdout.log"),
            format!("{dir_rel}/stderr.log"),
        );
        let ran = command::run(
            c,
            &argv,
            &bundle.path(&stdout),
            &bundle.path(&stderr),
            &self.cancel,
        )
        .await;
        let mut result = CommandResult {
            argv,
            version,
            version_error,
            exit_code: ran.exit_code,
            timed_out: ran.timed_out,
            took_s: ran.took_s,
            metric: None,
            metric_file: None,
            metric_pointer: c.metric_pointer.clone(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            out: out_rel.clone(),
            task_files,
        };
        rec.files = vec![stdout, stderr, out_rel.clone()];
        if ran.interrupted {
            rec.status = QualityStatus::Skipped;
            rec.reason = ran.failure(c.timeout);
        } else if let Some(why) = ran.failure(c.timeout) {
            rec.status = QualityStatus::Failed;
            rec.reason = Some(why);
        } else {
            match command::read_metric(&out, &c.metric_file, &c.metric_pointer) {
                Ok((file, x)) => {
                    result.metric = Some(x);
                    result.metric_file = file
                        .strip_prefix(&out)
                        .ok()
                        .map(|p| format!("{out_rel}/{}", p.to_string_lossy()));
                    rec.measured = true;
                }
                Err(why) => {
                    rec.status = QualityStatus::Failed;
                    rec.reason = Some(format!("the metric could not be read: {why}"));
                }
            }
        }
        rec.command = Some(result);
        Ok(rec)
    }
}
