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
