//! Writing a bundle's numbers in other tools' formats, so their dashboards read them.

pub mod files;
pub mod llm_d;
pub mod vllm;
