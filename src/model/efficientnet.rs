//! EfficientNet-Lite (Tan & Le; the "Lite" variants drop squeeze-excitation and use ReLU6): a
//! 3×3 stride-2 stem, stages of MBConv blocks (1×1 expansion, k×k depthwise, 1×1 projection,
//! a residual sum when the shape is kept) and a 1×1 head before global pooling.
//!
//! Node and parameter names are the PyTorch state-dict keys of lukemelas/EfficientNet-PyTorch,
//! which the released EfficientNet-Lite0 checkpoint uses (`_conv_stem.weight`,
//! `_blocks.3._depthwise_conv.weight`, `_blocks.3._bn1.running_mean`, `_fc.bias`), so a
//! checkpoint loads by name. TF `SAME` padding and batch-norm ε = 1e-3, as the TensorFlow
//! original that the checkpoint was converted from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::builder::{ConvSpec, GraphBuilder, check_stages};
use super::graph::{Graph, ParamNaming, TapKind};
use crate::array::Array;

/// One stage of MBConv blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MbStage {
    /// Blocks in the stage.
    pub repeats: usize,
    /// Depthwise kernel side.
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Expansion ratio of the 1×1 expansion conv (1: no expansion conv).
    pub expand: usize,
    /// Output channels.
    pub out: usize,
}

/// Configuration of an EfficientNet-Lite network; stored in advlens weight files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetLiteConfig {
    /// Input height and width.
    pub image_size: [usize; 2],
    /// Number of classes.
    pub num_classes: usize,
    /// Width of the stem convolution.
    pub stem_width: usize,
    /// The MBConv stages.
    pub stages: Vec<MbStage>,
    /// Width of the 1×1 head convolution.
    pub head_width: usize,
    /// Batch-norm epsilon.
    pub bn_eps: f32,
    /// Per-channel mean of the preprocessing, in [0, 1] units.
    pub mean: Vec<f32>,
    /// Per-channel std of the preprocessing.
    pub std: Vec<f32>,
    /// The evaluation resize (shorter side, bicubic, then a centre crop of `image_size`).
    pub eval_resize: Option<usize>,
}

/// Stride of each of the seven stages, shared by every Lite variant (only repeats, and for the
/// larger variants the input size, change).
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

impl EfficientNetLiteConfig {
    /// EfficientNet-Lite0 for 224×224 RGB ImageNet images with the TF preprocessing
    /// `(x − 127) / 128` on 0–255 values and the shorter side resized to 256 before the crop.
    pub fn lite0() -> Self {
        let stage = |repeats, kernel, stride, expand, out| MbStage {
            repeats,
            kernel,
            stride,
            expand,
            out,
        };
        Self {
            image_size: [224, 224],
            num_classes: 1000,
            stem_width: 32,
            stages: vec![
                stage(1, 3, 1, 1, 16),
                stage(2, 3, 2, 6, 24),
                stage(2, 5, 2, 6, 40),
                stage(3, 3, 2, 6, 80),
                stage(3, 5, 1, 6, 112),
                stage(4, 5, 2, 6, 192),
                stage(1, 3, 1, 6, 320),
            ],
            head_width: 1280,
            bn_eps: 1e-3,
            mean: vec![127.0 / 255.0; 3],
            std: vec![128.0 / 255.0; 3],
            eval_resize: Some(256),
        }
    }

