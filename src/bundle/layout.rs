//! Every path inside a bundle, named here and nowhere else (docs/bundle.md describes each file).
//! Paths are relative to the bundle directory, `/`-separated.

/// What produced the numbers, and where the run stands.
pub const MANIFEST: &str = "manifest.json";
/// The plan file as the user wrote it (secrets redacted).
pub const PLAN: &str = "plan.toml";
/// The validated plan, every default applied.
pub const PLAN_RESOLVED: &str = "plan.resolved.json";
/// A plan's own report template, copied so that the bundle alone can re-render it.
pub const TEMPLATE: &str = "report.md.tera";
/// One row a cell.
pub const SUMMARY_CSV: &str = "summary.csv";
/// Resource samples (engine RSS, GPU memory and utilization), one JSON object a line.
pub const SAMPLES: &str = "samples.jsonl";
/// The engine's own Prometheus metrics, scraped per cell, one JSON object a line.
pub const TELEMETRY: &str = "telemetry.jsonl";
pub const REPORT_MD: &str = "report.md";
pub const REPORT_HTML: &str = "report.html";
/// Per cell: `<id>.summary.json` and the `<id>.records.jsonl` journal.
pub const CELLS: &str = "cells";
/// Per engine: `<name>.log`.
pub const LOGS: &str = "logs";
/// Per chart: `<name>.svg`.
pub const CHARTS: &str = "charts";
/// Per workload: `<name>.prompts.jsonl`, the requests it sent (docs/workloads.md).
pub const WORKLOADS: &str = "workloads";
/// Per quality step: `<step>/`, its raw outputs per engine (docs/bundle.md).
pub const QUALITY: &str = "quality";
/// The files `[[engine]] include` read, copied like the plan.
pub const INCLUDES: &str = "includes";

/// Names the runner writes at the top of a bundle: nothing else, such as a custom report
/// rendered into the bundle, may take one of them.
pub const TOP: [&str; 15] = [
    MANIFEST,
    PLAN,
    PLAN_RESOLVED,
    TEMPLATE,
    SUMMARY_CSV,
    SAMPLES,
    TELEMETRY,
    REPORT_MD,
    REPORT_HTML,
    CELLS,
    LOGS,
    CHARTS,
    WORKLOADS,
    QUALITY,
    INCLUDES,
];

/// `includes/<n>-<file name>`: the `n`th included file's copy (numbered, so two files of one
/// name in different folders stay apart).
pub fn include_copy(n: usize, path: &std::path::Path) -> String {
    let name = path.file_name().map_or_else(
        || "engine.toml".to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    format!("{INCLUDES}/{n}-{name}")
}

/// `cells/<id>.summary.json`: a finished cell.
pub fn cell_summary(id: &str) -> String {
    format!("{CELLS}/{id}.summary.json")
}

/// `cells/<id>.records.jsonl`: a cell's journal, one request record a line.
pub fn cell_records(id: &str) -> String {
    format!("{CELLS}/{id}.records.jsonl")
}

/// `logs/<engine>.log`.
pub fn engine_log(engine: &str) -> String {
    format!("{LOGS}/{engine}.log")
}

/// `logs/<engine>.restart<n>.log`: the log of the engine's `n`th relaunch (`on_failure =
/// "restart"`), beside the first one's.
pub fn engine_restart_log(engine: &str, n: u32) -> String {
    format!("{LOGS}/{engine}.restart{n}.log")
}

/// `workloads/<name>.prompts.jsonl`: a workload's materialized requests.
pub fn workload_prompts(workload: &str) -> String {
    format!("{WORKLOADS}/{workload}.prompts.jsonl")
}

/// `quality/<step>/<engine>.outputs.jsonl`: an agreement step's outputs, one prompt a line.
pub fn quality_outputs(step: &str, engine: &str) -> String {
    format!("{QUALITY}/{step}/{engine}.outputs.jsonl")
}

/// `quality/<step>/<engine>.scores.jsonl`: a perplexity step's scores, one passage a line.
pub fn quality_scores(step: &str, engine: &str) -> String {
    format!("{QUALITY}/{step}/{engine}.scores.jsonl")
}

/// `quality/<step>/<engine>/`: a command step's `stdout.log`, `stderr.log` and `out/`.
pub fn quality_engine_dir(step: &str, engine: &str) -> String {
    format!("{QUALITY}/{step}/{engine}")
}

/// `quality/<step>/files/<name>`: a command step's task files, as given.
pub fn quality_file(step: &str, name: &str) -> String {
    format!("{QUALITY}/{step}/files/{name}")
}

/// `charts/<name>.svg`.
pub fn chart(name: &str) -> String {
    format!("{CHARTS}/{name}.svg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cell_paths_live_under_cells() {
        assert_eq!(cell_summary("a.w.c1"), "cells/a.w.c1.summary.json");
        assert_eq!(cell_records("a.w.r2p5"), "cells/a.w.r2p5.records.jsonl");
        assert_eq!(engine_log("sim"), "logs/sim.log");
        assert_eq!(chart("ttft"), "charts/ttft.svg");
        assert_eq!(workload_prompts("chat"), "workloads/chat.prompts.jsonl");
    }
}
