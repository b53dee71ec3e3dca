//! torchvision-layout ResNets (resnet18/34/50/101/152 and any depth or width), with the
//! ImageNet stem (7x7 stride-2 conv, max-pool) or the CIFAR stem of solo-learn and lightly
//! (3x3 stride-1 conv, no max-pool).
//!
//! Names as torchvision's: `conv1.weight`, `bn1.*`, `layer{s}.{j}.conv{1,2[,3]}.weight`,
//! `layer{s}.{j}.bn{1,2[,3]}.*`, `layer{s}.{j}.downsample.{0,1}.*`; or the numbered names of
//! lightly's backbone, `nn.Sequential(*list(resnet.children())[:-1])` ([`sequential_names`]),
//! read as those and written back as they were. BasicBlock or
//! Bottleneck is told by `layer1.0.conv3.weight`, blocks per stage by counting names, widths
//! by shapes. As in torchvision, the first block of every stage after the first has stride 2
//! (on conv1 for BasicBlock, on conv2 for Bottleneck, the "v1.5" placement).
//!
//! Taps, in forward order: `conv1` (after bn1 + ReLU, and the max-pool for the ImageNet
//! stem), then per block `layer{s}.{j}.conv1` (and `.conv2` for Bottleneck) after BN + ReLU,
//! then `layer{s}.{j}`: the block output after the residual add and the final ReLU; last
//! `pool`, the global average pool.

use crate::checkpoint::Checkpoint;
use crate::model::conv::ConvParams;
use crate::model::conv_bn::{ConvBn, Mode};
use crate::model::coupling::{conv_bn_producer, conv_consumer, CouplingGroup, Slice};
use crate::model::family::{Family, Layer, LayerKind, Net};
pub use crate::model::options::Stem;
use anyhow::{bail, Result};
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

#[derive(Debug, Clone)]
pub struct Block {
    /// `layer{s}.{j}`
    pub name: String,
    /// conv1, conv2 (, conv3) in order.
    pub convs: Vec<ConvBn>,
    pub downsample: Option<ConvBn>,
}

impl Block {
    pub fn out_channels(&self) -> usize {
        self.convs.last().map(|c| c.out_channels()).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    pub stem: Stem,
    pub block_kind: BlockKind,
    pub conv1: ConvBn,
    /// stages[s][j] is `layer{s+1}.{j}`.
    pub stages: Vec<Vec<Block>>,
    pub in_channels: usize,
}

impl ResNet {
    pub fn matches(ckpt: &Checkpoint) -> bool {
        ckpt.contains("conv1.weight") && ckpt.contains("layer1.0.conv1.weight")
    }

    /// Reads the network; `stem` overrides the detection by conv1's kernel size.
    pub fn load(ckpt: &Checkpoint, stem: Option<Stem>) -> Result<ResNet> {
        let path = ckpt.path.display();
        let w1 = ckpt.get("conv1.weight")?;
        if w1.dims().len() != 4 {
            bail!(
                "{path}: `conv1.weight` has shape {:?}, expected a 4-d conv weight",
                w1.dims()
            );
        }
        let k = w1.dims()[2];
        let stem = stem.unwrap_or(if k >= 5 { Stem::Imagenet } else { Stem::Cifar });
        let stride = if stem == Stem::Imagenet { 2 } else { 1 };
        let in_channels = w1.dims()[1];
        let conv1 = ConvBn::load(
            ckpt,
            "conv1.weight",
            "bn1",
            in_channels,
            ConvParams {
                stride,
                padding: k / 2,
                dilation: 1,
                groups: 1,
            },
        )?;
        let block_kind = if ckpt.contains("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        check_kernel(ckpt, &conv1)?;
        check_stages(ckpt)?;
        let mut stages = Vec::new();
        let mut cin = conv1.out_channels();
        let mut s = 1;
        while ckpt.contains(&format!("layer{s}.0.conv1.weight")) {
            let mut blocks = Vec::new();
            let mut j = 0;
            while ckpt.contains(&format!("layer{s}.{j}.conv1.weight")) {
                let stride = if s > 1 && j == 0 { 2 } else { 1 };
                let b = load_block(ckpt, s, j, cin, stride, block_kind)?;
                cin = b.out_channels();
                blocks.push(b);
                j += 1;
            }
            stages.push(blocks);
            s += 1;
        }
        Ok(ResNet {
            stem,
            block_kind,
            conv1,
            stages,
            in_channels,
        })
    }

    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.stages.iter().flatten()
    }

