//! Reports: views derived from a bundle alone, rendered as Markdown, CSV and console tables.

pub mod console;
pub mod csv;
pub mod data;
pub mod render;

use std::path::Path;

use crate::bundle::read;
use crate::bundle::write::Bundle;

/// Why `runner report` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error(transparent)]
    Write(#[from] crate::bundle::write::WriteError),
}

/// Re-renders every derived file of a bundle (report.md, summary.csv) and returns the
/// console summary.
pub fn rerender(dir: &Path) -> Result<String, ReportError> {
    let loaded = read::load(dir)?;
    let data = data::build(&loaded);
    let md = render::render_markdown(dir, &data)?;
    let bundle = Bundle::open(dir);
    bundle.write("report.md", md.as_bytes())?;
    bundle.write("summary.csv", csv::render(&loaded.cells).as_bytes())?;
    Ok(console::summary(&data))
}
