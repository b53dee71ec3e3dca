//! Vision transformers in timm's tensor layout (timm, DINO, DINOv2, iBOT, MAE encoders).
//!
//! Names: `patch_embed.proj.{weight,bias}`, `cls_token`, `pos_embed`, optional register
//! tokens (`reg_token` in timm, `register_tokens` in Meta's DINOv2), per block
//! `blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}` (qkv with or without
//! bias), optional LayerScale `blocks.{i}.ls{1,2}.gamma` (DINOv2), and the final `norm`
//! and/or `fc_norm`. Depth, width, MLP width, patch size and grid come from the shapes; the
//! head count from memprune's metadata (`memprune.heads`), else `--heads` / `heads:`, else
//! the table of published ViTs, else a guess (width / 64) that head-level operations refuse
//! ([`crate::model::vit_heads`]). Tensors the encoder
//! does not read (`head.*`, an MAE decoder, `mask_token`) are reported as unused.
//!
//! Meta's DINOv2 training checkpoints (`block_chunks > 0`) name block `I` of chunk `C`
//! `blocks.C.I.*`; they load as the flat `blocks.I.*` ([`unchunk_blocks`]), and a rewrite
//! keeps the file's chunked names.
//!
//! Tokens are ordered class, registers, patches (timm and Meta agree). The position
//! embedding covers the patches plus 0, 1 or 1 + registers prefix tokens (told apart by
//! which leaves a square grid). An image of another size than the embedding's grid gets the
//! grid part interpolated as timm's `resample_abs_pos_embed` does (bicubic, antialiased),
//! and memprune says so once. LayerNorm eps 1e-6, GELU exact (erf), as timm.
//!
//! Layers (1-based blocks, as the paper's Table 2), per block `blockN`:
//! - `blockN.attn`: the attention sub-layer output after its residual add (the paper's
//!   "attention" row);
//! - `blockN.heads`: the heads as units; the tap is the attention output before `proj`
//!   (heads side by side); act_u of a head = the mean over all tokens of the L2 norm of
//!   its output (non-negative);
//! - `blockN.fc1`: the MLP hidden neurons, fc1 after GELU; act_u = the mean over all
//!   tokens, the class token included (signed);
//! - `blockN.mlp`: the MLP sub-layer output after its residual add (the paper's "FC" row);
//!
//! then `pool`: the representation (`--pool`; default the class token after `norm`, or with
//! `fc_norm` the mean of the patch tokens through `fc_norm`, as timm's `global_pool='avg'`;
//! `--pool avg` without `fc_norm`: the mean of the patch tokens after `norm`). LayerMem reads
//! the taps with the tokens chosen by `--tokens` (`all`, default: every token flattened, the
//! authors' LayerMem script; `cls`: the class token). UnitMem reads act_u of every unit of
//! every layer; for `attn` and `mlp` that is the mean over tokens of each residual-stream
//! dimension (signed).

use crate::checkpoint::keys;
use crate::checkpoint::Checkpoint;
use crate::model::act_floor::ActFloor;
use crate::model::conv_bn::Mode;
use crate::model::coupling::{CouplingGroup, Slice};
use crate::model::family::{Family, Layer, LayerKind, Net};
use crate::model::options::Tokens;
use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const LN_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// (out, in)
    pub(crate) weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// (..., in) -> (..., out)
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = dims[dims.len() - 1];
        let rows = x.elem_count() / inner;
        let y = matmul_rows(&x.reshape((rows, inner))?, &self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        let n = out.len();
        out[n - 1] = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// `x (rows, k) @ wt (k, out)`, each row rounded the same whatever the other rows: the
/// `gemm` crate takes another kernel for a product of at most 16 x 16 outputs or a single
/// row, which rounds differently, so a batch of one image (a ViT's patch embedding gives
/// it 4 rows) measured other numbers than the same image among others. Few rows are padded
/// with zero rows up to the general kernel and cut back.
fn matmul_rows(x: &Tensor, wt: &Tensor) -> candle_core::Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let out = wt.dim(1)?;
    let min = (256 / out.max(1) + 1).max(2);
    if rows >= min {
        return x.matmul(wt);
    }
    let pad = Tensor::zeros((min - rows, k), x.dtype(), x.device())?;
    Tensor::cat(&[x, &pad], 0)?.matmul(wt)?.narrow(0, 0, rows)
}

#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    /// LayerNorm over the last dimension: candle's fused kernel, or when `train` the same
    /// function built from differentiable ops (the fused kernel has no backward).
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            crate::model::vit_ops::layer_norm(x, &self.weight, &self.bias, LN_EPS)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, LN_EPS as f32)
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    ls1: Option<Tensor>,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    ls2: Option<Tensor>,
    /// Attention heads of this block, and their total width (`proj`'s input columns; the
    /// model width unless heads were pruned).
    heads: usize,
    inner: usize,
}

pub use crate::model::vit_heads::HeadsFrom;

#[derive(Debug, Clone)]
pub struct Vit {
    blocks: Vec<Block>,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls_token: Option<Tensor>,
    /// (R, D)
    registers: Option<Tensor>,
    /// (P, D)
    pos_embed: Tensor,
    /// Prefix tokens (class, registers) that have a position embedding: 0, 1 or 1 + R.
    pos_prefix: usize,
    norm: Option<Norm>,
    fc_norm: Option<Norm>,
    /// The representation: the class token, or the mean of the patch tokens.
    pool: crate::model::options::VitPool,
    pub width: usize,
    pub depth: usize,
    pub mlp_hidden: Vec<usize>,
    /// Attention heads of the first block (see each block for pruned ones).
    pub heads: usize,
    pub heads_from: HeadsFrom,
    pub patch: usize,
    /// The position embedding's grid (side).
    pub grid: usize,
    pub in_channels: usize,
    pub tokens: Tokens,
    /// Layers: the attention and MLP sub-layer outputs only (LayerMem's).
    pub sub_layers_only: bool,
    used: Vec<String>,
    said_resample: Arc<AtomicBool>,
    path: String,
}

