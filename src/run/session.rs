//! One engine's life: launch it (or attach to it), wait until it is ready (`engine::ready`),
//! probe its request dialect, and at the end tear it down and wait for its GPU memory to come
//! back. What each step finds is recorded through the ledger.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::error::{EngineDown, RunError};
use super::orchestrator::{Devices, Run};
use crate::bundle::format::{EngineRestart, GpuRelease};
use crate::bundle::layout;
use crate::engine::ready::{self, wait_ready, Miss, NotReady, Owner};
use crate::engine::spawn::{self, log_tail, Spawned};
use crate::engine::{terminate, version};
use crate::metrics::telemetry;
use crate::plan::model::{EngineSpec, EngineTarget, PortSpec};

/// Lines of an engine's log shown when it fails.
pub(super) const LOG_TAIL_LINES: usize = 20;

/// Launches of an engine on an `auto` port, when other servers take the chosen port first.
const AUTO_PORT_TRIES: u32 = 3;

/// How long an engine's log may take to reach its end once the engine is gone (a child that
/// escaped teardown may hold the pipe open).
const LOG_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The tail of a launched engine's log once it exited: its last words are copied first (a
/// bounded wait, told to the runtime so that its other tasks go on meanwhile).
pub fn exited_log_tail(sp: &Spawned) -> String {
    let settle = || sp.log.settle(LOG_SETTLE);
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(settle),
        _ => settle(),
    }
    log_tail(&sp.log_path, LOG_TAIL_LINES)
}

/// An engine that came up: how to reach it, and its process if the runner launched it.
pub struct Up {
    pub base_url: String,
    pub spawned: Option<Spawned>,
    /// Workloads (by index) whose requests this engine refuses, with the reason.
    pub rejected: BTreeMap<usize, String>,
    /// The engine's Prometheus page, when it has one.
    pub metrics_url: Option<String>,
    /// The cell it died in, and why where its log tells.
    pub died_in: Option<(String, Option<crate::engine::failure::FailureClass>)>,
    /// The GPUs it was placed on: a relaunch after a death gets the same ones.
    pub devices: Vec<u32>,
}

