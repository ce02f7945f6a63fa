//! torchvision's ResNets (`resnet18` … `resnet152`, and the `resnext` / `wide_resnet` layouts
//! that share their keys): a 7×7 stride-2 stem with a 3×3 stride-2 max pool, four stages of
//! basic or bottleneck blocks (stride on the 3×3, "ResNet v1.5"), global pooling and `fc`.
//!
//! Node and parameter names are torchvision's state-dict keys (`conv1.weight`,
//! `layer2.0.downsample.1.running_var`, `fc.bias`), so a checkpoint loads by name. Padding is
//! PyTorch's symmetric `kernel / 2`, batch-norm ε = 1e-5, and the ImageNet mean/std
//! normalisation is part of the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::builder::{ConvSpec, GraphBuilder, check_stages};
use super::graph::{Graph, Padding, ParamNaming, TapKind};
use super::resnet::BlockKind;
use crate::array::Array;

/// Configuration of a torchvision-layout ResNet; stored in advlens weight files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchResnetConfig {
    /// Input height and width.
    pub image_size: [usize; 2],
    /// Number of classes.
    pub num_classes: usize,
    /// Width of the stem convolution (64 in torchvision).
    pub stem_width: usize,
    /// `planes` of each stage (64, 128, 256, 512 in torchvision).
    pub widths: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks: Vec<usize>,
    /// Basic (ResNet-18/34) or bottleneck (ResNet-50 and deeper) blocks.
    pub block: BlockKind,
    /// Groups of the bottleneck's 3×3 convolution (32 for ResNeXt).
    pub groups: usize,
    /// Width of each group of the bottleneck's inner convolutions at `planes` = 64 (64 for
    /// ResNet, 4 for ResNeXt-50 32×4d, 128 for Wide ResNet-50-2).
    pub width_per_group: usize,
    /// Per-channel mean of the preprocessing, in [0, 1] units.
    pub mean: Vec<f32>,
    /// Per-channel std of the preprocessing.
    pub std: Vec<f32>,
    /// The evaluation resize (shorter side, then a centre crop of `image_size`).
    pub eval_resize: Option<usize>,
}

impl TorchResnetConfig {
    /// torchvision's ResNet-`depth` (18, 34, 50, 101 or 152) for 224×224 ImageNet images.
    pub fn resnet(depth: usize) -> Result<Self, ModelError> {
        let (blocks, block) = match depth {
            18 => (vec![2, 2, 2, 2], BlockKind::Basic),
            34 => (vec![3, 4, 6, 3], BlockKind::Basic),
            50 => (vec![3, 4, 6, 3], BlockKind::Bottleneck),
            101 => (vec![3, 4, 23, 3], BlockKind::Bottleneck),
            152 => (vec![3, 8, 36, 3], BlockKind::Bottleneck),
            d => {
                return Err(ModelError::Architecture(format!(
                    "torchvision has no ResNet-{d} (18, 34, 50, 101, 152)"
                )));
            }
        };
        Ok(Self {
            image_size: [224, 224],
            num_classes: 1000,
            stem_width: 64,
            widths: vec![64, 128, 256, 512],
            blocks,
            block,
            groups: 1,
            width_per_group: 64,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            eval_resize: Some(256),
        })
    }

    fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    fn inner_width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// The model's conventional name (`ResNet-50`, `ResNeXt-50 32×4d`, `Wide ResNet-50-2`).
    pub fn name(&self) -> String {
        let per_block = match self.block {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        };
        let depth = 2 + per_block * self.blocks.iter().sum::<usize>();
        match (self.groups, self.width_per_group) {
            (1, 64) => format!("ResNet-{depth}"),
            (1, w) if w % 64 == 0 => format!("Wide ResNet-{depth}-{}", w / 64),
            (g, w) => format!("ResNeXt-{depth} {g}×{w}d"),
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Architecture(m));
        if self.num_classes == 0 || self.stem_width == 0 {
            return bad("num_classes and stem_width must be positive".into());
        }
        check_stages(self.image_size, &self.widths, &self.blocks)?;
        if self.groups == 0 || self.width_per_group == 0 {
            return bad("groups and width_per_group must be positive".into());
        }
        if self.widths.iter().any(|&p| self.inner_width(p) == 0) {
            return bad("a bottleneck would have no channels".into());
        }
        if self.mean.len() != 3 || self.std.len() != 3 {
            return bad("mean/std need 3 entries".into());
        }
        Ok(())
    }

