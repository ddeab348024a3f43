//! Running a plan on a cluster: Slurm job scripts and their tools' output, Kubernetes Jobs,
//! and the plan-relative forms of paths that let a bundle travel between machines.

pub mod k8s;
pub mod quote;
pub mod slurm;
pub mod status;
pub mod submit;
pub mod travel;