    /// The variant's conventional name (`EfficientNet-Lite0` for Lite0's layout).
    pub fn name(&self) -> String {
        let repeats: Vec<usize> = self.stages.iter().map(|s| s.repeats).collect();
        let known = [
            ([1, 2, 2, 3, 3, 4, 1], "EfficientNet-Lite0"),
            ([1, 3, 3, 4, 4, 5, 1], "EfficientNet-Lite1"),
            ([1, 3, 3, 4, 4, 5, 2], "EfficientNet-Lite2"),
            ([1, 3, 3, 5, 5, 6, 2], "EfficientNet-Lite3"),
            ([1, 4, 4, 6, 6, 8, 2], "EfficientNet-Lite4"),
        ];
        known
            .iter()
            .find(|(r, _)| r.as_slice() == repeats.as_slice())
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| format!("EfficientNet-Lite (stage repeats {repeats:?})"))
    }

    fn check(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Architecture(m));
        if self.num_classes == 0 || self.stem_width == 0 || self.head_width == 0 {
            return bad("num_classes, stem_width and head_width must be positive".into());
        }
        let repeats: Vec<usize> = self.stages.iter().map(|s| s.repeats).collect();
        let outs: Vec<usize> = self.stages.iter().map(|s| s.out).collect();
        check_stages(self.image_size, &outs, &repeats)?;
        // check_stages has refused no stages and zero repeats or widths.
        if self
            .stages
            .iter()
            .any(|s| s.kernel == 0 || s.stride == 0 || s.expand == 0)
        {
            return bad("every stage needs a positive kernel, stride and expansion".into());
        }
        if self.mean.len() != 3 || self.std.len() != 3 {
            return bad("mean/std need 3 entries".into());
        }
        if !(self.bn_eps > 0.0 && self.bn_eps.is_finite()) {
            return bad(format!(
                "batch-norm epsilon {} is not positive",
                self.bn_eps
            ));
        }
        Ok(())
    }

    /// Builds the graph.
    pub fn build(&self) -> Result<Graph, ModelError> {
        self.check()?;
        let [h, w] = self.image_size;
        let mut b = GraphBuilder::new([3, h, w], self.num_classes)
            .with_naming(ParamNaming::Torch)
            .with_bn_eps(self.bn_eps);
        let mut x = b.normalize(
            b.input(),
            vec![0, 1, 2],
            self.mean.clone(),
            self.std.clone(),
        )?;
        x = b.conv("_conv_stem", x, ConvSpec::new(self.stem_width, 3, 2))?;
        x = b.bn("_bn0", x, false)?;
        x = b.relu6("_stem_relu6", x);
        b.tap("stem", x, TapKind::Stem);
        let mut index = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            for r in 0..stage.repeats {
                let stride = if r == 0 { stage.stride } else { 1 };
                let scope = format!("_blocks.{index}");
                x = mbconv(&mut b, &scope, x, stage, stride)?;
                b.tap(&scope, x, TapKind::Block);
                index += 1;
            }
            b.tap(&format!("stage{s}"), x, TapKind::Stage);
        }
        x = b.conv("_conv_head", x, ConvSpec::new(self.head_width, 1, 1))?;
        x = b.bn("_bn1", x, false)?;
        x = b.relu6("_head_relu6", x);
        b.tap("head", x, TapKind::Stage);
        let pooled = b.global_avg_pool("_avg_pooling", x)?;
        let logits = b.linear("_fc", pooled, self.num_classes)?;
        b.finish(logits)
    }

    /// Recognises an EfficientNet-Lite state dict from its keys and shapes (`None` when the keys
    /// are not this family's). Kernels, expansion ratios and widths are read from the shapes;
    /// stages are the runs of blocks with the same output width, and their strides are the
    /// family's.
    pub fn recognise(tensors: &BTreeMap<String, Array>) -> Option<Result<Self, ModelError>> {
        let stem = tensors.get("_conv_stem.weight")?;
        tensors.get("_blocks.0._depthwise_conv.weight")?;
        Some(Self::recognise_shapes(tensors, stem.shape()))
    }

    fn recognise_shapes(
        tensors: &BTreeMap<String, Array>,
        stem: &[usize],
    ) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Architecture(format!("EfficientNet-Lite layout: {m}"));
        let shape = |k: &str| tensors.get(k).map(|a| a.shape().to_vec());
        if stem.len() != 4 || stem[1] != 3 || stem[2] != 3 || stem[3] != 3 {
            return Err(bad(format!(
                "_conv_stem.weight has shape {stem:?}, expected [C, 3, 3, 3]"
            )));
        }
        let mut blocks = Vec::new();
        let mut in_ch = stem[0];
        for i in 0.. {
            let Some(dw) = shape(&format!("_blocks.{i}._depthwise_conv.weight")) else {
                break;
            };
            let project = shape(&format!("_blocks.{i}._project_conv.weight"))
                .ok_or_else(|| bad(format!("_blocks.{i}._project_conv.weight is missing")))?;
            let expand = match shape(&format!("_blocks.{i}._expand_conv.weight")) {
                Some(e) if e.len() == 4 && in_ch > 0 && e[0] % in_ch == 0 => e[0] / in_ch,
                Some(e) => {
                    return Err(bad(format!(
                        "_blocks.{i}._expand_conv.weight has shape {e:?} for {in_ch} input channels"
                    )));
                }
                None => 1,
            };
            if dw.len() != 4 || dw[1] != 1 || dw[2] != dw[3] || project.len() != 4 {
                return Err(bad(format!(
                    "_blocks.{i} has depthwise shape {dw:?} and projection shape {project:?}"
                )));
            }
            blocks.push((dw[2], expand, project[0]));
            in_ch = project[0];
        }
        let mut stages: Vec<MbStage> = Vec::new();
        for (kernel, expand, out) in blocks {
            match stages.last_mut() {
                Some(s) if s.out == out && s.kernel == kernel && s.expand == expand => {
                    s.repeats += 1
                }
                _ => {
                    let stride = *STAGE_STRIDES
                        .get(stages.len())
                        .ok_or_else(|| bad(format!("more than {} stages", STAGE_STRIDES.len())))?;
                    stages.push(MbStage {
                        repeats: 1,
                        kernel,
                        stride,
                        expand,
                        out,
                    });
                }
            }
        }
        if stages.len() != STAGE_STRIDES.len() {
            return Err(bad(format!(
                "{} stages of MBConv blocks, expected {}",
                stages.len(),
                STAGE_STRIDES.len()
            )));
        }
        let head =
            shape("_conv_head.weight").ok_or_else(|| bad("_conv_head.weight is missing".into()))?;
        let fc = shape("_fc.weight").ok_or_else(|| bad("_fc.weight is missing".into()))?;
        let (Some(&head_width), Some(&num_classes)) = (head.first(), fc.first()) else {
            return Err(bad("the head and classifier have no shape".into()));
        };
        Ok(Self {
            stem_width: stem[0],
            stages,
            head_width,
            num_classes,
            ..Self::lite0()
        })
    }
}

