//! The resnet-denoise family for small images (He et al. residual networks with basic blocks, and
//! the denoise blocks of Xie et al. placed after each stage or after every residual block).
//!
//! Names follow the tensorpack convention of the released ImageNet models: `conv0`,
//! `group{g}/block{b}/conv{1,2}`, `group{g}/block{b}/convshortcut`, `group{g}_denoise` (after a
//! stage) or `group{g}/block{b}/non_local` (after every block), `linear`.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::builder::{ConvSpec, GraphBuilder, check_stages};
use super::denoise::{DenoiseVariant, Placement};
use super::graph::{Graph, TapKind};

/// Configuration of a resnet-denoise network; stored in the weight file's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResnetDenoiseConfig {
    /// Input channels (1 for grey, 3 for RGB).
    pub in_channels: usize,
    /// Input height and width.
    pub image_size: [usize; 2],
    /// Number of classes.
    pub num_classes: usize,
    /// Width of the 3×3 stem convolution.
    pub stem_width: usize,
    /// Channels of each stage; stage `g > 0` halves the resolution in its first block.
    pub widths: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks: Vec<usize>,
    /// Denoise operation.
    pub denoise: DenoiseVariant,
    /// Where denoise blocks go.
    pub placement: Placement,
    /// Stages that get denoise blocks (`None`: all stages).
    #[serde(default)]
    pub denoise_stages: Option<Vec<usize>>,
    /// Per-channel mean of the preprocessing, in [0, 1] units.
    pub mean: Vec<f32>,
    /// Per-channel std of the preprocessing.
    pub std: Vec<f32>,
    /// Residual block type.
    #[serde(default)]
    pub block: BlockKind,
    /// Stem type.
    #[serde(default)]
    pub stem: StemKind,
    /// Channel groups of the bottleneck's 3×3 convolution (32 for ResNeXt-101 32×8d).
    #[serde(default = "one")]
    pub cardinality: usize,
    /// Width of a bottleneck's inner convolutions as a multiple of the stage width (4 for
    /// ResNeXt-101 32×8d; the output is always 4× the stage width).
    #[serde(default = "one")]
    pub bottleneck_factor: usize,
    /// Source channel of each model input channel (e.g. `[2, 1, 0]` for a BGR model fed RGB
    /// images); empty means in order.
    #[serde(default)]
    pub channel_order: Vec<usize>,
    /// The model's evaluation resize: the shorter image side is scaled to this (bicubic) and the
    /// centre `image_size` is cropped. `None`: images are resized to `image_size` directly.
    #[serde(default)]
    pub eval_resize: Option<usize>,
}

fn one() -> usize {
    1
}

/// The residual block of every stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3×3 convs; the stage width is the block's output width.
    #[default]
    Basic,
    /// 1×1 → 3×3 (stride here, "ResNet v1.5") → 1×1 to 4× the stage width, as ResNet-50/101/152.
    Bottleneck,
}

/// The stem before the first stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StemKind {
    /// A 3×3 stride-1 conv (small images).
    #[default]
    Small,
    /// A 7×7 stride-2 conv and a 3×3 stride-2 max pool (ImageNet-sized images).
    Imagenet,
}

impl ResnetDenoiseConfig {
    /// A small network for 28×28 grey images and 10 classes: widths 16/32/64, one block per stage,
    /// non-local Gaussian denoise blocks after each stage.
    pub fn small_gray(placement: Placement) -> Self {
        Self {
            in_channels: 1,
            image_size: [28, 28],
            num_classes: 10,
            stem_width: 16,
            widths: vec![16, 32, 64],
            blocks: vec![1, 1, 1],
            denoise: DenoiseVariant::NonlocalGaussian,
            placement,
            denoise_stages: None,
            mean: vec![0.5],
            std: vec![0.5],
            block: BlockKind::Basic,
            stem: StemKind::Small,
            cardinality: 1,
            bottleneck_factor: 1,
            channel_order: vec![],
            eval_resize: None,
        }
    }

