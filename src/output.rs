//! The output set: every path a command writes is registered, with every path it reads,
//! before any work, and compared as canonical paths (through symlinks) and, where they exist,
//! as (device, inode) pairs (a hard link, or the same folder through a bind mount, is the
//! same file under another path): no output may be an input or another output. Writes are staged as unique temporary files in the target
//! directory (fsync'd) and put in place together by [`OutputSet::commit`] at the very end;
//! when a run fails before that, dropping the set removes every temporary file and every
//! directory it created, so a failed run leaves nothing behind.
//!
//! An output that is a character device or a pipe (`/dev/null`, a FIFO, `/dev/stdout`, or
//! any path through `/proc/*/fd`) is written directly at commit, never renamed over (as
//! root a rename would replace the device node); one that is a symlink to a file is staged
//! beside its target and renamed onto the target, so the link stays; block devices and
//! sockets are refused.

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

/// (device, inode) of what `path` names (through symlinks), where it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// An output written in place rather than staged and renamed: a character device or a pipe,
/// or a path whose symlinks go through `/proc` (`/dev/stdout` is `/proc/self/fd/1`).
pub fn is_direct(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::metadata(path) {
            let t = m.file_type();
            if t.is_char_device() || t.is_fifo() {
                return true;
            }
        }
        let mut cur = path.to_path_buf();
        for _ in 0..40 {
            match std::fs::read_link(&cur) {
                Ok(t) => {
                    let next = match cur.parent() {
                        Some(d) if t.is_relative() => d.join(&t),
                        _ => t,
                    };
                    if next.starts_with("/proc") {
                        return true;
                    }
                    cur = next;
                }
                Err(_) => return false,
            }
        }
    }
    let _ = path;
    false
}

/// Refuses an output that is a block device or a socket.
fn check_writable_kind(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::metadata(path) {
            let t = m.file_type();
            if t.is_block_device() || t.is_socket() {
                bail!(
                    "{}: {what} is a {}; write to a file, a pipe or a character device",
                    path.display(),
                    if t.is_socket() {
                        "socket"
                    } else {
                        "block device"
                    }
                );
            }
        }
    }
    let _ = (path, what);
    Ok(())
}

/// Where a staged file is renamed to: the file itself, or a symlink's final target (so that
/// the link stays a link).
fn rename_target(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => canonical(path),
        _ => path.to_path_buf(),
    }
}

/// Writes `bytes` into a device or pipe in place.
fn write_direct(path: &Path, bytes: &[u8]) -> Result<()> {
    // Append: `/dev/stdout` redirected to a file is written after what was printed there.
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.flush()))
        .map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
}

