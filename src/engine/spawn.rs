//! Launching an engine: a free port, its own process group, stdout and stderr through the
//! runner into a bounded, redacted log file (`log.rs`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::process::{Child, Command};

use super::log::EngineLog;
use crate::bundle::redact::Redactor;
use crate::plan::check::port_taken;
use crate::plan::model::{LaunchSpec, PortSpec};

/// Why an engine could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("port {port} is already in use ({why})")]
    PortTaken { port: u16, why: String },
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// A launched engine process (the leader of its own process group).
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// The leader's PID, which is also the group's id.
    pub pgid: i32,
    pub port: u16,
    pub argv: Vec<String>,
    pub log_path: PathBuf,
    /// The thread copying its output into the log.
    pub log: EngineLog,
    pub started: Instant,
    /// The `CUDA_VISIBLE_DEVICES` the engine was started with (set by the runner, by the
    /// plan's `env`, or inherited from the runner), if any.
    pub cuda_visible_devices: Option<String>,
}

pub use crate::plan::model::CUDA_VISIBLE_DEVICES;
/// Set with it, so CUDA numbers the devices as NVML (and nvidia-smi, and `[gpu] devices`) do.
pub const CUDA_DEVICE_ORDER: &str = "CUDA_DEVICE_ORDER";

/// `0,1,3`, as `CUDA_VISIBLE_DEVICES` and `{gpus}` write a device set.
pub fn device_list(devices: &[u32]) -> String {
    devices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Chooses the port: a fixed one must be free, `auto` takes one the OS says is free.
pub fn pick_port(spec: PortSpec) -> Result<u16, EngineError> {
    match spec {
        PortSpec::Fixed(port) => match port_taken(port) {
            Some(why) => Err(EngineError::PortTaken { port, why }),
            None => Ok(port),
        },
        PortSpec::Auto => std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| EngineError::PortTaken {
                port: 0,
                why: format!("no free port: {e}"),
            }),
    }
}

/// Starts the engine with `{port}`, `{gpus}` and `{gpu_count}` filled in, in a new process
/// group, without a shell; with `place`, a non-empty device set `gpus` is its
/// `CUDA_VISIBLE_DEVICES`. Its output goes to `log_path`, at most `launch.log_limit` bytes of
/// it, secrets redacted.
pub fn spawn(
    launch: &LaunchSpec,
    port: u16,
    gpus: &[u32],
    place: bool,
    log_path: &Path,
    redactor: Arc<Redactor>,
) -> Result<Spawned, EngineError> {
    let (port_s, gpus_s, count_s) = (port.to_string(), device_list(gpus), gpus.len().to_string());
    let fill = |a: &str| {
        a.replace("{port}", &port_s)
            .replace("{gpus}", &gpus_s)
            .replace("{gpu_count}", &count_s)
    };
    let argv: Vec<String> = launch.argv.iter().map(|a| fill(a)).collect();
    let log_err = |e| EngineError::Log {
        path: log_path.to_path_buf(),
        source: e,
    };
    let (engine_log, out) =
        EngineLog::start(log_path, launch.log_limit, redactor).map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    // A pinned runner (`[client] cpus`) starts its engines off its own CPUs.
    let launched = crate::affinity::engine_argv(&argv);
    let mut cmd = Command::new(&launched[0]);
    cmd.args(&launched[1..])
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    let mut cuda_visible_devices = std::env::var(CUDA_VISIBLE_DEVICES).ok();
    if place && !gpus.is_empty() && !launch.env.contains_key(CUDA_VISIBLE_DEVICES) {
        cmd.env(CUDA_VISIBLE_DEVICES, &gpus_s);
        cuda_visible_devices = Some(gpus_s.clone());
        if !launch.env.contains_key(CUDA_DEVICE_ORDER) {
            cmd.env(CUDA_DEVICE_ORDER, "PCI_BUS_ID");
        }
    }
    for (k, v) in &launch.env {
        let v = fill(v);
        if k == CUDA_VISIBLE_DEVICES {
            cuda_visible_devices = Some(v.clone());
        }
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| EngineError::Spawn {
        program: argv[0].clone(),
        source: e,
    })?;
    // The runner's copies of the pipe's write end go, so the log ends when the engine's do.
    drop(cmd);
    let pgid = child.id().map(|p| p as i32).ok_or(EngineError::Spawn {
        program: argv[0].clone(),
        source: std::io::Error::other("the child exited before its pid was read"),
    })?;
    super::terminate::track(pgid);
    Ok(Spawned {
        child,
        pgid,
        port,
        argv,
        log_path: log_path.to_path_buf(),
        log: engine_log,
        started: Instant::now(),
        cuda_visible_devices,
    })
}

/// The last `lines` lines of a log file (at most 64 KiB read), for error reports.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
