//! Power and energy per cell, pinned with the fake GPU (`RUNNER_FAKE_GPU` with `power_w=` and
//! `energy_mj=` lines) against the built-in engine: a constant 300 W gives 300 W times the
//! cell's own recorded span, by the integral and by the counter; the joules per token follow
//! from the cell's own tokens and duration; a GPU without power readings leaves the figures out
//! with the reason.

mod common;

use common::*;

const PLAN: &str = r#"
schema = 1
name = "energy"
[gpu]
interval = "20ms"
release_timeout = "100ms"
[cost]
usd_per_hour = 3.6
usd_per_kwh = 0.12
[[engine]]
name = "sim"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 5 --itl-ms 2"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
# Under the 8 token events of the client's burst check: a loaded machine cannot make its
# 2 ms tokens look like a response read whole (this test is not about it).
max_tokens = 6
[workload.load]
concurrency = [2]
requests = 8
warmup = 1
max_dispatch_lag = "10s"
"#;

/// Runs PLAN with the fake GPU file holding `gpu`; returns the bundle and the cell summary.
fn run(s: &Scratch, gpu: &str) -> (std::path::PathBuf, serde_json::Value) {
    let file = s.write("gpu", gpu);
    s.write("plan.toml", PLAN);
    let out = std::process::Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &file)
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&s.path().join("results"));
    let cell = read_json(&bundle.join("cells/sim.w.c2.summary.json"));
    (bundle, cell)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn constant_power_integrates_to_power_times_the_cells_own_span() {
    let s = Scratch::new();
    let (bundle, c) = run(&s, "0\npower_w=300\n");
    let e = &c["resources"]["energy"];
    let span = e["span_s"].as_f64().expect("span");
    let m = &c["metrics"];
    let duration = m["duration_s"].as_f64().expect("duration");
    // The window's first sample precedes the first request and its last follows the last
    // response: the span holds the measured duration.
    assert!(span >= duration, "{c}");
    assert_eq!(e["energy_source"], "power_integral", "{e}");
    assert_eq!(e["devices"], serde_json::json!([0]));
    let energy = e["energy_j"].as_f64().expect("energy");
    assert!(close(energy, 300.0 * span, 1e-9 * energy), "{e}");
    assert!(close(
        e["power_mean_w"].as_f64().expect("mean"),
        300.0,
        1e-9
    ));
    assert_eq!(e["power_peak_w"].as_f64(), Some(300.0));
    assert!(e["power_samples"].as_u64().expect("samples") >= 2);
    // Joules per token: 300 W over the cell's own output tokens per second of its duration.
    let tokens = m["output_tokens"].as_f64().expect("tokens");
    assert_eq!(tokens, 8.0 * 6.0);
    let per_token = e["energy_j_per_output_token"].as_f64().expect("J/token");
    assert!(
        close(per_token, 300.0 * duration / tokens, 1e-9 * per_token),
        "{e}"
    );
    let per_request = e["energy_j_per_request"].as_f64().expect("J/request");
    assert!(
        close(per_request, 300.0 * duration / 8.0, 1e-9 * per_request),
        "{e}"
    );
    let samples = std::fs::read_to_string(bundle.join("samples.jsonl")).expect("samples");
    assert!(samples.contains("\"power\":[{\"index\":0,\"power_mw\":300000}]"));

    // The views: the report's energy table with $ per million tokens from time and from
    // energy, the CSV's columns, and the energy chart.
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("Power, energy and cost"), "{report}");
    // The before/after table gives the energy per token and its electricity cost too.
    assert!(
        report.contains(&format!(
            "| energy per output token (J) | {per_token:.4} (at 2) |"
        )),
        "{report}"
    );
    assert!(
        report.contains("| $ per million output tokens, electricity |"),
        "{report}"
    );
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let row: Vec<&str> = lines.next().expect("row").split(',').collect();
    let col = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"));
        row[i]
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(col("power_mean_w"), 300.0);
    assert_eq!(col("power_peak_w"), 300.0);
    let tok_s = m["output_tok_per_s"].as_f64().expect("tok/s");
    let from_time = 3.6 / (tok_s * 3600.0) * 1e6;
    assert!(close(col("usd_per_m_output_tokens_time"), from_time, 1e-5));
    let from_energy = 0.12 * per_token / 3.6;
    assert!(close(
        col("usd_per_m_output_tokens_energy"),
        from_energy,
        1e-5
    ));
    assert!(bundle.join("charts/energy_w.svg").is_file());
    assert!(bundle.join("charts/memory_pareto_w.svg").is_file());
}

#[test]
fn the_counter_gives_the_energy_when_the_gpu_has_one() {
    let s = Scratch::new();
    let (_, c) = run(&s, "0\npower_w=300\nenergy_mj=counter\n");
    let e = &c["resources"]["energy"];
    assert_eq!(e["energy_source"], "counter", "{e}");
    let span = e["span_s"].as_f64().expect("span");
    // The fake counter accrues 300 W to the instant each sample is stamped with, in whole
    // millijoules: its increase is 300 W times the span, to the rounding of its two ends.
    let energy = e["energy_j"].as_f64().expect("energy");
    assert!(close(energy, 300.0 * span, 0.0011), "{e}");
}

#[test]
fn a_gpu_without_power_readings_leaves_the_figures_out_with_the_reason() {
    let s = Scratch::new();
    let (bundle, c) = run(&s, "0\n");
    let e = &c["resources"]["energy"];
    for k in [
        "power_mean_w",
        "power_peak_w",
        "energy_j",
        "energy_j_per_output_token",
    ] {
        assert!(e.get(k).is_none(), "{k} in {e}");
    }
    let why = e["unavailable_reason"].as_str().expect("a reason");
    assert!(
        why.contains("no power reading") && why.contains("power_w"),
        "{why}"
    );
    // The rest of the cell is measured as ever, and the views render without the figures.
    assert_eq!(c["status"], "ok");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("no power reading"), "{report}");
}

#[test]
fn compare_judges_energy_per_token_lower_is_better() {
    let s = Scratch::new();
    let (base, _) = run(&s, "0\npower_w=300\n");
    // The same cells, at 1.5x the energy per token and per request and the same power.
    let hungry = s.path().join("hungry");
    derive_bundle(&base, &hungry, &|name, v| {
        if name.ends_with(".summary.json") {
            let e = &mut v["resources"]["energy"];
            for k in ["energy_j_per_output_token", "energy_j_per_request"] {
                let x = e[k].as_f64().expect("a figure");
                e[k] = (x * 1.5).into();
            }
        }
    });
    let out = s.runner(&[
        "compare",
        base.to_str().expect("p"),
        hungry.to_str().expect("p"),
        "--format",
        "markdown",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |metric: &str| {
        md.lines()
            .find(|l| l.contains(&format!("| {metric} |")))
            .unwrap_or_else(|| panic!("no {metric} row in {md}"))
            .to_string()
    };
    assert!(
        row("energy_j_per_output_token").ends_with("| 1.500x | worse |"),
        "{md}"
    );
    assert!(
        row("energy_j_per_request").ends_with("| 1.500x | worse |"),
        "{md}"
    );
    assert!(
        row("power_mean_w").ends_with("| 1.000x | no significant difference |"),
        "{md}"
    );
}
