//! `runner list [DIR]`: the bundles under a results directory, newest first, with their plan,
//! status, date and hardware, read from each manifest.

use std::path::{Path, PathBuf};

use crate::bundle::format::Manifest;

/// One bundle as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub dir: PathBuf,
    pub manifest: Option<Manifest>,
}

/// Every bundle two levels under `root` (`<root>/<plan>/<bundle>/manifest.json`).
pub fn find(root: &Path) -> std::io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for plan in std::fs::read_dir(root)?.flatten() {
        let Ok(bundles) = std::fs::read_dir(plan.path()) else {
            continue;
        };
        for b in bundles.flatten() {
            let m = b.path().join(crate::bundle::layout::MANIFEST);
            if m.is_file() {
                let manifest = std::fs::read(&m)
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok());
                out.push(Listed {
                    dir: b.path(),
                    manifest,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        let t = |l: &Listed| l.manifest.as_ref().map(|m| m.started_at);
        t(b).cmp(&t(a))
    });
    Ok(out)
}

/// The listing as a table.
pub fn render(items: &[Listed]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|l| match &l.manifest {
            Some(m) => {
                let ok = m
                    .cells
                    .iter()
                    .filter(|c| c.status == crate::bundle::format::CellStatus::Ok)
                    .count();
                // A run that went to its end with no cell measured is not plainly `complete`.
                let mut status = crate::bundle::format::label(&m.status);
                if m.status == crate::bundle::format::RunStatus::Complete
                    && ok == 0
                    && !m.cells.is_empty()
                {
                    status.push_str(", nothing measured");
                }
                vec![
                    m.plan.name.clone(),
                    status,
                    format!("{ok}/{}", m.cells.len()),
                    m.started_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    if m.gpu.available {
                        m.gpu
                            .devices
                            .iter()
                            .map(|d| d.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        format!("{} ({} CPUs)", m.host.hostname, m.host.cpus)
                    },
                    l.dir.display().to_string(),
                ]
            }
            None => vec![
                "?".into(),
                "unreadable manifest".into(),
                String::new(),
                String::new(),
                String::new(),
                l.dir.display().to_string(),
            ],
        })
        .collect();
    super::fmt::table(
        &[
            "plan", "status", "cells ok", "started", "hardware", "bundle",
        ],
        &rows,
    )
}
