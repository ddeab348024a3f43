//! Every default a plan key takes when the plan leaves it out, named once (docs/plan.md lists
//! the same values): resolution, the client's own defaults and the engine log all read them here.

use std::time::Duration;

/// `[engine] stop_grace`: SIGTERM to SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// `[engine] log_limit`: 64 MiB.
pub const LOG_LIMIT: u64 = 64 << 20;

/// `[engine] max_restarts`: relaunches of an engine that died, with `on_failure = "restart"`.
pub const MAX_RESTARTS: u32 = 3;

/// `[engine.health] path`.
pub const HEALTH_PATH: &str = "/health";
/// `[engine.health] status`.
pub const HEALTH_STATUS: u16 = 200;
/// `[engine.health] interval`.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// `[engine.health] timeout`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(600);

/// `[gpu] interval`.
pub const GPU_INTERVAL: Duration = Duration::from_millis(500);
/// `[engine] metrics_interval`: a scrape of vLLM's `/metrics` costs a tiny CPU server a few
/// percent at 500 ms (docs/engines.md), so no faster than a second unless asked.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// `[gpu] release_timeout`.
pub const GPU_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// `[load] duration` when `duration` is given without a value of its own.
pub const LOAD_DURATION: Duration = Duration::from_secs(60);
/// `[load] warmup`: requests per cell before measuring.
pub const WARMUP: u32 = 2;
/// `[load] request_timeout`: the whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// `[load] connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `[load] idle_timeout` (never above `request_timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// `[load] max_dispatch_lag`.
pub const MAX_DISPATCH_LAG: Duration = Duration::from_millis(10);
/// `RUNNER_MAX_DISPATCH_LAG=1s runner exec ...` replaces every workload's `max_dispatch_lag`:
/// for tests of example plans on a loaded machine, where the plan keeps the real guard. The
/// value used is the one in the bundle's `plan.resolved.json`.
pub const MAX_DISPATCH_LAG_ENV: &str = "RUNNER_MAX_DISPATCH_LAG";
/// `[load] retries`.
pub const RETRIES: u32 = 0;
/// `[load] retry_max_wait`.
pub const RETRY_MAX_WAIT: Duration = Duration::from_secs(10);
