//! The result bundle: its format, its layout (every path in it), its append-only journals,
//! writing it as the run goes, reading it back, its lock and the redaction of secrets.

pub mod format;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod read;
pub mod redact;
pub mod write;
