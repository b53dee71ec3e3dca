//! Shards: the I-th of N disjoint, deterministic parts of a run's points, so that one
//! measurement can run as N processes (a Slurm job array, a Kubernetes Indexed Job, N
//! processes on one machine) whose partial results ([`partial`]) merge into exactly what
//! one run over all points gives.
//!
//! Shard I of N (0-based) measures the positions `floor(I n / N) .. floor((I + 1) n / N)` of
//! the run's point list (and the same positions of its control points). Every shard computes
//! the whole list the same way (it depends on the seed and the data only), and a point's
//! views depend on (seed, point, view) only, so a point gives the same numbers whichever
//! shard measures it.

mod merge;
pub mod partial;
pub mod validate;

pub use merge::merge;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The variable that gives the shard count to `--shard auto` under a Kubernetes Indexed Job
/// (which sets `JOB_COMPLETION_INDEX` but no count), when `--shard-count` is not given.
pub const COUNT_VAR: &str = "MEMPRUNE_SHARD_COUNT";

/// Shard `index` of `count` (0 <= index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// All points: what a run without `--shard` measures.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            bail!("--shard {index}/{count}: the count must be at least 1");
        }
        if count > validate::MAX_SHARDS {
            bail!(
                "--shard {index}/{count}: at most {} shards (and at most one per point)",
                validate::MAX_SHARDS
            );
        }
        if index >= count {
            bail!("--shard {index}/{count}: the index must be below the count (shards are numbered 0 to {})", count - 1);
        }
        Ok(Shard { index, count })
    }

    /// `--shard I/N`, or `auto`: the scheduler's variables, read through `var` (see
    /// [`Shard::from_scheduler`]); `count` is `--shard-count`.
    pub fn parse(
        spec: &str,
        count: Option<usize>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        if spec == "auto" {
            return Shard::from_scheduler(count, var);
        }
        if count.is_some() {
            bail!("--shard-count is for `--shard auto` only (--shard {spec} gives the count)");
        }
        let (i, n) = spec
            .split_once('/')
            .with_context(|| format!("--shard {spec}: expected I/N (0 <= I < N) or auto"))?;
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("--shard {spec}: `{s}` is not a non-negative integer"))
        };
        Shard::new(num(i)?, num(n)?)
    }

    /// The shard a scheduler assigned: a Slurm job array (`SLURM_ARRAY_TASK_ID` minus
    /// `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`; the array must be contiguous with
    /// step 1, e.g. `--array=0-7` or `1-8`), else a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX`, of `count` or else [`COUNT_VAR`]).
    pub fn from_scheduler(
        count: Option<usize>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).with_context(|| {
                    format!("--shard auto: {name}={v} is not a non-negative integer")
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let n = match count {
                Some(n) => n,
                None => num("SLURM_ARRAY_TASK_COUNT")?.context(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not",
                )?,
            };
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            if let Some(step) = num("SLURM_ARRAY_TASK_STEP")? {
                if step != 1 {
                    bail!("--shard auto: the Slurm array has step {step}; use a contiguous array (--array=0-{})", n.saturating_sub(1));
                }
            }
            if let Some(max) = num("SLURM_ARRAY_TASK_MAX")? {
                if max < min || max - min + 1 != n {
                    bail!("--shard auto: the Slurm array {min}-{max} has {n} tasks; use a contiguous array (--array=0-{})", n.saturating_sub(1));
                }
            }
            if id < min {
                bail!("--shard auto: SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}");
            }
            return Shard::new(id - min, n).context("--shard auto (Slurm array)");
        }
        if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let n = match count {
                Some(n) => n,
                None => num(COUNT_VAR)?.with_context(|| {
                    format!("--shard auto: JOB_COMPLETION_INDEX is set but not the shard count: give --shard-count N or set {COUNT_VAR} (the Job's `completions`)")
                })?,
            };
            return Shard::new(i, n).context("--shard auto (Kubernetes Indexed Job)");
        }
        bail!("--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set")
    }

    /// The positions of this shard in a list of `n`.
    pub fn range(&self, n: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * n as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// This shard's part of a run's `points`, refused where the count exceeds the points
    /// (a shard of no point measures nothing and its partial could not be merged).
    pub fn part(&self, points: &[usize]) -> Result<Vec<usize>> {
        validate::check_count(*self, points.len()).map_err(|_| {
            anyhow::anyhow!(
                "--shard {self}: {} shards of {} points; use at most {} (one point or more per shard)",
                self.count,
                points.len(),
                points.len().clamp(1, validate::MAX_SHARDS)
            )
        })?;
        Ok(self.take(points))
    }

    /// This shard's part of `items`.
    pub fn take<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items[self.range(items.len())].to_vec()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn shards_partition_the_list_in_order() {
        for n in [0, 1, 5, 7, 1000] {
            for count in [1, 2, 3, 4, 8] {
                let all: Vec<usize> = (0..count)
                    .flat_map(|i| Shard::new(i, count).unwrap().range(n))
                    .collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} count {count}");
            }
        }
    }

    #[test]
    fn explicit_specs_parse_and_bad_ones_are_refused() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("2/4", None, &none).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2", "0/1000000000"] {
            assert!(Shard::parse(bad, None, &none).is_err(), "{bad}");
        }
        assert!(Shard::parse("1/4", Some(4), &none).is_err());
        let e = Shard::parse("auto", None, &none).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
    }

    #[test]
    fn auto_reads_slurm_arrays() {
        let s = |p: &[(&str, &str)]| Shard::parse("auto", None, &env(p));
        // --array=0-3, task 2
        let zero_based = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ];
        assert_eq!(s(&zero_based).unwrap(), Shard::new(2, 4).unwrap());
        // --array=1-4, task 4 is the last shard
        let one_based = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ];
        assert_eq!(s(&one_based).unwrap(), Shard::new(3, 4).unwrap());
        // Not contiguous, a step, no count: refused.
        assert!(s(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
        ])
        .is_err());
        assert!(s(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ])
        .is_err());
        assert!(s(&[("SLURM_ARRAY_TASK_ID", "1")]).is_err());
        assert!(s(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2")
        ])
        .is_err());
    }

    #[test]
    fn auto_reads_kubernetes_indexed_jobs() {
        let job = [("JOB_COMPLETION_INDEX", "3"), (COUNT_VAR, "8")];
        assert_eq!(
            Shard::parse("auto", None, &env(&job)).unwrap(),
            Shard::new(3, 8).unwrap()
        );
        // --shard-count wins over the variable.
        assert_eq!(
            Shard::parse("auto", Some(4), &env(&job)).unwrap(),
            Shard::new(3, 4).unwrap()
        );
        let e = Shard::parse("auto", None, &env(&[("JOB_COMPLETION_INDEX", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(COUNT_VAR), "{e}");
        assert!(Shard::parse("auto", Some(3), &env(&[("JOB_COMPLETION_INDEX", "3")])).is_err());
        assert!(Shard::parse(
            "auto",
            Some(usize::MAX),
            &env(&[("JOB_COMPLETION_INDEX", "3")])
        )
        .is_err());
    }

    #[test]
    fn a_shard_count_above_the_points_is_refused() {
        let pts: Vec<usize> = (0..10).collect();
        assert_eq!(Shard::new(9, 10).unwrap().part(&pts).unwrap(), vec![9]);
        let e = Shard::new(3, 11)
            .unwrap()
            .part(&pts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--shard 3/11") && e.contains("at most 10"),
            "{e}"
        );
    }
}
