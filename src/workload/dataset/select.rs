//! Which records of a dataset are used, and in what order: `sample`, `seed`, `shuffle`, the same
//! selection every time (the workload's own PRNG, rng.rs).

use std::path::Path;

use crate::workload::error::{Result, WorkloadError};
use crate::workload::rng::Rng;

/// `sample`, `seed` and `shuffle` of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// How many records to use; `None`: all that pass the filters.
    pub sample: Option<usize>,
    /// Send them in a seeded random order rather than file order.
    pub shuffle: bool,
    pub seed: u64,
}

impl Selection {
    pub const ALL: Selection = Selection {
        sample: None,
        shuffle: false,
        seed: 0,
    };
}

const KEY_SELECT: u64 = 11;

/// Indices into `0..available` (records that passed the filters). `sample` picks a seeded subset
/// (a partial Fisher-Yates), kept in file order unless `shuffle`; `shuffle` alone permutes all.
pub fn select(sel: &Selection, available: usize, path: &Path) -> Result<Vec<usize>> {
    let n = match sel.sample {
        Some(n) if n > available => {
            return Err(WorkloadError::SampleTooLarge {
                path: path.to_path_buf(),
                requested: n,
                available,
            })
        }
        Some(n) => n,
        None => available,
    };
    let mut idx: Vec<usize> = (0..available).collect();
    if n == available && !sel.shuffle {
        return Ok(idx);
    }
    let mut rng = Rng::derive(sel.seed, &[KEY_SELECT]);
    for i in 0..n {
        let j = i + rng.below((available - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(n);
    if !sel.shuffle {
        idx.sort_unstable();
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_selection_every_time_and_in_file_order_unless_shuffled() {
        let p = Path::new("data.json");
        let sel = Selection {
            sample: Some(5),
            shuffle: false,
            seed: 1,
        };
        let a = select(&sel, 100, p).expect("select");
        assert_eq!(a, select(&sel, 100, p).expect("again"));
        assert_eq!(a.len(), 5);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
        // Pinned: a change to the algorithm changes what every plan sends.
        assert_eq!(a, PINNED);
        let shuffled = select(
            &Selection {
                shuffle: true,
                ..sel
            },
            100,
            p,
        )
        .expect("shuffled");
        let mut sorted = shuffled.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, a, "shuffle reorders the same sample");
        assert_ne!(
            select(&Selection { seed: 2, ..sel }, 100, p).expect("seed 2"),
            a
        );
        assert_eq!(
            select(&Selection::ALL, 4, p).expect("all"),
            vec![0, 1, 2, 3]
        );
        let e = select(
            &Selection {
                sample: Some(9),
                ..sel
            },
            4,
            p,
        )
        .expect_err("too many");
        assert!(e.to_string().contains("data.json"), "{e}");
        assert!(e.to_string().contains("sample = 9"), "{e}");
    }

    const PINNED: [usize; 5] = [9, 10, 48, 82, 95];
}
