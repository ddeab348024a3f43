//! GPU telemetry through NVML, best effort: where NVML cannot be loaded (no driver, no GPU)
//! the run records why and goes on.

use std::sync::Mutex;
use std::time::Instant;

use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

use super::energy::PowerReading;

/// What the bundle records about the machine's GPUs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInventory {
    pub available: bool,
    /// Why GPU figures are missing, when they are.
    pub unavailable_reason: Option<String>,
    pub driver_version: Option<String>,
    pub devices: Vec<GpuDevice>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
}

/// One reading of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    pub index: u32,
    /// NVML's "used" memory (it excludes what the driver reserves).
    pub memory_used_bytes: u64,
    /// What the driver reserves for itself (NVML memory info v2), kept apart from "used".
    #[serde(default)]
    pub memory_reserved_bytes: u64,
    pub utilization_pct: u32,
}

/// A process holding GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub gpu: u32,
    pub pid: u32,
    pub used_bytes: Option<u64>,
}

/// An open NVML handle.
pub struct Gpu {
    nvml: Option<Nvml>,
    count: u32,
    /// `RUNNER_FAKE_GPU`: files standing in for GPUs, for tests of GPU behaviour on machines
    /// without one (empty with NVML). Each file: line 1 used bytes; optional line 2 the PID
    /// holding them.
    fake: Vec<(u32, std::path::PathBuf)>,
    /// What power reads remember between samples.
    power: Mutex<PowerState>,
}

/// The fake GPU's script position and energy counter, and the first error NVML gave for a
/// power reading (the reason figures are missing).
#[derive(Debug, Default)]
struct PowerState {
    reads: usize,
    fake_counter_mj: f64,
    fake_last: Option<Instant>,
    error: Option<String>,
}

/// The fake GPU's power lines: `power_w=300` (a constant) or `power_w=100,250,300` (one value
/// per read, the last repeated); `energy_mj=counter` (a total-energy counter that accrues each
/// read's power since the previous read, so constant power P gives exactly P x elapsed, to the
/// millijoule) or `energy_mj=1000,2000` (the counter's values, one per read). Without a
/// `power_w` line the fake has no power reading; without `energy_mj`, no counter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FakePower {
    pub power_w: Vec<f64>,
    pub energy: FakeEnergy,
}

/// The fake GPU's energy counter.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FakeEnergy {
    #[default]
    None,
    /// Accrues the fake power over time.
    Counter,
    /// These values, one per read, the last repeated.
    Script(Vec<u64>),
}

impl FakePower {
    /// Reads the `power_w=` and `energy_mj=` lines of a fake GPU file (other lines are the
    /// memory and PID lines, read elsewhere); values that do not parse are left out.
    pub fn parse(text: &str) -> FakePower {
        let mut out = FakePower::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let list = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
            match key.trim() {
                "power_w" => out.power_w = list().filter_map(|v| v.parse().ok()).collect(),
                "energy_mj" if value.trim() == "counter" => out.energy = FakeEnergy::Counter,
                "energy_mj" => {
                    out.energy = FakeEnergy::Script(list().filter_map(|v| v.parse().ok()).collect())
                }
                _ => {}
            }
        }
        out
    }
}

fn nth<T: Copy>(script: &[T], i: usize) -> Option<T> {
    script.get(i.min(script.len().saturating_sub(1))).copied()
}

/// The environment variable that replaces NVML with files (tests only): a file stands for one
/// GPU (index 0); a directory holding files `0`, `1`, ... for as many GPUs, one file each.
pub const FAKE_GPU_ENV: &str = "RUNNER_FAKE_GPU";

/// The fake devices `RUNNER_FAKE_GPU` names: the file itself, or the directory's files `0`,
/// `1`, ... up to the first index missing.
fn fake_devices(path: &std::path::Path) -> Vec<(u32, std::path::PathBuf)> {
    if !path.is_dir() {
        return vec![(0, path.to_path_buf())];
    }
    (0u32..)
        .map(|i| (i, path.join(i.to_string())))
        .take_while(|(_, p)| p.is_file())
        .collect()
}

/// One fake device's file: its used bytes and the PID holding them.
fn fake_read(path: &std::path::Path) -> (Option<u64>, Option<u32>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let used = lines.next().and_then(|l| l.trim().parse().ok());
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    (used, pid)
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} devices)", self.count)
    }
}

