//! Measurement: request records, their aggregation, and resource telemetry.

pub mod gpu;
pub mod record;
pub mod sampler;
pub mod slo;
pub mod summary;