impl Run<'_> {
    /// `version_command`'s output, recorded before the engine starts.
    pub(super) async fn record_version(&self, ei: usize, spec: &EngineSpec) {
        if let Some(argv) = &spec.version_command {
            let cwd = match &spec.target {
                EngineTarget::Launch(l) => l.cwd.clone(),
                EngineTarget::Attach { .. } => PathBuf::from("."),
            };
            let v = version::capture(argv, &cwd).await;
            self.ledger().engine_version(ei, v);
        }
    }

    /// Launch or attach, wait for readiness, then check the served model and (with
    /// `health.completion`) one completion.
    pub(super) async fn bring_up(
        &self,
        ei: usize,
        spec: &EngineSpec,
        devices: &Devices,
    ) -> Result<Up, EngineDown> {
        match ready::check_api_key(spec) {
            Ok(true) => self.ledger().api_key_used(ei),
            Ok(false) => {}
            Err(why) => return Err(EngineDown::new(why, spec, "", None, None)),
        }
        let up = self.launch_and_wait(ei, spec, devices).await?;
        let api_key = ready::api_key(spec);
        // Launched or attached, the engine must serve the plan's model.
        let mut checked =
            ready::check_model(&self.client, &up.base_url, &spec.model, api_key.as_deref()).await;
        if checked.is_ok() && spec.health.completion {
            let deadline = tokio::time::Instant::now() + spec.health.timeout;
            checked =
                ready::first_completion(spec, &up.base_url, api_key, deadline, &self.cancel).await;
        }
        match checked {
            Ok(()) => Ok(up),
            Err(why) => {
                let tail = up
                    .spawned
                    .as_ref()
                    .map(|s| log_tail(&s.log_path, LOG_TAIL_LINES));
                Err(EngineDown::new(why, spec, &up.base_url, tail, up.spawned))
            }
        }
    }

    /// Launches (or attaches) and waits for readiness. An `auto` port is chosen before the
    /// engine binds it, so another program (a second runner on this machine) can take it in
    /// between: when a server outside the engine's group then holds the port, the engine is
    /// stopped and launched again on a new port, at most `AUTO_PORT_TRIES` times in all.
    async fn launch_and_wait(
        &self,
        ei: usize,
        spec: &EngineSpec,
        devices: &Devices,
    ) -> Result<Up, EngineDown> {
        let auto = matches!(&spec.target, EngineTarget::Launch(l) if l.port == PortSpec::Auto);
        let mut tries = 1;
        loop {
            let mut down = match self.launch_once(ei, spec, devices).await {
                Ok(up) => return Ok(up),
                Err(down) => down,
            };
            let Some(sp) = down.spawned.take() else {
                return Err(down);
            };
            let holder = match &down.why {
                NotReady::Foreign(who) => Some(who.clone()),
                NotReady::Exited(_) if !crate::procfs::group_listens_on(sp.pgid, sp.port) => {
                    crate::procfs::port_holder(sp.port)
                }
                _ => None,
            };
            let Some(holder) = holder.filter(|_| auto && tries < AUTO_PORT_TRIES) else {
                down.spawned = Some(sp);
                return Err(down);
            };
            tries += 1;
            let port = sp.port;
            // The port's holder is not the engine's: neither checked nor named as a survivor.
            self.stop_processes(spec, sp, None).await;
            self.ledger().progress().warn(&format!(
                "engine `{}`: its auto port {port} was taken by {holder} before the engine listened on it; launching it again on another port",
                spec.name
            ));
        }
    }

    async fn launch_once(
        &self,
        ei: usize,
        spec: &EngineSpec,
        devices: &Devices,
    ) -> Result<Up, EngineDown> {
        let started = Instant::now();
        let (base_url, mut spawned) = match &spec.target {
            EngineTarget::Attach { url } => {
                self.ledger().engine_attaching(ei, &spec.name, url);
                (url.clone(), None)
            }
            EngineTarget::Launch(l) => {
                let spawn_err = |e: crate::engine::spawn::EngineError| {
                    EngineDown::new(NotReady::Spawn(e.to_string()), spec, "", None, None)
                };
                let port = spawn::pick_port(l.port).map_err(spawn_err)?;
                let log_rel = {
                    let l = self.ledger();
                    if l.relaunching(ei) {
                        layout::engine_restart_log(&spec.name, l.restarts(ei))
                    } else {
                        layout::engine_log(&spec.name)
                    }
                };
                let (log_path, redactor) = {
                    let l = self.ledger();
                    (l.bundle().path(&log_rel), l.bundle().redactor().clone())
                };
                let place = self.plan.places_gpus();
                let sp = spawn::spawn(l, port, devices, place, &log_path, redactor)
                    .map_err(spawn_err)?;
                let base_url = format!("http://127.0.0.1:{port}");
                self.ledger()
                    .engine_launched(ei, &spec.name, &sp, &base_url, log_rel);
                self.sampler.set_target(ei, Some(sp.pgid), &spec.name);
                (base_url, Some(sp))
            }
        };
        let progress = self.ledger().progress().clone();
        let on_miss = |miss: &Miss, left: std::time::Duration| {
            progress.engine_not_answering(&spec.name, &base_url, miss, left);
        };
        let waited = match spawned.as_mut() {
            None => {
                wait_ready(
                    None,
                    &self.client,
                    &base_url,
                    &spec.health,
                    started,
                    &self.cancel,
                    None,
                    Some(&on_miss),
                )
                .await
            }
            Some(sp) => {
                let owner = Owner {
                    pgid: sp.pgid,
                    port: sp.port,
                };
                let started = sp.started;
                wait_ready(
                    Some(&mut sp.child),
                    &self.client,
                    &base_url,
                    &spec.health,
                    started,
                    &self.cancel,
                    Some(owner),
                    None,
                )
                .await
            }
        };
        match waited {
            Ok(d) => {
                let idle = self.sampler.snapshot(ei, &format!("{}.idle", spec.name));
                self.ledger()
                    .engine_ready(ei, &spec.name, d.as_secs_f64(), idle);
                Ok(Up {
                    base_url,
                    spawned,
                    rejected: BTreeMap::new(),
                    metrics_url: None,
                    died_in: None,
                    devices: devices.to_vec(),
                })
            }
            Err(why) => {
                let tail = spawned.as_ref().map(|s| match &why {
                    NotReady::Exited(_) => exited_log_tail(s),
                    _ => log_tail(&s.log_path, LOG_TAIL_LINES),
                });
                Err(EngineDown::new(why, spec, &base_url, tail, spawned))
            }
        }
    }

    /// With `on_failure = "restart"`: an engine that died under a cell (`dead` says why) is
    /// torn down and brought up again, within `max_restarts`; `dead` is cleared once it is
    /// ready. Called before the next cell, so an engine is never relaunched for no cell. A
    /// relaunch that fails leaves `dead` set, so the cells left are not run.
    pub(super) async fn revive(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        dead: &mut Option<String>,
    ) -> Result<(), RunError> {
        let Some(why) = dead.clone() else {
            return Ok(());
        };
        let max = spec.on_failure.max_restarts();
        if self.ledger().restarts(ei) >= max || self.cancel.is_stopping() || up.spawned.is_none() {
            return Ok(());
        }
        // The dead engine's group first: a process it left could hold the port or the GPU.
        if let Some(sp) = up.spawned.take() {
            self.teardown(ei, spec, sp).await?;
        }
        let (died_in, failure_class) = up.died_in.take().unwrap_or_default();
        self.ledger().engine_restarting(
            ei,
            EngineRestart {
                after_cell: died_in,
                failure: why.clone(),
                failure_class,
                log: None,
                ready_s: None,
                error: None,
            },
            max,
        );
        let devices = up.devices.clone();
        match self.bring_up(ei, spec, &devices).await {
            Ok(new) => {
                up.base_url = new.base_url;
                up.spawned = new.spawned;
                up.metrics_url = None;
                if let Some(path) = &spec.metrics_path {
                    let url = format!("{}{path}", up.base_url);
                    if telemetry::scrape_once(&self.client, &url).await.is_some() {
                        self.ledger().metrics_url(ei, &url);
                        up.metrics_url = Some(url);
                    }
                }
                *dead = None;
                self.ledger().save()?;
            }
            Err(down) => {
                self.ledger().restart_failed(ei, &down.message);
                let again = format!("{why}, and its relaunch failed: {}", down.message);
                self.ledger().engine_failed(
                    ei,
                    &spec.name,
                    &again,
                    down.log_tail.clone(),
                    down.stopped(),
                );
                if let Some(sp) = down.spawned {
                    self.teardown(ei, spec, sp).await?;
                }
                *dead = Some(again);
            }
        }
        Ok(())
    }

    /// Before an engine's cells: the request fields it refuses, workload by workload (their
    /// cells are then `rejected`), and its metrics page.
    pub(super) async fn probe_engine(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
    ) -> Result<(), RunError> {
        for (wi, w) in self.plan.workloads.iter().enumerate() {
            if let Some(refused) =
                ready::check_dialect(spec, w, &up.base_url, &self.plan.path, &self.cancel).await
            {
                self.ledger().rejected_field(ei, &w.name, &refused);
                up.rejected.insert(wi, refused.why);
            }
        }
        self.ledger().save()?;
        if let Some(path) = &spec.metrics_path {
            let url = format!("{}{path}", up.base_url);
            if telemetry::scrape_once(&self.client, &url).await.is_some() {
                self.ledger().metrics_url(ei, &url);
                up.metrics_url = Some(url);
            }
        }
        Ok(())
    }

    /// Stops a launched engine's process group; records the stop and what its log kept.
    pub(super) async fn teardown(
        &self,
        ei: usize,
        spec: &EngineSpec,
        sp: Spawned,
    ) -> Result<(), RunError> {
        let port = Some(sp.port);
        let Some((report, sp)) = self.stop_processes(spec, sp, port).await else {
            return Ok(());
        };
        self.ledger()
            .engine_stopped(ei, &spec.name, report, &sp.log)?;
        Ok(())
    }

    /// Stops a launched engine's processes (`terminate::stop`, checking `port` afterwards),
    /// waits for its log to reach its end, and names whatever survived. `None` for an
    /// attached engine.
    async fn stop_processes(
        &self,
        spec: &EngineSpec,
        mut sp: Spawned,
        port: Option<u16>,
    ) -> Option<(terminate::StopReport, Spawned)> {
        let grace = match &spec.target {
            EngineTarget::Launch(l) => l.stop_grace,
            EngineTarget::Attach { .. } => return None,
        };
        let report = terminate::stop(&mut sp.child, sp.pgid, port, grace, &self.cancel).await;
        // The log is complete once every process of the engine closed its end of the pipe.
        let log = sp.log.clone();
        tokio::task::spawn_blocking(move || log.settle(LOG_SETTLE))
            .await
            .ok();
        self.leftover(
            report
                .survivors
                .iter()
                .map(|s| format!("engine `{}`: {s}", spec.name)),
        );
        Some((report, sp))
    }

    /// With NVML: waits (bounded) for GPU memory to return to its level before launch, and
    /// records who holds it when it does not.
    pub(super) async fn check_gpu_release(
        &self,
        ei: usize,
        spec: &EngineSpec,
        before: Option<u64>,
        devices: &Devices,
    ) -> Result<(), RunError> {
        const SLACK: u64 = 256 << 20;
        let Some(before) = before else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + self.plan.gpu.release_timeout;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let after = loop {
            tick.tick().await;
            let now = self.sampler.gpu_used_now(devices).unwrap_or(0);
            if now <= before + SLACK
                || tokio::time::Instant::now() >= deadline
                || self.cancel.state() == crate::stop::StopState::Kill
            {
                break now;
            }
        };
        let released = after <= before + SLACK;
        let holders = if released {
            Vec::new()
        } else {
            self.sampler.gpu_processes(devices)
        };
        let release = GpuRelease {
            before_launch_bytes: before,
            after_stop_bytes: after,
            released,
            holders,
        };
        self.ledger().gpu_release(ei, &spec.name, release)?;
        Ok(())
    }
}
