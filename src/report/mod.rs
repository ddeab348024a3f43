//! Reports: views derived from a bundle alone, rendered as Markdown, CSV and console tables.

pub mod charts;
pub mod compare;
pub mod console;
pub mod csv;
pub mod data;
pub mod list;
pub mod render;
pub mod study;

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

/// The report data of a bundle, with its charts drawn.
pub fn data_with_charts(loaded: &read::LoadedBundle) -> data::ReportData {
    let mut data = data::build(loaded);
    let (charts, errors) = charts::all(loaded);
    data.charts = charts;
    data.chart_errors = errors;
    data
}

/// Re-renders every derived file of a bundle (charts, report.md, report.html, summary.csv)
/// and returns the console summary.
pub fn rerender(dir: &Path) -> Result<String, ReportError> {
    let loaded = read::load(dir)?;
    let data = data_with_charts(&loaded);
    let bundle = Bundle::open(dir);
    std::fs::create_dir_all(dir.join("charts")).map_err(|e| crate::bundle::write::WriteError {
        path: dir.join("charts"),
        source: e,
    })?;
    for c in &data.charts {
        bundle.write(&format!("charts/{}.svg", c.name), c.svg.as_bytes())?;
    }
    let md = render::render_markdown(dir, &data)?;
    bundle.write("report.md", md.as_bytes())?;
    let html = render::render_with("report.html.tera", render::BUILTIN_HTML, &data)?;
    bundle.write("report.html", html.as_bytes())?;
    bundle.write("summary.csv", csv::render(&loaded.cells).as_bytes())?;
    Ok(console::summary(&data))
}
