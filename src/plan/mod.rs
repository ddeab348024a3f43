//! Plans: the TOML file a user commits, and the validated form the run uses.

pub mod check;
pub mod defaults;
pub mod diagnostic;
pub mod model;
pub mod placeholder;
pub mod prompts;
pub mod raw;
pub mod resolve;
pub mod summary;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::*;
pub use resolve::{load, ResolveContext};
