//! The architecture description shared by every engine: a network is an ordered list of named
//! nodes whose parameter names match the weight file, plus named taps on the activations worth
//! looking at. Engines walk the list in order; no engine re-declares a model.

use serde::{Deserialize, Serialize};

use super::denoise::DenoiseVariant;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// How a convolution or pooling window is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// TensorFlow's `SAME`: output size `ceil(in / stride)`, with the odd pixel of padding placed
    /// after (bottom/right), so stride-2 layers pad asymmetrically.
    Same,
    /// No padding.
    Valid,
    /// Explicit amounts.
    Explicit {
        /// Rows added above.
        top: usize,
        /// Rows added below.
        bottom: usize,
        /// Columns added on the left.
        left: usize,
        /// Columns added on the right.
        right: usize,
    },
}

/// Padding resolved for a concrete input size: `[top, bottom, left, right]`.
pub type Pads = [usize; 4];

impl Padding {
    /// Resolves the padding for an input of `in_h`×`in_w`, a `kernel` window and `stride`.
    pub fn resolve(&self, in_h: usize, in_w: usize, kernel: [usize; 2], stride: usize) -> Pads {
        match *self {
            Padding::Valid => [0; 4],
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => [top, bottom, left, right],
            Padding::Same => {
                let one = |size: usize, k: usize| {
                    let out = size.div_ceil(stride);
                    let total = ((out.saturating_sub(1)) * stride + k).saturating_sub(size);
                    (total / 2, total - total / 2)
                };
                let (t, b) = one(in_h, kernel[0]);
                let (l, r) = one(in_w, kernel[1]);
                [t, b, l, r]
            }
        }
    }

    /// Output size of a window of `kernel` with `stride` over `in_h`×`in_w`, or `None` when the
    /// window does not fit.
    pub fn output_size(
        &self,
        in_h: usize,
        in_w: usize,
        kernel: [usize; 2],
        stride: usize,
    ) -> Option<[usize; 2]> {
        let [t, b, l, r] = self.resolve(in_h, in_w, kernel, stride);
        let h = in_h + t + b;
        let w = in_w + l + r;
        if h < kernel[0] || w < kernel[1] || stride == 0 {
            return None;
        }
        Some([(h - kernel[0]) / stride + 1, (w - kernel[1]) / stride + 1])
    }
}