/// Refuses, before any work, an output whose folder does not exist, for writers that write
/// in place over time (`train --out` after every epoch) rather than through an [`OutputSet`].
pub fn parent_exists(path: &Path, what: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if !dir.is_dir() {
        bail!(
            "{}: {what}: the folder {} does not exist (create it first)",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

struct Registered {
    shown: PathBuf,
    canonical: PathBuf,
    id: Option<(u64, u64)>,
    what: String,
}

impl Registered {
    fn new(path: &Path, what: &str) -> Registered {
        Registered {
            shown: path.to_path_buf(),
            canonical: canonical(path),
            id: file_id(path),
            what: what.to_string(),
        }
    }

    /// The same file as `other`: by path, or by (device, inode).
    fn same(&self, other: &Registered) -> bool {
        self.canonical == other.canonical || (self.id.is_some() && self.id == other.id)
    }

    /// Inside the folder `dir` (by path, or a folder above it that is `dir` by inode).
    fn inside(&self, dir: &Registered) -> bool {
        if !dir.canonical.is_dir() {
            return false;
        }
        if self.canonical.starts_with(&dir.canonical) {
            return true;
        }
        dir.id.is_some()
            && self
                .canonical
                .ancestors()
                .skip(1)
                .any(|a| file_id(a) == dir.id)
    }
}

/// A staged output: the path as given, where its bytes go, and the temporary file.
struct Staged {
    path: PathBuf,
    target: PathBuf,
    direct: bool,
    tmp: tempfile::TempPath,
}

/// What a command reads and writes; see the module docs.
#[derive(Default)]
pub struct OutputSet {
    inputs: Vec<Registered>,
    outputs: Vec<Registered>,
    staged: Vec<Staged>,
    staged_dirs: Vec<(PathBuf, Vec<String>, tempfile::TempDir)>,
    created_dirs: Vec<PathBuf>,
}

impl OutputSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a file or directory the command reads. `what` names it in errors.
    pub fn input(&mut self, path: &Path, what: &str) -> &mut Self {
        self.inputs.push(Registered::new(path, what));
        self
    }

    /// Registers a file the command will write; fails when it is an input or another output.
    pub fn output(&mut self, path: &Path, what: &str) -> Result<&mut Self> {
        let r = Registered::new(path, what);
        if let Some(i) = self.inputs.iter().find(|i| i.same(&r)) {
            bail!(
                "{}: {what}: refusing to write over {} {} (an input); choose another path",
                path.display(),
                i.what,
                i.shown.display()
            );
        }
        if let Some(i) = self.inputs.iter().find(|i| r.inside(i)) {
            bail!(
                "{}: {what} would write inside {} {} (an input folder); choose another path",
                path.display(),
                i.what,
                i.shown.display()
            );
        }
        if let Some(o) = self.outputs.iter().find(|o| o.same(&r) && !is_direct(path)) {
            bail!(
                "{}: {what} and {} ({}) are the same file; choose two paths",
                path.display(),
                o.what,
                o.shown.display()
            );
        }
        if r.canonical.is_dir() {
            bail!("{}: {what} is a directory, not a file path", path.display());
        }
        check_writable_kind(path, what)?;
        self.outputs.push(r);
        Ok(self)
    }

    /// Registers a directory the command writes into, with the `files` it writes there; fails
    /// when the directory is an input, or one of the files is an input or another output.
    pub fn output_dir(&mut self, dir: &Path, files: &[&str], what: &str) -> Result<&mut Self> {
        let r = Registered::new(dir, what);
        let c = r.canonical.clone();
        if let Some(i) = self.inputs.iter().find(|i| i.same(&r)) {
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
            for d in missing.iter().rev() {
                crate::interrupt::register_dir(d);
            }
            self.created_dirs.extend(missing);
        }
        Ok(dir)
    }

    /// A staged (temporary, unique) file in `path`'s directory that [`commit`](Self::commit)
    /// will move to `path`; writers write to the returned path. Staging `path` again returns
    /// the same temporary file.
    pub fn reserve(&mut self, path: &Path) -> Result<PathBuf> {
        self.registered(path)?;
        if let Some(st) = self.staged.iter().find(|st| st.path == path) {
            return Ok(st.tmp.to_path_buf());
        }
        let direct = is_direct(path);
        let target = if direct {
            path.to_path_buf()
        } else {
            rename_target(path)
        };
        // A device's or pipe's bytes wait in the temporary folder (not in /dev).
        let dir = if direct {
            std::env::temp_dir()
        } else {
            self.make_parent(&target)?
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let tmp = staging_file(&prefix)
            .tempfile_in(&dir)
            .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?
            .into_temp_path();
        let p = tmp.to_path_buf();
        crate::interrupt::register(&p);
        self.staged.push(Staged {
            path: path.to_path_buf(),
            target,
            direct,
            tmp,
        });
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
        crate::interrupt::register_dir(&p);
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
            .find(|st| st.path == path)
            .map(|st| st.tmp.to_path_buf())
            .unwrap_or_else(|| path.to_path_buf())
    }

    /// Moves every staged file into place. When one fails, those already moved are removed,
    /// and the rest are dropped.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        let mut done: Vec<PathBuf> = Vec::new();
        let (direct, files): (Vec<Staged>, Vec<Staged>) = std::mem::take(&mut self.staged)
            .into_iter()
            .partition(|st| st.direct);
        // Devices and pipes first: they cannot be taken back, and nothing was moved yet
        // when one fails.
        for st in direct {
            let bytes = std::fs::read(&st.tmp)
                .with_context(|| format!("{}: cannot read back", st.tmp.display()))?;
            write_direct(&st.path, &bytes)?;
        }
        for st in files {
            crate::interrupt::unregister(&st.tmp);
            if let Err(e) = st.tmp.persist(&st.target) {
                for d in &done {
                    let _ = std::fs::remove_file(d);
                }
                bail!("{}: cannot move into place: {}", st.path.display(), e.error);
            }
            done.push(st.target);
        }
        for (dir, files, tmp) in std::mem::take(&mut self.staged_dirs) {
            crate::interrupt::unregister_dir(tmp.path());
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
        for d in self.created_dirs.drain(..) {
            crate::interrupt::unregister_dir(&d);
        }
        Ok(done)
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        // Temporary files remove themselves (TempPath); then the directories this run made,
        // deepest first, when empty.
        for st in self.staged.drain(..) {
            crate::interrupt::unregister(&st.tmp);
        }
        for (_, _, t) in self.staged_dirs.drain(..) {
            crate::interrupt::unregister_dir(t.path());
        }
        for d in &self.created_dirs {
            crate::interrupt::unregister_dir(d);
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
    if is_direct(path) {
        return write_direct(path, bytes);
    }
    let target = rename_target(path);
    let path = target.as_path();
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
    let tmp_path = tmp.path().to_path_buf();
    crate::interrupt::register(&tmp_path);
    let r = tmp
        .write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
        .and_then(|_| {
            tmp.persist(path)
                .map_err(|e| anyhow!("{}: cannot move into place: {}", path.display(), e.error))
        });
    crate::interrupt::unregister(&tmp_path);
    r.map(|_| ())
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
