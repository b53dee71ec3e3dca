//! memprune's own ResNet9: 8 conv-BN-ReLU blocks, max-pool inside blocks 2, 5 and 6,
//! residual sums Res2 = out(2) + out(4) and Res6 = out(6) + out(8), global average pool.
//! (The authors' ResNet9 differs: a conv bias, a pool after the first block too, and a final
//! 2x2 max-pool; it is [`crate::model::resnet9_authors`], a [`Layout`] of this file's
//! network.)
//!
//! Tensor names (also those of `examples/resnet9.py`):
//! `block{i}.conv.weight` (no bias) and `block{i}.bn.{weight,bias,running_mean,running_var}`
//! for i = 1..8. Widths are read from the shapes (the paper's are 32, 64, 64, 64, 128, 256,
//! 256, 256), so a checkpoint whose channels were pruned loads as it is. Res2 and Res6 tie
//! blocks 2 and 4, and blocks 6 and 8, to equal widths.
//!
//! Taps, in forward order: block1, block2, block3, block4, res2, block5, block6, block7,
//! block8, res6, pool. A block's tap is its output as the network passes it on: after
//! BatchNorm and ReLU, and after the max-pool in blocks 2, 5 and 6.

use crate::checkpoint::Checkpoint;
use crate::model::conv::ConvParams;
use crate::model::conv_bn::{ConvBn, Mode};
use crate::model::coupling::{conv_bn_producer, conv_consumer, CouplingGroup, Slice};
use crate::model::family::{Family, Layer, LayerKind, Net};
use anyhow::{bail, Result};
use candle_core::Tensor;

/// Blocks (1-based) followed by a 2x2 max-pool.
pub const POOLED_BLOCKS: [usize; 3] = [2, 5, 6];