    /// A ResNet-50-shaped network for 224×224 RGB images and 1000 classes (bottleneck blocks
    /// 3/4/6/3, ImageNet stem, ImageNet mean/std, no denoise blocks).
    pub fn resnet50_shaped() -> Self {
        Self {
            in_channels: 3,
            image_size: [224, 224],
            num_classes: 1000,
            stem_width: 64,
            widths: vec![64, 128, 256, 512],
            blocks: vec![3, 4, 6, 3],
            denoise: DenoiseVariant::NonlocalGaussian,
            placement: Placement::None,
            denoise_stages: None,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            block: BlockKind::Bottleneck,
            stem: StemKind::Imagenet,
            cardinality: 1,
            bottleneck_factor: 1,
            channel_order: vec![],
            eval_resize: None,
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Architecture(m));
        if self.in_channels == 0 || self.num_classes == 0 || self.stem_width == 0 {
            return bad("in_channels, num_classes and stem_width must be positive".into());
        }
        check_stages(self.image_size, &self.widths, &self.blocks)?;
        if self.mean.len() != self.in_channels || self.std.len() != self.in_channels {
            return bad(format!(
                "mean/std need {} entries (one per input channel)",
                self.in_channels
            ));
        }
        if let Some(stages) = &self.denoise_stages
            && let Some(s) = stages.iter().find(|&&s| s >= self.widths.len())
        {
            return bad(format!("denoise stage {s} does not exist"));
        }
        Ok(())
    }

    fn denoise_in_stage(&self, g: usize) -> bool {
        self.placement != Placement::None
            && self
                .denoise_stages
                .as_ref()
                .is_none_or(|stages| stages.contains(&g))
    }

    /// Builds the graph.
    pub fn build(&self) -> Result<Graph, ModelError> {
        self.check()?;
        let [h, w] = self.image_size;
        let mut b = GraphBuilder::new([self.in_channels, h, w], self.num_classes);
        let order: Vec<usize> = if self.channel_order.is_empty() {
            (0..self.in_channels).collect()
        } else {
            self.channel_order.clone()
        };
        let mut x = b.normalize(b.input(), order, self.mean.clone(), self.std.clone())?;
        match self.stem {
            StemKind::Small => {
                x = b.conv("conv0", x, ConvSpec::new(self.stem_width, 3, 1))?;
                x = b.bn("conv0/bn", x, false)?;
                x = b.relu("conv0/relu", x);
            }
            StemKind::Imagenet => {
                x = b.conv("conv0", x, ConvSpec::new(self.stem_width, 7, 2))?;
                x = b.bn("conv0/bn", x, false)?;
                x = b.relu("conv0/relu", x);
                x = b.pool("pool0", x, 3, 2, true)?;
            }
        }
        b.tap("conv0", x, TapKind::Stem);
        for (g, (&width, &nblocks)) in self.widths.iter().zip(&self.blocks).enumerate() {
            let denoise = self.denoise_in_stage(g);
            for blk in 0..nblocks {
                let stride = if g > 0 && blk == 0 { 2 } else { 1 };
                let scope = format!("group{g}/block{blk}");
                x = match self.block {
                    BlockKind::Basic => basic_block(&mut b, &scope, x, width, stride)?,
                    BlockKind::Bottleneck => bottleneck_block(
                        &mut b,
                        &scope,
                        x,
                        width,
                        stride,
                        self.cardinality,
                        self.bottleneck_factor,
                    )?,
                };
                b.tap(&scope, x, TapKind::Block);
                if denoise && self.placement == Placement::AfterEveryBlock {
                    x = b.denoise(&format!("{scope}/non_local"), x, self.denoise)?;
                }
            }
            b.tap(&format!("group{g}"), x, TapKind::Stage);
            if denoise && self.placement == Placement::AfterStage {
                x = b.denoise(&format!("group{g}_denoise"), x, self.denoise)?;
            }
        }
        let pooled = b.global_avg_pool("gap", x)?;
        let logits = b.linear("linear", pooled, self.num_classes)?;
        b.finish(logits)
    }
}

