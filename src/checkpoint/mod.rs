//! Checkpoints: read safetensors (memory-mapped) and PyTorch `.pth` state dicts, strip
//! wrapper prefixes, and write new checkpoints atomically (temporary file + rename).
//!
//! [`pth`] reads PyTorch zip files, [`container`] finds the encoder's state dict inside a
//! file, [`keys`] names every metadata key memprune writes, and [`train_meta`] reads what
//! `memprune train` records.

pub mod container;
pub mod keys;
pub mod pth;
pub mod train_meta;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use container::RawTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefixes that training frameworks wrap an encoder's names in (DataParallel, solo-learn,
/// lightly, timm wrappers). Stripped repeatedly, so `module.backbone.conv1.weight` becomes
/// `conv1.weight`.
pub const WRAPPER_PREFIXES: [&str; 4] = ["module.", "backbone.", "encoder.", "model."];

/// A checkpoint's tensors as memprune sees them.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// Tensors by name after prefix stripping. Floating tensors are converted to f32 on
    /// the CPU; integer tensors (such as `num_batches_tracked`) keep their type.
    pub tensors: BTreeMap<String, Tensor>,
    /// Each tensor as stored (its own dtype), by stripped name: what a rewrite copies bit
    /// for bit. Shares memory with `tensors` where the stored dtype is already f32.
    pub stored: BTreeMap<String, Tensor>,
    /// The name each tensor has in the file, by stripped name.
    pub stored_names: BTreeMap<String, String>,
    /// The safetensors `__metadata__` (empty for `.pth`).
    pub metadata: BTreeMap<String, String>,
    /// How memprune read the file where it had a choice (the container, the prefix, a
    /// family's renaming of the names), one line each, for `inspect`.
    pub notes: Vec<String>,
}

impl Checkpoint {
    /// Reads `path` (safetensors, or a PyTorch zip `.pth`/`.pt` state dict). `prefix`, when
    /// given, is the one prefix to strip; otherwise [`WRAPPER_PREFIXES`] are stripped.
    pub fn load(path: &Path, prefix: Option<&str>) -> Result<Checkpoint> {
        Checkpoint::load_keyed(path, prefix, None)
    }

