//! Resolving `[client]`: the CPUs the runner's own threads are pinned to, and its priority.

use crate::affinity::{ClientSpec, Priority};
use crate::plan::raw::RawClient;

use super::Resolver;

impl Resolver<'_> {
    pub(super) fn client(&mut self, raw: Option<&RawClient>) -> ClientSpec {
        let Some(raw) = raw else {
            return ClientSpec::default();
        };
        let mut spec = ClientSpec::default();
        if let Some(cpus) = &raw.cpus {
            if cpus.get_ref().is_empty() {
                self.error_at(
                    cpus.span(),
                    "`cpus` is empty",
                    Some("name the CPUs the runner may use, e.g. cpus = [3], or leave the key out to run unpinned".into()),
                );
            }
            for c in cpus.get_ref() {
                match usize::try_from(*c.get_ref()) {
                    Ok(n) if n < 1024 => {
                        if !spec.cpus.contains(&n) {
                            spec.cpus.push(n);
                        }
                    }
                    _ => self.error_at(
                        c.span(),
                        format!("`{}` is not a CPU number", c.get_ref()),
                        Some(
                            "CPUs are numbered from 0, as `taskset` and /proc/cpuinfo number them"
                                .into(),
                        ),
                    ),
                }
            }
        }
        if let Some(p) = &raw.priority {
            spec.priority = match p.get_ref().as_str() {
                "normal" => Priority::Normal,
                "realtime" => Priority::Realtime,
                other => {
                    self.error_at(
                        p.span(),
                        format!("`{other}` is not a client priority"),
                        Some("use \"normal\" (the default) or \"realtime\" (SCHED_FIFO, best effort)".into()),
                    );
                    Priority::Normal
                }
            };
        }
        spec
    }
}
