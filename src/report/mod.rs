//! Reports: views derived from a bundle alone, rendered as Markdown, CSV and console tables.

pub mod charts;
pub mod compare;
pub mod console;
pub mod csv;
pub mod data;
pub mod energy;
pub mod energy_charts;
pub mod fmt;
pub mod list;
pub mod pareto;
pub mod quality;
pub mod render;
pub mod study;
