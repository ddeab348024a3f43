//! The text `runner validate` prints for a valid plan: its engines, workloads and grid.

use std::fmt::Write;
use std::path::Path;

use super::model::{EngineTarget, LoadLevel, MatrixValues, OnFailure, Plan, PortSpec, StopRule};

/// `, matrix batch=8 step_ms=2` for an engine or workload expanded from a matrix.
fn matrix_note(m: &MatrixValues) -> String {
    if m.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = m
        .keys()
        .map(|k| format!("{k}={}", m.get(k).unwrap_or_default()))
        .collect();
    format!(", matrix {}", pairs.join(" "))
}

/// The plan summary `validate` prints on stdout, one line a fact, ending in a newline.
pub fn render(plan: &Plan, path: &Path) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "plan `{}` ({})", plan.name, path.display());
    out.push_str("engines:\n");
    for e in &plan.engines {
        let how = match &e.target {
            EngineTarget::Launch(l) => format!(
                "launch `{}` (port {})",
                l.argv.join(" "),
                match l.port {
                    PortSpec::Auto => "auto".to_string(),
                    PortSpec::Fixed(p) => p.to_string(),
                }
            ),
            EngineTarget::Attach { url } => format!("attach to {url}"),
        };
        let gpus = match e.gpus {
            Some(1) => ", 1 GPU".to_string(),
            Some(n) => format!(", {n} GPUs"),
            None => String::new(),
        };
        let restart = match e.on_failure {
            OnFailure::Skip => String::new(),
            OnFailure::Restart { max_restarts } => {
                format!(", restarted when it dies (at most {max_restarts} times)")
            }
        };
        let _ = writeln!(
            out,
            "  {:<16} model `{}`, {:?} api, {how}{gpus}{restart}{}",
            e.name,
            e.model,
            e.api,
            matrix_note(&e.matrix)
        );
    }
    if let Some(d) = &plan.gpu.devices {
        let list: Vec<String> = d.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "gpu devices: {}", list.join(", "));
    }
    if plan.parallel {
        out.push_str("run: parallel (engines whose GPUs do not overlap run at the same time)\n");
    }
    out.push_str("workloads:\n");
    for w in &plan.workloads {
        let per = match w.load.stop {
            StopRule::Requests(n) => format!("{n} requests"),
            StopRule::Duration(d) => format!("{} of load", humantime::format_duration(d)),
        };
        let _ = writeln!(
            out,
            "  {:<16} {} prompts ({}), max_tokens {}, {} {}, {per} + {} warmup per level{}{}",
            w.name,
            w.prompts.len(),
            w.source,
            w.max_tokens,
            match w.load.levels.first() {
                Some(LoadLevel::Rate(_)) => "rate (req/s)",
                _ => "concurrency",
            },
            w.load
                .levels
                .iter()
                .map(|l| l.label().replace(" req/s", ""))
                .collect::<Vec<_>>()
                .join(", "),
            w.load.warmup,
            if w.slo.is_empty() {
                String::new()
            } else {
                format!(
                    ", SLO {}",
                    w.slo
                        .iter()
                        .map(|r| format!("{} <= {}", r.key(), r.max_ms))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            matrix_note(&w.matrix)
        );
        if let Some(u) = w.load.until_failure {
            let _ = writeln!(
                out,
                "  {:<16} then doubling concurrency until it fails, up to {} (cells added as probed)",
                "", u.max_concurrency
            );
        }
        if w.load.steady_state {
            let _ = writeln!(
                out,
                "  {:<16} each cell also over its steady-state window (95% of the level in flight)",
                ""
            );
        }
    }
    if !plan.quality.is_empty() {
        out.push_str("quality:\n");
        for q in &plan.quality {
            let what = match &q.kind {
                super::quality::QualityKind::Agreement {
                    prompts,
                    max_tokens,
                    ..
                } => format!(
                    "agreement, {} prompts, max_tokens {max_tokens}",
                    prompts.len()
                ),
                super::quality::QualityKind::Perplexity { file, passages, .. } => {
                    format!(
                        "perplexity, {} ({} passages)",
                        file.display(),
                        passages.len()
                    )
                }
                super::quality::QualityKind::Command(c) => {
                    format!("command `{}`", c.argv.join(" "))
                }
            };
            let _ = writeln!(
                out,
                "  {:<16} {what}, on {}, baseline {}",
                q.name,
                q.engines.join(", "),
                q.baseline
            );
        }
    }
    let mut measured = 0u64;
    let mut warmup = 0u64;
    let mut timed = 0usize;
    for c in &plan.cells {
        let w = &plan.workloads[c.workload];
        warmup += u64::from(w.load.warmup);
        match w.load.stop {
            StopRule::Requests(n) => measured += n,
            StopRule::Duration(_) => timed += 1,
        }
    }
    let _ = writeln!(
        out,
        "grid: {} cells, {} requests ({measured} measured + {warmup} warmup){}",
        plan.cells.len(),
        measured + warmup,
        if timed > 0 {
            format!(", plus {timed} duration-bound cells")
        } else {
            String::new()
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::plan::resolve::{resolve_source, ResolveContext};

    const PLAN: &str = r#"
schema = 1
name = "summary"
[load]
concurrency = [1, 4]
requests = 10
warmup = 3
[[engine]]
name = "sim"
launch = "{runner} engine sim --port {port} --model {model}"
model = "m"
[[engine]]
name = "sim-b{batch}-s{step_ms}"
launch = "{runner} engine sim --port {port} --max-batch {batch} --step-ms {step_ms}"
model = "m"
[engine.matrix]
batch = [1, 8]
step_ms = [2, 5]
exclude = [{ batch = 1, step_ms = 5 }]
[[engine]]
name = "remote"
url = "http://127.0.0.1:9/"
model = "m"
api = "completions"
[[workload]]
name = "chat"
prompts = ["hi there", "hello"]
max_tokens = 8
[workload.slo]
ttft_p95_ms = 500
[[workload]]
name = "out{max_tokens}"
prompts = ["hi"]
[workload.matrix]
max_tokens = [32, 64]
[[workload]]
name = "steady"
prompts = ["one"]
max_tokens = 16
[workload.load]
rate = [2.5, 10]
duration = "30s"
"#;

    #[test]
    fn validate_prints_engines_workloads_and_the_grid() {
        let ctx = ResolveContext {
            runner_exe: PathBuf::from("/bin/runner"),
        };
        let path = Path::new("plans/summary.toml");
        let (plan, _) = match resolve_source(path, PLAN, "0".into(), &ctx) {
            Ok(ok) => ok,
            Err(d) => panic!("the test plan is invalid:\n{d}"),
        };
        insta::assert_snapshot!(super::render(&plan, path));
    }
}
