//! Rendering a report from a bundle with tera: the built-in template, or the plan's own
//! (copied into the bundle at run time so that the bundle alone can re-render it), and `rerender`,
//! which rewrites every derived file of a bundle.

use std::path::{Path, PathBuf};

use super::data::ReportData;
use super::{charts, console, csv, data};
use crate::bundle::write::Bundle;
use crate::bundle::{layout, read};

/// The built-in Markdown report template.
pub const BUILTIN_MD: &str = include_str!("../../templates/report.md.tera");
/// The built-in self-contained HTML report template.
pub const BUILTIN_HTML: &str = include_str!("../../templates/report.html.tera");

/// A report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name} failed: {detail}")]
    Template { name: String, detail: String },
}

/// Renders `template` (its text) with the report data.
pub fn render_with(name: &str, template: &str, data: &ReportData) -> Result<String, RenderError> {
    let err = |e: tera::Error| RenderError::Template {
        name: name.to_string(),
        detail: crate::error::error_chain(&e),
    };
    let ctx = tera::Context::from_serialize(data).map_err(err)?;
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(name, template).map_err(err)?;
    tera.render(name, &ctx).map_err(err)
}

/// Renders the bundle's Markdown report: its own template if it has one, else the built-in.
pub fn render_markdown(bundle_dir: &Path, data: &ReportData) -> Result<String, RenderError> {
    let own = bundle_dir.join(layout::TEMPLATE);
    if own.is_file() {
        let text = std::fs::read_to_string(&own).map_err(|e| RenderError::Read {
            path: own.clone(),
            source: e,
        })?;
        render_with(&own.display().to_string(), &text, data)
    } else {
        render_with("report.md.tera", BUILTIN_MD, data)
    }
}

/// Why `runner report` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Render(#[from] RenderError),
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
    std::fs::create_dir_all(dir.join(layout::CHARTS)).map_err(|e| {
        crate::bundle::write::WriteError {
            path: dir.join(layout::CHARTS),
            source: e,
        }
    })?;
    for c in &data.charts {
        bundle.write(&layout::chart(&c.name), c.svg.as_bytes())?;
    }
    let md = render_markdown(dir, &data)?;
    bundle.write(layout::REPORT_MD, md.as_bytes())?;
    let html = render_with("report.html.tera", BUILTIN_HTML, &data)?;
    bundle.write(layout::REPORT_HTML, html.as_bytes())?;
    bundle.write(
        layout::SUMMARY_CSV,
        csv::render_with_quality(
            &loaded.cells,
            &csv::MatrixColumns::of(&loaded.plan),
            &loaded.manifest.quality,
        )
        .as_bytes(),
    )?;
    Ok(console::summary(&data))
}