    pub fn layers(&self) -> Vec<Layer> {
        let mut v = vec![Layer::new(
            "conv1",
            LayerKind::ConvBlock,
            self.conv1.out_channels(),
        )];
        for b in self.blocks() {
            let n = b.convs.len();
            for (i, c) in b.convs[..n - 1].iter().enumerate() {
                v.push(Layer::new(
                    &format!("{}.conv{}", b.name, i + 1),
                    LayerKind::ConvBlock,
                    c.out_channels(),
                ));
            }
            v.push(Layer::new(
                &b.name,
                LayerKind::ResidualSum,
                b.out_channels(),
            ));
        }
        let last = self
            .blocks()
            .last()
            .map(|b| b.out_channels())
            .unwrap_or(self.conv1.out_channels());
        v.push(Layer::new("pool", LayerKind::Pool, last));
        v
    }

    fn stem_forward(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward(x, true, mode)?;
        match self.stem {
            // torchvision's MaxPool2d(3, 2, padding=1), through memprune's pool: candle's
            // backward refuses a kernel other than the stride, so training failed here.
            Stem::Imagenet => crate::model::pool::max_pool2d(&y, 3, 2, 1),
            Stem::Cifar => Ok(y),
        }
    }

    /// Forward returning every tap, in [`ResNet::layers`] order.
    pub fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>> {
        let mut taps = Vec::new();
        self.forward_taps_each(x, mode, &mut |_, t| {
            taps.push(t);
            Ok(())
        })?;
        Ok(taps)
    }