/// An MBConv block without squeeze-excitation: `[1×1 expand → BN → ReLU6] → k×k depthwise →
/// BN → ReLU6 → 1×1 project → BN`, plus the input when the shape is kept.
fn mbconv(
    b: &mut GraphBuilder,
    scope: &str,
    x: usize,
    stage: &MbStage,
    stride: usize,
) -> Result<usize, ModelError> {
    let in_ch = b.shape(x)[0];
    let mid = in_ch * stage.expand;
    let mut y = x;
    if stage.expand != 1 {
        y = b.conv(
            &format!("{scope}._expand_conv"),
            y,
            ConvSpec::new(mid, 1, 1),
        )?;
        y = b.bn(&format!("{scope}._bn0"), y, false)?;
        y = b.relu6(&format!("{scope}._expand_relu6"), y);
    }
    y = b.conv(
        &format!("{scope}._depthwise_conv"),
        y,
        ConvSpec::new(mid, stage.kernel, stride).groups(mid),
    )?;
    y = b.bn(&format!("{scope}._bn1"), y, false)?;
    y = b.relu6(&format!("{scope}._depthwise_relu6"), y);
    y = b.conv(
        &format!("{scope}._project_conv"),
        y,
        ConvSpec::new(stage.out, 1, 1),
    )?;
    y = b.bn(&format!("{scope}._bn2"), y, false)?;
    if stride == 1 && in_ch == stage.out {
        y = b.add(&format!("{scope}._add"), y, x)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_has_the_released_parameter_count_and_names() {
        let g = EfficientNetLiteConfig::lite0().build().unwrap();
        // The released checkpoint holds 4,694,073 numbers: these, 42,016 BN running statistics and
        // 49 `num_batches_tracked` counters.
        assert_eq!(g.trainable_param_count(), 4_652_008);
        let names: Vec<&str> = g.params.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"_blocks.15._project_conv.weight"));
        assert!(names.contains(&"_blocks.0._bn1.running_var"));
        assert!(!names.contains(&"_blocks.0._expand_conv.weight"));
        assert_eq!(
            g.nodes[g.tap("stage6").unwrap().node].shape,
            vec![320, 7, 7]
        );
        assert_eq!(
            g.nodes[g.tap("stem").unwrap().node].shape,
            vec![32, 112, 112]
        );
    }

    #[test]
    fn recognition_round_trips_the_layout() {
        let cfg = EfficientNetLiteConfig::lite0();
        let g = cfg.build().unwrap();
        let tensors: BTreeMap<String, Array> = g
            .params
            .iter()
            .map(|p| (p.name.clone(), Array::zeros(p.shape.clone())))
            .collect();
        let got = EfficientNetLiteConfig::recognise(&tensors)
            .unwrap()
            .unwrap();
        assert_eq!(got, cfg);
        assert_eq!(got.name(), "EfficientNet-Lite0");
        let mut none = BTreeMap::new();
        none.insert("conv1.weight".to_string(), Array::zeros(vec![1]));
        assert!(EfficientNetLiteConfig::recognise(&none).is_none());
    }
}