impl Vit {
    pub fn matches(ckpt: &Checkpoint) -> bool {
        ckpt.contains("patch_embed.proj.weight") && ckpt.contains("pos_embed")
    }

    pub fn load(ckpt: &Checkpoint, opts: &crate::model::LoadOptions) -> Result<Vit> {
        let path = ckpt.path.display().to_string();
        let mut used = Vec::new();
        let get = |name: &str, used: &mut Vec<String>| -> Result<Tensor> {
            used.push(name.to_string());
            Ok(ckpt.get(name)?.clone())
        };
        let patch_w = get("patch_embed.proj.weight", &mut used)?;
        if patch_w.rank() != 4 || patch_w.dim(2)? != patch_w.dim(3)? {
            bail!(
                "{path}: `patch_embed.proj.weight` has shape {:?}, expected (width, channels, patch, patch)",
                patch_w.dims()
            );
        }
        if patch_w.dims().contains(&0) {
            bail!(
                "{path}: `patch_embed.proj.weight` has shape {:?}: width, channels and patch must be at least 1",
                patch_w.dims()
            );
        }
        let (width, in_channels, patch) = (patch_w.dim(0)?, patch_w.dim(1)?, patch_w.dim(2)?);
        let opt = |name: &str, used: &mut Vec<String>| -> Option<Tensor> {
            let t = ckpt.tensors.get(name)?.clone();
            used.push(name.to_string());
            Some(t)
        };
        let patch_b = opt("patch_embed.proj.bias", &mut used);
        let vec_of = |name: &str, t: &Tensor| -> Result<Tensor> {
            if t.dims().last() != Some(&width) {
                bail!(
                    "{path}: `{name}` has shape {:?}, expected its last dimension to be the width {width} (from `patch_embed.proj.weight`)",
                    t.dims()
                );
            }
            Ok(t.reshape((t.elem_count() / width, width))?)
        };
        let cls_token = match opt("cls_token", &mut used) {
            Some(t) => {
                if t.elem_count() != width {
                    bail!(
                        "{path}: `cls_token` has shape {:?}, expected [1, 1, {width}] (one token of the width)",
                        t.dims()
                    );
                }
                Some(vec_of("cls_token", &t)?)
            }
            None => None,
        };
        if opts.tokens == Tokens::Cls && cls_token.is_none() {
            bail!("{path}: --tokens cls, but the checkpoint has no `cls_token` (use --tokens all)");
        }
        let registers = match opt("reg_token", &mut used)
            .map(|t| ("reg_token", t))
            .or_else(|| opt("register_tokens", &mut used).map(|t| ("register_tokens", t)))
        {
            Some((n, t)) => Some(vec_of(n, &t)?),
            None => None,
        };
        let n_reg = registers
            .as_ref()
            .map(|r| r.dim(0))
            .transpose()?
            .unwrap_or(0);
        let n_cls = usize::from(cls_token.is_some());
        let pos_embed = vec_of("pos_embed", &get("pos_embed", &mut used)?)?;
        let p = pos_embed.dim(0)?;
        let square = |n: usize| -> Option<usize> {
            let g = (n as f64).sqrt().round() as usize;
            (g > 0 && g * g == n).then_some(g)
        };
        let mut candidates = vec![n_cls + n_reg, n_cls, 0];
        candidates.dedup();
        let Some((pos_prefix, grid)) = candidates
            .iter()
            .filter(|&&k| k <= p)
            .find_map(|&k| square(p - k).map(|g| (k, g)))
        else {
            bail!(
                "{path}: `pos_embed` has {p} positions, which fit no square grid of patches plus {} prefix tokens ({n_cls} class, {n_reg} register)",
                candidates.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
            );
        };
        let depth = (0..)
            .take_while(|i| {
                ckpt.tensors
                    .keys()
                    .any(|k| k.starts_with(&format!("blocks.{i}.")))
            })
            .count();
        let later = ckpt.tensors.keys().find(|k| {
            k.strip_prefix("blocks.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i > depth)
        });
        if let Some(k) = later {
            bail!("{path}: no `blocks.{depth}.*` tensors, but `{k}` exists: a transformer block is missing");
        }
        if depth == 0 {
            bail!("{path}: no transformer block tensors (`blocks.0.attn.qkv.weight` ...)");
        }
        let mlp0 = ckpt
            .tensors
            .get("blocks.0.mlp.fc1.weight")
            .and_then(|t| t.dims().first().copied())
            .unwrap_or(0);
        let (head_list, heads_from) = crate::model::vit_heads::resolve(
            &path,
            ckpt.metadata.get(keys::HEADS).map(|s| s.as_str()),
            opts.heads,
            width,
            mlp0,
            depth,
            cls_token.is_some(),
        )?;
        let mut blocks = Vec::with_capacity(depth);
        let mut mlp_hidden = Vec::with_capacity(depth);
        for (i, &heads) in head_list.iter().enumerate() {
            let block = load_block(ckpt, &format!("blocks.{i}"), width, heads, &mut used)?;
            mlp_hidden.push(block.fc1.weight.dim(0)?);
            blocks.push(block);
        }
        let norm = load_norm(ckpt, "norm", width, &mut used, false)?;
        let fc_norm = load_norm(ckpt, "fc_norm", width, &mut used, false)?;
        use crate::model::options::VitPool;
        let pool = opts
            .pool
            .unwrap_or(if fc_norm.is_some() || cls_token.is_none() {
                VitPool::Avg
            } else {
                VitPool::Cls
            });
        if pool == VitPool::Cls && cls_token.is_none() {
            bail!("{path}: --pool cls, but the checkpoint has no `cls_token`");
        }
        let heads = head_list[0];
        if heads_from == HeadsFrom::Guess {
            eprintln!(
                "note: {path}: {heads} attention heads GUESSED from the width ({width} / 64): no metadata, no --heads or `heads:`, and no published ViT has this shape; measuring or pruning heads is refused until the count is given"
            );
        }
        Ok(Vit {
            blocks,
            patch_w,
            patch_b,
            cls_token,
            registers,
            pos_embed,
            pos_prefix,
            norm,
            pool,
            fc_norm,
            width,
            depth,
            mlp_hidden,
            heads,
            heads_from,
            patch,
            grid,
            in_channels,
            tokens: opts.tokens,
            sub_layers_only: opts.sub_layers_only,
            used,
            said_resample: Arc::new(AtomicBool::new(false)),
            path,
        })
    }

    /// Prefix tokens: class + registers.
    fn n_prefix(&self) -> usize {
        usize::from(self.cls_token.is_some())
            + self.registers.as_ref().map(|r| r.dims()[0]).unwrap_or(0)
    }

    /// The position embedding for a grid of side `g` (interpolated when `g != self.grid`).
    fn pos_for(&self, g: usize) -> candle_core::Result<Tensor> {
        if g == self.grid {
            return Ok(self.pos_embed.clone());
        }
        if !self.said_resample.swap(true, Ordering::Relaxed) {
            eprintln!(
                "note: {}: images give a {g}x{g} patch grid; the position embedding ({1}x{1}) is interpolated (bicubic, antialiased, as timm)",
                self.path,
                self.grid
            );
        }
        let prefix = self.pos_embed.narrow(0, 0, self.pos_prefix)?;
        let grid = self
            .pos_embed
            .narrow(0, self.pos_prefix, self.grid * self.grid)?;
        let resized = resample_grid(&grid, self.grid, g)?;
        Tensor::cat(&[&prefix, &resized], 0)
    }

    /// Patch tokens with their position embedding (N, G, D), the prefix tokens (class,
    /// registers) with theirs (P, D) if any, and the grid side.
    fn embed(&self, x: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        if gh == 0 {
            // No patch token: the mean of the patch tokens would be NaN.
            candle_core::bail!(
                "{}: images of {h}x{w} are smaller than one {p}x{p} patch",
                self.path
            );
        }
        if gh != gw {
            candle_core::bail!(
                "{}: images of {h}x{w} give a {gh}x{gw} patch grid; memprune's ViT reads square grids",
                self.path
            );
        }
        let x = x.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
        // Patch embedding as one matmul: (N*G, C*p*p) @ (C*p*p, D).
        let patches = x
            .reshape((n, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * gh * gw, c * p * p))?;
        let wmat = self.patch_w.reshape((self.width, c * p * p))?;
        let mut t = matmul_rows(&patches, &wmat.t()?)?;
        if let Some(b) = &self.patch_b {
            t = t.broadcast_add(b)?;
        }
        let t = t.reshape((n, gh * gw, self.width))?;
        let pos = self.pos_for(gh)?;
        // Prefix tokens with a position embedding get theirs; the patches get the grid's.
        let with_pos = self.pos_prefix;
        let pos_patches = pos.narrow(0, with_pos, gh * gw)?;
        let t = t.broadcast_add(&pos_patches.unsqueeze(0)?)?;
        let mut prefix: Vec<Tensor> = Vec::new();
        if let Some(cls) = &self.cls_token {
            prefix.push(cls.clone());
        }
        if let Some(r) = &self.registers {
            prefix.push(r.clone());
        }
        if prefix.is_empty() {
            return Ok((t, None));
        }
        let mut pre = Tensor::cat(&prefix, 0)?;
        if with_pos > 0 {
            let pos_pre = pos.narrow(0, 0, with_pos)?;
            let rest = pre.dim(0)? - with_pos;
            pre = if rest > 0 {
                Tensor::cat(
                    &[
                        &(pre.narrow(0, 0, with_pos)? + pos_pre)?,
                        &pre.narrow(0, with_pos, rest)?,
                    ],
                    0,
                )?
            } else {
                (pre + pos_pre)?
            };
        }
        Ok((t, Some(pre)))
    }

    /// The prefix tokens (P, D), the same for every image, in front of `t` (N, T, D).
    fn with_prefix(t: Tensor, prefix: Option<Tensor>) -> candle_core::Result<Tensor> {
        let Some(pre) = prefix else { return Ok(t) };
        let (n, _, d) = t.dims3()?;
        let n_pre = pre.dim(0)?;
        let pre = pre.unsqueeze(0)?.broadcast_as((n, n_pre, d))?;
        Tensor::cat(&[&pre.contiguous()?, &t], 1)
    }

    /// Per block: (attention output after its residual add, heads' output before proj,
    /// fc1 after GELU, MLP output after its residual add), every token; then the
    /// representation (N, D). `train`: differentiable ops only.
    fn forward_full(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Vec<[Tensor; 4]>, Tensor)> {
        let (t, prefix) = self.embed(x)?;
        let mut t = Self::with_prefix(t, prefix)?;
        let tokens = t.dim(1)?;
        let mut taps = Vec::with_capacity(self.depth);
        for b in &self.blocks {
            let out = b.forward(&t, train)?;
            t = out[3].clone();
            taps.push(out);
        }
        let t = match &self.norm {
            Some(nm) => nm.forward(&t, train)?,
            None => t,
        };
        let rep = match self.pool {
            crate::model::options::VitPool::Avg => {
                let np = self.n_prefix();
                let mean = t.narrow(1, np, tokens - np)?.mean(1)?;
                match &self.fc_norm {
                    Some(fc) => fc.forward(&mean, train)?,
                    None => mean,
                }
            }
            crate::model::options::VitPool::Cls => t.get_on_dim(1, 0)?,
        };
        Ok((taps, rep))
    }

    /// MAE's encoder pass: only the patches `keep` (N, K) u32, indices into the grid,
    /// each image its own) with the prefix tokens; returns every token after the final
    /// norm (N, P + K, D). Differentiable.
    pub fn encode_visible(&self, x: &Tensor, keep: &Tensor) -> candle_core::Result<Tensor> {
        let (t, prefix) = self.embed(x)?;
        let (n, g, d) = t.dims3()?;
        let k = keep.dim(1)?;
        let offsets = Tensor::arange(0u32, n as u32, keep.device())?
            .affine(g as f64, 0.0)?
            .unsqueeze(1)?;
        let rows = keep.broadcast_add(&offsets)?.flatten_all()?;
        let t = t
            .reshape((n * g, d))?
            .index_select(&rows, 0)?
            .reshape((n, k, d))?;
        let mut t = Self::with_prefix(t, prefix)?;
        for b in &self.blocks {
            t = b.forward(&t, true)?[3].clone();
        }
        match &self.norm {
            Some(nm) => nm.forward(&t, true),
            None => Ok(t),
        }
    }

    /// Prefix tokens in front of the patches (class + registers).
    pub fn prefix_tokens(&self) -> usize {
        self.n_prefix()
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn patch(&self) -> usize {
        self.patch
    }

    pub fn grid(&self) -> usize {
        self.grid
    }

    pub fn heads_per_block(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.heads).collect()
    }
}

/// LayerNorm `{prefix}.{weight,bias}` of `width`; `None` when optional and absent.
pub(crate) fn load_norm(
    ckpt: &Checkpoint,
    prefix: &str,
    width: usize,
    used: &mut Vec<String>,
    required: bool,
) -> Result<Option<Norm>> {
    let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
    if !required && !ckpt.contains(&wn) {
        return Ok(None);
    }
    let weight = ckpt.get_shaped(&wn, &[width])?.clone();
    let bias = ckpt.get_shaped(&bn, &[width])?.clone();
    used.push(wn);
    used.push(bn);
    Ok(Some(Norm { weight, bias }))
}

/// Linear `{prefix}.weight` (out, `din`) with an optional bias.
pub(crate) fn load_linear(
    ckpt: &Checkpoint,
    prefix: &str,
    din: usize,
    used: &mut Vec<String>,
) -> Result<Linear> {
    let path = ckpt.path.display();
    let wn = format!("{prefix}.weight");
    let weight = ckpt.get(&wn)?.clone();
    if weight.rank() != 2 || weight.dim(1)? != din {
        bail!(
            "{path}: `{wn}` has shape {:?}, expected (out, {din})",
            weight.dims()
        );
    }
    used.push(wn);
    let bn = format!("{prefix}.bias");
    let bias = match ckpt.tensors.get(&bn) {
        Some(b) => {
            if b.dims() != [weight.dim(0)?] {
                bail!(
                    "{path}: `{bn}` has shape {:?}, expected [{}]",
                    b.dims(),
                    weight.dim(0)?
                );
            }
            used.push(bn);
            Some(b.clone())
        }
        None => None,
    };
    Ok(Linear { weight, bias })
}

/// The transformer block `b` (`blocks.3`, or `decoder_blocks.0` for an MAE decoder) of a
/// residual stream of `width` with `heads` attention heads.
pub(crate) fn load_block(
    ckpt: &Checkpoint,
    b: &str,
    width: usize,
    heads: usize,
    used: &mut Vec<String>,
) -> Result<Block> {
    let path = ckpt.path.display();
    let qkv = load_linear(ckpt, &format!("{b}.attn.qkv"), width, used)?;
    let pw = ckpt.get(&format!("{b}.attn.proj.weight"))?;
    let inner = if pw.rank() == 2 { pw.dim(1)? } else { width };
    if qkv.weight.dim(0)? != 3 * inner {
        bail!(
            "{path}: `{b}.attn.qkv.weight` has {} rows, expected 3 x width = {} (width {inner}: the columns of `{b}.attn.proj.weight`)",
            qkv.weight.dim(0)?,
            3 * inner
        );
    }
    if inner == 0 || heads == 0 || inner % heads != 0 {
        bail!("{path}: {heads} attention heads do not divide the width {inner} of `{b}.attn.qkv.weight`");
    }
    if ckpt.contains(&format!("{b}.mlp.w12.weight")) {
        bail!(
            "{path}: `{b}.mlp.w12.weight` is a SwiGLU MLP (Meta's ViT-g); memprune's ViT reads the GELU MLP (`{b}.mlp.fc1`, `{b}.mlp.fc2`)"
        );
    }
    let proj = load_linear(ckpt, &format!("{b}.attn.proj"), inner, used)?;
    let fc1 = load_linear(ckpt, &format!("{b}.mlp.fc1"), width, used)?;
    let hidden = fc1.weight.dim(0)?;
    if hidden == 0 {
        bail!("{path}: `{b}.mlp.fc1.weight` has no rows: an MLP needs at least one hidden unit");
    }
    let fc2 = load_linear(ckpt, &format!("{b}.mlp.fc2"), hidden, used)?;
    for (n, l) in [("attn.proj", &proj), ("mlp.fc2", &fc2)] {
        if l.weight.dim(0)? != width {
            bail!(
                "{path}: `{b}.{n}.weight` has shape {:?}, expected {width} rows (the width)",
                l.weight.dims()
            );
        }
    }
    let ls = |k: usize, used: &mut Vec<String>| -> Result<Option<Tensor>> {
        let n = format!("{b}.ls{k}.gamma");
        match ckpt.tensors.get(&n) {
            Some(_) => {
                used.push(n.clone());
                Ok(Some(ckpt.get_shaped(&n, &[width])?.clone()))
            }
            None => Ok(None),
        }
    };
    let ls1 = ls(1, used)?;
    let ls2 = ls(2, used)?;
    Ok(Block {
        norm1: load_norm(ckpt, &format!("{b}.norm1"), width, used, true)?.expect("required"),
        qkv,
        proj,
        ls1,
        norm2: load_norm(ckpt, &format!("{b}.norm2"), width, used, true)?.expect("required"),
        fc1,
        fc2,
        ls2,
        heads,
        inner,
    })
}

impl Block {
    /// (the attention sub-layer's output after its residual add, the heads' output before
    /// `proj`, fc1 after GELU, the block's output), every token. `train`: differentiable
    /// ops only (candle's fused softmax and LayerNorm have no backward).
    pub(crate) fn forward(&self, t: &Tensor, train: bool) -> candle_core::Result<[Tensor; 4]> {
        let (n, tokens, _) = t.dims3()?;
        let hd = self.inner / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let y = self.norm1.forward(t, train)?;
        let qkv = self
            .qkv
            .forward(&y)?
            .reshape((n, tokens, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = q.matmul(&k.t()?)?;
        let att = if train {
            crate::model::vit_ops::softmax_last_dim(&att)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        };
        let heads = att
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, tokens, self.inner))?;
        let mut a = self.proj.forward(&heads)?;
        if let Some(g) = &self.ls1 {
            a = a.broadcast_mul(g)?;
        }
        let t = (t + a)?;
        let hid = self
            .fc1
            .forward(&self.norm2.forward(&t, train)?)?
            .gelu_erf()?;
        let mut m = self.fc2.forward(&hid)?;
        if let Some(g) = &self.ls2 {
            m = m.broadcast_mul(g)?;
        }
        let out = (&t + m)?;
        Ok([t, heads, hid, out])
    }
}

/// timm's `resample_abs_pos_embed` on the grid part: `F.interpolate(mode='bicubic',
/// antialias=True, align_corners=False)` from (g0, g0) to (g1, g1), separable; PyTorch's
/// antialiased bicubic uses the cubic kernel with a = -0.5, support widened by the scale
/// when shrinking, and weights normalised per output.
fn resample_grid(grid: &Tensor, g0: usize, g1: usize) -> candle_core::Result<Tensor> {
    let d = grid.dim(1)?;
    let w = aa_weights(g0, g1);
    // (g1, g0) weights as a matrix; out = W @ grid(g0, g0*d) then along the other axis.
    let wm: Vec<f32> = w.iter().flatten().map(|&v| v as f32).collect();
    let wt = Tensor::from_vec(wm, (g1, g0), grid.device())?;
    let x = grid.reshape((g0, g0 * d))?; // rows: y
    let x = wt.matmul(&x)?; // (g1, g0*d)
    let x = x
        .reshape((g1, g0, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((g0, g1 * d))?;
    let x = wt.matmul(&x)?; // (g1 [x], g1 [y] * d)
    x.reshape((g1, g1, d))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((g1 * g1, d))
}

fn aa_weights(n_in: usize, n_out: usize) -> Vec<Vec<f64>> {
    let scale = n_in as f64 / n_out as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let cubic = |x: f64| -> f64 {
        let a = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    (0..n_out)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5).floor().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).floor() as usize).min(n_in);
            let mut row = vec![0f64; n_in];
            let mut total = 0.0;
            for (j, r) in row.iter_mut().enumerate().take(xmax).skip(xmin) {
                let v = cubic((j as f64 - center + 0.5) * invscale);
                *r = v;
                total += v;
            }
            if total != 0.0 {
                row.iter_mut().for_each(|v| *v /= total);
            }
            row
        })
        .collect()
}

