//! The requests a workload sends: exact-length synthetic prompts, datasets and traces, materialized.

pub mod corpus;
pub mod dataset;
pub mod error;
pub mod materialize;
pub mod rng;
pub mod synthetic;
pub mod tokenizer;
