//! Measurement: request records, their aggregation, and resource telemetry.

pub mod client_check;
pub mod gpu;
pub mod record;
pub mod sampler;
pub mod slo;
pub mod stats;
pub mod summary;
pub mod telemetry;
pub mod verdict;