    /// Builds the graph.
    pub fn build(&self) -> Result<Graph, ModelError> {
        self.check()?;
        let [h, w] = self.image_size;
        let mut b = GraphBuilder::new([3, h, w], self.num_classes).with_naming(ParamNaming::Torch);
        let mut x = b.normalize(
            b.input(),
            vec![0, 1, 2],
            self.mean.clone(),
            self.std.clone(),
        )?;
        x = b.conv("conv1", x, ConvSpec::new(self.stem_width, 7, 2).pad(3))?;
        x = b.bn("bn1", x, false)?;
        x = b.relu("relu", x);
        let one = Padding::Explicit {
            top: 1,
            bottom: 1,
            left: 1,
            right: 1,
        };
        x = b.pool_padded("maxpool", x, 3, 2, true, one)?;
        b.tap("maxpool", x, TapKind::Stem);
        for (s, (&planes, &n)) in self.widths.iter().zip(&self.blocks).enumerate() {
            let layer = format!("layer{}", s + 1);
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let scope = format!("{layer}.{i}");
                x = self.block(&mut b, &scope, x, planes, stride)?;
                b.tap(&scope, x, TapKind::Block);
            }
            b.tap(&layer, x, TapKind::Stage);
        }
        let pooled = b.global_avg_pool("avgpool", x)?;
        let logits = b.linear("fc", pooled, self.num_classes)?;
        b.finish(logits)
    }

    /// One residual block `scope` (`layer2.0`): torchvision's BasicBlock or Bottleneck, with the
    /// `downsample` projection when the shape changes and ReLU after the sum.
    fn block(
        &self,
        b: &mut GraphBuilder,
        scope: &str,
        x: usize,
        planes: usize,
        stride: usize,
    ) -> Result<usize, ModelError> {
        let out = planes * self.expansion();
        let y = match self.block {
            BlockKind::Basic => {
                let y = conv_bn_relu(b, scope, 1, x, ConvSpec::new(planes, 3, stride).pad(1))?;
                let y = b.conv(
                    &format!("{scope}.conv2"),
                    y,
                    ConvSpec::new(planes, 3, 1).pad(1),
                )?;
                b.bn(&format!("{scope}.bn2"), y, false)?
            }
            BlockKind::Bottleneck => {
                let inner = self.inner_width(planes);
                let y = conv_bn_relu(b, scope, 1, x, ConvSpec::new(inner, 1, 1).pad(0))?;
                let spec = ConvSpec::new(inner, 3, stride).pad(1).groups(self.groups);
                let y = conv_bn_relu(b, scope, 2, y, spec)?;
                let y = b.conv(
                    &format!("{scope}.conv3"),
                    y,
                    ConvSpec::new(out, 1, 1).pad(0),
                )?;
                b.bn(&format!("{scope}.bn3"), y, false)?
            }
        };
        let shortcut = if stride != 1 || b.shape(x)[0] != out {
            let s = b.conv(
                &format!("{scope}.downsample.0"),
                x,
                ConvSpec::new(out, 1, stride).pad(0),
            )?;
            b.bn(&format!("{scope}.downsample.1"), s, false)?
        } else {
            x
        };
        let sum = b.add(&format!("{scope}.add"), y, shortcut)?;
        Ok(b.relu(&format!("{scope}.relu"), sum))
    }

    /// Recognises a torchvision ResNet state dict from its keys and shapes (`None` when the keys
    /// are not this family's): block type, stage widths and depths, groups and group width.
    pub fn recognise(tensors: &BTreeMap<String, Array>) -> Option<Result<Self, ModelError>> {
        let stem = tensors.get("conv1.weight")?;
        tensors.get("layer1.0.conv1.weight")?;
        Some(Self::recognise_shapes(tensors, stem.shape()))
    }

    fn recognise_shapes(
        tensors: &BTreeMap<String, Array>,
        stem: &[usize],
    ) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Architecture(format!("torchvision ResNet layout: {m}"));
        let shape = |k: &str| tensors.get(k).map(|a| a.shape().to_vec());
        if stem.len() != 4 || stem[1] != 3 || stem[2] != 7 || stem[3] != 7 {
            return Err(bad(format!(
                "conv1.weight has shape {stem:?}, expected [C, 3, 7, 7]"
            )));
        }
        let block = if tensors.contains_key("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let mut blocks = Vec::new();
        let mut widths = Vec::new();
        let (mut groups, mut width_per_group) = (1, 64);
        for s in 1.. {
            let n = (0..)
                .take_while(|i| tensors.contains_key(&format!("layer{s}.{i}.conv1.weight")))
                .count();
            if n == 0 {
                break;
            }
            let first = |conv: &str| {
                shape(&format!("layer{s}.0.{conv}.weight"))
                    .filter(|v| v.len() == 4)
                    .ok_or_else(|| bad(format!("layer{s}.0.{conv}.weight is missing or not 4-D")))
            };
            let planes = match block {
                BlockKind::Basic => first("conv2")?[0],
                BlockKind::Bottleneck => {
                    let (c1, c2, c3) = (first("conv1")?, first("conv2")?, first("conv3")?);
                    let inner = c1[0];
                    let planes = c3[0] / 4;
                    if c2[1] == 0 || inner % c2[1] != 0 || planes == 0 {
                        return Err(bad(format!(
                            "layer{s}.0 has conv shapes {c1:?}, {c2:?}, {c3:?}"
                        )));
                    }
                    groups = inner / c2[1];
                    width_per_group = inner * 64 / (planes * groups);
                    planes
                }
            };
            blocks.push(n);
            widths.push(planes);
        }
        let fc = shape("fc.weight").ok_or_else(|| bad("fc.weight is missing".into()))?;
        let num_classes = *fc
            .first()
            .ok_or_else(|| bad("fc.weight has no shape".into()))?;
        let base = Self::resnet(50)?;
        Ok(Self {
            num_classes,
            stem_width: stem[0],
            widths,
            blocks,
            block,
            groups,
            width_per_group,
            ..base
        })
    }
}

