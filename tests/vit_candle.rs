//! memprune's ViT against candle-transformers' DINOv2 (`candle_transformers::models::dinov2`,
//! ViT-S/14: depth 12, width 384, 6 heads, MLP 1536, LayerScale, 518x518 images, a 37x37
//! grid plus the class token), on the same seeded random weights written once in timm's
//! layout (which candle-transformers reads too) and loaded by both. Compared: the final
//! features, the class token after the final norm and the mean of the patch tokens after
//! it (memprune's `--pool cls` and `--pool avg`; candle-transformers' classifier input).
//!
//! The images are 518x518, candle-transformers' native size: at other sizes it resamples
//! the position embedding by nearest neighbour, memprune (as timm) bicubically; that
//! deliberate difference is not compared.
//!
//! candle-transformers departs from Meta's DINOv2 (and timm, and memprune) in two places:
//! its LayerNorms use eps 1e-5 (Meta: 1e-6) and its MLP the tanh approximation of GELU
//! (Meta: the exact erf, nn.GELU()). On unit-scale activations these two move the final
//! features by about 2e-4 of their scale, above the 1e-4 the parity tests hold. So the
//! test writes the same network by hand with plain candle ops (conv2d patch embedding,
//! LayerNorm and softmax spelled out), either way, and checks the chain:
//! candle-transformers = by hand with tanh GELU and eps 1e-5 (to 1e-5); memprune = by hand
//! with erf GELU and eps 1e-6 (every block's output and both features, to 1e-4); and the
//! direct memprune / candle-transformers gap equals what those two choices move (to 1e-5),
//! so nothing else differs. Measured (x86-64, release): 7e-7, 8e-7, gap 1.92e-4 against
//! 1.92e-4.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;
use memprune::model::options::VitPool;
use memprune::model::{Encoder, LoadOptions};
use std::collections::HashMap;

mod common;
use common::tensors::rel_err_1;

/// Deterministic numbers (splitmix64), uniform in [lo, hi).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (lo + (hi - lo) * self.next()) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

const DEPTH: usize = 12;
const WIDTH: usize = 384;
const MLP: usize = 4 * WIDTH;
const GRID: usize = 37;
const PATCH: usize = 14;
const HEADS: usize = 6;

