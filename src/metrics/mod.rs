//! Measurement: request records, their aggregation, every judgement derived from them
//! (verdict, SLO, client check, statistics), and resource telemetry.

pub mod client_check;
pub mod energy;
pub mod gpu;
pub mod record;
pub mod sampler;
pub mod slo;
pub mod stats;
pub mod steady;
pub mod summary;
pub mod telemetry;
pub mod verdict;
