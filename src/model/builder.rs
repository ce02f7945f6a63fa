//! A small helper that appends nodes to a [`Graph`], infers shapes and records parameters, so
//! that architecture families are written as readable sequences of named layers.

use super::ModelError;
use super::denoise::DenoiseVariant;
use super::graph::{
    DenoiseBlock, Graph, Init, Node, NodeId, Op, Padding, ParamNaming, ParamSpec, Tap, TapKind,
};
use super::limits::{MAX_BLOCKS_PER_STAGE, MAX_IMAGE_SIDE};

/// The shape of a convolution layer.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Channel groups.
    pub groups: usize,
    /// Initialiser.
    pub init: Init,
    /// Padding (TF `SAME` unless set).
    pub padding: Padding,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// A dense convolution with He fan-out initialisation.
    pub fn new(out_channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            out_channels,
            kernel,
            stride,
            groups: 1,
            init: Init::HeFanOut,
            padding: Padding::Same,
            bias: false,
        }
    }

    /// The same with `groups` channel groups.
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// The same with PyTorch's symmetric padding of `pad` on every side.
    pub fn pad(self, pad: usize) -> Self {
        Self {
            padding: Padding::Explicit {
                top: pad,
                bottom: pad,
                left: pad,
                right: pad,
            },
            ..self
        }
    }

    /// The same with a bias.
    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }
}

/// Checks the parts of a configuration every family shares: an image size of 1 to
/// [`MAX_IMAGE_SIDE`] pixels a side, and one block count of 1 to [`MAX_BLOCKS_PER_STAGE`] per
/// positive stage width.
pub fn check_stages(
    image_size: [usize; 2],
    widths: &[usize],
    blocks: &[usize],
) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::Architecture(m));
    if image_size.contains(&0) || image_size.iter().any(|&s| s > MAX_IMAGE_SIDE) {
        return bad(format!("image size {image_size:?} is out of range"));
    }
    if widths.is_empty() || widths.len() != blocks.len() {
        return bad(format!(
            "{} stage widths but {} block counts",
            widths.len(),
            blocks.len()
        ));
    }
    if widths.contains(&0) || blocks.contains(&0) {
        return bad("stage widths and block counts must be positive".into());
    }
    if let Some(n) = blocks.iter().find(|&&n| n > MAX_BLOCKS_PER_STAGE) {
        return bad(format!(
            "{n} blocks in a stage, more than the {MAX_BLOCKS_PER_STAGE} advlens builds"
        ));
    }
    Ok(())
}

/// Builds a [`Graph`] node by node.
pub struct GraphBuilder {
    graph: Graph,
    current_block: Option<usize>,
    naming: ParamNaming,
    bn_eps: f32,
}

impl GraphBuilder {
    /// Starts a graph with an input node of shape `[C, H, W]`.
    pub fn new(input_shape: [usize; 3], num_classes: usize) -> Self {
        let input = Node {
            name: "input".into(),
            op: Op::Input,
            inputs: vec![],
            shape: input_shape.to_vec(),
            denoise_block: None,
        };
        Self {
            graph: Graph {
                nodes: vec![input],
                output: 0,
                taps: vec![],
                denoise_blocks: vec![],
                params: vec![],
                input_shape,
                num_classes,
            },
            current_block: None,
            naming: ParamNaming::Tensorpack,
            bn_eps: 1e-5,
        }
    }

    /// Names parameters by `naming` from here on (tensorpack's unless set).
    pub fn with_naming(mut self, naming: ParamNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Uses `eps` in the batch norms added from here on (1e-5 unless set).
    pub fn with_bn_eps(mut self, eps: f32) -> Self {
        self.bn_eps = eps;
        self
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        0
    }

    /// Output shape of a node.
    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.graph.nodes[id].shape
    }

