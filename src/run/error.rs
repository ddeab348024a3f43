//! How a run's stages fail, as types: `RunError` ends the run; `EngineDown` is one engine that
//! did not come up (why, as `NotReady`, its log's tail, its process to tear down), which fails
//! that engine's cells and lets the run go on.

use std::path::PathBuf;

use crate::bundle::lock::LockError;
use crate::bundle::write::WriteError;
use crate::engine::ready::NotReady;
use crate::engine::spawn::Spawned;
use crate::plan::model::EngineSpec;

/// A run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot send requests to the engine: {0}")]
    Endpoint(String),
    #[error("cannot resume {dir}: {why}")]
    Resume { dir: PathBuf, why: String },
    #[error("cannot place the engines on GPUs: {0}")]
    Placement(String),
}

/// An engine that did not come up.
pub struct EngineDown {
    pub why: NotReady,
    /// What the user reads: "exited with ... while starting", with the probe and the hint.
    pub message: String,
    pub log_tail: Option<String>,
    /// Its process, when it was launched: still to tear down.
    pub spawned: Option<Spawned>,
}

impl EngineDown {
    /// `why` about engine `spec` at `base_url` (empty when it never got one).
    pub fn new(
        why: NotReady,
        spec: &EngineSpec,
        base_url: &str,
        log_tail: Option<String>,
        spawned: Option<Spawned>,
    ) -> EngineDown {
        EngineDown {
            message: message(&why, spec, base_url),
            why,
            log_tail,
            spawned,
        }
    }

    /// The wait ended because the run is stopping, not because the engine failed.
    pub fn stopped(&self) -> bool {
        matches!(self.why, NotReady::Stopped)
    }
}

/// The sentence after "engine `name`" that says why it is not up.
pub fn message(why: &NotReady, spec: &EngineSpec, base_url: &str) -> String {
    match why {
        NotReady::Exited(status) => format!("exited with {status} while starting"),
        NotReady::Foreign(who) => format!(
            "could not be reached: GET {base_url}{} was answered by {who}, which is not in this engine's process group: another server holds the port (stop it, or use `port = \"auto\"`)",
            spec.health.path
        ),
        NotReady::Timeout { after, last } => format!(
            "was not ready after {} (GET {base_url}{} never answered {}{}); raise `health.timeout` if it loads slowly",
            humantime::format_duration(*after),
            spec.health.path,
            spec.health.status,
            last.as_ref()
                .map(|m| format!("; last: {m}"))
                .unwrap_or_default()
        ),
        NotReady::Stopped => "was stopped while starting".to_string(),
        NotReady::ApiKeyUnset { var } => format!(
            "could not start: `api_key_env` names `{var}`, which is not set in the environment"
        ),
        NotReady::Spawn(e) => format!("could not start: {e}"),
        NotReady::WrongModel(why) => why.clone(),
        NotReady::NoCompletion(last) => format!(
            "answered its health check but no completion succeeded before the deadline (last: {last})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> EngineSpec {
        let src = "schema = 1\nname = \"t\"\n[[engine]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\nmodel = \"m\"\n[[workload]]\nname = \"w\"\nprompts = [\"hi\"]\nmax_tokens = 1\n[workload.load]\nconcurrency = [1]\nrequests = 1\n";
        let ctx = crate::plan::resolve::ResolveContext {
            runner_exe: "runner".into(),
        };
        match crate::plan::resolve::resolve_source(
            std::path::Path::new("t.toml"),
            src,
            "0".into(),
            &ctx,
        ) {
            Ok((plan, _)) => plan.engines[0].clone(),
            Err(d) => panic!("the test plan is invalid:\n{d}"),
        }
    }

    #[test]
    fn only_a_stop_makes_an_engine_skipped_and_each_reason_reads_after_its_name() {
        let s = spec();
        let down = |why| EngineDown::new(why, &s, "http://127.0.0.1:9", None, None);
        assert!(down(NotReady::Stopped).stopped());
        assert!(!down(NotReady::NoCompletion("500".into())).stopped());
        let t = down(NotReady::Timeout {
            after: Duration::from_secs(3),
            last: None,
        });
        assert_eq!(
            t.message,
            "was not ready after 3s (GET http://127.0.0.1:9/health never answered 200); raise `health.timeout` if it loads slowly"
        );
        let k = down(NotReady::ApiKeyUnset { var: "KEY".into() });
        assert!(
            k.message.contains("`KEY`, which is not set"),
            "{}",
            k.message
        );
    }
}