/// `{scope}.conv{k}` → `{scope}.bn{k}` → ReLU.
fn conv_bn_relu(
    b: &mut GraphBuilder,
    scope: &str,
    k: usize,
    x: usize,
    spec: ConvSpec,
) -> Result<usize, ModelError> {
    let y = b.conv(&format!("{scope}.conv{k}"), x, spec)?;
    let y = b.bn(&format!("{scope}.bn{k}"), y, false)?;
    Ok(b.relu(&format!("{scope}.relu{k}"), y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_torchvision() {
        // torchvision's published parameter counts.
        for (depth, count) in [
            (18, 11_689_512),
            (34, 21_797_672),
            (50, 25_557_032),
            (101, 44_549_160),
            (152, 60_192_808),
        ] {
            let g = TorchResnetConfig::resnet(depth).unwrap().build().unwrap();
            assert_eq!(g.trainable_param_count(), count, "ResNet-{depth}");
        }
        let g = TorchResnetConfig::resnet(18).unwrap().build().unwrap();
        assert_eq!(
            g.nodes[g.tap("maxpool").unwrap().node].shape,
            vec![64, 56, 56]
        );
        assert_eq!(
            g.nodes[g.tap("layer4").unwrap().node].shape,
            vec![512, 7, 7]
        );
        assert!(
            g.params
                .iter()
                .any(|p| p.name == "layer2.0.downsample.1.running_var")
        );
    }

    #[test]
    fn recognition_round_trips_every_depth_and_resnext() {
        let mut resnext = TorchResnetConfig::resnet(50).unwrap();
        resnext.groups = 32;
        resnext.width_per_group = 4;
        let mut wide = TorchResnetConfig::resnet(50).unwrap();
        wide.width_per_group = 128;
        let mut configs: Vec<TorchResnetConfig> = [18, 34, 50, 101, 152]
            .iter()
            .map(|&d| TorchResnetConfig::resnet(d).unwrap())
            .collect();
        configs.extend([resnext, wide]);
        let names: Vec<String> = configs
            .iter()
            .map(|cfg| {
                let g = cfg.build().unwrap();
                let tensors: BTreeMap<String, Array> = g
                    .params
                    .iter()
                    .map(|p| (p.name.clone(), Array::zeros(p.shape.clone())))
                    .collect();
                let got = TorchResnetConfig::recognise(&tensors).unwrap().unwrap();
                assert_eq!(&got, cfg);
                got.name()
            })
            .collect();
        assert_eq!(
            names,
            [
                "ResNet-18",
                "ResNet-34",
                "ResNet-50",
                "ResNet-101",
                "ResNet-152",
                "ResNeXt-50 32×4d",
                "Wide ResNet-50-2"
            ]
        );
    }
}
