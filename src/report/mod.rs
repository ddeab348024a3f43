//! Reports: views derived from a bundle alone, rendered as Markdown, CSV and console tables.

pub mod charts;
pub mod compare;
pub mod console;
pub mod csv;
pub mod data;
pub mod fmt;
pub mod list;
pub mod render;
pub mod study;

// Until their callers name `render::` (run/ and lib.rs move with issue 14's later steps).
pub use render::{data_with_charts, rerender, ReportError};