    /// As [`Checkpoint::load`], reading the state dict under `key` of a container (a DINO
    /// checkpoint's `teacher` or `student`; in safetensors, the names under `key.`). Without
    /// a key, a container of `teacher`/`student` dicts gives the teacher.
    pub fn load_keyed(path: &Path, prefix: Option<&str>, key: Option<&str>) -> Result<Checkpoint> {
        let shown = path.display();
        if let Some(line) = crate::defaults::missing(path) {
            bail!(line);
        }
        let bytes_head = read_head(path).with_context(|| format!("{shown}: cannot read"))?;
        // Zip torch.save files, and legacy ones (named as such by the .pth reader).
        let mut notes = Vec::new();
        let (raw, metadata) = if bytes_head.starts_with(b"PK") || pth::is_legacy(&bytes_head) {
            let dict = read_pth(path, key)?;
            // A key that named a top-level dict is used up; otherwise it is a name prefix
            // inside the dict chosen (a DINOv2 `model` dict of `teacher.*` names).
            let rest = if key.is_some() && dict.key.as_deref() == key {
                None
            } else {
                key
            };
            if let Some(k) = &dict.key {
                notes.push(format!("the state dict under the top-level key `{k}`"));
            }
            let n = dict.tensors.len();
            let raw = container::select_key(dict.tensors, rest, path)?;
            (with_prefix_note(raw, n, rest, &mut notes), BTreeMap::new())
        } else {
            let (raw, meta) = read_safetensors(path)?;
            let n = raw.len();
            let raw = container::select_key(raw, key, path)?;
            (with_prefix_note(raw, n, key, &mut notes), meta)
        };
        if raw.is_empty() {
            bail!("{shown}: the checkpoint holds no tensors");
        }
        let mut tensors = BTreeMap::new();
        let mut stored = BTreeMap::new();
        let mut stored_names = BTreeMap::new();
        for (name, t) in raw {
            let stripped = strip_prefix(&name, prefix);
            if tensors.contains_key(&stripped) {
                bail!("{shown}: tensors `{}` and `{name}` have the same name `{stripped}` once the prefix is stripped (use --prefix)", stored_names[&stripped]);
            }
            stored.insert(stripped.clone(), t.clone());
            let t = for_compute(t)?;
            if stripped != name && notes.iter().all(|n| !n.starts_with("prefix")) {
                let gone = &name[..name.len() - stripped.len()];
                notes.push(format!(
                    "prefix `{gone}` stripped (`{name}` read as `{stripped}`)"
                ));
            }
            stored_names.insert(stripped.clone(), name);
            tensors.insert(stripped, t);
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
            stored,
            stored_names,
            metadata,
            notes,
        })
    }

    /// The f32 tensor `name`, or an error naming the file and the missing tensor, or the
    /// tensor when it is not floating point (an integer weight would otherwise fail deep in
    /// a model with candle's "unexpected dtype", naming no file).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| anyhow!("{}: missing tensor `{name}`", self.path.display()))?;
        if t.dtype() != DType::F32 {
            bail!(
                "{}: tensor `{name}` has dtype {:?}; weights must be floating point (f32, f16, bf16 or f64)",
                self.path.display(),
                t.dtype()
            );
        }
        Ok(t)
    }

    /// A checkpoint made in memory (tests, training, a pruned encoder probed without being
    /// written): every tensor stored as given, and computed in f32 as a loaded one (so an
    /// f16 or bf16 model pruned in memory loads as it does from its file).
    pub fn from_tensors(
        path: &Path,
        tensors: BTreeMap<String, Tensor>,
        metadata: BTreeMap<String, String>,
    ) -> Checkpoint {
        let stored_names = tensors.keys().map(|k| (k.clone(), k.clone())).collect();
        let compute = tensors
            .iter()
            .map(|(k, t)| {
                // On the CPU a float conversion cannot fail; keeping `t` is only a fallback
                // (`get` then names the tensor and its dtype).
                (
                    k.clone(),
                    for_compute(t.clone()).unwrap_or_else(|_| t.clone()),
                )
            })
            .collect();
        Checkpoint {
            path: path.to_path_buf(),
            stored: tensors,
            tensors: compute,
            stored_names,
            metadata,
            notes: Vec::new(),
        }
    }

    /// `get` plus a check of the shape.
    pub fn get_shaped(&self, name: &str, dims: &[usize]) -> Result<&Tensor> {
        let t = self.get(name)?;
        if t.dims() != dims {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {:?}",
                self.path.display(),
                t.dims(),
                dims
            );
        }
        Ok(t)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// What a family checks of the tensors it loaded (`used`), in one place: every value
    /// finite, and no `X.bias` without its `X.weight` (nor the reverse for norms, whose pair
    /// is complete or absent) anywhere in the checkpoint.
    pub fn check_loaded(&self, used: &[String]) -> Result<()> {
        let path = self.path.display();
        for k in self.tensors.keys() {
            if let Some(stem) = k.strip_suffix(".bias") {
                let w = format!("{stem}.weight");
                if !self.tensors.contains_key(&w) {
                    bail!("{path}: `{k}` without `{w}`: an incomplete weight/bias pair");
                }
            }
            if let Some(stem) = k.strip_suffix(".weight") {
                let b = format!("{stem}.bias");
                let norm = stem.rsplit('.').next().is_some_and(|l| l.contains("norm"));
                if norm && !self.tensors.contains_key(&b) {
                    bail!("{path}: `{k}` without `{b}`: an incomplete norm");
                }
            }
        }
        for name in used {
            let Some(t) = self.tensors.get(name) else {
                continue;
            };
            let bad = t
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .any(|x| !x.is_finite());
            if bad {
                bail!("{path}: `{name}` holds NaN or infinite values");
            }
        }
        Ok(())
    }

    /// A metadata value parsed as JSON, when present.
    pub fn metadata_json(&self, key: &str) -> Result<Option<serde_json::Value>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(s) => serde_json::from_str(s).map(Some).map_err(|e| {
                anyhow!(
                    "{}: metadata `{key}` is not valid JSON: {e}",
                    self.path.display()
                )
            }),
        }
    }
}

