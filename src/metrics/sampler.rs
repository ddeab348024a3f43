//! A background thread that samples GPU memory, utilization and power (when NVML is there) and
//! the resident memory of each running engine's process group, writes every sample to the
//! bundle, and folds them into per-window (per-cell) statistics. Each engine has a lane: its
//! figures cover its own devices (`[run] parallel` runs several engines side by side).

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

/// One engine's view: its process group, its devices, the label of its samples and its
/// window. Engines running side by side (`[run] parallel`) each have one.
#[derive(Default)]
struct Lane {
    pgid: Option<i32>,
    /// The GPUs (NVML indexes) its figures cover; empty: all of them.
    devices: Vec<u32>,
    label: String,
    window: Window,
}

/// One tick's readings, shared by every lane.
struct Tick {
    t_s: f64,
    gpu: Vec<GpuReading>,
    power: Option<Vec<PowerReading>>,
    /// NVML's per-process list, read only when some lane has a process group.
    processes: Vec<super::gpu::GpuProcess>,
}

/// What one lane journals for one tick.
struct Line {
    gpus: Vec<GpuReading>,
    power: Vec<PowerReading>,
    rss: Option<u64>,
    engine_gpu: Option<u64>,
}

impl Lane {
    fn covers(&self, index: u32) -> bool {
        self.devices.is_empty() || self.devices.contains(&index)
    }

    /// A fresh window, its power attributed over the lane's devices.
    fn fresh_window(&self) -> Window {
        Window::for_devices((!self.devices.is_empty()).then(|| self.devices.clone()))
    }

    /// Folds one tick into the window; returns the line to journal.
    fn add(&mut self, tick: &Tick) -> Line {
        let gpus: Vec<GpuReading> = tick
            .gpu
            .iter()
            .filter(|g| self.covers(g.index))
            .copied()
            .collect();
        let rss = self.pgid.map(procfs::group_rss_bytes).filter(|&r| r > 0);
        let engine_gpu = match self.pgid {
            Some(pgid) if !tick.gpu.is_empty() => {
                let members: std::collections::HashSet<u32> = procfs::group_members(pgid)
                    .iter()
                    .filter_map(|p| u32::try_from(p.pid).ok())
                    .collect();
                Some(
                    tick.processes
                        .iter()
                        .filter(|p| self.covers(p.gpu) && members.contains(&p.pid))
                        .filter_map(|p| p.used_bytes)
                        .sum(),
                )
            }
            _ => None,
        };
        self.window.add(&gpus, rss, engine_gpu);
        if let Some(p) = &tick.power {
            self.window.energy.add(tick.t_s, p);
        }
        let power = tick
            .power
            .iter()
            .flatten()
            .filter(|p| self.covers(p.index))
            .copied()
            .collect();
        Line {
            gpus,
            power,
            rss,
            engine_gpu,
        }
    }
}

struct State {
    gpu: Option<Gpu>,
    /// By engine index.
    lanes: std::collections::BTreeMap<usize, Lane>,
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

    fn tick(&self) -> Tick {
        let at = std::time::Instant::now();
        let gpu = self.gpu.as_ref().map(Gpu::read).unwrap_or_default();
        let power = self.gpu.as_ref().map(|g| g.power_at(at));
        let processes = match &self.gpu {
            Some(g) if self.lanes.values().any(|l| l.pgid.is_some()) => g.processes(),
            _ => Vec::new(),
        };
        Tick {
            t_s: at.duration_since(self.started).as_secs_f64(),
            gpu,
            power,
            processes,
        }
    }

    fn write(&mut self, t_s: f64, label: &str, line: &Line) {
        if let Some(out) = &mut self.out {
            let line = SampleLine {
                t_s,
                label,
                rss_bytes: line.rss,
                engine_gpu_bytes: line.engine_gpu,
                gpus: &line.gpus,
                power: &line.power,
            };
            if serde_json::to_writer(&mut *out, &line).is_ok() {
                let _ = out.write_all(b"\n");
            }
        }
    }

    /// One sample of lane `key` (a lane not open is opened).
    fn sample_lane(&mut self, key: usize) {
        let tick = self.tick();
        self.sample_with(key, &tick);
    }

    fn sample_with(&mut self, key: usize, tick: &Tick) {
        let lane = self.lanes.entry(key).or_default();
        let line = lane.add(tick);
        let label = lane.label.clone();
        self.write(tick.t_s, &label, &line);
    }