/// The operation a node performs. Parameter names refer to entries of the weight file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The network input: an image batch in [0, 1], NCHW.
    Input,
    /// The model's own preprocessing: reorders channels (e.g. RGB→BGR) and computes
    /// `(x[order[c]] - mean[c]) / std[c]`.
    Normalize {
        /// Source channel for each output channel.
        channel_order: Vec<usize>,
        /// Per-channel mean, in [0, 1] pixel units.
        mean: Vec<f32>,
        /// Per-channel standard deviation.
        std: Vec<f32>,
    },
    /// 2-D convolution, weights OIHW (`[out, in/groups, kh, kw]`).
    Conv2d {
        /// Weight tensor name.
        weight: String,
        /// Optional bias tensor name (`[out]`).
        bias: Option<String>,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Stride (both axes).
        stride: usize,
        /// Padding.
        padding: Padding,
        /// Channel groups (1 = dense, `in_channels` = depthwise).
        groups: usize,
    },
    /// Batch norm in inference mode: `gamma * (x - mean) / sqrt(var + eps) + beta`, with the four
    /// tensors named by [`ParamNaming::batch_norm`] under `prefix`.
    BatchNorm {
        /// Name prefix of the four tensors.
        prefix: String,
        /// Channels.
        channels: usize,
        /// Variance epsilon.
        eps: f32,
        /// How the four tensors are named.
        #[serde(default)]
        naming: ParamNaming,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// Element-wise sum of two inputs of the same shape.
    Add,
    /// Max pooling; padded cells never win.
    MaxPool {
        /// Window.
        kernel: [usize; 2],
        /// Stride.
        stride: usize,
        /// Padding.
        padding: Padding,
    },
    /// Average pooling over the cells inside the image (padding excluded from the count).
    AvgPool {
        /// Window.
        kernel: [usize; 2],
        /// Stride.
        stride: usize,
        /// Padding.
        padding: Padding,
    },
    /// Mean over height and width: `[N, C, H, W]` → `[N, C]`.
    GlobalAvgPool,
    /// Fully connected layer, weight `[out, in]`, bias `[out]`.
    Linear {
        /// Weight tensor name.
        weight: String,
        /// Bias tensor name.
        bias: Option<String>,
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// The denoising operation inside a denoise block (see [`DenoiseVariant`]); embeddings, where
    /// the variant has them, are 1×1 convolutions `[C/2, C, 1, 1]` named by `theta` and `phi`.
    DenoiseOp {
        /// Which filter.
        variant: DenoiseVariant,
        /// Channels of the feature map.
        channels: usize,
        /// θ embedding weight name, for embedded variants.
        theta: Option<String>,
        /// φ embedding weight name, for embedded variants.
        phi: Option<String>,
    },
}

impl Op {
    /// Names of the parameter tensors this op reads, in a fixed order.
    pub fn param_names(&self) -> Vec<String> {
        match self {
            Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias, .. } => {
                let mut v = vec![weight.clone()];
                v.extend(bias.iter().cloned());
                v
            }
            Op::BatchNorm { prefix, naming, .. } => naming.batch_norm(prefix).to_vec(),
            Op::DenoiseOp { theta, phi, .. } => theta.iter().chain(phi.iter()).cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// A short name for listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Normalize { .. } => "normalize",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Add => "add",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Linear { .. } => "linear",
            Op::DenoiseOp { .. } => "denoise_op",
        }
    }
}

/// The tensor-naming convention of a weight file, so that parameter names match the file as it
/// was written: tensorpack's (`conv0/W`, `conv0/bn/gamma`, `conv0/bn/mean/EMA`) or PyTorch's
/// state-dict names (`conv1.weight`, `bn1.weight`, `bn1.running_mean`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamNaming {
    /// tensorpack (Xie et al.'s released models and advlens's own files).
    #[default]
    Tensorpack,
    /// PyTorch `state_dict` keys.
    Torch,
}

impl ParamNaming {
    /// `scope` and `name` joined with the convention's separator (`/` or `.`).
    pub fn join(self, scope: &str, name: &str) -> String {
        match self {
            ParamNaming::Tensorpack => format!("{scope}/{name}"),
            ParamNaming::Torch => format!("{scope}.{name}"),
        }
    }

    /// The weight tensor of layer `layer`.
    pub fn weight(self, layer: &str) -> String {
        match self {
            ParamNaming::Tensorpack => format!("{layer}/W"),
            ParamNaming::Torch => format!("{layer}.weight"),
        }
    }

    /// The bias tensor of layer `layer`.
    pub fn bias(self, layer: &str) -> String {
        match self {
            ParamNaming::Tensorpack => format!("{layer}/b"),
            ParamNaming::Torch => format!("{layer}.bias"),
        }
    }

    /// The four batch-norm tensor names under `prefix`: gamma, beta, running mean, running
    /// variance.
    pub fn batch_norm(self, prefix: &str) -> [String; 4] {
        match self {
            ParamNaming::Tensorpack => [
                format!("{prefix}/gamma"),
                format!("{prefix}/beta"),
                format!("{prefix}/mean/EMA"),
                format!("{prefix}/variance/EMA"),
            ],
            ParamNaming::Torch => [
                format!("{prefix}.weight"),
                format!("{prefix}.bias"),
                format!("{prefix}.running_mean"),
                format!("{prefix}.running_var"),
            ],
        }
    }
}