/// ViT-S/14 in timm's names with seeded weights: matrices uniform with variance 1/fan_in
/// (tokens of unit scale), LayerNorm weights in [0.5, 1.5], LayerScale in [0.5, 1], other
/// vectors in [-0.2, 0.2]; and candle-transformers' classifier `head` (1000 x 768) set to
/// copy its input (the concatenated class token and patch mean) into its first 768 outputs.
fn weights() -> HashMap<String, Tensor> {
    let mut r = Rng(20240610);
    let mut t = HashMap::new();
    let mut mat = |r: &mut Rng, name: String, shape: &[usize]| {
        let fan_in: usize = shape[1..].iter().product();
        let a = (3.0 / fan_in as f64).sqrt();
        t.insert(name, r.uniform(shape, -a, a));
    };
    mat(
        &mut r,
        "patch_embed.proj.weight".into(),
        &[WIDTH, 3, PATCH, PATCH],
    );
    for i in 0..DEPTH {
        let b = format!("blocks.{i}");
        mat(&mut r, format!("{b}.attn.qkv.weight"), &[3 * WIDTH, WIDTH]);
        mat(&mut r, format!("{b}.attn.proj.weight"), &[WIDTH, WIDTH]);
        mat(&mut r, format!("{b}.mlp.fc1.weight"), &[MLP, WIDTH]);
        mat(&mut r, format!("{b}.mlp.fc2.weight"), &[WIDTH, MLP]);
    }
    let mut vec = |name: String, n: usize, lo: f64, hi: f64| {
        t.insert(name, r.uniform(&[n], lo, hi));
    };
    vec("patch_embed.proj.bias".into(), WIDTH, -0.2, 0.2);
    for i in 0..DEPTH {
        let b = format!("blocks.{i}");
        for n in ["norm1", "norm2"] {
            vec(format!("{b}.{n}.weight"), WIDTH, 0.5, 1.5);
            vec(format!("{b}.{n}.bias"), WIDTH, -0.2, 0.2);
        }
        vec(format!("{b}.attn.qkv.bias"), 3 * WIDTH, -0.2, 0.2);
        vec(format!("{b}.attn.proj.bias"), WIDTH, -0.2, 0.2);
        vec(format!("{b}.mlp.fc1.bias"), MLP, -0.2, 0.2);
        vec(format!("{b}.mlp.fc2.bias"), WIDTH, -0.2, 0.2);
        vec(format!("{b}.ls1.gamma"), WIDTH, 0.5, 1.0);
        vec(format!("{b}.ls2.gamma"), WIDTH, 0.5, 1.0);
    }
    vec("norm.weight".into(), WIDTH, 0.5, 1.5);
    vec("norm.bias".into(), WIDTH, -0.2, 0.2);
    t.insert("cls_token".into(), r.uniform(&[1, 1, WIDTH], -1.0, 1.0));
    t.insert(
        "pos_embed".into(),
        r.uniform(&[1, GRID * GRID + 1, WIDTH], -0.5, 0.5),
    );
    let copy = Tensor::cat(
        &[
            Tensor::eye(2 * WIDTH, DType::F32, &Device::Cpu).unwrap(),
            Tensor::zeros((1000 - 2 * WIDTH, 2 * WIDTH), DType::F32, &Device::Cpu).unwrap(),
        ],
        0,
    )
    .unwrap();
    t.insert("head.weight".into(), copy);
    t.insert(
        "head.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    t
}

/// The network written out with plain candle tensor ops (conv2d patch embedding, LayerNorm
/// and softmax by hand), GELU exact (erf) or tanh-approximated, LayerNorm eps `eps`:
/// every block's output (all tokens), the class token after the final norm and the mean
/// of the patch tokens after it.
fn by_hand(
    w: &HashMap<String, Tensor>,
    x: &Tensor,
    exact_gelu: bool,
    eps: f64,
) -> candle_core::Result<(Vec<Tensor>, Tensor, Tensor)> {
    let ln = |x: &Tensor, p: &str| -> candle_core::Result<Tensor> {
        let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        c.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(&w[&format!("{p}.weight")])?
            .broadcast_add(&w[&format!("{p}.bias")])
    };
    let lin = |x: &Tensor, p: &str| -> candle_core::Result<Tensor> {
        x.broadcast_matmul(&w[&format!("{p}.weight")].t()?)?
            .broadcast_add(&w[&format!("{p}.bias")])
    };
    let n = x.dim(0)?;
    let hd = WIDTH / HEADS;
    let patches = x
        .conv2d(&w["patch_embed.proj.weight"], 0, PATCH, 1, 1)?
        .flatten_from(2)?
        .transpose(1, 2)?
        .broadcast_add(&w["patch_embed.proj.bias"])?;
    let cls = w["cls_token"].broadcast_as((n, 1, WIDTH))?;
    let mut t = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&w["pos_embed"])?;
    let tokens = t.dim(1)?;
    let mut outs = Vec::new();
    for i in 0..DEPTH {
        let b = format!("blocks.{i}");
        let qkv = lin(&ln(&t, &format!("{b}.norm1"))?, &format!("{b}.attn.qkv"))?
            .reshape((n, tokens, 3, HEADS, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let s = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let e = s.broadcast_sub(&s.max_keepdim(D::Minus1)?)?.exp()?;
        let a = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let o = a.matmul(&v)?.transpose(1, 2)?.reshape((n, tokens, WIDTH))?;
        let o = lin(&o, &format!("{b}.attn.proj"))?.broadcast_mul(&w[&format!("{b}.ls1.gamma")])?;
        t = (t + o)?;
        let h = lin(&ln(&t, &format!("{b}.norm2"))?, &format!("{b}.mlp.fc1"))?;
        let h = if exact_gelu { h.gelu_erf()? } else { h.gelu()? };
        let m = lin(&h, &format!("{b}.mlp.fc2"))?.broadcast_mul(&w[&format!("{b}.ls2.gamma")])?;
        t = (t + m)?;
        outs.push(t.clone());
    }
    let t = ln(&t, "norm")?;
    let cls = t.get_on_dim(1, 0)?;
    let avg = t.narrow(1, 1, tokens - 1)?.mean(1)?;
    Ok((outs, cls, avg))
}

#[test]
fn final_features_match_candle_transformers_dinov2() {
    let w = weights();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dinov2_vits14.safetensors");
    candle_core::safetensors::save(&w, &path).unwrap();
    let x = Rng(7).uniform(&[1, 3, GRID * PATCH, GRID * PATCH], -2.0, 2.0);

    // candle-transformers: its head copies [class token, patch mean] (after the norm).
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
    let theirs = candle_transformers::models::dinov2::vit_small(vb)
        .unwrap()
        .forward(&x)
        .unwrap();
    let (cls_theirs, avg_theirs) = (
        theirs.narrow(1, 0, WIDTH).unwrap(),
        theirs.narrow(1, WIDTH, WIDTH).unwrap(),
    );

    // memprune, the class token (the default pool here) and the patch mean (--pool avg).
    let enc = Encoder::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(
        enc.describe(),
        "vit (depth 12, width 384, mlp 1536, 6 heads from the table of published ViTs (ViT-S: timm vit_small, DeiT-S, DINO, DINOv2 ViT-S/14), patch 14, grid 37x37, LayerScale)"
    );
    assert_eq!(enc.unused, ["head.bias", "head.weight"]);
    let taps = enc.forward_taps(&x).unwrap();
    let cls_ours = taps.last().unwrap().clone();
    let avg_enc = Encoder::load(
        &path,
        &LoadOptions {
            pool: Some(VitPool::Avg),
            ..Default::default()
        },
    )
    .unwrap();
    let avg_ours = avg_enc.features(&x).unwrap();

    // 1. The hand-written network with candle-transformers' GELU (tanh) and eps (1e-5) is
    //    candle-transformers' network: it validates the hand-written one.
    let (_, cls_t, avg_t) = by_hand(&w, &x, false, 1e-5).unwrap();
    let e1 = rel_err_1(&cls_t, &cls_theirs).max(rel_err_1(&avg_t, &avg_theirs));
    // 2. With Meta's GELU (erf) and eps (1e-6), it is memprune's, every block and both
    //    final features to 1e-4 of the scale.
    let (blocks, cls_e, avg_e) = by_hand(&w, &x, true, 1e-6).unwrap();
    let mut e2 = rel_err_1(&cls_ours, &cls_e).max(rel_err_1(&avg_ours, &avg_e));
    for (i, want) in blocks.iter().enumerate() {
        let k = enc
            .layers
            .iter()
            .position(|l| l.name == format!("block{}.mlp", i + 1))
            .unwrap();
        e2 = e2.max(rel_err_1(&taps[k], want));
    }
    // 3. memprune against candle-transformers directly: apart by those two choices only.
    let e3 = rel_err_1(&cls_ours, &cls_theirs).max(rel_err_1(&avg_ours, &avg_theirs));
    // What the two choices alone move: the hand-written network both ways.
    let e_choices = rel_err_1(&cls_e, &cls_t).max(rel_err_1(&avg_e, &avg_t));
    eprintln!(
        "final features, error of the scale: candle-transformers vs by hand (tanh GELU, eps 1e-5) {e1:e}; \
         memprune vs by hand (erf GELU, eps 1e-6; blocks too) {e2:e}; \
         memprune vs candle-transformers {e3:e}; by hand erf/1e-6 vs tanh/1e-5 {e_choices:e}"
    );
    assert!(e1 <= 1e-5, "candle-transformers vs by hand: {e1:e}");
    assert!(e2 <= 1e-4, "memprune vs by hand: {e2:e}");
    // The direct gap is the two choices' (which are of order 1e-4 here), to 1e-5.
    assert!((e3 - e_choices).abs() <= 1e-5, "{e3:e} vs {e_choices:e}");
    assert!(e3 <= 1e-3, "memprune vs candle-transformers: {e3:e}");
}
