//! What an export produces, whatever the format: the files to write and the cells left out
//! (with why), and which cells count as results another tool may read.

use serde_json::Value;

use crate::bundle::format::{label, CellStatus, CellSummary};

/// One file to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFile {
    /// A file name, no directory.
    pub name: String,
    pub json: Value,
}

/// A cell left out of an export.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub cell: String,
    pub reason: String,
}

/// Everything an export produces; writing it is the caller's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    pub files: Vec<ExportFile>,
    pub skipped: Vec<Skipped>,
}

/// Why a cell is not a result another tool may read as one; none when it is.
pub fn skip_reason(cell: &CellSummary) -> Option<String> {
    if cell.status != CellStatus::Ok {
        return Some(format!("status {}", label(&cell.status)));
    }
    if !cell.valid {
        return Some(format!(
            "invalid: {}",
            cell.invalid_reason
                .as_deref()
                .unwrap_or("the client set the pace")
        ));
    }
    if cell.metrics.is_none() {
        return Some("no metrics".to_string());
    }
    None
}
