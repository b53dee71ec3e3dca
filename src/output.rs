//! The output set: every path a command writes is registered, with every path it reads,
//! before any work, and compared as canonical paths (through symlinks): no output may be an
//! input or another output. Writes are staged as unique temporary files in the target
//! directory (fsync'd) and put in place together by [`OutputSet::commit`] at the very end;
//! when a run fails before that, dropping the set removes every temporary file and every
//! directory it created, so a failed run leaves nothing behind.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// `path` made absolute and resolved through symlinks as far as it exists: the nearest
/// existing ancestor is canonicalised and the rest appended (with `.` and `..` folded), so a
/// file that does not exist yet compares equal to the same file named another way.
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(path) {
        return c;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (cur.parent(), cur.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                cur = parent;
            }
            _ => return abs,
        }
    }
}

struct Registered {
    shown: PathBuf,
    canonical: PathBuf,
    what: String,
}

/// What a command reads and writes; see the module docs.
#[derive(Default)]
pub struct OutputSet {
    inputs: Vec<Registered>,
    outputs: Vec<Registered>,
    staged: Vec<(PathBuf, tempfile::TempPath)>,
    staged_dirs: Vec<(PathBuf, Vec<String>, tempfile::TempDir)>,
    created_dirs: Vec<PathBuf>,
}

