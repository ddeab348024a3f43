//! GPU telemetry through NVML, best effort: where NVML cannot be loaded (no driver, no GPU)
//! the run records why and goes on.

use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

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
    /// `RUNNER_FAKE_GPU`: a file standing in for one GPU, for tests of GPU behaviour on
    /// machines without one. Line 1: used bytes; optional line 2: the PID holding it.
    fake: Option<std::path::PathBuf>,
}

/// The environment variable that replaces NVML with a file (tests only).
pub const FAKE_GPU_ENV: &str = "RUNNER_FAKE_GPU";

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
            let inventory = GpuInventory {
                available: true,
                unavailable_reason: None,
                driver_version: Some(format!("fake ({FAKE_GPU_ENV})")),
                devices: vec![GpuDevice {
                    index: 0,
                    name: format!("fake GPU ({FAKE_GPU_ENV})"),
                    uuid: String::new(),
                    memory_total_bytes: 80 << 30,
                }],
            };
            let gpu = Gpu {
                nvml: None,
                count: 1,
                fake: Some(path.into()),
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
                fake: None,
            }),
            inventory,
        )
    }

    /// Every process NVML sees on any GPU, with the memory it holds.
    pub fn processes(&self) -> Vec<GpuProcess> {
        let mut out = Vec::new();
        if let Some(f) = &self.fake {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let mut lines = text.lines();
            let used = lines.next().and_then(|l| l.trim().parse().ok());
            if let Some(pid) = lines.next().and_then(|l| l.trim().parse().ok()) {
                out.push(GpuProcess {
                    gpu: 0,
                    pid,
                    used_bytes: used,
                });
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
        if let Some(f) = &self.fake {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            return text
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
                .map(|used| GpuReading {
                    index: 0,
                    memory_used_bytes: used,
                    memory_reserved_bytes: 0,
                    utilization_pct: 0,
                })
                .into_iter()
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
}