/// Floating tensors as f32 (what the models compute in); others unchanged.
fn for_compute(t: Tensor) -> candle_core::Result<Tensor> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32),
        _ => Ok(t),
    }
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 8];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn strip_prefix(name: &str, prefix: Option<&str>) -> String {
    if let Some(p) = prefix {
        return name.strip_prefix(p).unwrap_or(name).to_string();
    }
    let mut s = name;
    'outer: loop {
        for p in WRAPPER_PREFIXES {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest;
                continue 'outer;
            }
        }
        return s.to_string();
    }
}

fn read_safetensors(path: &Path) -> Result<(RawTensors, BTreeMap<String, String>)> {
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    // SAFETY: the map is read-only and dropped before this function returns; a file changed
    // underneath us while loading is the user's race, as with any mmap-based loader.
    let mmap = unsafe { memmap2::MmapOptions::new().map(&file) }
        .with_context(|| format!("{shown}: cannot map"))?;
    let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| {
        anyhow!(
            "{shown}: not a valid safetensors file ({})",
            describe_st_error(&e, mmap.len())
        )
    })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let t = Tensor::from_raw_buffer(
            view.data(),
            st_dtype(view.dtype(), &name, path)?,
            view.shape(),
            &Device::Cpu,
        )
        .map_err(|e| anyhow!("{shown}: tensor `{name}`: {e}"))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| anyhow!("{shown}: {e}"))?;
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((out, metadata))
}

fn describe_st_error(e: &safetensors::SafeTensorError, len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer | E::InvalidOffset(_) => {
            format!(
                "truncated or corrupt: the header describes more data than the file's {len} bytes"
            )
        }
        E::HeaderTooSmall => format!("too short for a safetensors header ({len} bytes)"),
        E::HeaderTooLarge | E::InvalidHeaderLength => {
            "the header length is impossible: not safetensors, or corrupt".into()
        }
        other => other.to_string(),
    }
}

fn st_dtype(d: safetensors::Dtype, name: &str, path: &Path) -> Result<DType> {
    use safetensors::Dtype as S;
    Ok(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        other => bail!(
            "{}: tensor `{name}` has dtype {other:?}, which memprune does not read",
            path.display()
        ),
    })
}

/// `raw` as selected from `n` tensors, with a note when a name prefix (`teacher.`) chose them.
fn with_prefix_note(
    raw: RawTensors,
    n: usize,
    key: Option<&str>,
    notes: &mut Vec<String>,
) -> RawTensors {
    if raw.len() < n || key.is_some() {
        let k = key.unwrap_or("teacher");
        notes.push(format!("the {} of {n} tensors named `{k}.*`", raw.len()));
    }
    raw
}

fn read_pth(path: &Path, key: Option<&str>) -> Result<pth::PthDict> {
    // memprune's own bounded reader (crate::checkpoint::pth): candle's pickle reader panics, aborts and
    // prints on malicious files. Training scripts nest the weights in a dict of their
    // checkpoint (container::choose); `key` picks one.
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    // SAFETY: read-only map of a file memprune does not write while reading it.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("{shown}: cannot map"))?;
    let mut v = pth::read_state_dict_keyed(&map, key)
        .map_err(|e| anyhow!("{shown}: not a readable PyTorch state dict: {e}"))?;
    if v.tensors.is_empty() {
        bail!("{shown}: the PyTorch file holds no tensors");
    }
    v.tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Writes `tensors` (in their own dtypes) as safetensors at `path`, with `metadata`: to a
/// temporary file beside it, then renamed, so a failure never leaves a partial file. Refuses
/// to write over any of `inputs`.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
    inputs: &[&Path],
) -> Result<()> {
    let bytes =
        safetensors_bytes(tensors, metadata).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    write_file_atomic(path, &bytes, inputs)
}

