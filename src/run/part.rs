//! A run of some of a plan's engines (`runner exec --engine`), and what a part of a split run
//! records about where it ran (`--part`).

use crate::bundle::format::PartInfo;
use crate::plan::model::Plan;

/// Engine names that are not in the plan.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the plan has no engine {}; its engines are: {}", .unknown.join(", "), .known.join(", "))]
pub struct UnknownEngines {
    pub unknown: Vec<String>,
    pub known: Vec<String>,
}

/// The plan with only the engines named (in the plan's order) and their cells; every name
/// must be one of the plan's engines. The plan's hash is kept: a part is still of this plan.
pub fn subset(plan: &Plan, names: &[String]) -> Result<Plan, UnknownEngines> {
    let known: Vec<String> = plan.engines.iter().map(|e| e.name.clone()).collect();
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !known.contains(n))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(UnknownEngines { unknown, known });
    }
    let kept: Vec<usize> = (0..plan.engines.len())
        .filter(|&i| names.contains(&plan.engines[i].name))
        .collect();
    let mut out = plan.clone();
    out.engines = kept.iter().map(|&i| plan.engines[i].clone()).collect();
    out.cells = plan
        .cells
        .iter()
        .filter_map(|c| {
            let at = kept.iter().position(|&i| i == c.engine)?;
            let mut c = c.clone();
            c.engine = at;
            Some(c)
        })
        .collect();
    Ok(out)
}

/// This process's host and, under Slurm, its array job, task and node.
pub fn part_info(engines: &[String]) -> PartInfo {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    PartInfo {
        engines: engines.to_vec(),
        host: super::host::host_info().hostname,
        slurm_array_job_id: var("SLURM_ARRAY_JOB_ID"),
        slurm_array_task_id: var("SLURM_ARRAY_TASK_ID"),
        slurmd_nodename: var("SLURMD_NODENAME"),
    }
}
