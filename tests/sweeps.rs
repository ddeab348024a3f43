//! plans/sweep.toml end to end: one engine block and one workload block expanded by their
//! matrices, run against the built-in engine. Checks structure (names, CSV columns, the
//! manifest's matrix values), never speed.

mod common;

use common::*;

const ENGINES: [(&str, u64, u64); 4] = [
    ("sim-b1-step1ms", 1, 1),
    ("sim-b1-step2ms", 1, 2),
    ("sim-b8-step1ms", 8, 1),
    ("sim-b8-step2ms", 8, 2),
];

fn sweep_plan() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/sweep.toml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn validate_lists_the_expanded_engines_and_workloads() {
    let s = Scratch::new();
    s.write("sweep.toml", &sweep_plan());
    let out = s.runner(&["validate", "sweep.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (name, batch, step) in ENGINES {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"));
        assert!(
            line.contains(&format!("--max-batch {batch} --step-ms {step}"))
                && line.ends_with(&format!(", matrix max_batch={batch} step_ms={step}")),
            "{line}"
        );
    }
    assert!(
        stdout.contains("chat-out8 ") && stdout.contains("chat-out16 "),
        "{stdout}"
    );
    // 4 engines x 2 workloads x 2 levels, each 8 measured + 1 warmup.
    assert!(
        stdout.contains("grid: 16 cells, 144 requests (128 measured + 16 warmup)"),
        "{stdout}"
    );
}

#[test]
fn the_sweep_runs_one_engine_per_combination_and_records_its_values() {
    let s = Scratch::new();
    s.write("sweep.toml", &sweep_plan());
    let (out, bundle) = s.exec("sweep.toml");
    assert!(out.status.success(), "{}", text(&out));
    let manifest = read_json(&bundle.join("manifest.json"));
    assert_no_engine_survives(&manifest);

    let engines = manifest["engines"].as_array().expect("engines");
    let got: Vec<(String, serde_json::Value)> = engines
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["matrix"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, serde_json::Value)> = ENGINES
        .iter()
        .map(|(n, b, st)| {
            (
                n.to_string(),
                serde_json::json!({ "max_batch": b, "step_ms": st }),
            )
        })
        .collect();
    assert_eq!(got, want);
    // Each engine ran with its own values: they are in the argv it was launched with.
    for (e, (_, batch, step)) in engines.iter().zip(ENGINES) {
        let argv: Vec<&str> = e["argv"]
            .as_array()
            .expect("argv")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let joined = argv.join(" ");
        assert!(
            joined.contains(&format!("--max-batch {batch} --step-ms {step}")),
            "{joined}"
        );
    }

    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("summary.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header[..6],
        [
            "engine",
            "workload",
            "max_batch",
            "step_ms",
            "max_tokens",
            "concurrency"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 16, "{csv}");
    let mut want_rows = Vec::new();
    for (name, batch, step) in ENGINES {
        for out_tokens in [8, 16] {
            for c in [1, 4] {
                want_rows.push(vec![
                    name.to_string(),
                    format!("chat-out{out_tokens}"),
                    batch.to_string(),
                    step.to_string(),
                    out_tokens.to_string(),
                    c.to_string(),
                ]);
            }
        }
    }
    let got_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r[..6].iter().map(|f| f.to_string()).collect())
        .collect();
    assert_eq!(got_rows, want_rows);
    // The report groups the swept engines by their matrix values, one table per workload.
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    let tables: Vec<Vec<&str>> = report
        .split("#### Sweep: output tokens/s by matrix values\n\n")
        .skip(1)
        .map(|t| t.lines().take_while(|l| l.starts_with('|')).collect())
        .collect();
    assert_eq!(tables.len(), 2, "{report}");
    for t in &tables {
        assert_eq!(
            t[0],
            "| engine | max_batch | step_ms | concurrency 1 | concurrency 4 |"
        );
        let rows: Vec<String> = t[2..]
            .iter()
            .map(|r| r.splitn(5, " | ").take(3).collect::<Vec<_>>().join(" | "))
            .collect();
        let want: Vec<String> = ENGINES
            .iter()
            .map(|(n, b, st)| format!("| {n} | {b} | {st}"))
            .collect();
        assert_eq!(rows, want, "{report}");
    }
    // Every cell was measured.
    for r in &rows {
        let status = r[header.iter().position(|h| *h == "status").expect("status")];
        assert_eq!(status, "ok", "{r:?}");
    }
}

#[test]
fn a_workload_matrix_over_synthetic_lengths_runs_one_workload_per_length() {
    let plan = r#"
schema = 1
name = "lengths"
[load]
concurrency = [1]
requests = 4
warmup = 0
max_dispatch_lag = "10s"
[[engine]]
name = "sim"
launch = "{runner} engine sim --port {port} --model m"
model = "m"
[[workload]]
name = "syn-in{input_tokens}-out{output_tokens}"
[workload.synthetic]
count = 4
[workload.matrix]
input_tokens = [16, 48]
output_tokens = [4]
"#;
    let s = Scratch::new();
    s.write("plan.toml", plan);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("summary.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(
        header[..5],
        [
            "engine",
            "workload",
            "input_tokens",
            "output_tokens",
            "concurrency"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').take(5).collect()).collect();
    assert_eq!(
        rows,
        [
            ["sim", "syn-in16-out4", "16", "4", "1"],
            ["sim", "syn-in48-out4", "48", "4", "1"],
        ]
    );
    // Each workload's requests have its own length: the materialized prompts say so.
    let m = read_json(&bundle.join("manifest.json"));
    let lens: Vec<(String, Vec<u64>)> = m["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .map(|w| {
            let path = bundle.join(w["path"].as_str().expect("path"));
            let text = std::fs::read_to_string(&path).expect("prompts");
            let lens = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                    v["prompt_words"].as_u64().unwrap_or_default()
                })
                .collect();
            (w["name"].as_str().unwrap_or_default().to_string(), lens)
        })
        .collect();
    assert_eq!(
        lens,
        [
            ("syn-in16-out4".to_string(), vec![16; 4]),
            ("syn-in48-out4".to_string(), vec![48; 4])
        ],
        "{m}"
    );
}
