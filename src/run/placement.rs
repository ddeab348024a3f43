//! Which GPUs each engine runs on: the pool (`[gpu] devices`, or every GPU NVML sees), each
//! engine's share of it (`gpus`, default all), and the free list that `[run] parallel` places
//! engines from, in plan order, first fit.

use crate::metrics::gpu::GpuInventory;
use crate::plan::model::{EngineSpec, EngineTarget, Plan};

/// Where the pool of devices came from, for the manifest and the error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSource {
    /// `[gpu] devices`.
    Plan,
    /// The runner's own `CUDA_VISIBLE_DEVICES`: engines share what the runner was given.
    RunnerEnv,
    /// Every GPU NVML sees (none without NVML).
    Nvml,
}

/// The devices engines are placed on, in the order they are handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub devices: Vec<u32>,
    pub source: PoolSource,
}

impl Pool {
    /// `[gpu] devices` when the plan lists them; else, when the runner itself was started with
    /// a `CUDA_VISIBLE_DEVICES`, the indexes it lists (none for an empty one, or for UUIDs the
    /// runner cannot map: engines then inherit it unchanged, as before placement); else every GPU
    /// in the inventory.
    pub fn of(plan: &Plan, inventory: &GpuInventory, runner_cvd: Option<&str>) -> Pool {
        if let Some(d) = &plan.gpu.devices {
            return Pool {
                devices: d.clone(),
                source: PoolSource::Plan,
            };
        }
        if let Some(text) = runner_cvd {
            return Pool {
                devices: parse_list(text).unwrap_or_default(),
                source: PoolSource::RunnerEnv,
            };
        }
        Pool {
            devices: inventory.devices.iter().map(|d| d.index).collect(),
            source: PoolSource::Nvml,
        }
    }

    /// How many devices engine `e` takes: none when attached (the runner does not start it),
    /// `gpus` when set, else the whole pool.
    pub fn demand(&self, e: &EngineSpec) -> usize {
        match (&e.target, e.gpus) {
            (EngineTarget::Attach { .. }, _) => 0,
            (_, Some(n)) => n as usize,
            (_, None) => self.devices.len(),
        }
    }

    /// Every engine fits the pool; otherwise what to tell the user, before anything starts.
    pub fn check(&self, plan: &Plan) -> Result<(), String> {
        for e in &plan.engines {
            let n = self.demand(e);
            if n > self.devices.len() {
                let from = match self.source {
                    PoolSource::Plan => "`[gpu] devices` lists".to_string(),
                    PoolSource::RunnerEnv => {
                        "the runner's own CUDA_VISIBLE_DEVICES lists".to_string()
                    }
                    PoolSource::Nvml => "NVML sees".to_string(),
                };
                return Err(format!(
                    "engine `{}` asks for {n} GPU{}, but {from} {}{}; lower `gpus`, or list the devices in `[gpu] devices`",
                    e.name,
                    if n == 1 { "" } else { "s" },
                    self.devices.len(),
                    if self.devices.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", join(&self.devices))
                    }
                ));
            }
        }
        Ok(())
    }
}

/// The devices not in use, in pool order.
#[derive(Debug, Clone)]
pub struct Free {
    pool: Vec<u32>,
    free: Vec<bool>,
}

impl Free {
    pub fn new(pool: &Pool) -> Free {
        Free {
            pool: pool.devices.clone(),
            free: vec![true; pool.devices.len()],
        }
    }

    /// The first `n` free devices (first fit, in pool order), taken; `None` when fewer are
    /// free. Zero devices always fit.
    pub fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        let picked: Vec<usize> = (0..self.pool.len())
            .filter(|&i| self.free[i])
            .take(n)
            .collect();
        if picked.len() < n {
            return None;
        }
        for &i in &picked {
            self.free[i] = false;
        }
        Some(picked.iter().map(|&i| self.pool[i]).collect())
    }

    /// Devices an engine is done with.
    pub fn give_back(&mut self, set: &[u32]) {
        for (i, d) in self.pool.iter().enumerate() {
            if set.contains(d) {
                self.free[i] = true;
            }
        }
    }
}

/// `0,1,3` as `CUDA_VISIBLE_DEVICES` and `{gpus}` write it.
pub fn join(devices: &[u32]) -> String {
    crate::engine::spawn::device_list(devices)
}

/// A `CUDA_VISIBLE_DEVICES` of indexes (`"0,2"`); `None` for UUIDs, MIG names or an empty one.
pub fn parse_list(text: &str) -> Option<Vec<u32>> {
    let list: Option<Vec<u32>> = text
        .split(',')
        .map(|s| s.trim().parse::<u32>().ok())
        .collect();
    list.filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(devices: &[u32]) -> Pool {
        Pool {
            devices: devices.to_vec(),
            source: PoolSource::Plan,
        }
    }

    #[test]
    fn first_fit_in_pool_order_and_given_back() {
        let mut f = Free::new(&pool(&[3, 1, 2, 0]));
        assert_eq!(f.take(1), Some(vec![3]));
        assert_eq!(f.take(2), Some(vec![1, 2]));
        assert_eq!(f.take(2), None, "one device is left");
        assert_eq!(f.take(0), Some(vec![]));
        f.give_back(&[1, 2]);
        assert_eq!(f.take(3), Some(vec![1, 2, 0]));
        assert_eq!(f.take(1), None);
    }

    #[test]
    fn the_pool_is_the_plans_list_else_the_runners_own_devices_else_nvmls() {
        let toml = "schema = 1\nname = \"p\"\n[[engine]]\nname = \"e\"\nurl = \"http://127.0.0.1:9\"\nmodel = \"m\"\n[[workload]]\nname = \"w\"\nprompts = [\"hi\"]\n[workload.load]\nconcurrency = [1]\n";
        let ctx = crate::plan::resolve::ResolveContext {
            runner_exe: "runner".into(),
        };
        let (mut plan, _) =
            crate::plan::resolve::from_bytes(std::path::Path::new("p.toml"), toml.as_bytes(), &ctx)
                .map_err(|d| d.to_string())
                .expect("a valid plan");
        let inventory = GpuInventory {
            available: true,
            devices: (0..4)
                .map(|index| crate::metrics::gpu::GpuDevice {
                    index,
                    name: String::new(),
                    uuid: String::new(),
                    memory_total_bytes: 0,
                })
                .collect(),
            ..GpuInventory::default()
        };
        assert_eq!(Pool::of(&plan, &inventory, None).devices, [0, 1, 2, 3]);
        assert_eq!(Pool::of(&plan, &inventory, Some("2,3")).devices, [2, 3]);
        // Hidden, or named by UUID: no placement, the engines inherit it.
        assert!(Pool::of(&plan, &inventory, Some("")).devices.is_empty());
        assert!(Pool::of(&plan, &inventory, Some("GPU-8a1b"))
            .devices
            .is_empty());
        plan.gpu.devices = Some(vec![1]);
        assert_eq!(Pool::of(&plan, &inventory, Some("2,3")).devices, [1]);
    }

    #[test]
    fn a_list_of_indexes_only() {
        assert_eq!(parse_list("0, 2,3"), Some(vec![0, 2, 3]));
        assert_eq!(parse_list("GPU-8a1b"), None);
        assert_eq!(parse_list(""), None);
        assert_eq!(join(&[2, 3]), "2,3");
    }
}
