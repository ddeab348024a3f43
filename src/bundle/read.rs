//! Reading a bundle back: the manifest, the resolved plan and every cell summary, which is all
//! a report or a comparison needs.

use std::path::{Path, PathBuf};

use super::format::{CellSummary, Manifest, FORMAT_VERSION};
use super::layout;
use crate::metrics::record::RequestRecord;
use crate::plan::model::Plan;

/// A bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid bundle file: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has bundle format {found}; this runner reads format {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// Everything a report is made from.
#[derive(Debug, Clone)]
pub struct LoadedBundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub plan: Plan,
    /// In the manifest's cell order; cells with no summary file are left out.
    pub cells: Vec<CellSummary>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ReadError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The whole records of a cell's journal, in file order: a line cut off by a kill, or one this
/// runner cannot parse, is skipped. `recover` rebuilds cells with it, `compare` bootstraps.
pub fn records(path: &Path) -> Result<impl Iterator<Item = RequestRecord>, ReadError> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<RequestRecord>(&l).ok()))
}

/// Reads a bundle directory.
pub fn load(dir: &Path) -> Result<LoadedBundle, ReadError> {
    let mpath = dir.join(layout::MANIFEST);
    let version: serde_json::Value = read_json(&mpath)?;
    let found = version["format_version"].as_u64().unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(ReadError::Version { path: mpath, found });
    }
    let manifest: Manifest = read_json(&mpath)?;
    let plan: Plan = read_json(&dir.join(layout::PLAN_RESOLVED))?;
    let mut cells = Vec::new();
    for c in &manifest.cells {
        let p = dir.join(layout::cell_summary(&c.id));
        if p.exists() {
            cells.push(read_json(&p)?);
        }
    }
    Ok(LoadedBundle {
        dir: dir.to_path_buf(),
        manifest,
        plan,
        cells,
    })
}
