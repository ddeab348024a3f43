//! Dataset readers: ShareGPT conversations, JSONL prompts and Mooncake traces.

pub mod jsonl;
pub mod mooncake;
pub mod select;
pub mod sharegpt;
