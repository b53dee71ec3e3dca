//! Training losses: SimCLR's NT-Xent, SimSiam's symmetric negative cosine, cross-entropy.

use candle_core::{DType, Result, Tensor, D};

/// Rows scaled to unit L2 norm (with a small floor, as `F.normalize`'s eps = 1e-12).
pub fn l2_normalize(z: &Tensor) -> Result<Tensor> {
    let norm = z
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    z.broadcast_div(&norm)
}

/// NT-Xent (SimCLR, Chen et al. 2020): `z1[i]` and `z2[i]` are the two views of image `i`
/// (N x d each). With the 2N normalised embeddings `u`, `s_ij = u_i . u_j / t`, the loss of
/// anchor `i` with positive `p(i)` is `-log(exp(s_ip) / sum_{k != i} exp(s_ik))` (the positive
/// and the 2N - 2 negatives), averaged over all 2N anchors (both directions).
pub fn nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = z1.dim(0)?;
    let u = l2_normalize(&Tensor::cat(&[z1, z2], 0)?)?;
    let sim = (u.matmul(&u.t()?)? / temperature)?;
    // Exclude the anchor itself: a large negative on the diagonal.
    let mask = (Tensor::eye(2 * n, DType::F32, z1.device())? * 1e9)?;
    let lse = sim.broadcast_sub(&mask)?.log_sum_exp(1)?;
    let u1 = u.narrow(0, 0, n)?;
    let u2 = u.narrow(0, n, n)?;
    let pos = ((&u1 * &u2)?.sum(1)? / temperature)?;
    let pos = Tensor::cat(&[&pos, &pos], 0)?;
    (lse - pos)?.mean_all()
}

/// `-cos(p, stopgrad(z))` averaged over the batch.
pub fn neg_cosine(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    let p = l2_normalize(p)?;
    let z = l2_normalize(&z.detach())?;
    (p * z)?.sum(1)?.mean_all()?.neg()
}

/// SimSiam's symmetric loss (Chen & He 2021): `D(p1, z2) / 2 + D(p2, z1) / 2` with the
/// stop-gradient on `z`.
pub fn simsiam(p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
    (neg_cosine(p1, z2)? + neg_cosine(p2, z1)?)? * 0.5
}

/// Mean cross-entropy of `logits` (N x C) against `labels` (N, u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}
