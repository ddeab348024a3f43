//! `runner export`: the llm-d Benchmark Report and vLLM's `--save-result` layout, rendered
//! from the committed quickstart bundle and pinned by snapshots.

use std::path::Path;

use runner::bundle::read::load;
use runner::export::{llm_d, vllm};

fn bundle() -> runner::bundle::read::LoadedBundle {
    load(Path::new("tests/fixtures/quickstart_bundle")).expect("load the fixture bundle")
}

fn index(e: &runner::export::files::Export) -> String {
    let mut s = String::new();
    for f in &e.files {
        s.push_str(&format!("{}\n", f.name));
    }
    for k in &e.skipped {
        s.push_str(&format!("skipped {}: {}\n", k.cell, k.reason));
    }
    s
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("json")
}

#[test]
fn vllm_files_one_per_valid_cell() {
    let e = vllm::export(&bundle());
    assert_eq!(e.files.len(), 12);
    insta::assert_snapshot!(index(&e));
}

#[test]
fn vllm_result_of_one_cell() {
    let e = vllm::export(&bundle());
    let f = e
        .files
        .iter()
        .find(|f| f.json["runner_cell"] == "batching.chat.c8")
        .expect("batching.chat.c8 exported");
    insta::assert_snapshot!(pretty(&f.json));
}

#[test]
fn llm_d_reports_one_per_valid_cell() {
    let e = llm_d::export(&bundle());
    assert_eq!(e.files.len(), 12);
    insta::assert_snapshot!(index(&e));
}

#[test]
fn llm_d_report_of_one_cell() {
    let e = llm_d::export(&bundle());
    let f = e
        .files
        .iter()
        .find(|f| f.name == "naive.chat.c4.benchmark_report.json")
        .expect("naive.chat.c4 exported");
    insta::assert_snapshot!(pretty(&f.json));
}

/// Cells that are not results (failed, or invalid because the client set the pace) are not
/// exported as if they were: they are listed as skipped, with why.
#[test]
fn invalid_and_failed_cells_are_skipped_with_a_reason() {
    let mut b = bundle();
    b.cells[0].valid = false;
    b.cells[0].invalid_reason = Some("client dispatch lag p99 12 ms".into());
    b.cells[1].status = runner::bundle::format::CellStatus::Failed;
    for e in [vllm::export(&b), llm_d::export(&b)] {
        assert_eq!(e.files.len(), 10);
        assert_eq!(e.skipped.len(), 2);
        assert_eq!(e.skipped[0].cell, b.cells[0].id);
        assert_eq!(
            e.skipped[0].reason,
            "invalid: client dispatch lag p99 12 ms"
        );
        assert_eq!(e.skipped[1].reason, "status failed");
    }
}

/// Every report of one bundle shares the experiment id and has its own uid; the same bundle
/// gives the same ids every time (no clock, no randomness).
#[test]
fn llm_d_ids_are_stable_and_distinct() {
    let a = llm_d::export(&bundle());
    let b = llm_d::export(&bundle());
    assert_eq!(a, b);
    let eids: std::collections::BTreeSet<_> = a
        .files
        .iter()
        .map(|f| f.json["run"]["eid"].to_string())
        .collect();
    let uids: std::collections::BTreeSet<_> = a
        .files
        .iter()
        .map(|f| f.json["run"]["uid"].to_string())
        .collect();
    assert_eq!(eids.len(), 1);
    assert_eq!(uids.len(), 12);
}

/// `--format vllm` reads percentiles as numpy does (linear interpolation), from the cell's own
/// records: TTFTs of 1..=10 ms give a median of 5.5 and a p90 of 9.1, where the summary's
/// nearest rank would say 5 and 9.
#[test]
fn vllm_percentiles_are_numpy_s_over_the_records() {
    let mut b = bundle();
    let dir = tempfile::tempdir().expect("tempdir");
    let i = b
        .cells
        .iter()
        .position(|c| c.id == "batching.chat.c8")
        .expect("cell");
    let rel = "cells/batching.chat.c8.records.jsonl";
    std::fs::create_dir_all(dir.path().join("cells")).expect("mkdir");
    let mut lines = String::new();
    for k in 1..=10u64 {
        let mut r = runner::load::client::blank_record(0);
        r.ok = true;
        r.first_event_us = Some(k * 1000);
        r.token_us = vec![k * 1000, k * 1000 + 2000];
        r.content_us = r.token_us.clone();
        r.end_us = k * 1000 + 2000;
        r.output_tokens = 2;
        lines.push_str(&serde_json::to_string(&r).expect("json"));
        lines.push('\n');
    }
    std::fs::write(dir.path().join(rel), lines).expect("write records");
    b.dir = dir.path().to_path_buf();
    b.cells[i].records = Some(rel.into());
    let e = vllm::export(&b);
    let f = e
        .files
        .iter()
        .find(|f| f.json["runner_cell"] == "batching.chat.c8")
        .expect("exported");
    let v = |k: &str| {
        f.json[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {}", f.json))
    };
    assert!((v("median_ttft_ms") - 5.5).abs() < 1e-9);
    assert!((v("p90_ttft_ms") - 9.1).abs() < 1e-9);
    assert!((v("p99_ttft_ms") - 9.91).abs() < 1e-9);
    assert!((v("mean_ttft_ms") - 5.5).abs() < 1e-9);
    // Every ITL gap is 2 ms.
    assert!((v("p99_itl_ms") - 2.0).abs() < 1e-9);
    assert_eq!(
        f.json["runner_percentiles"],
        "numpy linear interpolation over the cell's records"
    );
}
