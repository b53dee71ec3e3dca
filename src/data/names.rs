//! What each point of a set is called in outputs: a file path relative to the data root for
//! image folders (`train/cat/001.jpg`), the file and the record's index within it for IDX and
//! CIFAR (`train-images-idx3-ubyte.gz#17`), so a result can be mapped back to its image
//! without knowing memprune's sort order.

/// The names of a set's points, in point order.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PointNames {
    /// Not known (an in-memory set).
    #[default]
    None,
    /// One name per point.
    Each(Vec<String>),
    /// Runs of consecutive records of files: (file name, records), in point order.
    Records(Vec<(String, usize)>),
}

impl PointNames {
    /// The name of point `i`, when known.
    pub fn get(&self, i: usize) -> Option<String> {
        match self {
            PointNames::None => None,
            PointNames::Each(v) => v.get(i).cloned(),
            PointNames::Records(runs) => {
                let mut start = 0;
                for (file, n) in runs {
                    if i < start + n {
                        return Some(format!("{file}#{}", i - start));
                    }
                    start += n;
                }
                None
            }
        }
    }

    /// The names of `points`, in their order (empty strings where unknown).
    pub fn of(&self, points: &[usize]) -> Vec<String> {
        points
            .iter()
            .map(|&i| self.get(i).unwrap_or_default())
            .collect()
    }

    /// The names of the points `keep`, as a new list (a held-out part of a set).
    pub fn select(&self, keep: &[usize]) -> PointNames {
        match self {
            PointNames::None => PointNames::None,
            _ => PointNames::Each(self.of(keep)),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, PointNames::None)
    }
}

/// `name` of the file at `path` (its last component), for [`PointNames::Records`].
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