/// `blocks.C.I.rest` (Meta's chunked name of block `I` in chunk `C`) as `(C, I, rest)`.
fn chunked_name(name: &str) -> Option<(usize, usize, &str)> {
    let mut it = name.strip_prefix("blocks.")?.splitn(3, '.');
    let c = it.next()?.parse().ok()?;
    let i = it.next()?.parse().ok()?;
    Some((c, i, it.next()?))
}

/// Meta's DINOv2 with `block_chunks > 0` (its training checkpoints) keeps the blocks in
/// chunks, block `I` of chunk `C` named `blocks.C.I.*` (`I` the block's index in the whole
/// network; chunk `C` holds blocks `C*k .. (C+1)*k` for `k = depth // block_chunks`). Those
/// names become the flat `blocks.I.*` memprune reads; `stored_names` keeps the file's, so a
/// rewrite writes chunked names back. A checkpoint that mixes both forms, or puts a block in
/// another chunk than that rule gives, is refused naming the tensor.
pub fn unchunk_blocks(mut ckpt: Checkpoint) -> Result<Checkpoint> {
    let path = ckpt.path.display().to_string();
    let Some(first) = ckpt
        .tensors
        .keys()
        .find(|k| chunked_name(k).is_some())
        .cloned()
    else {
        return Ok(ckpt);
    };
    if let Some(flat) = ckpt
        .tensors
        .keys()
        .find(|k| k.starts_with("blocks.") && chunked_name(k).is_none())
    {
        bail!(
            "{path}: `{flat}` is a flat block name but `{first}` is a chunked one (Meta's `blocks.CHUNK.BLOCK.*`): the checkpoint mixes both"
        );
    }
    let mut in_chunk0: Vec<usize> = ckpt
        .tensors
        .keys()
        .filter_map(|k| chunked_name(k))
        .filter(|&(c, _, _)| c == 0)
        .map(|(_, i, _)| i)
        .collect();
    in_chunk0.sort_unstable();
    in_chunk0.dedup();
    let per_chunk = in_chunk0.len();
    if per_chunk == 0 {
        bail!(
            "{path}: chunked block names (`{first}`), but chunk 0 (`blocks.0.*.*`) holds no block"
        );
    }
    for k in ckpt.tensors.keys() {
        if let Some((c, i, _)) = chunked_name(k) {
            if c != i / per_chunk {
                bail!(
                    "{path}: `{k}` puts block {i} in chunk {c}, but chunk 0 holds {per_chunk} blocks, so block {i} belongs in chunk {} (Meta's chunking: depth // block_chunks blocks a chunk, in order)",
                    i / per_chunk
                );
            }
        }
    }
    let flat = |k: String| -> String {
        match chunked_name(&k) {
            Some((_, i, rest)) => format!("blocks.{i}.{rest}"),
            None => k,
        }
    };
    ckpt.tensors = std::mem::take(&mut ckpt.tensors)
        .into_iter()
        .map(|(k, t)| (flat(k), t))
        .collect();
    ckpt.stored = std::mem::take(&mut ckpt.stored)
        .into_iter()
        .map(|(k, t)| (flat(k), t))
        .collect();
    ckpt.stored_names = std::mem::take(&mut ckpt.stored_names)
        .into_iter()
        .map(|(k, n)| (flat(k), n))
        .collect();
    Ok(ckpt)
}

