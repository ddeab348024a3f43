//! `runner status` on a submitted bundle: each engine's Slurm job state, from the rows
//! `squeue` (queued and running) and `sacct` (finished, when accounting is on) gave for its
//! array task. Pure: the caller runs the tools and reads the parts.

use super::slurm::{JobId, JobRow, JobState, Tasks};

/// Where one engine's job stands, as far as Slurm says.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineJob {
    /// In the queue (pending, running, completing...), with its node once it has one.
    Queued {
        state: JobState,
        node: Option<String>,
    },
    /// Ended, as sacct recorded it.
    Ended {
        state: JobState,
        node: Option<String>,
        exit_code: Option<String>,
    },
    /// Neither tool knows it (left the queue, and no accounting): its part on disk says how
    /// it ended.
    Unknown,
}

/// Whether `row` is about array task `index` of job `array` (a folded pending row such as
/// `0-3` or `1,3` counts for each task it names).
fn covers(row: &JobRow, array: &JobId, index: u32) -> bool {
    if row.job.id != array.id {
        return false;
    }
    match &row.job.tasks {
        Tasks::One(t) => *t == index,
        Tasks::Pending(spec) => {
            spec.split('%')
                .next()
                .unwrap_or("")
                .split(',')
                .any(|part| match part.split_once('-') {
                    Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                        (Ok(a), Ok(b)) => (a..=b).contains(&index),
                        _ => false,
                    },
                    None => part.parse::<u32>() == Ok(index),
                })
        }
        Tasks::None => false,
    }
}

/// Each engine (array task `i` is engine `i`) with its job's state. squeue wins over sacct:
/// a job in the queue is not finished, whatever an older accounting row says.
pub fn engine_jobs(
    engines: &[String],
    array: &JobId,
    squeue: &[JobRow],
    sacct: &[JobRow],
) -> Vec<(String, EngineJob)> {
    engines
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let i = i as u32;
            let job = if let Some(r) = squeue.iter().find(|r| covers(r, array, i)) {
                EngineJob::Queued {
                    state: r.state.clone(),
                    node: r.nodes.clone(),
                }
            } else if let Some(r) = sacct.iter().find(|r| covers(r, array, i)) {
                EngineJob::Ended {
                    state: r.state.clone(),
                    node: r.nodes.clone(),
                    exit_code: r.exit_code.clone(),
                }
            } else {
                EngineJob::Unknown
            };
            (name.clone(), job)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::slurm::{parse_sacct, parse_squeue};
    use super::*;

    fn engines() -> Vec<String> {
        ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_engine_gets_its_array_tasks_row() {
        let array = JobId {
            id: 5,
            cluster: None,
        };
        let q = parse_squeue("5_1|RUNNING|vm\n5_[2-3]|PENDING|\n9_0|RUNNING|vm\n").expect("parse");
        let a =
            parse_sacct("5_0|COMPLETED|0:0|vm\n5_0.batch|COMPLETED|0:0|vm\n5_1|FAILED|1:0|vm\n")
                .expect("parse");
        let jobs = engine_jobs(&engines(), &array, &q, &a);
        assert_eq!(
            jobs[0].1,
            EngineJob::Ended {
                state: JobState::Completed,
                node: Some("vm".into()),
                exit_code: Some("0:0".into())
            }
        );
        // In the queue beats an accounting row.
        assert_eq!(
            jobs[1].1,
            EngineJob::Queued {
                state: JobState::Running,
                node: Some("vm".into())
            }
        );
        assert!(matches!(
            jobs[2].1,
            EngineJob::Queued {
                state: JobState::Pending,
                ..
            }
        ));
        assert!(matches!(
            jobs[3].1,
            EngineJob::Queued {
                state: JobState::Pending,
                ..
            }
        ));
    }

    #[test]
    fn no_row_is_unknown_and_other_jobs_do_not_count() {
        let array = JobId {
            id: 5,
            cluster: None,
        };
        let q = parse_squeue("6_0|RUNNING|vm\n5|RUNNING|vm\n").expect("parse");
        let jobs = engine_jobs(&engines()[..1], &array, &q, &[]);
        assert_eq!(jobs, vec![("a".to_string(), EngineJob::Unknown)]);
    }

    #[test]
    fn folded_pending_rows_name_lists_and_throttles() {
        let array = JobId {
            id: 7,
            cluster: None,
        };
        let q = parse_squeue("7_[0,3%2]|PENDING|\n").expect("parse");
        let jobs = engine_jobs(&engines(), &array, &q, &[]);
        let queued: Vec<bool> = jobs
            .iter()
            .map(|(_, j)| matches!(j, EngineJob::Queued { .. }))
            .collect();
        assert_eq!(queued, vec![true, false, false, true]);
    }
}
