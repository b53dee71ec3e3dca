//! Which tensor slices make up a unit, and which units must go together.
//!
//! A unit is one output channel. Pruning channel `c` of a conv means removing row `c` of the
//! tensors that produce it (conv weight, BatchNorm vectors) and column `c` of the tensors that
//! consume it (the next conv's input channels, a downsample, a head reading the pooled
//! features). A residual sum ties channel `c` of every tensor added into it: such channels form
//! one [`CouplingGroup`] and are removed together or not at all. The planner, the rewriter
//! and the MAC counter all read this one description.

use crate::model::encoder::{Arch, Encoder};
use crate::model::resnet::ResNet;
use crate::model::resnet9::ResNet9;
use serde::Serialize;

/// A slice of a tensor along one axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slice {
    pub tensor: String,
    pub axis: usize,
}

/// Channels that exist together: removing channel `c` removes it from every producer
/// (axis 0) and every consumer (axis 1).
#[derive(Debug, Clone, Serialize)]
pub struct CouplingGroup {
    /// The name users select it by: the measured layer whose channels these are (`block1`,
    /// `res2`, `layer1.0.conv1`, `stage1` for a torchvision stage's residual stream).
    pub name: String,
    pub channels: usize,
    /// Measured layers (taps) whose units are these channels; their scores rank the group's
    /// channels (see the planner).
    pub taps: Vec<String>,
    /// Conv + BatchNorm prefixes that produce the channels: (conv weight name, bn prefix).
    pub producers: Vec<(String, String)>,
    /// Tensors reading the channels, sliced along `axis`.
    pub consumers: Vec<Slice>,
}

impl CouplingGroup {
    /// Every tensor slice of the group: producers' conv weights and BatchNorm vectors along
    /// axis 0, consumers along their axis.
    pub fn slices(&self) -> Vec<Slice> {
        let mut v = Vec::new();
        for (conv, bn) in &self.producers {
            v.push(Slice {
                tensor: conv.clone(),
                axis: 0,
            });
            for s in ["weight", "bias", "running_mean", "running_var"] {
                v.push(Slice {
                    tensor: format!("{bn}.{s}"),
                    axis: 0,
                });
            }
        }
        v.extend(self.consumers.iter().cloned());
        v
    }
}

/// Head tensors that read the pooled features (input features on axis 1), when present.
const HEAD_INPUTS: [&str; 3] = ["fc.weight", "projector.0.weight", "predictor.0.weight"];

fn heads(enc: &Encoder) -> Vec<Slice> {
    HEAD_INPUTS
        .iter()
        .filter(|n| {
            enc.checkpoint
                .tensors
                .get(**n)
                .map(|t| t.rank() == 2 && t.dims()[1] == enc.feature_dim())
                .unwrap_or(false)
        })
        .map(|n| Slice {
            tensor: n.to_string(),
            axis: 1,
        })
        .collect()
}

fn producer(conv: &crate::model::conv_bn::ConvBn) -> (String, String) {
    (conv.conv_name.clone(), conv.bn_name.clone())
}

fn consumer(conv: &crate::model::conv_bn::ConvBn) -> Slice {
    Slice {
        tensor: conv.conv_name.clone(),
        axis: 1,
    }
}

/// The coupling groups of an encoder, in forward order.
pub fn coupling_groups(enc: &Encoder) -> Vec<CouplingGroup> {
    match &enc.arch {
        Arch::ResNet9(m) => resnet9_groups(m, heads(enc)),
        Arch::ResNet(m) => resnet_groups(m, heads(enc)),
    }
}

