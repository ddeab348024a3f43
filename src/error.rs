//! Exit codes (README and docs/bundle.md document them) and the one-line error chain every
//! stage prints.

/// Documented exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const INVALID: i32 = 2;
    /// Some cells failed or are invalid, or a `[[quality]]` result failed (a gate, or a step
    /// that could not be measured).
    pub const CELLS_FAILED: i32 = 3;
    /// Every cell was measured and is valid, but some requests failed in them.
    pub const REQUESTS_FAILED: i32 = 4;
    /// Engine processes survived teardown (named on stderr, in the manifest and the report).
    pub const LEFTOVERS: i32 = 5;
    pub const INTERRUPTED: i32 = 130;
}

/// An error and its causes on one line: a library's top-level message alone rarely says why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