/// The ViT family: detected by `patch_embed.proj.weight` and `pos_embed`.
pub struct VitFamily;

impl Family for VitFamily {
    fn matches(&self, ckpt: &Checkpoint) -> bool {
        Vit::matches(ckpt)
    }

    fn normalize(&self, ckpt: Checkpoint) -> Result<Checkpoint> {
        unchunk_blocks(ckpt)
    }

    fn load(&self, ckpt: &Checkpoint, opts: &crate::model::LoadOptions) -> Result<Box<dyn Net>> {
        Ok(Box::new(Vit::load(ckpt, opts)?))
    }

    fn expects(&self) -> &'static str {
        "a timm-layout ViT (`patch_embed.proj.weight`, `pos_embed`, `blocks.0.attn.qkv.weight`)"
    }
}

fn select_tokens(t: &Tensor, tokens: Tokens) -> candle_core::Result<Tensor> {
    match tokens {
        Tokens::All => Ok(t.clone()),
        Tokens::Cls => t.get_on_dim(1, 0),
    }
}

impl Net for Vit {
    fn arch_id(&self) -> &'static str {
        "vit"
    }

    fn describe(&self) -> String {
        let mlp = if self.mlp_hidden.iter().all(|&m| m == self.mlp_hidden[0]) {
            self.mlp_hidden[0].to_string()
        } else {
            format!("{:?}", self.mlp_hidden)
        };
        let heads_from = self.heads_from.describe();
        let n_reg = self.registers.as_ref().map(|r| r.dims()[0]).unwrap_or(0);
        let mut extras = Vec::new();
        if self.blocks.iter().any(|b| b.ls1.is_some()) {
            extras.push("LayerScale".to_string());
        }
        if n_reg > 0 {
            extras.push(format!("{n_reg} registers"));
        }
        if self.blocks[0].qkv.bias.is_none() {
            extras.push("qkv without bias".to_string());
        }
        if self.pool == crate::model::options::VitPool::Avg {
            extras.push(match self.fc_norm {
                Some(_) => "fc_norm (mean of patch tokens)".to_string(),
                None => "pool: mean of patch tokens".to_string(),
            });
        }
        if self.fc_norm.is_some() && self.pool == crate::model::options::VitPool::Cls {
            extras.push("pool: class token (fc_norm unused)".to_string());
        }
        let heads = if self.blocks.iter().all(|b| b.heads == self.heads) {
            self.heads.to_string()
        } else {
            format!(
                "{:?}",
                self.blocks.iter().map(|b| b.heads).collect::<Vec<_>>()
            )
        };
        format!(
            "vit (depth {}, width {}, mlp {mlp}, {heads} heads {heads_from}, patch {}, grid {}x{}{}{})",
            self.depth,
            self.width,
            self.patch,
            self.grid,
            self.grid,
            if extras.is_empty() { "" } else { ", " },
            extras.join(", ")
        )
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn input_size(&self) -> Option<(usize, String)> {
        let (g, p) = (self.grid, self.patch);
        Some((
            g * p,
            format!("the ViT's position embedding: a {g}x{g} grid of {p}-pixel patches"),
        ))
    }

    fn layers(&self) -> Vec<Layer> {
        let mut v = Vec::new();
        for (i, (h, blk)) in self.mlp_hidden.iter().zip(&self.blocks).enumerate() {
            let b = format!("block{}", i + 1);
            v.push(Layer::new(
                &format!("{b}.attn"),
                LayerKind::Attention,
                self.width,
            ));
            if self.sub_layers_only {
                v.push(Layer::new(&format!("{b}.mlp"), LayerKind::Mlp, self.width));
                continue;
            }
            v.push(Layer::new(
                &format!("{b}.heads"),
                LayerKind::AttentionHeads,
                blk.heads,
            ));
            v.push(Layer::new(&format!("{b}.fc1"), LayerKind::MlpHidden, *h));
            v.push(Layer::new(&format!("{b}.mlp"), LayerKind::Mlp, self.width));
        }
        // The class token after LayerNorm (or fc_norm of the patch mean): signed, no floor.
        v.push(Layer::new("pool", LayerKind::Pool, self.width).with_floor(ActFloor::Unbounded));
        v
    }

    fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>> {
        let train = matches!(mode, Mode::Train(_));
        let (blocks, rep) = self.forward_full(x, train)?;
        let mut v = Vec::with_capacity(blocks.len() * 4 + 1);
        for [attn, heads, hid, mlp] in blocks {
            let taps = if self.sub_layers_only {
                vec![attn, mlp]
            } else {
                vec![attn, heads, hid, mlp]
            };
            for t in taps {
                v.push(select_tokens(&t, self.tokens)?);
            }
        }
        v.push(rep);
        Ok(v)
    }

    fn unit_acts(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let (blocks, rep) = self.forward_full(x, false)?;
        let mut v = Vec::with_capacity(blocks.len() * 4 + 1);
        for ([attn, heads, hid, mlp], b) in blocks.into_iter().zip(&self.blocks) {
            let (n, t, _) = heads.dims3()?;
            v.push(attn.mean(1)?);
            if self.sub_layers_only {
                v.push(mlp.mean(1)?);
                continue;
            }
            let norms = heads
                .reshape((n, t, b.heads, b.inner / b.heads))?
                .sqr()?
                .sum(D::Minus1)?
                .sqrt()?
                .mean(1)?;
            v.push(norms);
            v.push(hid.mean(1)?);
            v.push(mlp.mean(1)?);
        }
        v.push(rep);
        Ok(v)
    }

    fn used_tensors(&self) -> Vec<String> {
        self.used.clone()
    }

    fn params(&self) -> usize {
        let mut n = self.patch_w.elem_count()
            + self.patch_b.as_ref().map(|b| b.elem_count()).unwrap_or(0)
            + self.cls_token.as_ref().map(|t| t.elem_count()).unwrap_or(0)
            + self.registers.as_ref().map(|t| t.elem_count()).unwrap_or(0)
            + self.pos_embed.elem_count();
        let lin = |l: &Linear| {
            l.weight.elem_count() + l.bias.as_ref().map(|b| b.elem_count()).unwrap_or(0)
        };
        for b in &self.blocks {
            n += 4 * self.width + lin(&b.qkv) + lin(&b.proj) + lin(&b.fc1) + lin(&b.fc2);
            n += b.ls1.as_ref().map(|_| self.width).unwrap_or(0);
            n += b.ls2.as_ref().map(|_| self.width).unwrap_or(0);
        }
        n + 2
            * self.width
            * (usize::from(self.norm.is_some()) + usize::from(self.fc_norm.is_some()))
    }

    /// The attention scores of the block with the most heads (tokens x tokens each), or
    /// the widest MLP's hidden tokens.
    fn forward_peak(&self, size: usize) -> u128 {
        let g = (size / self.patch) as u128;
        let t = g * g + self.n_prefix() as u128;
        let heads = self.heads_per_block().into_iter().max().unwrap_or(1) as u128;
        let mlp = self
            .mlp_hidden
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.width) as u128;
        (t.saturating_mul(t).saturating_mul(heads)).max(t * mlp)
    }

    fn macs(&self, size: usize) -> u64 {
        let g = (size / self.patch) as u64;
        let patches = g * g;
        let t = patches + self.n_prefix() as u64;
        let d = self.width as u64;
        let mut m = patches * d * (self.in_channels * self.patch * self.patch) as u64;
        for (b, &h) in self.blocks.iter().zip(&self.mlp_hidden) {
            let (h, a) = (h as u64, b.inner as u64);
            m += t * d * 3 * a + 2 * t * t * a + t * a * d + 2 * t * d * h;
        }
        m
    }

    /// Per block, the heads (their strided rows of each third of `qkv`, their columns of
    /// `proj`) and the MLP neurons (fc1's rows, fc2's columns); and the whole residual
    /// stream, one group tying every tensor that writes to or reads from it.
    fn coupling_groups(&self, mut heads: Vec<Slice>) -> Vec<CouplingGroup> {
        let mut stream = CouplingGroup {
            name: "stream".into(),
            channels: self.width,
            taps: vec![],
            producers: vec![Slice::plain("patch_embed.proj.weight", 0)],
            carried: vec![],
            consumers: vec![],
            inexact: Some(
                "the residual stream: every LayerNorm normalises over all its channels, so removing some changes the others".into(),
            ),
        };
        let has = |n: &str| self.used.iter().any(|u| u == n);
        for n in ["patch_embed.proj.bias"] {
            if has(n) {
                stream.producers.push(Slice::plain(n, 0));
            }
        }
        for n in ["cls_token", "reg_token", "register_tokens", "pos_embed"] {
            if has(n) {
                stream.producers.push(Slice::plain(n, 2));
            }
        }
        let mut groups = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            let name = format!("block{}", i + 1);
            let hd = b.inner / b.heads;
            let mut hg = CouplingGroup {
                name: format!("{name}.heads"),
                channels: b.heads,
                taps: vec![format!("{name}.heads")],
                producers: vec![Slice::strided(format!("{p}.attn.qkv.weight"), 0, 3, hd)],
                carried: vec![],
                consumers: vec![Slice::strided(format!("{p}.attn.proj.weight"), 1, 1, hd)],
                inexact: None,
            };
            if b.qkv.bias.is_some() {
                hg.producers
                    .push(Slice::strided(format!("{p}.attn.qkv.bias"), 0, 3, hd));
            }
            groups.push(hg);
            let mut mg = CouplingGroup {
                name: format!("{name}.fc1"),
                channels: b.fc1.weight.dims()[0],
                taps: vec![format!("{name}.fc1")],
                producers: vec![Slice::plain(format!("{p}.mlp.fc1.weight"), 0)],
                carried: vec![],
                consumers: vec![Slice::plain(format!("{p}.mlp.fc2.weight"), 1)],
                inexact: None,
            };
            if b.fc1.bias.is_some() {
                mg.producers
                    .push(Slice::plain(format!("{p}.mlp.fc1.bias"), 0));
            }
            groups.push(mg);
            stream.taps.push(format!("{name}.attn"));
            stream.taps.push(format!("{name}.mlp"));
            for n in ["norm1", "norm2"] {
                for s in ["weight", "bias"] {
                    stream.carried.push(Slice::plain(format!("{p}.{n}.{s}"), 0));
                }
            }
            for (n, l, ls) in [("attn.proj", &b.proj, "ls1"), ("mlp.fc2", &b.fc2, "ls2")] {
                stream
                    .producers
                    .push(Slice::plain(format!("{p}.{n}.weight"), 0));
                if l.bias.is_some() {
                    stream
                        .producers
                        .push(Slice::plain(format!("{p}.{n}.bias"), 0));
                }
                if has(&format!("{p}.{ls}.gamma")) {
                    stream
                        .carried
                        .push(Slice::plain(format!("{p}.{ls}.gamma"), 0));
                }
            }
            stream
                .consumers
                .push(Slice::plain(format!("{p}.attn.qkv.weight"), 1));
            stream
                .consumers
                .push(Slice::plain(format!("{p}.mlp.fc1.weight"), 1));
        }
        for n in ["norm", "fc_norm"] {
            if has(&format!("{n}.weight")) {
                for s in ["weight", "bias"] {
                    stream.carried.push(Slice::plain(format!("{n}.{s}"), 0));
                }
            }
        }
        stream.taps.push("pool".into());
        stream.consumers.append(&mut heads);
        groups.insert(0, stream);
        groups
    }

    fn trainable_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut v = vec![(
            "embed".to_string(),
            self.used
                .iter()
                .filter(|n| {
                    !n.starts_with("blocks.")
                        && !n.starts_with("norm.")
                        && !n.starts_with("fc_norm.")
                })
                .cloned()
                .collect(),
        )];
        for i in 0..self.depth {
            let p = format!("blocks.{i}.");
            let name = format!("block{}", i + 1);
            let of = |parts: &[&str]| -> Vec<String> {
                self.used
                    .iter()
                    .filter(|n| {
                        n.strip_prefix(&p)
                            .map(|r| parts.iter().any(|q| r.starts_with(q)))
                            .unwrap_or(false)
                    })
                    .cloned()
                    .collect()
            };
            v.push((format!("{name}.attn"), of(&["norm1.", "attn.", "ls1."])));
            v.push((format!("{name}.mlp"), of(&["norm2.", "mlp.", "ls2."])));
        }
        v.push((
            "norm".to_string(),
            self.used
                .iter()
                .filter(|n| n.starts_with("norm.") || n.starts_with("fc_norm."))
                .cloned()
                .collect(),
        ));
        v
    }

    fn widths(&self) -> Vec<usize> {
        let mut v = vec![self.width];
        v.extend(&self.mlp_hidden);
        v
    }

    /// `memprune.heads`: the heads of every block after the removal, so that the rewritten
    /// file loads with the right head width whatever the flags.
    fn rewrite_metadata(
        &self,
        removed: &[(String, usize)],
    ) -> std::collections::BTreeMap<String, String> {
        let heads: Vec<String> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let gone: usize = removed
                    .iter()
                    .filter(|(g, _)| *g == format!("block{}.heads", i + 1))
                    .map(|(_, n)| n)
                    .sum();
                (b.heads - gone).to_string()
            })
            .collect();
        [(keys::HEADS.to_string(), heads.join(","))].into()
    }

    fn native_size(&self) -> (usize, String) {
        (
            self.grid * self.patch,
            format!(
                "the position embedding's {0}x{0} grid x patch {1}",
                self.grid, self.patch
            ),
        )
    }

    fn heads_guessed(&self, what: &str) -> Option<String> {
        (self.heads_from == HeadsFrom::Guess).then(|| {
            crate::model::vit_heads::guess_refusal(&self.path, self.width, self.heads, what)
        })
    }

    fn patch_encoder(&self) -> Option<&dyn crate::model::patch_encoder::PatchEncoder> {
        Some(self)
    }

    fn clone_box(&self) -> Box<dyn Net> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