/// One node of the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name (weight names are derived from it).
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Nodes it reads, earlier in the list.
    pub inputs: Vec<NodeId>,
    /// Output shape for one example (`[C, H, W]` or `[F]`).
    pub shape: Vec<usize>,
    /// The denoise block this node belongs to, if any (index into [`Graph::denoise_blocks`]).
    pub denoise_block: Option<usize>,
}

/// A denoise block: the nodes from `input` (exclusive) to `output` (inclusive) compute
/// `y = x + BN(conv1x1(op(x)))`, with `op(x)` the value of node `op`; bypassing the block makes
/// every node of it, `op` and `output` included, equal `input`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiseBlock {
    /// Scope name, e.g. `group1_denoise` or `group0/block1/non_local`.
    pub name: String,
    /// The block's input node (the "before" activation).
    pub input: NodeId,
    /// The block's output node (the "after" activation).
    pub output: NodeId,
    /// The denoising operation's node (`op(x)`, before the 1×1 convolution).
    pub op: NodeId,
    /// The filter it uses.
    pub variant: DenoiseVariant,
}

/// What a tap shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapKind {
    /// The stem's output.
    Stem,
    /// A residual block's output.
    Block,
    /// A stage's output (before its denoise block, if any).
    Stage,
    /// The input of denoise block `n`.
    DenoiseBefore(usize),
    /// The output of denoise block `n`'s operation `op(x)`, before its 1×1 convolution. With the
    /// denoise bypass the block does not run and this tap, like the block's output, reports the
    /// block's input.
    DenoiseOp(usize),
    /// The output of denoise block `n`.
    DenoiseAfter(usize),
    /// The logits.
    Logits,
}

/// A named activation that engines can return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tap {
    /// Name shown to the user, e.g. `group1_denoise/before`.
    pub name: String,
    /// The node whose output this is.
    pub node: NodeId,
    /// What it is.
    pub kind: TapKind,
}

/// How a parameter is initialised when a network is created without weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// He/variance-scaling with fan-out (scale 2), the convention of the reference ResNets.
    HeFanOut,
    /// Normal with the given standard deviation.
    Normal(f32),
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

/// A parameter the graph expects in the weight file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Tensor name.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
    /// Initialiser for fresh networks.
    pub init: Init,
    /// Whether training updates it (batch-norm running statistics are not trained by gradient).
    pub trainable: bool,
}

/// A complete architecture: nodes, taps, denoise blocks and the parameters they need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Nodes in evaluation order; node 0 is the input.
    pub nodes: Vec<Node>,
    /// The node whose output is the logits.
    pub output: NodeId,
    /// Named activations.
    pub taps: Vec<Tap>,
    /// Denoise blocks in depth order.
    pub denoise_blocks: Vec<DenoiseBlock>,
    /// Parameters in a fixed order.
    pub params: Vec<ParamSpec>,
    /// Input shape `[C, H, W]`.
    pub input_shape: [usize; 3],
    /// Number of classes.
    pub num_classes: usize,
}

impl Graph {
    /// Looks a tap up by name.
    pub fn tap(&self, name: &str) -> Option<&Tap> {
        self.taps.iter().find(|t| t.name == name)
    }

    /// Looks a node up by name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Total number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Number of scalar parameters training updates (batch-norm running statistics excluded):
    /// what frameworks report as a model's parameter count.
    pub fn trainable_param_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Taps ordered for display: denoise taps first (before, op, after), then the rest by depth.
    pub fn taps_denoise_first(&self) -> Vec<&Tap> {
        let mut v: Vec<&Tap> = self.taps.iter().collect();
        v.sort_by_key(|t| match t.kind {
            TapKind::DenoiseBefore(b) => (0, b, 0),
            TapKind::DenoiseOp(b) => (0, b, 1),
            TapKind::DenoiseAfter(b) => (0, b, 2),
            _ => (1, t.node, 0),
        });
        v
    }
}