/// A basic residual block: two 3×3 convs (stride on the first), BN after each, a projection
/// shortcut when the shape changes, ReLU after the sum.
fn basic_block(
    b: &mut GraphBuilder,
    scope: &str,
    x: usize,
    width: usize,
    stride: usize,
) -> Result<usize, ModelError> {
    let y = conv_bn(
        b,
        &format!("{scope}/conv1"),
        x,
        ConvSpec::new(width, 3, stride),
        Tail::Relu,
    )?;
    let y = conv_bn(
        b,
        &format!("{scope}/conv2"),
        y,
        ConvSpec::new(width, 3, 1),
        Tail::ZeroBn,
    )?;
    merge(b, scope, x, y, stride)
}

/// What follows a conv's batch norm.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// ReLU.
    Relu,
    /// Nothing, with the BN's γ starting at zero (the last conv of a residual branch).
    ZeroBn,
}

/// `name` conv, `name/bn` batch norm and, for [`Tail::Relu`], `name/relu`.
fn conv_bn(
    b: &mut GraphBuilder,
    name: &str,
    x: usize,
    spec: ConvSpec,
    tail: Tail,
) -> Result<usize, ModelError> {
    let y = b.conv(name, x, spec)?;
    let y = b.bn(&format!("{name}/bn"), y, tail == Tail::ZeroBn)?;
    Ok(match tail {
        Tail::Relu => b.relu(&format!("{name}/relu"), y),
        Tail::ZeroBn => y,
    })
}

/// Ends a residual block: `relu(y + shortcut(x))`, the shortcut a 1×1 projection with BN when
/// the channels or the resolution change.
fn merge(
    b: &mut GraphBuilder,
    scope: &str,
    x: usize,
    y: usize,
    stride: usize,
) -> Result<usize, ModelError> {
    let (in_ch, out_ch) = (b.shape(x)[0], b.shape(y)[0]);
    let shortcut = if in_ch != out_ch || stride != 1 {
        let s = b.conv(
            &format!("{scope}/convshortcut"),
            x,
            ConvSpec::new(out_ch, 1, stride),
        )?;
        b.bn(&format!("{scope}/convshortcut/bn"), s, false)?
    } else {
        x
    };
    let sum = b.add(&format!("{scope}/add"), y, shortcut)?;
    Ok(b.relu(&format!("{scope}/block_output"), sum))
}

