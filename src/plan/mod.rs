//! Plans: the TOML file a user commits (`raw`), and the validated form the run uses (`model`),
//! with the defaults (`defaults`), the resolution between them (`resolve`), the checks against
//! this machine (`check`) and the text `validate` prints (`summary`).

pub mod check;
pub mod defaults;
pub mod diagnostic;
pub mod matrix;
pub mod model;
pub mod placeholder;
pub mod prompts;
pub mod quality;
pub mod raw;
pub mod resolve;
pub mod summary;
