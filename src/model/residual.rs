//! The residual join of a ResNet basic block, `relu(y + skip)`, as one pass over memory
//! (candle's add and ReLU are two, each with a fresh tensor).
//!
//! Same bits as `(y + skip).relu()`: the sum rounds once and candle's ReLU is
//! `max(v, 0)`, as here. Other devices and dtypes use those two candle ops.

use crate::model::conv::{cpu_slice, with_f32};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `relu(y + skip)` for tensors of one shape. Differentiable in both.
pub fn add_relu(y: &Tensor, skip: &Tensor) -> Result<Tensor> {
    let fast = y.device().is_cpu()
        && y.dtype() == DType::F32
        && skip.dtype() == DType::F32
        && y.dims() == skip.dims();
    if !fast {
        return (y + skip)?.relu();
    }
    y.contiguous()?.apply_op2(&skip.contiguous()?, AddRelu)
}

struct AddRelu;

/// Elements per parallel task: small joins stay on one thread.
const CHUNK: usize = 1 << 14;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "memprune-add-relu"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu_slice(s1, l1)?, cpu_slice(s2, l2)?);
        if a.len() != b.len() {
            candle_core::bail!("add_relu: {} and {} elements", a.len(), b.len());
        }
        // Written into the new vector's uninitialised memory (not a zeroed buffer filled
        // in): one pass over the output instead of two.
        let mut out: Vec<f32> = Vec::with_capacity(a.len());
        out.spare_capacity_mut()[..a.len()]
            .par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| {
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    o.write((a + b).max(0.0));
                }
            });
        // SAFETY: every element of 0..a.len() was written above (the chunks cover it).
        unsafe { out.set_len(a.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(
        &self,
        y: &Tensor,
        skip: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both inputs get `grad · [y + skip >= 0]`, candle's ReLU gradient, to the bit.
        let g = with_f32(y, |a| {
            with_f32(skip, |b| {
                with_f32(grad, |gr| {
                    a.iter()
                        .zip(b)
                        .zip(gr)
                        .map(|((a, b), g)| g * if a + b >= 0.0 { 1.0 } else { 0.0 })
                        .collect::<Vec<f32>>()
                })
            })
        })???;
        let g = Tensor::from_vec(g, res.shape(), res.device())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn the_join_is_add_then_relu_bit_for_bit_and_in_its_gradients() {
        let dev = Device::Cpu;
        let y = Var::randn(0f32, 1., (3, 5, 7, 9), &dev).unwrap();
        // Some sums exactly 0, where the ReLU's gradient convention shows.
        let s = Var::from_tensor(
            &(y.as_tensor().neg().unwrap()
                * Tensor::randn(0f32, 1., (3, 5, 7, 9), &dev)
                    .unwrap()
                    .ge(0.0)
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap())
            .unwrap()
            .add(
                &Tensor::randn(0f32, 1., (3, 5, 7, 9), &dev)
                    .unwrap()
                    .ge(0.5)
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let fused = super::add_relu(y.as_tensor(), s.as_tensor()).unwrap();
        let plain = (y.as_tensor() + s.as_tensor()).unwrap().relu().unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.into_iter().map(f32::to_bits).collect()
        };
        assert_eq!(bits(&fused), bits(&plain));
        let r = Tensor::randn(0f32, 1., fused.shape(), &dev).unwrap();
        let g1 = (&fused * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&plain * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&y, &s] {
            let a = g1.get(v.as_tensor()).unwrap();
            let b = g2.get(v.as_tensor()).unwrap();
            assert_eq!(bits(a), bits(b));
        }
    }
}
