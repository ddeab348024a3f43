//! Quality steps (`[[quality]]`): what each kind measures against a ready engine
//! (`agreement`, `perplexity`, `command`), the gates that judge the results (`gate`), the
//! comparison with the baseline engine once every engine ran (`judge`), and the records the
//! bundle keeps (`record`). The run calls them from `run::quality`.

pub mod agreement;
pub mod command;
pub mod gate;
pub mod glob;
pub mod judge;
pub mod perplexity;
pub mod record;
