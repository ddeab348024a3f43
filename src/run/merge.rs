//! `runner merge`: the parts of a split run (one bundle per engine, written by `runner exec
//! --part` or run apart by hand) combined into one bundle, whose report is then rendered from
//! that bundle alone. Parts of different plans are refused; missing and failed parts are
//! listed, and the merged bundle says which parts it was made of.

use std::path::{Path, PathBuf};

use crate::bundle::format::*;
use crate::bundle::layout;
use crate::bundle::read::{self, LoadedBundle, ReadError};
use crate::bundle::write::{Bundle, WriteError};
use crate::plan::model::Plan;

/// The directory parts go in, inside a submitted bundle: `parts/<engine>/`.
pub const PARTS: &str = "parts";

/// `BUNDLE/parts/<engine>`.
pub fn part_dir(bundle: &Path, engine: &str) -> PathBuf {
    bundle.join(PARTS).join(engine)
}

/// A merge that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{a} and {b} are bundles of different plans (plan sha256 {sha_a} and {sha_b}); only parts of one plan file merge")]
    DifferentPlans {
        a: PathBuf,
        sha_a: String,
        b: PathBuf,
        sha_b: String,
    },
    #[error(
        "{part} and {other} both ran engine {engine}; a merged bundle holds one run of each engine"
    )]
    SameEngine {
        engine: String,
        part: PathBuf,
        other: PathBuf,
    },
    #[error("{0} exists already; merge into a new directory")]
    OutputExists(PathBuf),
    #[error("{0} has no part yet (no {PARTS}/<engine>/ directory): nothing to merge")]
    NoParts(PathBuf),
    #[error("merging several bundles needs --output DIR, the new bundle's directory")]
    NoOutput,
}

/// What a merge found and wrote.
#[derive(Debug, Clone)]
pub struct Merged {
    pub dir: PathBuf,
    pub status: RunStatus,
    /// Engines with no part (their job never wrote one).
    pub missing: Vec<String>,
    /// Parts that did not finish `complete`, or with failed cells: `engine: why`.
    pub failed: Vec<String>,
    pub cells: usize,
}

/// Merges a submitted bundle's parts into that bundle itself. A directory with parts but no
/// manifest of its own (a Kubernetes run, where no `runner submit` created it) is made from
/// its parts alone, in the order of their names.
pub fn merge_submitted(bundle: &Path) -> Result<Merged, MergeError> {
    if !bundle.join(layout::MANIFEST).exists() {
        let parts_dir = bundle.join(PARTS);
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&parts_dir)
            .map_err(|_| MergeError::NoParts(bundle.to_path_buf()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(layout::MANIFEST).exists())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(MergeError::NoParts(bundle.to_path_buf()));
        }
        return merge_into(&dirs, Bundle::open(bundle));
    }
    let top = read::load(bundle)?;
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for e in &top.plan.engines {
        let dir = part_dir(bundle, &e.name);
        if dir.join(layout::MANIFEST).exists() {
            parts.push(read::load(&dir)?);
        } else {
            missing.push(e.name.clone());
        }
    }
    if parts.is_empty() {
        return Err(MergeError::NoParts(bundle.to_path_buf()));
    }
    let base = Base {
        plan: top.plan.clone(),
        manifest: top.manifest.clone(),
    };
    write_merged(&Bundle::open(bundle), base, &parts, missing)
}

/// Merges bundles of one plan run apart into a new bundle at `output`.
pub fn merge_bundles(dirs: &[PathBuf], output: &Path) -> Result<Merged, MergeError> {
    if output.exists() {
        return Err(MergeError::OutputExists(output.to_path_buf()));
    }
    // Read and checked before the output directory is created: a refused merge leaves nothing.
    let mut parts = Vec::new();
    for d in dirs {
        parts.push(read::load(d)?);
    }
    check_parts(&parts[0].manifest.plan.sha256, &parts[0].dir, &parts)?;
    merge_into(dirs, Bundle::create_at(output)?)
}