impl Gpu {
    /// Opens NVML and lists the devices; `None` (with the reason in the inventory) when it
    /// cannot.
    pub fn open() -> (Option<Gpu>, GpuInventory) {
        if let Some(path) = std::env::var_os(FAKE_GPU_ENV) {
            let fake = fake_devices(std::path::Path::new(&path));
            let inventory = GpuInventory {
                available: !fake.is_empty(),
                unavailable_reason: fake
                    .is_empty()
                    .then(|| format!("{FAKE_GPU_ENV} names a directory without a file `0`")),
                driver_version: Some(format!("fake ({FAKE_GPU_ENV})")),
                devices: fake
                    .iter()
                    .map(|(index, _)| GpuDevice {
                        index: *index,
                        name: format!("fake GPU ({FAKE_GPU_ENV})"),
                        uuid: String::new(),
                        memory_total_bytes: 80 << 30,
                    })
                    .collect(),
            };
            let gpu = Gpu {
                nvml: None,
                count: fake.len() as u32,
                fake,
                power: Mutex::default(),
            };
            return (Some(gpu), inventory);
        }
        let unavailable = |reason: String| GpuInventory {
            unavailable_reason: Some(reason),
            ..GpuInventory::default()
        };
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                return (
                    None,
                    unavailable(format!(
                        "NVML could not be loaded ({e}); no NVIDIA driver on this machine?"
                    )),
                )
            }
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => return (None, unavailable(format!("NVML cannot count devices: {e}"))),
        };
        let mut devices = Vec::new();
        for index in 0..count {
            if let Ok(d) = nvml.device_by_index(index) {
                devices.push(GpuDevice {
                    index,
                    name: d.name().unwrap_or_default(),
                    uuid: d.uuid().unwrap_or_default(),
                    memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
                });
            }
        }
        let inventory = GpuInventory {
            available: count > 0,
            unavailable_reason: (count == 0).then(|| "NVML reports no GPU".to_string()),
            driver_version: nvml.sys_driver_version().ok(),
            devices,
        };
        (
            Some(Gpu {
                nvml: Some(nvml),
                count,
                fake: Vec::new(),
                power: Mutex::default(),
            }),
            inventory,
        )
    }

    /// Every process NVML sees on any GPU, with the memory it holds.
    pub fn processes(&self) -> Vec<GpuProcess> {
        let mut out = Vec::new();
        if !self.fake.is_empty() {
            for (index, f) in &self.fake {
                if let (used, Some(pid)) = fake_read(f) {
                    out.push(GpuProcess {
                        gpu: *index,
                        pid,
                        used_bytes: used,
                    });
                }
            }
            return out;
        }
        let Some(nvml) = &self.nvml else {
            return out;
        };
        for index in 0..self.count {
            let Ok(d) = nvml.device_by_index(index) else {
                continue;
            };
            for p in d.running_compute_processes().unwrap_or_default() {
                out.push(GpuProcess {
                    gpu: index,
                    pid: p.pid,
                    used_bytes: match p.used_gpu_memory {
                        nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                        nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                    },
                });
            }
        }
        out
    }

    /// Reads memory and utilization of every device; devices that fail to answer are left out.
    pub fn read(&self) -> Vec<GpuReading> {
        if !self.fake.is_empty() {
            return self
                .fake
                .iter()
                .filter_map(|(index, f)| {
                    fake_read(f).0.map(|used| GpuReading {
                        index: *index,
                        memory_used_bytes: used,
                        memory_reserved_bytes: 0,
                        utilization_pct: 0,
                    })
                })
                .collect();
        }
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        (0..self.count)
            .filter_map(|index| {
                let d = nvml.device_by_index(index).ok()?;
                let mem = d.memory_info().ok()?;
                let util = d.utilization_rates().map(|u| u.gpu).unwrap_or(0);
                Some(GpuReading {
                    index,
                    memory_used_bytes: mem.used,
                    memory_reserved_bytes: mem.reserved,
                    utilization_pct: util,
                })
            })
            .collect()
    }

    /// Reads every device's power draw and total-energy counter; `at` is the instant the
    /// sample is stamped with (the fake's counter accrues up to it). A device that gives no
    /// reading is listed without one; the first NVML error is kept for `power_error`.
    pub fn power_at(&self, at: Instant) -> Vec<PowerReading> {
        let mut st = self.power.lock().unwrap_or_else(|e| e.into_inner());
        // Fake GPUs: the first device's file gives the power of every device.
        if let Some((_, f)) = self.fake.first() {
            let fake = FakePower::parse(&std::fs::read_to_string(f).unwrap_or_default());
            let watts = nth(&fake.power_w, st.reads);
            if watts.is_none() && st.error.is_none() {
                st.error = Some(format!("the fake GPU ({FAKE_GPU_ENV}) has no power_w line"));
            }
            let since = st
                .fake_last
                .map_or(0.0, |l| at.duration_since(l).as_secs_f64());
            st.fake_counter_mj += watts.unwrap_or(0.0) * 1000.0 * since;
            st.fake_last = Some(at);
            let energy_mj = match &fake.energy {
                FakeEnergy::None => None,
                FakeEnergy::Counter => Some(st.fake_counter_mj.round() as u64),
                FakeEnergy::Script(v) => nth(v, st.reads),
            };
            st.reads += 1;
            return (0..self.count)
                .map(|index| PowerReading {
                    index,
                    power_mw: watts.map(|w| (w * 1000.0).round() as u32),
                    energy_mj,
                })
                .collect();
        }
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        (0..self.count)
            .map(|index| {
                let (power_mw, energy_mj) = match nvml.device_by_index(index) {
                    Ok(d) => {
                        let power = d.power_usage();
                        if let Err(e) = &power {
                            if st.error.is_none() {
                                st.error = Some(format!("NVML power usage of GPU {index}: {e}"));
                            }
                        }
                        // A missing counter is normal before Volta: the integral stands in.
                        (power.ok(), d.total_energy_consumption().ok())
                    }
                    Err(e) => {
                        if st.error.is_none() {
                            st.error = Some(format!("NVML cannot open GPU {index}: {e}"));
                        }
                        (None, None)
                    }
                };
                PowerReading {
                    index,
                    power_mw,
                    energy_mj,
                }
            })
            .collect()
    }

    /// Why power readings were missing, the first time one was.
    pub fn power_error(&self) -> Option<String> {
        self.power
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_gpu_reads_power_and_energy_lines_anywhere() {
        let f = FakePower::parse("3221225472\n1234\npower_w=300\nenergy_mj=counter\n");
        assert_eq!(f.power_w, vec![300.0]);
        assert_eq!(f.energy, FakeEnergy::Counter);
        let f = FakePower::parse("0\npower_w = 100, 250\nenergy_mj=5,9\n");
        assert_eq!(f.power_w, vec![100.0, 250.0]);
        assert_eq!(f.energy, FakeEnergy::Script(vec![5, 9]));
        assert_eq!(FakePower::parse("0\n"), FakePower::default());
        assert_eq!(nth(&[1, 2], 0), Some(1));
        assert_eq!(nth(&[1, 2], 5), Some(2));
        assert_eq!(nth::<u64>(&[], 0), None);
    }

    #[test]
    fn the_fake_counter_accrues_its_power_and_scripts_advance_per_read() {
        let dir = std::env::temp_dir().join(format!("runner-fake-gpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("gpu");
        std::fs::write(&path, "0\npower_w=300\nenergy_mj=counter\n").expect("write");
        let gpu = Gpu {
            nvml: None,
            count: 1,
            fake: vec![(0, path.clone())],
            power: Mutex::default(),
        };
        let t0 = Instant::now();
        let first = gpu.power_at(t0);
        let second = gpu.power_at(t0 + std::time::Duration::from_millis(1500));
        assert_eq!(first[0].power_mw, Some(300_000));
        assert_eq!(first[0].energy_mj, Some(0));
        assert_eq!(second[0].energy_mj, Some(450_000));
        std::fs::write(&path, "0\npower_w=100,200\nenergy_mj=7,8\n").expect("write");
        let third = gpu.power_at(t0 + std::time::Duration::from_millis(2000));
        // The third read takes the script's last values.
        assert_eq!(third[0].power_mw, Some(200_000));
        assert_eq!(third[0].energy_mj, Some(8));
        std::fs::write(&path, "0\n").expect("write");
        assert_eq!(gpu.power_at(t0)[0].power_mw, None);
        assert!(gpu.power_error().is_some_and(|e| e.contains("power_w")));
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Fake GPUs from a directory of device files, for unit tests of what reads them.
#[cfg(test)]
pub(crate) fn fake_for_tests(dir: &std::path::Path) -> Gpu {
    let fake = fake_devices(dir);
    Gpu {
        nvml: None,
        count: fake.len() as u32,
        fake,
        power: Mutex::default(),
    }
}

#[cfg(test)]
mod fake_dir_tests {
    use super::*;

    #[test]
    fn a_fake_gpu_directory_holds_one_file_per_device() {
        let d = tempfile::tempdir().expect("a temp dir");
        for (i, used) in [(0, "1\n"), (1, "2\n7\n"), (2, "3\n")] {
            std::fs::write(d.path().join(i.to_string()), used).expect("a fake gpu");
        }
        // `4` without `3`: the devices end at the first index missing.
        std::fs::write(d.path().join("4"), "9\n").expect("a fake gpu");
        let fake = fake_devices(d.path());
        assert_eq!(fake.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2]);
        let gpu = Gpu {
            nvml: None,
            count: 3,
            fake,
            power: Mutex::default(),
        };
        let used: Vec<(u32, u64)> = gpu
            .read()
            .iter()
            .map(|r| (r.index, r.memory_used_bytes))
            .collect();
        assert_eq!(used, [(0, 1), (1, 2), (2, 3)]);
        assert_eq!(
            gpu.processes(),
            [GpuProcess {
                gpu: 1,
                pid: 7,
                used_bytes: Some(2)
            }]
        );
        // A plain file is one GPU, index 0.
        let one = fake_devices(&d.path().join("2"));
        assert_eq!(one, [(0, d.path().join("2"))]);
    }
}