impl OutputSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a file or directory the command reads. `what` names it in errors.
    pub fn input(&mut self, path: &Path, what: &str) -> &mut Self {
        self.inputs.push(Registered {
            shown: path.to_path_buf(),
            canonical: canonical(path),
            what: what.to_string(),
        });
        self
    }

    /// Registers a file the command will write; fails when it is an input or another output.
    pub fn output(&mut self, path: &Path, what: &str) -> Result<&mut Self> {
        let c = canonical(path);
        if let Some(i) = self.inputs.iter().find(|i| i.canonical == c) {
            bail!(
                "{}: {what}: refusing to write over {} {} (an input); choose another path",
                path.display(),
                i.what,
                i.shown.display()
            );
        }
        if let Some(i) = self
            .inputs
            .iter()
            .find(|i| i.canonical.is_dir() && c.starts_with(&i.canonical))
        {
            bail!(
                "{}: {what} would write inside {} {} (an input folder); choose another path",
                path.display(),
                i.what,
                i.shown.display()
            );
        }
        if let Some(o) = self.outputs.iter().find(|o| o.canonical == c) {
            bail!(
                "{}: {what} and {} ({}) are the same file; choose two paths",
                path.display(),
                o.what,
                o.shown.display()
            );
        }
        if c.is_dir() {
            bail!("{}: {what} is a directory, not a file path", path.display());
        }
        self.outputs.push(Registered {
            shown: path.to_path_buf(),
            canonical: c,
            what: what.to_string(),
        });
        Ok(self)
    }

    /// Registers a directory the command writes into, with the `files` it writes there; fails
    /// when the directory is an input, or one of the files is an input or another output.
    pub fn output_dir(&mut self, dir: &Path, files: &[&str], what: &str) -> Result<&mut Self> {
        let c = canonical(dir);
        if let Some(i) = self.inputs.iter().find(|i| i.canonical == c) {
            bail!(
                "{}: {what} would write into {} {} (an input); choose another directory",
                dir.display(),
                i.what,
                i.shown.display()
            );
        }
        if c.exists() && !c.is_dir() {
            bail!("{}: {what} exists and is not a directory", dir.display());
        }
        for f in files {
            self.output(&dir.join(f), what)?;
        }
        Ok(self)
    }

    fn registered(&self, path: &Path) -> Result<()> {
        let c = canonical(path);
        if self.outputs.iter().any(|o| o.canonical == c) {
            Ok(())
        } else {
            Err(anyhow!(
                "{}: internal error: an output written without being registered",
                path.display()
            ))
        }
    }

    fn make_parent(&mut self, path: &Path) -> Result<PathBuf> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            let mut missing = Vec::new();
            let mut cur = dir.as_path();
            while !cur.as_os_str().is_empty() && !cur.exists() {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) => cur = p,
                    None => break,
                }
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            // Deepest first, for removal.
            self.created_dirs.extend(missing);
        }
        Ok(dir)
    }

    /// A staged (temporary, unique) file in `path`'s directory that [`commit`](Self::commit)
    /// will move to `path`; writers write to the returned path. Staging `path` again returns
    /// the same temporary file.
    pub fn reserve(&mut self, path: &Path) -> Result<PathBuf> {
        self.registered(path)?;
        if let Some((_, t)) = self.staged.iter().find(|(p, _)| p == path) {
            return Ok(t.to_path_buf());
        }
        let dir = self.make_parent(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let tmp = staging_file(&prefix)
            .tempfile_in(&dir)
            .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?
            .into_temp_path();
        let p = tmp.to_path_buf();
        self.staged.push((path.to_path_buf(), tmp));
        Ok(p)
    }

    /// A staged directory beside `dir` for writers that write `files` into one directory;
    /// commit moves each of them into `dir` (created if missing). Each file must have been
    /// registered (see [`output_dir`](Self::output_dir)).
    pub fn reserve_dir(&mut self, dir: &Path, files: &[&str]) -> Result<PathBuf> {
        for f in files {
            self.registered(&dir.join(f))?;
        }
        self.make_parent(&dir.join("x"))?;
        let tmp = tempfile::Builder::new()
            .prefix(".memprune-staged.")
            .tempdir_in(dir)
            .with_context(|| format!("{}: cannot create a temporary folder", dir.display()))?;
        let p = tmp.path().to_path_buf();
        self.staged_dirs.push((
            dir.to_path_buf(),
            files.iter().map(|f| f.to_string()).collect(),
            tmp,
        ));
        Ok(p)
    }

    /// Stages `bytes` for `path` (written and fsync'd now, moved into place at commit).
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.reserve(path)?;
        write_synced(&tmp, bytes).with_context(|| format!("{}: cannot write", path.display()))
    }

    /// The file to read `path` from before commit: its staged file when staged.
    pub fn current(&self, path: &Path) -> PathBuf {
        self.staged
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.to_path_buf())
            .unwrap_or_else(|| path.to_path_buf())
    }

    /// Moves every staged file into place. When one fails, those already moved are removed,
    /// and the rest are dropped.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        let mut done: Vec<PathBuf> = Vec::new();
        for (path, tmp) in std::mem::take(&mut self.staged) {
            if let Err(e) = tmp.persist(&path) {
                for d in &done {
                    let _ = std::fs::remove_file(d);
                }
                bail!("{}: cannot move into place: {}", path.display(), e.error);
            }
            done.push(path);
        }
        for (dir, files, tmp) in std::mem::take(&mut self.staged_dirs) {
            for f in files {
                let from = tmp.path().join(&f);
                if !from.exists() {
                    continue;
                }
                let to = dir.join(&f);
                if let Err(e) = std::fs::rename(&from, &to) {
                    for d in &done {
                        let _ = std::fs::remove_file(d);
                    }
                    bail!("{}: cannot move into place: {e}", to.display());
                }
                done.push(to);
            }
        }
        if let Some(d) = done.first().and_then(|p| p.parent()) {
            // The renames themselves, on disk.
            if let Ok(f) = std::fs::File::open(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }) {
                let _ = f.sync_all();
            }
        }
        self.created_dirs.clear();
        Ok(done)
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        // Temporary files remove themselves (TempPath); then the directories this run made,
        // deepest first, when empty.
        self.staged.clear();
        self.staged_dirs.clear();
        for d in &self.created_dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes one file atomically: a unique temporary file in the target directory, fsync,
/// rename (`tempfile`'s persist). A failure leaves no partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut tmp = staging_file(&prefix)
        .tempfile_in(dir)
        .map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("{}: cannot move into place: {}", path.display(), e.error))?;
    Ok(())
}

/// The builder of a staged output file, `.NAME.<random>.tmp`, created with mode 0666 less
/// the umask, as the file would be if written directly (tempfile's default, 0600, would make
/// every output private to its owner).
fn staging_file(prefix: &str) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b
}