fn merge_into(dirs: &[PathBuf], bundle: Bundle) -> Result<Merged, MergeError> {
    let mut parts = Vec::new();
    for d in dirs {
        parts.push(read::load(d)?);
    }
    let first = &parts[0];
    // The plan of the merge: every part's engines, in the order the bundles were given.
    let mut plan = first.plan.clone();
    plan.engines.clear();
    plan.cells.clear();
    for p in &parts {
        for (ei, e) in p.plan.engines.iter().enumerate() {
            let at = plan.engines.len();
            plan.engines.push(e.clone());
            plan.cells
                .extend(p.plan.cells.iter().filter(|c| c.engine == ei).map(|c| {
                    let mut c = c.clone();
                    c.engine = at;
                    c
                }));
        }
    }
    let mut manifest = first.manifest.clone();
    manifest.part = None;
    manifest.slurm = None;
    check_parts(&manifest.plan.sha256, &first.dir, &parts)?;
    std::fs::create_dir_all(bundle.path(layout::CELLS)).map_err(|e| WriteError {
        path: bundle.path(layout::CELLS),
        source: e,
    })?;
    for f in [layout::PLAN, layout::TEMPLATE] {
        let src = first.dir.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| WriteError {
                path: src.clone(),
                source: e,
            })?;
            bundle.write(f, &bytes)?;
        }
    }
    write_merged(&bundle, Base { plan, manifest }, &parts, Vec::new())
}

/// The plan and manifest a merge starts from.
struct Base {
    plan: Plan,
    manifest: Manifest,
}

fn check_parts(sha: &str, base: &Path, parts: &[LoadedBundle]) -> Result<(), MergeError> {
    for p in parts {
        if p.manifest.plan.sha256 != sha {
            return Err(MergeError::DifferentPlans {
                a: base.to_path_buf(),
                sha_a: sha.to_string(),
                b: p.dir.clone(),
                sha_b: p.manifest.plan.sha256.clone(),
            });
        }
    }
    for (i, p) in parts.iter().enumerate() {
        for q in &parts[i + 1..] {
            if let Some(e) = p
                .manifest
                .engines
                .iter()
                .find(|e| q.manifest.engines.iter().any(|f| f.name == e.name))
            {
                return Err(MergeError::SameEngine {
                    engine: e.name.clone(),
                    part: p.dir.clone(),
                    other: q.dir.clone(),
                });
            }
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Bundle, sub: &str) -> Result<(), MergeError> {
    let dir = from.join(sub);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WriteError {
            path: dir.clone(),
            source: e,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| WriteError {
            path: entry.path(),
            source: e,
        })?;
        files.push((format!("{sub}/{name}"), bytes));
    }
    std::fs::create_dir_all(to.path(sub)).map_err(|e| WriteError {
        path: to.path(sub),
        source: e,
    })?;
    to.write_batch(&files)?;
    Ok(())
}

/// Copies a folder and everything under it (a part's `quality/`, whose command outputs nest).
fn copy_tree(from: &Path, to: &Path) -> Result<(), MergeError> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |e| WriteError { path, source: e }
    };
    std::fs::create_dir_all(to).map_err(err(to))?;
    for entry in entries {
        let entry = entry.map_err(err(from))?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).map_err(err(&dest))?;
        }
    }
    Ok(())
}