    /// Forward handing every tap, in [`ResNet::layers`] order, to `each(index, tap)` as soon
    /// as it is computed.
    pub fn forward_taps_each(
        &self,
        x: &Tensor,
        mode: &mut Mode,
        each: &mut dyn FnMut(usize, Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        let mut i = 0;
        let mut tap = |t: &Tensor| -> candle_core::Result<()> {
            i += 1;
            each(i - 1, t.clone())
        };
        let mut h = self.stem_forward(x, mode)?;
        tap(&h)?;
        for b in self.blocks() {
            let n = b.convs.len();
            let mut y = h.clone();
            for c in &b.convs[..n - 1] {
                y = c.forward(&y, true, mode)?;
                tap(&y)?;
            }
            let y = b.convs[n - 1].forward(&y, false, mode)?;
            let skip = match &b.downsample {
                Some(d) => d.forward(&h, false, mode)?,
                None => h.clone(),
            };
            h = crate::model::residual::add_relu(&y, &skip)?;
            tap(&h)?;
        }
        tap(&h.mean((2, 3))?)
    }
}

fn load_block(
    ckpt: &Checkpoint,
    s: usize,
    j: usize,
    cin: usize,
    stride: usize,
    kind: BlockKind,
) -> Result<Block> {
    let name = format!("layer{s}.{j}");
    let p = |stride: usize, k: usize| ConvParams {
        stride,
        padding: k / 2,
        dilation: 1,
        groups: 1,
    };
    let n = if kind == BlockKind::Bottleneck { 3 } else { 2 };
    let mut convs: Vec<ConvBn> = Vec::new();
    let mut c = cin;
    for i in 1..=n {
        let wname = format!("{name}.conv{i}.weight");
        let k = ckpt.get(&wname)?.dims().get(2).copied().unwrap_or(0);
        let conv_stride = match kind {
            BlockKind::Basic if i == 1 => stride,
            BlockKind::Bottleneck if i == 2 => stride,
            _ => 1,
        };
        let cb = ConvBn::load(ckpt, &wname, &format!("{name}.bn{i}"), c, p(conv_stride, k))?;
        check_kernel(ckpt, &cb)?;
        c = cb.out_channels();
        convs.push(cb);
    }
    if kind == BlockKind::Basic && ckpt.contains(&format!("{name}.conv3.weight")) {
        bail!(
            "{}: `{name}.conv3.weight` found in a BasicBlock network (layer1.0 has no conv3)",
            ckpt.path.display()
        );
    }
    let downsample = if ckpt.contains(&format!("{name}.downsample.0.weight")) {
        Some(ConvBn::load(
            ckpt,
            &format!("{name}.downsample.0.weight"),
            &format!("{name}.downsample.1"),
            cin,
            p(stride, 1),
        )?)
    } else {
        None
    };
    let out = convs[n - 1].out_channels();
    match &downsample {
        Some(d) if d.out_channels() != out => {
            bail!("{}: `{name}.downsample.0.weight` gives {} channels but the block gives {out}", ckpt.path.display(), d.out_channels())
        }
        None if cin != out || stride != 1 => bail!(
            "{}: `{name}` changes the shape ({cin} -> {out} channels, stride {stride}) but has no downsample tensors",
            ckpt.path.display()
        ),
        _ => {}
    }
    Ok(Block {
        name,
        convs,
        downsample,
    })
}

/// torchvision's convs are square with an odd side (7 or 3 in the stem, 3 or 1 in blocks,
/// 1 in downsamples) and pad by half of it; any other kernel would change the feature map's
/// size and break the residual adds, so it is refused with its name.
fn check_kernel(ckpt: &Checkpoint, c: &ConvBn) -> Result<()> {
    let d = c.weight.dims();
    if d[2] != d[3] || d[2].is_multiple_of(2) {
        bail!(
            "{}: tensor `{}` has shape {d:?}: a torchvision ResNet's kernels are square with an odd side",
            ckpt.path.display(),
            c.conv_name
        );
    }
    Ok(())
}

/// Stages `layer1..layerS` and the blocks `layerS.0..layerS.J` of each must have no gaps:
/// the loader stops at the first missing one, so a gap would otherwise load as a shorter
/// network with the rest called unused.
fn check_stages(ckpt: &Checkpoint) -> Result<()> {
    let mut blocks: std::collections::BTreeMap<usize, std::collections::BTreeSet<usize>> =
        Default::default();
    for name in ckpt.tensors.keys() {
        let Some(rest) = name.strip_prefix("layer") else {
            continue;
        };
        let mut parts = rest.splitn(3, '.');
        let (Some(s), Some(j)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let (Ok(s), Ok(j)) = (s.parse::<usize>(), j.parse::<usize>()) {
            blocks.entry(s).or_default().insert(j);
        }
    }
    let path = ckpt.path.display();
    for (k, (&s, js)) in blocks.iter().enumerate() {
        if s != k + 1 {
            bail!("{path}: tensors of `layer{s}` but none of `layer{}`: a torchvision ResNet's stages are layer1, layer2, ... without a gap", k + 1);
        }
        for (i, &j) in js.iter().enumerate() {
            if j != i {
                bail!("{path}: tensors of `layer{s}.{j}` but none of `layer{s}.{i}`: a stage's blocks are numbered 0, 1, ... without a gap");
            }
        }
    }
    Ok(())
}

/// lightly's documented way to make a backbone, `nn.Sequential(*list(resnet.children())[:-1])`
/// of a torchvision ResNet, numbers torchvision's children: `0` conv1, `1` bn1, `2` relu and
/// `3` maxpool (no tensors), `4`.. the stages, then avgpool (no tensors). When the names are
/// that (a conv weight at `0`, a BatchNorm at `1`, then consecutive numbers each holding
/// `N.0.conv1.weight`, and no other number), the prefixes to read them under: (`0.`,
/// `conv1.`), (`1.`, `bn1.`), (`4.`, `layer1.`), ... Shapes decide, not the positions: a
/// Sequential without the max-pool numbers its stages from 3.
pub fn sequential_names(ckpt: &Checkpoint) -> Option<Vec<(String, String)>> {
    if ckpt.contains("conv1.weight") {
        return None;
    }
    let mut by_index: std::collections::BTreeMap<usize, Vec<&str>> = Default::default();
    for name in ckpt.tensors.keys() {
        let Some((first, rest)) = name.split_once('.') else {
            continue;
        };
        if let Ok(i) = first.parse::<usize>() {
            by_index.entry(i).or_default().push(rest);
        }
    }
    let conv = by_index.get(&0)?;
    let conv_ok = conv.iter().all(|r| matches!(*r, "weight" | "bias"))
        && ckpt.tensors.get("0.weight").is_some_and(|t| t.rank() == 4);
    let bn = by_index.get(&1)?;
    let bn_ok = ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .all(|r| bn.contains(r))
        && bn.iter().all(|r| {
            matches!(
                *r,
                "weight" | "bias" | "running_mean" | "running_var" | "num_batches_tracked"
            )
        });
    if !conv_ok || !bn_ok {
        return None;
    }
    let stages: Vec<usize> = by_index.keys().copied().filter(|&i| i > 1).collect();
    let first = *stages.first()?;
    let consecutive = stages.iter().enumerate().all(|(k, &i)| i == first + k);
    let blocks = stages
        .iter()
        .all(|i| ckpt.contains(&format!("{i}.0.conv1.weight")));
    if !consecutive || !blocks {
        return None;
    }
    let mut map = vec![
        ("0.".to_string(), "conv1.".to_string()),
        ("1.".to_string(), "bn1.".to_string()),
    ];
    for (k, i) in stages.iter().enumerate() {
        map.push((format!("{i}."), format!("layer{}.", k + 1)));
    }
    Some(map)
}

/// The checkpoint with lightly's numbered names (see [`sequential_names`]) read as
/// torchvision's, the file's names kept in `stored_names` and the mapping in `notes`.
fn rename_sequential(mut ckpt: Checkpoint, map: &[(String, String)]) -> Result<Checkpoint> {
    let rename = |k: &str| -> String {
        for (from, to) in map {
            if let Some(rest) = k.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        k.to_string()
    };
    for k in ckpt.tensors.keys() {
        let new = rename(k);
        if new != *k && ckpt.tensors.contains_key(&new) {
            bail!(
                "{}: `{k}` would be read as `{new}`, which the checkpoint also holds",
                ckpt.path.display()
            );
        }
    }
    ckpt.tensors = std::mem::take(&mut ckpt.tensors)
        .into_iter()
        .map(|(k, t)| (rename(&k), t))
        .collect();
    ckpt.stored = std::mem::take(&mut ckpt.stored)
        .into_iter()
        .map(|(k, t)| (rename(&k), t))
        .collect();
    ckpt.stored_names = std::mem::take(&mut ckpt.stored_names)
        .into_iter()
        .map(|(k, n)| (rename(&k), n))
        .collect();
    let stages = &map[2..];
    let (first, last) = (&stages[0], &stages[stages.len() - 1]);
    ckpt.notes.push(format!(
        "an nn.Sequential of a torchvision ResNet's children (lightly's backbone): `0` read as conv1, `1` as bn1, `{}`..`{}` as layer1..{}",
        first.0.trim_end_matches('.'),
        last.0.trim_end_matches('.'),
        last.1.trim_end_matches('.')
    ));
    Ok(ckpt)
}

/// The torchvision ResNet family: detected by `conv1.weight` and `layer1.0.conv1.weight`, or
/// by lightly's numbered names of the same network.
pub struct ResNetFamily;

impl Family for ResNetFamily {
    fn matches(&self, ckpt: &Checkpoint) -> bool {
        ResNet::matches(ckpt) || sequential_names(ckpt).is_some()
    }

    fn normalize(&self, ckpt: Checkpoint) -> Result<Checkpoint> {
        match sequential_names(&ckpt) {
            Some(map) => rename_sequential(ckpt, &map),
            None => Ok(ckpt),
        }
    }

    fn load(&self, ckpt: &Checkpoint, opts: &crate::model::LoadOptions) -> Result<Box<dyn Net>> {
        Ok(Box::new(ResNet::load(ckpt, opts.stem)?))
    }

    fn expects(&self) -> &'static str {
        "a torchvision ResNet (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`; or lightly's nn.Sequential of its children: `0.weight`, `1.*`, `4.0.conv1.weight`)"
    }
}

impl ResNet {
    fn all_convs(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.conv1).chain(
            self.blocks()
                .flat_map(|b| b.convs.iter().chain(b.downsample.iter())),
        )
    }

    /// The side of the feature map after the stem, for an input of side `size`.
    fn stem_out_size(&self, size: usize) -> usize {
        let s = self.conv1.out_size(size);
        match self.stem {
            Stem::Imagenet => (s + 2 - 3) / 2 + 1,
            Stem::Cifar => s,
        }
    }
}

impl Net for ResNet {
    fn arch_id(&self) -> &'static str {
        "resnet"
    }