fn resnet9_groups(m: &ResNet9, heads: Vec<Slice>) -> Vec<CouplingGroup> {
    let b = |i: usize| &m.blocks[i - 1];
    let single = |i: usize| CouplingGroup {
        name: format!("block{i}"),
        channels: b(i).out_channels(),
        taps: vec![format!("block{i}")],
        producers: vec![producer(b(i))],
        consumers: vec![consumer(b(i + 1))],
    };
    let mut res6_consumers = vec![consumer(b(7))];
    res6_consumers.extend(heads);
    vec![
        single(1),
        CouplingGroup {
            name: "res2".into(),
            channels: b(2).out_channels(),
            taps: vec!["block2".into(), "block4".into(), "res2".into()],
            producers: vec![producer(b(2)), producer(b(4))],
            consumers: vec![consumer(b(3)), consumer(b(5))],
        },
        single(3),
        single(5),
        CouplingGroup {
            name: "res6".into(),
            channels: b(6).out_channels(),
            taps: vec![
                "block6".into(),
                "block8".into(),
                "res6".into(),
                "pool".into(),
            ],
            producers: vec![producer(b(6)), producer(b(8))],
            consumers: res6_consumers,
        },
        single(7),
    ]
}

/// torchvision ResNets: the residual stream of each stage (from the stem or the stage's
/// downsample to the stage's last block) is one group; each block's inner convs (conv1, and
/// conv2 of a Bottleneck) are groups of their own.
fn resnet_groups(m: &ResNet, heads: Vec<Slice>) -> Vec<CouplingGroup> {
    let mut groups = Vec::new();
    let n_stages = m.stages.len();
    let mut stream = CouplingGroup {
        name: "stem".into(),
        channels: m.conv1.out_channels(),
        taps: vec!["conv1".into()],
        producers: vec![producer(&m.conv1)],
        consumers: vec![],
    };
    for (s, stage) in m.stages.iter().enumerate() {
        for block in stage {
            // The block reads the stream: its conv1 and, where present, its downsample.
            stream.consumers.push(consumer(&block.convs[0]));
            if let Some(d) = &block.downsample {
                stream.consumers.push(consumer(d));
                groups.push(stream);
                stream = CouplingGroup {
                    name: format!("stage{}", s + 1),
                    channels: block.out_channels(),
                    taps: vec![],
                    producers: vec![producer(d)],
                    consumers: vec![],
                };
            }
            let n = block.convs.len();
            for k in 0..n - 1 {
                groups.push(CouplingGroup {
                    name: format!("{}.conv{}", block.name, k + 1),
                    channels: block.convs[k].out_channels(),
                    taps: vec![format!("{}.conv{}", block.name, k + 1)],
                    producers: vec![producer(&block.convs[k])],
                    consumers: vec![consumer(&block.convs[k + 1])],
                });
            }
            stream.producers.push(producer(&block.convs[n - 1]));
            stream.taps.push(block.name.clone());
        }
        if s + 1 == n_stages {
            stream.taps.push("pool".into());
        }
    }
    stream.consumers.extend(heads);
    groups.push(stream);
    // Stream groups were pushed when they ended; order all by their first tap's position.
    let order: Vec<String> = m.layers().into_iter().map(|l| l.name).collect();
    let first = |g: &CouplingGroup| {
        g.taps
            .iter()
            .filter_map(|t| order.iter().position(|o| o == t))
            .min()
            .unwrap_or(usize::MAX)
    };
    groups.sort_by_key(first);
    groups
}

/// MACs of each conv for one image of side `size`, by conv weight name.
pub fn per_conv_macs(enc: &Encoder, size: usize) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    match &enc.arch {
        Arch::ResNet9(m) => {
            let mut s = size;
            for (k, b) in m.blocks.iter().enumerate() {
                v.push((b.conv_name.clone(), b.macs(s)));
                if crate::model::resnet9::POOLED_BLOCKS.contains(&(k + 1)) {
                    s /= 2;
                }
            }
        }
        Arch::ResNet(m) => {
            v.push((m.conv1.conv_name.clone(), m.conv1.macs(size)));
            let mut s = m.conv1.out_size(size);
            if m.stem == crate::model::resnet::Stem::Imagenet {
                s = (s + 2 - 3) / 2 + 1;
            }
            for b in m.blocks() {
                let mut t = s;
                for c in &b.convs {
                    v.push((c.conv_name.clone(), c.macs(t)));
                    t = c.out_size(t);
                }
                if let Some(d) = &b.downsample {
                    v.push((d.conv_name.clone(), d.macs(s)));
                }
                s = t;
            }
        }
    }
    v
}