/// Appends each part's journal `rel` (resource samples, scrapes) into one.
fn concat(parts: &[LoadedBundle], to: &Bundle, rel: &str) -> Result<(), MergeError> {
    let mut out = Vec::new();
    for p in parts {
        if let Ok(bytes) = std::fs::read(p.dir.join(rel)) {
            out.extend_from_slice(&bytes);
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    to.write(rel, &out)?;
    Ok(())
}

fn write_merged(
    to: &Bundle,
    base: Base,
    parts: &[LoadedBundle],
    missing: Vec<String>,
) -> Result<Merged, MergeError> {
    let Base { plan, mut manifest } = base;
    check_parts(&manifest.plan.sha256, &to.dir, parts)?;
    for p in parts {
        copy_dir(&p.dir, to, layout::CELLS)?;
        copy_dir(&p.dir, to, layout::LOGS)?;
        // Every part of one plan materialized the same requests: one copy of each file.
        copy_dir(&p.dir, to, layout::WORKLOADS)?;
        copy_tree(&p.dir.join(layout::QUALITY), &to.path(layout::QUALITY))?;
        copy_dir(&p.dir, to, layout::INCLUDES)?;
    }
    concat(parts, to, layout::SAMPLES)?;
    concat(parts, to, layout::TELEMETRY)?;
    to.write_json(layout::PLAN_RESOLVED, &plan)?;

    let engine_of = |name: &str| {
        parts
            .iter()
            .find_map(|p| p.manifest.engines.iter().find(|e| e.name == name))
    };
    let cell_of = |id: &str| {
        parts
            .iter()
            .find_map(|p| p.manifest.cells.iter().find(|c| c.id == id))
    };
    manifest.engines = plan
        .engines
        .iter()
        .map(|e| {
            engine_of(&e.name).cloned().unwrap_or_else(|| {
                let mut rec = manifest
                    .engines
                    .iter()
                    .find(|r| r.name == e.name)
                    .cloned()
                    .unwrap_or_else(|| super::ledger::pending_engine(e));
                rec.status = EngineStatus::Skipped;
                rec.failure = Some("no part: its job never wrote one".into());
                rec
            })
        })
        .collect();
    manifest.cells = plan
        .cells
        .iter()
        .map(|c| CellIndex {
            id: c.id.clone(),
            status: cell_of(&c.id).map_or(CellStatus::Pending, |i| i.status),
        })
        .collect();
    manifest.workloads = Vec::new();
    for w in parts.iter().flat_map(|p| p.manifest.workloads.iter()) {
        if !manifest.workloads.iter().any(|m| m.name == w.name) {
            manifest.workloads.push(w.clone());
        }
    }
    manifest.searches = parts
        .iter()
        .flat_map(|p| p.manifest.searches.iter().cloned())
        .collect();
    // Each part judged its engines' quality results against a baseline it may not have run:
    // judged again here, with every engine's raw outputs in one place.
    manifest.quality = parts
        .iter()
        .flat_map(|p| p.manifest.quality.iter().cloned())
        .collect();
    crate::quality::judge::judge(&to.dir, &plan.quality, &mut manifest.quality);
    manifest.until_failure = parts
        .iter()
        .flat_map(|p| p.manifest.until_failure.iter().cloned())
        .collect();
    // Cells a part added as it ran (search and until_failure probes), after the grid's.
    for c in parts.iter().flat_map(|p| p.manifest.cells.iter()) {
        if !manifest.cells.iter().any(|m| m.id == c.id) {
            manifest.cells.push(c.clone());
        }
    }
    let first = &parts[0].manifest;
    manifest.host = first.host.clone();
    manifest.gpu = first.gpu.clone();
    manifest.started_at = parts
        .iter()
        .map(|p| p.manifest.started_at)
        .min()
        .unwrap_or(manifest.started_at);
    manifest.finished_at = parts.iter().filter_map(|p| p.manifest.finished_at).max();
    manifest.merged_from = parts
        .iter()
        .map(|p| MergedPart {
            dir: p.dir.display().to_string(),
            status: p.manifest.status,
            engines: p.manifest.engines.iter().map(|e| e.name.clone()).collect(),
            part: p.manifest.part.clone(),
        })
        .collect();

    let mut failed = Vec::new();
    for p in parts {
        let names: Vec<&str> = p.manifest.engines.iter().map(|e| e.name.as_str()).collect();
        let bad_cells = p
            .manifest
            .cells
            .iter()
            .filter(|c| c.status != CellStatus::Ok)
            .count();
        if p.manifest.status != RunStatus::Complete {
            failed.push(format!(
                "{}: part is {}{}",
                names.join(", "),
                label(&p.manifest.status),
                p.manifest
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        } else if bad_cells > 0 {
            failed.push(format!(
                "{}: {bad_cells} cells not ok (see the report)",
                names.join(", ")
            ));
        }
    }
    let statuses: Vec<RunStatus> = parts.iter().map(|p| p.manifest.status).collect();
    manifest.status = if statuses.contains(&RunStatus::Interrupted) {
        RunStatus::Interrupted
    } else if !missing.is_empty() || statuses.iter().any(|s| *s != RunStatus::Complete) {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    manifest.message = (!missing.is_empty()).then(|| {
        format!(
            "no part for engine(s) {}: their jobs wrote nothing (see slurm/ for their output)",
            missing.join(", ")
        )
    });
    to.write_json(layout::MANIFEST, &manifest)?;
    Ok(Merged {
        dir: to.dir.clone(),
        status: manifest.status,
        missing,
        failed,
        cells: manifest.cells.len(),
    })
}
