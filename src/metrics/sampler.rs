//! A background thread that samples GPU memory, utilization and power (when NVML is there) and
//! the resident memory of the current engine's process group, writes every sample to the
//! bundle, and folds them into per-window (per-cell) statistics.

use std::io::Write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::energy::{Energy, EnergyFolder, PowerReading};
use super::gpu::{Gpu, GpuReading};
use crate::procfs;

/// Memory and utilization over a window, or at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub samples: u64,
    /// Summed over all GPUs.
    pub gpu_mem_used_peak_bytes: Option<u64>,
    pub gpu_mem_used_mean_bytes: Option<u64>,
    pub gpu_util_peak_pct: Option<f64>,
    pub gpu_util_mean_pct: Option<f64>,
    /// Resident memory of the engine's process group (launched engines only).
    pub rss_peak_bytes: Option<u64>,
    pub rss_mean_bytes: Option<u64>,
    /// GPU memory of the engine's own processes (NVML's per-process list, the PIDs of its
    /// process group): what the engine holds, apart from anything else on the GPU.
    #[serde(default)]
    pub engine_gpu_mem_peak_bytes: Option<u64>,
    #[serde(default)]
    pub engine_gpu_mem_mean_bytes: Option<u64>,
    /// What the driver reserves, summed over GPUs (not part of "used").
    #[serde(default)]
    pub gpu_mem_reserved_bytes: Option<u64>,
    /// Power draw and energy of the sampled GPUs over the window (`metrics::energy`); absent
    /// without GPU telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<Energy>,
}

#[derive(Default)]
struct Window {
    n: u64,
    gpu_n: u64,
    gpu_sum: f64,
    gpu_peak: u64,
    util_sum: f64,
    util_peak: f64,
    rss_n: u64,
    rss_sum: f64,
    rss_peak: u64,
    egpu_n: u64,
    egpu_sum: f64,
    egpu_peak: u64,
    reserved: Option<u64>,
    energy: EnergyFolder,
}

impl Window {
    fn add(&mut self, gpu: &[GpuReading], rss: Option<u64>, engine_gpu: Option<u64>) {
        self.n += 1;
        if let Some(b) = engine_gpu {
            self.egpu_n += 1;
            self.egpu_sum += b as f64;
            self.egpu_peak = self.egpu_peak.max(b);
        }
        if !gpu.is_empty() {
            self.reserved = Some(gpu.iter().map(|g| g.memory_reserved_bytes).sum());
            let used: u64 = gpu.iter().map(|g| g.memory_used_bytes).sum();
            let util = gpu
                .iter()
                .map(|g| f64::from(g.utilization_pct))
                .sum::<f64>()
                / gpu.len() as f64;
            self.gpu_n += 1;
            self.gpu_sum += used as f64;
            self.gpu_peak = self.gpu_peak.max(used);
            self.util_sum += util;
            self.util_peak = self.util_peak.max(util);
        }
        if let Some(r) = rss {
            self.rss_n += 1;
            self.rss_sum += r as f64;
            self.rss_peak = self.rss_peak.max(r);
        }
    }

    /// A window whose power is attributed over `devices` (`None`: every device sampled).
    fn for_devices(devices: Option<Vec<u32>>) -> Window {
        Window {
            energy: EnergyFolder::new(devices),
            ..Window::default()
        }
    }

    fn resources(&self, power_error: Option<&str>) -> Resources {
        let gpu = self.gpu_n > 0;
        let rss = self.rss_n > 0;
        Resources {
            samples: self.n,
            gpu_mem_used_peak_bytes: gpu.then_some(self.gpu_peak),
            gpu_mem_used_mean_bytes: gpu.then(|| (self.gpu_sum / self.gpu_n as f64) as u64),
            gpu_util_peak_pct: gpu.then_some(self.util_peak),
            gpu_util_mean_pct: gpu.then(|| self.util_sum / self.gpu_n as f64),
            rss_peak_bytes: rss.then_some(self.rss_peak),
            rss_mean_bytes: rss.then(|| (self.rss_sum / self.rss_n as f64) as u64),
            engine_gpu_mem_peak_bytes: (self.egpu_n > 0).then_some(self.egpu_peak),
            engine_gpu_mem_mean_bytes: (self.egpu_n > 0)
                .then(|| (self.egpu_sum / self.egpu_n as f64) as u64),
            gpu_mem_reserved_bytes: self.reserved,
            energy: self.energy.finish(power_error),
        }
    }
}

struct State {
    gpu: Option<Gpu>,
    pgid: Option<i32>,
    label: String,
    window: Window,
    /// The GPUs whose power a window attributes (`None`: every device sampled).
    energy_devices: Option<Vec<u32>>,
    /// `samples.jsonl` (the bundle's journal writer).
    out: Option<Box<dyn Write + Send>>,
    started: std::time::Instant,
}

