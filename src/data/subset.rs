//! Choosing which points of a set to measure, by GLOBAL index in the set (the index a point
//! has in the full file, so results from different runs and machines line up).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::rng::Rng;

/// Domain tag so subset draws never share a stream with augmentation draws.
const SUBSET_TAG: u64 = 0x5355_4253_4554_0001; // "SUBSET"

/// Point indices into a set of `len` points: distinct and all `< len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub indices: Vec<usize>,
}

impl Subset {
    /// Every point, in order.
    pub fn all(len: usize) -> Self {
        Subset {
            indices: (0..len).collect(),
        }
    }

    /// Points `start..end` (end exclusive), in order. Errors if empty or past `len`.
    pub fn range(start: usize, end: usize, len: usize) -> Result<Self> {
        if start >= end {
            bail!("empty point range {start}..{end}");
        }
        if end > len {
            bail!("point range {start}..{end} is past the end of the set ({len} points)");
        }
        Ok(Subset {
            indices: (start..end).collect(),
        })
    }

    /// The first `n` points. Errors if `n` is 0 or more than `len`.
    pub fn first(n: usize, len: usize) -> Result<Self> {
        Self::range(0, n, len)
    }

    /// `n` distinct points drawn uniformly without replacement, a pure function of
    /// `(seed, n, len)`, returned SORTED ascending (so the subset, not the draw order, is
    /// what identifies it, and reading the points is sequential).
    pub fn random(n: usize, seed: u64, len: usize) -> Result<Self> {
        if n == 0 || n > len {
            bail!("cannot draw {n} distinct points from a set of {len}");
        }
        let mut rng = Rng::from_key(&[SUBSET_TAG, seed, n as u64, len as u64]);
        // Partial Fisher-Yates on a sparse permutation: O(n) memory whatever `len`.
        let mut swapped: HashMap<usize, usize> = HashMap::new();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let j = i + rng.below((len - i) as u64) as usize;
            let vj = *swapped.get(&j).unwrap_or(&j);
            let vi = *swapped.get(&i).unwrap_or(&i);
            swapped.insert(j, vi);
            out.push(vj);
        }
        out.sort_unstable();
        Ok(Subset { indices: out })
    }

    /// Reads point indices from a file, kept in file order: either a JSON array of integers
    /// or integers separated by whitespace, commas or newlines (`#` starts a comment).
    /// Rejects non-integers, out-of-range and duplicate indices, naming file, line and value.
    pub fn from_file(path: &Path, len: usize) -> Result<Self> {
        let p = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{p}: cannot read: {e}"))?;
        // A JSON array is read as the list between its outer brackets, so that errors can
        // still name the line of the offending value.
        let trimmed = text.trim();
        let json = trimmed.starts_with('[');
        let body = if json {
            if !trimmed.ends_with(']') {
                bail!("{p}: JSON array does not end with ']'");
            }
            let (open, close) = (text.find('[').unwrap_or(0), text.rfind(']').unwrap_or(0));
            format!("{} {} ", &text[..open], &text[open + 1..close])
        } else {
            text.clone()
        };
        let mut indices = Vec::new();
        let mut first_line: HashMap<usize, usize> = HashMap::new();
        for (ln, line) in body.lines().enumerate() {
            let line_no = ln + 1;
            let line = if json {
                line
            } else {
                line.split('#').next().unwrap_or("")
            };
            for tok in line.split(|c: char| c.is_whitespace() || c == ',') {
                if tok.is_empty() {
                    continue;
                }
                let v: usize = tok.parse().map_err(|_| {
                    anyhow!("{p}:{line_no}: {tok:?} is not a non-negative integer point index")
                })?;
                if v >= len {
                    bail!("{p}:{line_no}: index {v} out of range (the set has {len} points)");
                }
                if let Some(prev) = first_line.insert(v, line_no) {
                    bail!("{p}:{line_no}: duplicate index {v} (first on line {prev})");
                }
                indices.push(v);
            }
        }
        if indices.is_empty() {
            bail!("{p}: no point indices");
        }
        Ok(Subset { indices })
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}