/// A ResNet9 variant: 8 conv-BN-ReLU blocks, sums out(2) + out(4) and out(6) + out(8); what
/// differs is named here.
#[derive(Debug)]
pub struct Layout {
    /// `Net::arch_id`.
    pub id: &'static str,
    /// Module prefix of each block, also its layer name.
    pub blocks: [&'static str; 8],
    /// The BatchNorm's name inside a block (`{block}.{bn}.weight`).
    pub bn: &'static str,
    /// Whether each conv has a bias (`{block}.conv.bias`).
    pub conv_bias: bool,
    /// Blocks (1-based) followed by a 2x2 max-pool.
    pub pooled: &'static [usize],
    /// Layer names of the two residual sums.
    pub sums: [&'static str; 2],
    /// The representation: a 2x2 max-pool then flatten (true), or the global mean.
    pub final_max_pool: bool,
}

/// memprune's ResNet9.
pub static MEMPRUNE: Layout = Layout {
    id: "resnet9",
    blocks: [
        "block1", "block2", "block3", "block4", "block5", "block6", "block7", "block8",
    ],
    bn: "bn",
    conv_bias: false,
    pooled: &POOLED_BLOCKS,
    sums: ["res2", "res6"],
    final_max_pool: false,
};

#[derive(Debug, Clone)]
pub struct ResNet9 {
    /// blocks[0] is block1.
    pub blocks: Vec<ConvBn>,
    pub in_channels: usize,
    pub layout: &'static Layout,
}

impl ResNet9 {
    /// True when the checkpoint has ResNet9's names.
    pub fn matches(ckpt: &Checkpoint) -> bool {
        ckpt.contains("block1.conv.weight")
    }

    pub fn load(ckpt: &Checkpoint) -> Result<ResNet9> {
        ResNet9::load_layout(ckpt, &MEMPRUNE)
    }

    /// Reads a checkpoint of `layout`'s names.
    pub fn load_layout(ckpt: &Checkpoint, layout: &'static Layout) -> Result<ResNet9> {
        let name = |i: usize| layout.blocks[i - 1];
        let p = ConvParams {
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
        };
        let first = ckpt.get(&format!("{}.conv.weight", name(1)))?;
        if first.dims().len() != 4 {
            bail!(
                "{}: `{}.conv.weight` has shape {:?}, expected a 4-d conv weight",
                ckpt.path.display(),
                name(1),
                first.dims()
            );
        }
        let in_channels = first.dims()[1];
        let mut blocks: Vec<ConvBn> = Vec::with_capacity(8);
        for i in 1..=8 {
            // Block 5 reads Res2, blocks 3/4 read block 2/3, block 7 reads block 6, etc.
            let cin = if i == 1 {
                in_channels
            } else {
                blocks[i - 2].out_channels()
            };
            let n = name(i);
            let mut b = ConvBn::load(
                ckpt,
                &format!("{n}.conv.weight"),
                &format!("{n}.{}", layout.bn),
                cin,
                p,
            )?;
            if layout.conv_bias {
                b = b.with_conv_bias(ckpt, &format!("{n}.conv.bias"))?;
            }
            if b.kernel() != 3 || b.weight.dims()[3] != 3 {
                bail!(
                    "{}: `{n}.conv.weight` has shape {:?}, expected 3x3 kernels",
                    ckpt.path.display(),
                    b.weight.dims()
                );
            }
            blocks.push(b);
        }
        for (a, b, sum) in [(2, 4, layout.sums[0]), (6, 8, layout.sums[1])] {
            let (ca, cb) = (blocks[a - 1].out_channels(), blocks[b - 1].out_channels());
            let (na, nb) = (name(a), name(b));
            if ca != cb {
                bail!("{}: {sum} adds {na} ({ca} channels) and {nb} ({cb} channels): widths must match", ckpt.path.display());
            }
        }
        if layout.id == MEMPRUNE.id && ckpt.contains("block9.conv.weight") {
            bail!(
                "{}: found `block9.conv.weight`: ResNet9 has 8 blocks",
                ckpt.path.display()
            );
        }
        Ok(ResNet9 {
            blocks,
            in_channels,
            layout,
        })
    }

    pub fn layers(&self) -> Vec<Layer> {
        let w = |i: usize| self.blocks[i - 1].out_channels();
        let block = |i: usize| Layer::new(self.layout.blocks[i - 1], LayerKind::ConvBlock, w(i));
        let [s1, s2] = self.layout.sums;
        vec![
            block(1),
            block(2),
            block(3),
            block(4),
            Layer::new(s1, LayerKind::ResidualSum, w(2)),
            block(5),
            block(6),
            block(7),
            block(8),
            Layer::new(s2, LayerKind::ResidualSum, w(6)),
            Layer::new("pool", LayerKind::Pool, w(6)),
        ]
    }

    fn block(&self, i: usize, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let b = &self.blocks[i - 1];
        if self.layout.pooled.contains(&i) {
            b.forward_max_pool2(x, true, mode)
        } else {
            b.forward(x, true, mode)
        }
    }

    /// Forward returning every tap, in [`ResNet9::layers`] order.
    pub fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>> {
        let o1 = self.block(1, x, mode)?;
        let o2 = self.block(2, &o1, mode)?;
        let o3 = self.block(3, &o2, mode)?;
        let o4 = self.block(4, &o3, mode)?;
        let res2 = (&o2 + &o4)?;
        let o5 = self.block(5, &res2, mode)?;
        let o6 = self.block(6, &o5, mode)?;
        let o7 = self.block(7, &o6, mode)?;
        let o8 = self.block(8, &o7, mode)?;
        let res6 = (&o6 + &o8)?;
        let pool = if self.layout.final_max_pool {
            // The authors' classifier: MaxPool2d(2), Flatten, Linear(256, classes): the
            // flattened map is the representation only where it is 1x1.
            let (n, c, h, w) = res6.dims4()?;
            if h / 2 != 1 || w / 2 != 1 {
                candle_core::bail!(
                    "{}: the final 2x2 max-pool of a {h}x{w} map gives {}x{}: this ResNet9 reads 32x32 images (32 to 63 pixels a side), as its classifier Linear({c}, classes) does",
                    self.layout.id,
                    h / 2,
                    w / 2
                );
            }
            let m = crate::model::pool::max_pool2d(&res6, 2, 2, 0)?;
            m.reshape((n, c))?
        } else {
            res6.mean((2, 3))?
        };
        Ok(vec![o1, o2, o3, o4, res2, o5, o6, o7, o8, res6, pool])
    }
}

/// The ResNet9 family: detected by `block1.conv.weight`.
pub struct ResNet9Family;

impl Family for ResNet9Family {
    fn matches(&self, ckpt: &Checkpoint) -> bool {
        ResNet9::matches(ckpt)
    }

    fn load(&self, ckpt: &Checkpoint, _opts: &crate::model::LoadOptions) -> Result<Box<dyn Net>> {
        Ok(Box::new(ResNet9::load(ckpt)?))
    }

    fn expects(&self) -> &'static str {
        "memprune's ResNet9 (`block1.conv.weight` .. `block8`)"
    }
}

impl Net for ResNet9 {
    fn arch_id(&self) -> &'static str {
        self.layout.id
    }