    fn describe(&self) -> String {
        let counts: Vec<usize> = self.stages.iter().map(|s| s.len()).collect();
        let per_block = if self.block_kind == BlockKind::Basic {
            2
        } else {
            3
        };
        let depth = counts.iter().sum::<usize>() * per_block + 2;
        let kind = match self.block_kind {
            BlockKind::Basic => "basic",
            BlockKind::Bottleneck => "bottleneck",
        };
        let stem = match self.stem {
            Stem::Imagenet => "imagenet",
            Stem::Cifar => "cifar",
        };
        format!("resnet{depth} ({kind} blocks {counts:?}, {stem} stem)")
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn input_size(&self) -> Option<(usize, String)> {
        (self.stem == Stem::Imagenet).then(|| (224, "an ImageNet-stem ResNet's input size".into()))
    }

    fn layers(&self) -> Vec<Layer> {
        ResNet::layers(self)
    }

    fn forward_taps(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Vec<Tensor>> {
        ResNet::forward_taps(self, x, mode)
    }

    fn forward_taps_each(
        &self,
        x: &Tensor,
        mode: &mut Mode,
        each: &mut dyn FnMut(usize, Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        ResNet::forward_taps_each(self, x, mode, each)
    }

    fn used_tensors(&self) -> Vec<String> {
        self.all_convs().flat_map(|c| c.tensor_names()).collect()
    }

    fn params(&self) -> usize {
        self.all_convs().map(|c| c.params()).sum()
    }

    fn native_size(&self) -> (usize, String) {
        match self.stem {
            Stem::Imagenet => (224, "ImageNet stem: ImageNet's 224x224".into()),
            Stem::Cifar => (32, "CIFAR stem: CIFAR's 32x32".into()),
        }
    }

    fn macs(&self, size: usize) -> u64 {
        let mut total = self.conv1.macs(size);
        let mut s = self.stem_out_size(size);
        for b in self.blocks() {
            let mut t = s;
            for c in &b.convs {
                total += c.macs(t);
                t = c.out_size(t);
            }
            if let Some(d) = &b.downsample {
                total += d.macs(s);
            }
            s = t;
        }
        total
    }

    /// The residual stream of each stage (from the stem or the stage's downsample to the
    /// stage's last block) is one group; each block's inner convs (conv1, and conv2 of a
    /// Bottleneck) are groups of their own.
    fn coupling_groups(&self, heads: Vec<Slice>) -> Vec<CouplingGroup> {
        let new_group = |name: String, channels: usize, taps: Vec<String>, producer: &ConvBn| {
            let mut g = CouplingGroup {
                name,
                channels,
                taps,
                producers: vec![],
                carried: vec![],
                consumers: vec![],
                inexact: None,
            };
            conv_bn_producer(&mut g, producer);
            g
        };
        let mut groups = Vec::new();
        let n_stages = self.stages.len();
        let mut stream = new_group(
            "stem".into(),
            self.conv1.out_channels(),
            vec!["conv1".into()],
            &self.conv1,
        );
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                // The block reads the stream: its conv1 and, where present, its downsample.
                stream.consumers.push(conv_consumer(&block.convs[0]));
                if let Some(d) = &block.downsample {
                    stream.consumers.push(conv_consumer(d));
                    groups.push(stream);
                    stream = new_group(format!("stage{}", s + 1), block.out_channels(), vec![], d);
                }
                let n = block.convs.len();
                for k in 0..n - 1 {
                    let mut g = new_group(
                        format!("{}.conv{}", block.name, k + 1),
                        block.convs[k].out_channels(),
                        vec![format!("{}.conv{}", block.name, k + 1)],
                        &block.convs[k],
                    );
                    g.consumers.push(conv_consumer(&block.convs[k + 1]));
                    groups.push(g);
                }
                conv_bn_producer(&mut stream, &block.convs[n - 1]);
                stream.taps.push(block.name.clone());
            }
            if s + 1 == n_stages {
                stream.taps.push("pool".into());
            }
        }
        stream.consumers.extend(heads);
        groups.push(stream);
        // Stream groups were pushed when they ended; order all by their first tap's position.
        let order: Vec<String> = ResNet::layers(self).into_iter().map(|l| l.name).collect();
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

    fn trainable_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut v = vec![("conv1".to_string(), vec![self.conv1.conv_name.clone()])];
        for b in self.blocks() {
            let n = b.convs.len();
            for (k, c) in b.convs[..n - 1].iter().enumerate() {
                v.push((
                    format!("{}.conv{}", b.name, k + 1),
                    vec![c.conv_name.clone()],
                ));
            }
            let mut own = vec![b.convs[n - 1].conv_name.clone()];
            own.extend(b.downsample.iter().map(|d| d.conv_name.clone()));
            v.push((b.name.clone(), own));
        }
        v
    }

    fn widths(&self) -> Vec<usize> {
        self.stages
            .iter()
            .map(|s| s[0].convs[0].out_channels())
            .collect()
    }

    fn conv_bns(&self) -> Vec<&ConvBn> {
        self.all_convs().collect()
    }

    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        std::iter::once(&mut self.conv1)
            .chain(
                self.stages
                    .iter_mut()
                    .flatten()
                    .flat_map(|b| b.convs.iter_mut().chain(b.downsample.iter_mut())),
            )
            .collect()
    }

    fn clone_box(&self) -> Box<dyn Net> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