    fn chw(&self, id: NodeId) -> Result<[usize; 3], ModelError> {
        match self.shape(id) {
            &[c, h, w] => Ok([c, h, w]),
            s => Err(ModelError::Architecture(format!(
                "node {} has shape {s:?}, expected [C, H, W]",
                self.graph.nodes[id].name
            ))),
        }
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<NodeId>, shape: Vec<usize>) -> NodeId {
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            shape,
            denoise_block: self.current_block,
        });
        self.graph.nodes.len() - 1
    }

    fn param(&mut self, name: String, shape: Vec<usize>, init: Init, trainable: bool) {
        self.graph.params.push(ParamSpec {
            name,
            shape,
            init,
            trainable,
        });
    }

    /// The model's preprocessing.
    pub fn normalize(
        &mut self,
        x: NodeId,
        channel_order: Vec<usize>,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<NodeId, ModelError> {
        let [c, h, w] = self.chw(x)?;
        if channel_order.len() != c || mean.len() != c || std.len() != c {
            return Err(ModelError::Architecture(format!(
                "normalisation needs {c} channel entries"
            )));
        }
        if channel_order.iter().any(|&o| o >= c) || std.iter().any(|&s| s == 0.0 || !s.is_finite())
        {
            return Err(ModelError::Architecture(
                "normalisation has an out-of-range channel or a zero std".into(),
            ));
        }
        let op = Op::Normalize {
            channel_order,
            mean,
            std,
        };
        Ok(self.push("preprocess".into(), op, vec![x], vec![c, h, w]))
    }

    /// A convolution as `spec` says (by default no bias and TF `SAME` padding), weights
    /// `{name}/W` (or `{name}.weight`).
    pub fn conv(&mut self, name: &str, x: NodeId, spec: ConvSpec) -> Result<NodeId, ModelError> {
        let ConvSpec {
            out_channels,
            kernel,
            stride,
            groups,
            init,
            padding,
            bias,
        } = spec;
        let [c, h, w] = self.chw(x)?;
        if groups == 0 || !c.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
            return Err(ModelError::Architecture(format!(
                "{name}: {c}→{out_channels} channels do not split into {groups} groups"
            )));
        }
        let [oh, ow] = padding
            .output_size(h, w, [kernel, kernel], stride)
            .ok_or_else(|| ModelError::Architecture(format!("{name}: kernel larger than input")))?;
        let weight = self.naming.weight(name);
        self.param(
            weight.clone(),
            vec![out_channels, c / groups, kernel, kernel],
            init,
            true,
        );
        let bias = bias.then(|| {
            let b = self.naming.bias(name);
            self.param(b.clone(), vec![out_channels], Init::Zeros, true);
            b
        });
        let op = Op::Conv2d {
            weight,
            bias,
            in_channels: c,
            out_channels,
            kernel: [kernel, kernel],
            stride,
            padding,
            groups,
        };
        Ok(self.push(name.into(), op, vec![x], vec![out_channels, oh, ow]))
    }

    /// Batch norm with tensors under `{name}`; `zero_gamma` starts the layer at zero output.
    pub fn bn(&mut self, name: &str, x: NodeId, zero_gamma: bool) -> Result<NodeId, ModelError> {
        let [c, h, w] = self.chw(x)?;
        let [g, b, m, v] = self.naming.batch_norm(name);
        let gamma_init = if zero_gamma { Init::Zeros } else { Init::Ones };
        self.param(g, vec![c], gamma_init, true);
        self.param(b, vec![c], Init::Zeros, true);
        self.param(m, vec![c], Init::Zeros, false);
        self.param(v, vec![c], Init::Ones, false);
        let op = Op::BatchNorm {
            prefix: name.into(),
            channels: c,
            eps: self.bn_eps,
            naming: self.naming,
        };
        Ok(self.push(name.into(), op, vec![x], vec![c, h, w]))
    }

    /// ReLU.
    pub fn relu(&mut self, name: &str, x: NodeId) -> NodeId {
        let shape = self.shape(x).to_vec();
        self.push(name.into(), Op::Relu, vec![x], shape)
    }

    /// ReLU6.
    pub fn relu6(&mut self, name: &str, x: NodeId) -> NodeId {
        let shape = self.shape(x).to_vec();
        self.push(name.into(), Op::Relu6, vec![x], shape)
    }

    /// Max (`max = true`) or average pooling with TF `SAME` padding.
    pub fn pool(
        &mut self,
        name: &str,
        x: NodeId,
        kernel: usize,
        stride: usize,
        max: bool,
    ) -> Result<NodeId, ModelError> {
        self.pool_padded(name, x, kernel, stride, max, Padding::Same)
    }

    /// Max (`max = true`) or average pooling with the given padding.
    pub fn pool_padded(
        &mut self,
        name: &str,
        x: NodeId,
        kernel: usize,
        stride: usize,
        max: bool,
        padding: Padding,
    ) -> Result<NodeId, ModelError> {
        let [c, h, w] = self.chw(x)?;
        let [oh, ow] = padding
            .output_size(h, w, [kernel, kernel], stride)
            .ok_or_else(|| ModelError::Architecture(format!("{name}: window larger than input")))?;
        let (kernel, stride) = ([kernel, kernel], stride);
        let op = if max {
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
        } else {
            Op::AvgPool {
                kernel,
                stride,
                padding,
            }
        };
        Ok(self.push(name.into(), op, vec![x], vec![c, oh, ow]))
    }

    /// Element-wise sum.
    pub fn add(&mut self, name: &str, a: NodeId, b: NodeId) -> Result<NodeId, ModelError> {
        if self.shape(a) != self.shape(b) {
            return Err(ModelError::Architecture(format!(
                "{name}: cannot add shapes {:?} and {:?}",
                self.shape(a),
                self.shape(b)
            )));
        }
        let shape = self.shape(a).to_vec();
        Ok(self.push(name.into(), Op::Add, vec![a, b], shape))
    }

    /// Global average pooling.
    pub fn global_avg_pool(&mut self, name: &str, x: NodeId) -> Result<NodeId, ModelError> {
        let [c, _, _] = self.chw(x)?;
        Ok(self.push(name.into(), Op::GlobalAvgPool, vec![x], vec![c]))
    }

    /// Fully connected layer with bias, tensors `{name}/W` (`[out, in]`) and `{name}/b` (or
    /// `{name}.weight` and `{name}.bias`).
    pub fn linear(
        &mut self,
        name: &str,
        x: NodeId,
        out_features: usize,
    ) -> Result<NodeId, ModelError> {
        let in_features = match self.shape(x) {
            &[f] => f,
            s => {
                return Err(ModelError::Architecture(format!(
                    "{name}: linear input has shape {s:?}, expected [F]"
                )));
            }
        };
        let weight = self.naming.weight(name);
        let bias = self.naming.bias(name);
        self.param(
            weight.clone(),
            vec![out_features, in_features],
            Init::Normal(0.01),
            true,
        );
        self.param(bias.clone(), vec![out_features], Init::Zeros, true);
        let op = Op::Linear {
            weight,
            bias: Some(bias),
            in_features,
            out_features,
        };
        Ok(self.push(name.into(), op, vec![x], vec![out_features]))
    }

    /// A denoise block named `scope`: `x + BN(conv1x1(op(x)))` with taps `{scope}/before` (x),
    /// `{scope}/op` (op(x), before the 1×1 convolution) and `{scope}/after`.
    pub fn denoise(
        &mut self,
        scope: &str,
        x: NodeId,
        variant: DenoiseVariant,
    ) -> Result<NodeId, ModelError> {
        let [c, h, w] = self.chw(x)?;
        let block = self.graph.denoise_blocks.len();
        self.current_block = Some(block);
        let (theta, phi) = if variant.embedded() {
            if c < 2 {
                return Err(ModelError::Architecture(format!(
                    "{scope}: an embedded denoise block needs at least 2 channels"
                )));
            }
            let theta = self
                .naming
                .weight(&self.naming.join(scope, "embedding_theta"));
            let phi = self
                .naming
                .weight(&self.naming.join(scope, "embedding_phi"));
            self.param(
                theta.clone(),
                vec![c / 2, c, 1, 1],
                Init::Normal(0.01),
                true,
            );
            self.param(phi.clone(), vec![c / 2, c, 1, 1], Init::Normal(0.01), true);
            (Some(theta), Some(phi))
        } else {
            (None, None)
        };
        let op = Op::DenoiseOp {
            variant,
            channels: c,
            theta,
            phi,
        };
        let op = self.push(format!("{scope}/op"), op, vec![x], vec![c, h, w]);
        let conv = self.naming.join(scope, "conv");
        let f = self.conv(&conv, op, ConvSpec::new(c, 1, 1))?;
        let f = self.bn(&self.naming.join(&conv, "bn"), f, true)?;
        let y = self.add(&format!("{scope}/add"), x, f)?;
        self.current_block = None;
        self.graph.denoise_blocks.push(DenoiseBlock {
            name: scope.into(),
            input: x,
            output: y,
            op,
            variant,
        });
        self.tap(&format!("{scope}/before"), x, TapKind::DenoiseBefore(block));
        self.tap(&format!("{scope}/op"), op, TapKind::DenoiseOp(block));
        self.tap(&format!("{scope}/after"), y, TapKind::DenoiseAfter(block));
        Ok(y)
    }

    /// Names an activation.
    pub fn tap(&mut self, name: &str, node: NodeId, kind: TapKind) {
        self.graph.taps.push(Tap {
            name: name.into(),
            node,
            kind,
        });
    }

    /// Finishes the graph with `output` as the logits node.
    pub fn finish(mut self, output: NodeId) -> Result<Graph, ModelError> {
        if self.shape(output) != [self.graph.num_classes] {
            return Err(ModelError::Architecture(format!(
                "output has shape {:?}, expected [{}]",
                self.shape(output),
                self.graph.num_classes
            )));
        }
        self.graph.output = output;
        self.tap("logits", output, TapKind::Logits);
        Ok(self.graph)
    }
}