/// The bytes of a safetensors file of `tensors` (in their own dtypes) and `metadata`, the
/// same bytes for the same contents (see [`canonical_header`]).
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let meta: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    let bytes = safetensors::serialize(contiguous.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
        .map_err(|e| anyhow!("cannot serialize: {e}"))?;
    canonical_header(bytes)
}

/// The safetensors crate writes its metadata map in hash order, so the same run gave files
/// that differ in their first bytes. Re-serialize the JSON header with sorted keys (tensor
/// entries keep their explicit offsets), padded with spaces to 8 bytes as the crate does:
/// the same tensors and metadata always give the same bytes.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(
        bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .context("short safetensors buffer")?,
    ) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8 + n).context("short safetensors header")?)?;
    let sorted: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(m) => {
                let inner: BTreeMap<String, serde_json::Value> = m.into_iter().collect();
                Ok((k, serde_json::to_value(inner)?))
            }
            v => Ok((k, v)),
        })
        .collect::<Result<_>>()?;
    let mut text = serde_json::to_string(&sorted)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Writes any file atomically (temporary file + rename), refusing to overwrite `inputs`.
pub fn write_file_atomic(path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
    refuse_overwrite(path, inputs)?;
    crate::output::write_atomic(path, bytes)
}

/// Fails when `path` is one of `inputs` (compared as canonical paths when they exist).
pub fn refuse_overwrite(path: &Path, inputs: &[&Path]) -> Result<()> {
    let target = crate::output::canonical(path);
    for input in inputs {
        if target == crate::output::canonical(input) {
            bail!("{}: refusing to write over an input file", path.display());
        }
    }
    Ok(())
}

/// The candle dtype of a NumPy dtype name (`str(array.dtype)`), for checkpoints handed over
/// in memory; `None` for dtypes a checkpoint of memprune's cannot hold.
pub fn dtype_of_numpy(name: &str) -> Option<DType> {
    Some(match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "float64" => DType::F64,
        "bfloat16" => DType::BF16,
        "uint8" => DType::U8,
        "uint32" => DType::U32,
        "int64" => DType::I64,
        _ => return None,
    })
}

/// Writes a checkpoint given as raw tensors (name, NumPy dtype name, shape, little-endian
/// bytes) and metadata as safetensors at `path` (the Python module's in-memory checkpoints).
pub fn raw_safetensors(
    path: &Path,
    tensors: &[(String, String, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut map = BTreeMap::new();
    for (name, dtype, shape, bytes) in tensors {
        let dt = dtype_of_numpy(dtype).ok_or_else(|| {
            anyhow!("checkpoint tensor {name}: dtype {dtype} is not one of float32, float16, float64, bfloat16, uint8, uint32, int64")
        })?;
        let n: usize = shape.iter().product();
        if n.checked_mul(dt.size_in_bytes()) != Some(bytes.len()) {
            bail!(
                "checkpoint tensor {name}: {} bytes for shape {shape:?} of {dtype}",
                bytes.len()
            );
        }
        let t = Tensor::from_raw_buffer(bytes, dt, shape, &Device::Cpu)
            .map_err(|e| anyhow!("checkpoint tensor {name}: {e}"))?;
        if map.insert(name.clone(), t).is_some() {
            bail!("checkpoint tensor {name} is given twice");
        }
    }
    if map.is_empty() {
        bail!("the checkpoint holds no tensor");
    }
    write_safetensors_atomic(path, &map, metadata, &[])
}