/// A bottleneck block: 1×1 to `factor·width`, 3×3 with the stride in `groups` groups, 1×1 to
/// `4·width` (BN γ starts at zero), a projection shortcut when the shape changes, ReLU after
/// the sum.
fn bottleneck_block(
    b: &mut GraphBuilder,
    scope: &str,
    x: usize,
    width: usize,
    stride: usize,
    groups: usize,
    factor: usize,
) -> Result<usize, ModelError> {
    let inner = width * factor.max(1);
    let y = conv_bn(
        b,
        &format!("{scope}/conv1"),
        x,
        ConvSpec::new(inner, 1, 1),
        Tail::Relu,
    )?;
    let y = conv_bn(
        b,
        &format!("{scope}/conv2"),
        y,
        ConvSpec::new(inner, 3, stride).groups(groups.max(1)),
        Tail::Relu,
    )?;
    let out = ConvSpec::new(4 * width, 1, 1);
    let y = conv_bn(b, &format!("{scope}/conv3"), y, out, Tail::ZeroBn)?;
    merge(b, scope, x, y, stride)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::Op;

    #[test]
    fn placements_give_expected_blocks_and_taps() {
        let mut cfg = ResnetDenoiseConfig::small_gray(Placement::AfterStage);
        cfg.blocks = vec![2, 1, 1];
        let g = cfg.build().unwrap();
        let names: Vec<_> = g.denoise_blocks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["group0_denoise", "group1_denoise", "group2_denoise"]
        );
        assert!(g.tap("group1_denoise/before").is_some());
        assert!(g.tap("group1_denoise/after").is_some());
        // The op tap is the denoising operation's node, which feeds the block's 1×1 convolution.
        let d1 = &g.denoise_blocks[1];
        let op = g.tap("group1_denoise/op").unwrap();
        assert_eq!(op.node, d1.op);
        assert_eq!(op.kind, TapKind::DenoiseOp(1));
        assert!(matches!(g.nodes[d1.op].op, Op::DenoiseOp { .. }));
        assert_eq!(g.nodes[d1.op].inputs, vec![d1.input]);
        assert!(
            g.nodes
                .iter()
                .any(|n| n.inputs == vec![d1.op]
                    && matches!(n.op, Op::Conv2d { kernel: [1, 1], .. }))
        );
        assert_eq!(g.nodes[g.output].shape, vec![10]);
        // 28 -> 14 -> 7 with SAME padding.
        let d2 = &g.denoise_blocks[2];
        assert_eq!(g.nodes[d2.output].shape, vec![64, 7, 7]);

        cfg.placement = Placement::AfterEveryBlock;
        let g = cfg.build().unwrap();
        assert_eq!(g.denoise_blocks.len(), 4);
        assert_eq!(g.denoise_blocks[1].name, "group0/block1/non_local");

        cfg.placement = Placement::None;
        let g = cfg.build().unwrap();
        assert!(g.denoise_blocks.is_empty());
        assert!(g.params.iter().all(|p| !p.name.contains("denoise")));
    }

    #[test]
    fn taps_list_denoise_blocks_first_then_depth() {
        let g = ResnetDenoiseConfig::small_gray(Placement::AfterStage)
            .build()
            .unwrap();
        let names: Vec<&str> = g
            .taps_denoise_first()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            &names[..6],
            &[
                "group0_denoise/before",
                "group0_denoise/op",
                "group0_denoise/after",
                "group1_denoise/before",
                "group1_denoise/op",
                "group1_denoise/after"
            ]
        );
        assert_eq!(names.len(), g.taps.len());
        assert_eq!(names[9], "conv0");
        assert_eq!(names.last(), Some(&"logits"));
    }

    #[test]
    fn denoise_stages_restricts_placement() {
        let mut cfg = ResnetDenoiseConfig::small_gray(Placement::AfterStage);
        cfg.denoise_stages = Some(vec![1, 2]);
        let g = cfg.build().unwrap();
        assert_eq!(g.denoise_blocks.len(), 2);
        assert_eq!(g.denoise_blocks[0].name, "group1_denoise");
        cfg.denoise_stages = Some(vec![3]);
        assert!(cfg.build().is_err());
    }

    #[test]
    fn stride_two_convs_pad_asymmetrically() {
        let g = ResnetDenoiseConfig::small_gray(Placement::None)
            .build()
            .unwrap();
        let id = g.node_id("group1/block0/conv1").unwrap();
        let Op::Conv2d {
            padding, stride, ..
        } = &g.nodes[id].op
        else {
            panic!("not a conv")
        };
        assert_eq!(*stride, 2);
        assert_eq!(padding.resolve(28, 28, [3, 3], 2), [0, 1, 0, 1]);
        assert_eq!(padding.resolve(28, 28, [3, 3], 1), [1, 1, 1, 1]);
    }

    #[test]
    fn resnet50_shape_and_parameter_count() {
        let g = ResnetDenoiseConfig::resnet50_shaped().build().unwrap();
        // torchvision's ResNet-50 has 25,557,032 trainable parameters; the BN running statistics
        // add 2 × 26,560.
        assert_eq!(g.trainable_param_count(), 25_557_032);
        assert_eq!(g.nodes[g.node_id("pool0").unwrap()].shape, vec![64, 56, 56]);
        assert_eq!(
            g.nodes[g.tap("group3").unwrap().node].shape,
            vec![2048, 7, 7]
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut cfg = ResnetDenoiseConfig::small_gray(Placement::None);
        cfg.blocks = vec![1, 1];
        assert!(
            cfg.build()
                .unwrap_err()
                .to_string()
                .contains("block counts")
        );
        let mut cfg = ResnetDenoiseConfig::small_gray(Placement::None);
        cfg.mean = vec![0.5, 0.5];
        assert!(cfg.build().is_err());
    }
}