    fn describe(&self) -> String {
        self.layout.id.to_string()
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn layers(&self) -> Vec<Layer> {
        ResNet9::layers(self)
    }

    fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>> {
        ResNet9::forward_taps(self, x, mode)
    }

    fn used_tensors(&self) -> Vec<String> {
        self.blocks.iter().flat_map(|c| c.tensor_names()).collect()
    }

    fn params(&self) -> usize {
        self.blocks.iter().map(|c| c.params()).sum()
    }

    fn native_size(&self) -> (usize, String) {
        if self.layout.final_max_pool {
            (32, "its final max-pool: 32x32".into())
        } else if self.in_channels == 1 {
            (28, "1 input channel: Fashion-MNIST's 28x28".into())
        } else {
            (32, "CIFAR's 32x32".into())
        }
    }

    fn macs(&self, size: usize) -> u64 {
        let mut s = size;
        let mut total = 0;
        for (k, b) in self.blocks.iter().enumerate() {
            total += b.macs(s);
            if self.layout.pooled.contains(&(k + 1)) {
                s /= 2;
            }
        }
        total
    }

    fn coupling_groups(&self, heads: Vec<Slice>) -> Vec<CouplingGroup> {
        let b = |i: usize| &self.blocks[i - 1];
        let group = |name: &str, taps: &[&str], producers: &[usize], consumers: Vec<Slice>| {
            let mut g = CouplingGroup {
                name: name.to_string(),
                channels: b(producers[0]).out_channels(),
                taps: taps.iter().map(|t| t.to_string()).collect(),
                producers: vec![],
                carried: vec![],
                consumers,
                inexact: None,
            };
            for &p in producers {
                conv_bn_producer(&mut g, b(p));
            }
            g
        };
        let n = |i: usize| self.layout.blocks[i - 1];
        let single = |i: usize| group(n(i), &[n(i)], &[i], vec![conv_consumer(b(i + 1))]);
        let mut res6_consumers = vec![conv_consumer(b(7))];
        res6_consumers.extend(heads);
        let [s1, s2] = self.layout.sums;
        vec![
            single(1),
            group(
                s1,
                &[n(2), n(4), s1],
                &[2, 4],
                vec![conv_consumer(b(3)), conv_consumer(b(5))],
            ),
            single(3),
            single(5),
            group(s2, &[n(6), n(8), s2, "pool"], &[6, 8], res6_consumers),
            single(7),
        ]
    }

    fn trainable_groups(&self) -> Vec<(String, Vec<String>)> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (self.layout.blocks[i].to_string(), vec![b.conv_name.clone()]))
            .collect()
    }

    fn widths(&self) -> Vec<usize> {
        self.blocks.iter().map(|c| c.out_channels()).collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        self.blocks.iter().collect()
    }

    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        self.blocks.iter_mut().collect()
    }

    fn clone_box(&self) -> Box<dyn Net> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