#[derive(Serialize)]
struct SampleLine<'a> {
    t_s: f64,
    label: &'a str,
    rss_bytes: Option<u64>,
    /// GPU memory held by the engine's process group (NVML per-process list).
    #[serde(skip_serializing_if = "Option::is_none")]
    engine_gpu_bytes: Option<u64>,
    gpus: &'a [GpuReading],
    /// Power draw and energy counter per GPU, where NVML gives them.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    power: &'a [PowerReading],
}

impl State {
    fn power_error(&self) -> Option<String> {
        self.gpu.as_ref().and_then(Gpu::power_error)
    }

    fn sample(&mut self) {
        let at = std::time::Instant::now();
        let t_s = at.duration_since(self.started).as_secs_f64();
        let gpu = self.gpu.as_ref().map(Gpu::read).unwrap_or_default();
        let power = self.gpu.as_ref().map(|g| g.power_at(at));
        let rss = self.pgid.map(procfs::group_rss_bytes).filter(|&r| r > 0);
        let engine_gpu = match (&self.gpu, self.pgid) {
            (Some(g), Some(pgid)) => {
                let members: std::collections::HashSet<u32> = procfs::group_members(pgid)
                    .iter()
                    .filter_map(|p| u32::try_from(p.pid).ok())
                    .collect();
                Some(
                    g.processes()
                        .iter()
                        .filter(|p| members.contains(&p.pid))
                        .filter_map(|p| p.used_bytes)
                        .sum(),
                )
            }
            _ => None,
        };
        self.window.add(&gpu, rss, engine_gpu);
        if let Some(p) = &power {
            self.window.energy.add(t_s, p);
        }
        if let Some(out) = &mut self.out {
            let line = SampleLine {
                t_s,
                label: &self.label,
                rss_bytes: rss,
                engine_gpu_bytes: engine_gpu,
                gpus: &gpu,
                power: power.as_deref().unwrap_or_default(),
            };
            if serde_json::to_writer(&mut *out, &line).is_ok() {
                let _ = out.write_all(b"\n");
            }
        }
    }
}

/// The sampler thread and its shared state.
pub struct Sampler {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling every `interval`, appending samples to `out` (JSON lines).
    pub fn start(
        gpu: Option<Gpu>,
        interval: Duration,
        out: Option<Box<dyn Write + Send>>,
    ) -> Sampler {
        let state = Arc::new(Mutex::new(State {
            gpu,
            pgid: None,
            label: String::new(),
            window: Window::default(),
            energy_devices: None,
            out,
            started: std::time::Instant::now(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("runner-sampler".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if let Ok(mut g) = s.lock() {
                        if g.pgid.is_some() || g.gpu.is_some() {
                            g.sample();
                        }
                    }
                    std::thread::park_timeout(interval);
                }
            })
            .ok();
        Sampler {
            state,
            stop,
            thread,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets whose process group is sampled and the label written with each sample.
    pub fn set_target(&self, pgid: Option<i32>, label: &str) {
        let mut s = self.lock();
        s.pgid = pgid;
        s.label = label.to_string();
    }

    /// Starts a new window with one sample taken now.
    pub fn begin_window(&self, label: &str) {
        let mut s = self.lock();
        s.label = label.to_string();
        s.window = Window::for_devices(s.energy_devices.clone());
        s.sample();
    }

    /// Ends the window with one sample taken now, and returns its statistics.
    pub fn end_window(&self) -> Resources {
        let mut s = self.lock();
        s.sample();
        let r = s.window.resources(s.power_error().as_deref());
        if let Some(out) = &mut s.out {
            // Samples are best-effort: a journal that stopped says so when it is finished.
            out.flush().ok();
        }
        r
    }

    /// Attributes the power of the next windows to these GPUs (`None`: every GPU sampled).
    pub fn set_energy_devices(&self, devices: Option<Vec<u32>>) {
        self.lock().energy_devices = devices;
    }

    /// GPU memory used now, summed over GPUs; `None` without NVML.
    pub fn gpu_used_now(&self) -> Option<u64> {
        let s = self.lock();
        let r = s.gpu.as_ref()?.read();
        (!r.is_empty()).then(|| r.iter().map(|g| g.memory_used_bytes).sum())
    }

    /// The processes holding GPU memory now (empty without NVML).
    pub fn gpu_processes(&self) -> Vec<super::gpu::GpuProcess> {
        self.lock()
            .gpu
            .as_ref()
            .map(Gpu::processes)
            .unwrap_or_default()
    }

    /// One reading now, outside any window.
    pub fn snapshot(&self, label: &str) -> Resources {
        let mut s = self.lock();
        let fresh = Window::for_devices(s.energy_devices.clone());
        let saved = std::mem::replace(&mut s.window, fresh);
        s.label = label.to_string();
        s.sample();
        let r = s.window.resources(s.power_error().as_deref());
        s.window = saved;
        r
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        // Hands the last samples to the journal, which its owner then finishes.
        drop(self.lock().out.take());
    }
}
