//! The result bundle: its format, writing it as the run goes, reading it back.

pub mod format;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod read;
pub mod redact;
pub mod write;