    /// The sampler thread's tick: every lane, or the GPUs alone while no engine is up.
    fn sample_all(&mut self) {
        let tick = self.tick();
        if self.lanes.is_empty() {
            if !tick.gpu.is_empty() {
                let line = Line {
                    gpus: tick.gpu.clone(),
                    power: tick.power.clone().unwrap_or_default(),
                    rss: None,
                    engine_gpu: None,
                };
                self.write(tick.t_s, "", &line);
            }
            return;
        }
        let keys: Vec<usize> = self.lanes.keys().copied().collect();
        for key in keys {
            self.sample_with(key, &tick);
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
            lanes: std::collections::BTreeMap::new(),
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
                        if g.gpu.is_some() || g.lanes.values().any(|l| l.pgid.is_some()) {
                            g.sample_all();
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

    /// Opens the lane of engine `lane`, covering `devices` (empty: every GPU).
    pub fn open_lane(&self, lane: usize, devices: &[u32]) {
        let mut l = Lane {
            devices: devices.to_vec(),
            ..Lane::default()
        };
        l.window = l.fresh_window();
        self.lock().lanes.insert(lane, l);
    }

    /// The engine of `lane` is gone: its samples stop.
    pub fn close_lane(&self, lane: usize) {
        self.lock().lanes.remove(&lane);
    }

    /// Sets whose process group lane `lane` samples and the label written with its samples.
    pub fn set_target(&self, lane: usize, pgid: Option<i32>, label: &str) {
        let mut s = self.lock();
        let l = s.lanes.entry(lane).or_default();
        l.pgid = pgid;
        l.label = label.to_string();
    }

    /// Starts a new window of `lane` with one sample taken now.
    pub fn begin_window(&self, lane: usize, label: &str) {
        let mut s = self.lock();
        let l = s.lanes.entry(lane).or_default();
        l.label = label.to_string();
        l.window = l.fresh_window();
        s.sample_lane(lane);
    }

    /// Ends the window of `lane` with one sample taken now, and returns its statistics.
    pub fn end_window(&self, lane: usize) -> Resources {
        let mut s = self.lock();
        s.sample_lane(lane);
        let err = s.power_error();
        let r = s
            .lanes
            .get(&lane)
            .map(|l| l.window.resources(err.as_deref()))
            .unwrap_or_default();
        if let Some(out) = &mut s.out {
            // Samples are best-effort: a journal that stopped says so when it is finished.
            out.flush().ok();
        }
        r
    }

    /// GPU memory used now, summed over `devices` (empty: every GPU); `None` without NVML.
    pub fn gpu_used_now(&self, devices: &[u32]) -> Option<u64> {
        let s = self.lock();
        let r = s.gpu.as_ref()?.read();
        (!r.is_empty()).then(|| {
            r.iter()
                .filter(|g| devices.is_empty() || devices.contains(&g.index))
                .map(|g| g.memory_used_bytes)
                .sum()
        })
    }

    /// The processes holding GPU memory on `devices` now (empty: every GPU; nothing without
    /// NVML).
    pub fn gpu_processes(&self, devices: &[u32]) -> Vec<super::gpu::GpuProcess> {
        self.lock()
            .gpu
            .as_ref()
            .map(Gpu::processes)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| devices.is_empty() || devices.contains(&p.gpu))
            .collect()
    }

    /// One reading of `lane` now, outside any window.
    pub fn snapshot(&self, lane: usize, label: &str) -> Resources {
        let mut s = self.lock();
        let l = s.lanes.entry(lane).or_default();
        let fresh = l.fresh_window();
        let saved = std::mem::replace(&mut l.window, fresh);
        l.label = label.to_string();
        s.sample_lane(lane);
        let err = s.power_error();
        let l = s.lanes.entry(lane).or_default();
        let r = l.window.resources(err.as_deref());
        l.window = saved;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lane_counts_the_gpus_of_its_own_device_set() {
        let d = tempfile::tempdir().expect("a temp dir");
        std::fs::write(d.path().join("0"), "1000\n").expect("a fake gpu");
        std::fs::write(d.path().join("1"), "2000\n").expect("a fake gpu");
        let gpu = super::super::gpu::fake_for_tests(d.path());
        let s = Sampler::start(Some(gpu), Duration::from_secs(3600), None);
        s.open_lane(0, &[0]);
        s.open_lane(1, &[1]);
        s.open_lane(2, &[]);
        for lane in 0..3 {
            s.begin_window(lane, "cell");
        }
        let peak = |lane| s.end_window(lane).gpu_mem_used_peak_bytes;
        assert_eq!(peak(0), Some(1000));
        assert_eq!(peak(1), Some(2000));
        assert_eq!(peak(2), Some(3000), "no device set: every GPU");
        assert_eq!(s.gpu_used_now(&[1]), Some(2000));
        assert_eq!(s.gpu_used_now(&[]), Some(3000));
        s.close_lane(1);
        assert_eq!(peak(0), Some(1000), "closing a lane leaves the others");
    }
}
