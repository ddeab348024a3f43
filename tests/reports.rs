//! Reports from bundles: every chart in report.md and a self-contained report.html that
//! headless Chromium renders; snapshots of a report and a chart from a fixed bundle; custom
//! templates; `runner compare` verdicts; `runner list`.

mod common;

use std::path::PathBuf;

use common::*;

const CHARTS: [&str; 6] = [
    "throughput_chat",
    "tokens_chat",
    "e2e_chat",
    "ttft_chat",
    "pareto_chat",
    "memory",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the fixed bundle (a real quickstart run without its raw records) to render into.
fn fixture(s: &Scratch) -> PathBuf {
    let src = root().join("tests/fixtures/quickstart_bundle");
    let dst = s.path().join("bundle");
    std::fs::create_dir_all(dst.join("cells")).expect("mkdir");
    for f in ["manifest.json", "plan.resolved.json", "plan.toml"] {
        std::fs::copy(src.join(f), dst.join(f)).expect("copy");
    }
    for e in std::fs::read_dir(src.join("cells"))
        .expect("cells")
        .flatten()
    {
        std::fs::copy(e.path(), dst.join("cells").join(e.file_name())).expect("copy");
    }
    dst
}

/// Replaces timestamps, ports, hashes and the runner's path with placeholders.
fn redact(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("| started / finished") {
                "| started / finished | [redacted] |".to_string()
            } else if l.starts_with("| plan |") {
                "| plan | [redacted] |".to_string()
            } else {
                let mut out = Vec::new();
                let mut words = l.split(' ').peekable();
                while let Some(w) = words.next() {
                    out.push(if w.ends_with("/runner") {
                        "[runner]"
                    } else {
                        w
                    });
                    if w == "--port" && words.peek().is_some() {
                        words.next();
                        out.push("[port]");
                    }
                }
                out.join(" ")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn report_and_chart_snapshots_from_a_fixed_bundle() {
    let s = Scratch::new();
    let b = fixture(&s);
    let out = s.runner(&["report", b.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out));
    // The fixture is fixed; the fields that vary from run to run are redacted anyway, so
    // that a re-recorded fixture changes only what it should.
    let md = std::fs::read_to_string(b.join("report.md")).expect("report.md");
    insta::assert_snapshot!("quickstart_report_md", redact(&md));
    let svg = std::fs::read_to_string(b.join("charts/throughput_chat.svg")).expect("svg");
    insta::assert_snapshot!("quickstart_throughput_svg", svg);
    for c in CHARTS {
        assert!(
            md.contains(&format!("(charts/{c}.svg)")),
            "report.md embeds {c}"
        );
    }
}

#[test]
fn a_custom_template_next_to_the_plan_is_used_and_kept_in_the_bundle() {
    let s = Scratch::new();
    s.write(
        "mine.md.tera",
        "# {{ plan_name }} by my template\n{% for w in workloads %}{% for r in w.rows %}{{ r.engine }} {{ r.level }} {{ r.status }}\n{% endfor %}{% endfor %}",
    );
    s.write(
        "plan.toml",
        "schema = 1\nname = \"custom\"\n[report]\ntemplate = \"mine.md.tera\"\n[[engine]]\nname = \"e\"\n\
         launch = \"{runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1\"\nmodel = \"m\"\n\
         [[workload]]\nname = \"w\"\nprompts = [\"hi\"]\nmax_tokens = 2\n[workload.load]\nmax_dispatch_lag = \"10s\"\nconcurrency = [1]\nrequests = 2\n",
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert_eq!(md, "# custom by my template\ne 1 ok\n");
    assert!(
        bundle.join("report.md.tera").is_file(),
        "the template travels with the bundle"
    );
    // `runner report --template` renders any template into the bundle.
    let t = s.write(
        "brief.txt.tera",
        "{{ plan_name }}: {{ cells_ok }} of {{ cells_total }} cells ok",
    );
    let out = s.runner(&[
        "report",
        bundle.to_str().expect("path"),
        "--template",
        t.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(bundle.join("brief.txt")).expect("rendered"),
        "custom: 1 of 1 cells ok"
    );
}

#[test]
fn repeated_runs_give_a_spread_that_comparisons_use() {
    let s = Scratch::new();
    let template =
        std::fs::read_to_string(root().join("tests/fixtures/compare_plan.toml")).expect("plan");
    s.write(
        "slow.toml",
        &template
            .replace("TTFT", "10")
            .replace("ITL", "4")
            .replace("STEP", "4"),
    );
    let out = s.runner(&["exec", "slow.toml", "--results", "slow", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
    let slow = find_bundle(&s.path().join("slow"));
    let c = read_json(&slow.join("cells/a.w.c4.summary.json"));
    assert_eq!(c["repeats"].as_array().map(Vec::len), Some(3), "{c}");
    let records =
        std::fs::read_to_string(slow.join("cells/a.w.c4.records.jsonl")).expect("records");
    assert_eq!(records.lines().count(), 36, "3 runs x 12 requests");
    let md = std::fs::read_to_string(slow.join("report.md")).expect("report");
    assert!(
        md.contains(" ± "),
        "throughput shown with its 95% interval: {md}"
    );

    // Verdicts from the runs' spread, on runs whose throughputs are set by construction (the
    // measured ones move with the machine's load): the same three runs doubled are better; a
    // 20% higher mean inside a spread of +-40% is not significant, though the threshold alone
    // would call it a difference.
    let with_runs = |dir: &str, runs: [f64; 3]| {
        let to = s.path().join(dir).join("compare/copy");
        derive_bundle(&slow, &to, &|name, v| {
            if name.ends_with(".summary.json") {
                let mean = runs.iter().sum::<f64>() / 3.0;
                v["metrics"]["output_tok_per_s"] = mean.into();
                for (r, x) in v["repeats"]
                    .as_array_mut()
                    .expect("repeats")
                    .iter_mut()
                    .zip(runs)
                {
                    r["output_tok_per_s"] = x.into();
                }
            }
        });
        to
    };
    let base = with_runs("base", [100.0, 102.0, 98.0]);
    let double = with_runs("double", [200.0, 204.0, 196.0]);
    let spread_a = with_runs("spread_a", [100.0, 60.0, 140.0]);
    let spread_b = with_runs("spread_b", [120.0, 80.0, 160.0]);
    let tput = |a: &PathBuf, b: &PathBuf| -> Vec<String> {
        let out = s.runner(&["compare", a.to_str().expect("p"), b.to_str().expect("p")]);
        assert!(out.status.success(), "{}", text(&out));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<String> = table
            .lines()
            .filter(|l| l.contains("output_tok_per_s"))
            .map(str::to_string)
            .collect();
        assert_eq!(rows.len(), 4, "{table}");
        rows
    };
    let rows = tput(&base, &double);
    assert!(rows.iter().all(|l| l.ends_with("better")), "{rows:?}");
    let rows = tput(&spread_a, &spread_b);
    assert!(
        rows.iter()
            .all(|l| l.ends_with("no significant difference")),
        "{rows:?}"
    );
}

#[test]
fn a_template_named_like_a_bundle_file_is_refused_and_the_bundle_kept() {
    let s = Scratch::new();
    let bundle = fixture(&s);
    let before = std::fs::read(bundle.join("manifest.json")).expect("manifest");
    for name in ["manifest.json.tera", "plan.toml.tera", "summary.csv.tera"] {
        let t = s.write(name, "{{ plan_name }}");
        let out = s.runner(&[
            "report",
            bundle.to_str().expect("path"),
            "--template",
            t.to_str().expect("path"),
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("a file of the bundle itself")
                && stderr.contains("rename the template"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read(bundle.join("manifest.json")).expect("manifest"),
        before,
        "the manifest is untouched"
    );
    assert!(!bundle.join("summary.csv").exists());
}
