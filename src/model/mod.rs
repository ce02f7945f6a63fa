//! Networks: the architecture description ([`graph`]), the families built from it ([`resnet`]),
//! the denoise variants ([`denoise`]) and weight files ([`weights`]).

mod builder;
mod denoise;
mod efficientnet;
mod graph;
mod init;
mod limits;
pub mod npz;
pub mod pickle;
pub mod pth;
pub mod pytorch;
mod resnet;
pub mod tensorpack;
mod torchvision;
pub mod weights;
pub mod zip;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::array::Array;
pub use builder::{ConvSpec, GraphBuilder};
pub use denoise::{DenoiseVariant, Placement};
pub use efficientnet::EfficientNetLiteConfig;
pub use graph::{Graph, Node, NodeId, Op, Padding, Pads, ParamNaming, Tap, TapKind};
pub use init::{initialise, normal, pytorch_style};
pub use limits::{MAX_BLOCKS_PER_STAGE, MAX_EVAL_RESIZE, MAX_FILE_BYTES, MAX_IMAGE_SIDE};
pub use resnet::{BlockKind, ResnetDenoiseConfig, StemKind};
pub use torchvision::TorchResnetConfig;

/// Errors about architectures and weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configuration does not describe a valid network.
    #[error("invalid architecture: {0}")]
    Architecture(String),
    /// A tensor the architecture needs is not in the weights.
    #[error("weight tensor {0:?} is missing")]
    MissingTensor(String),
    /// The weights hold a tensor the architecture does not use.
    #[error("weight tensor {0:?} is not used by this architecture")]
    UnexpectedTensor(String),
    /// A tensor has the wrong shape.
    #[error("weight tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        /// Tensor name.
        name: String,
        /// Shape the architecture needs.
        expected: Vec<usize>,
        /// Shape in the file.
        actual: Vec<usize>,
    },
    /// A tensor holds NaN or infinity.
    #[error("weight tensor {0:?} contains NaN or infinite values")]
    NonFinite(String),
    /// A weight file could not be parsed.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which family a network belongs to, with its configuration; saved in the weight file so that
/// one file is enough to rebuild the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ArchConfig {
    /// The resnet-denoise family (advlens's own models and Xie et al.'s released ones).
    ResnetDenoise(ResnetDenoiseConfig),
    /// EfficientNet-Lite with PyTorch key names.
    EfficientNetLite(EfficientNetLiteConfig),
    /// torchvision's ResNets with their key names.
    TorchResnet(TorchResnetConfig),
}

impl ArchConfig {
    /// Builds the architecture graph.
    pub fn build(&self) -> Result<Graph, ModelError> {
        match self {
            ArchConfig::ResnetDenoise(c) => c.build(),
            ArchConfig::EfficientNetLite(c) => c.build(),
            ArchConfig::TorchResnet(c) => c.build(),
        }
    }

    /// A one-line description.
    pub fn summary(&self) -> String {
        match self {
            ArchConfig::ResnetDenoise(c) => {
                let stages = match &c.denoise_stages {
                    None => "every stage".to_string(),
                    Some(s) => {
                        let list: Vec<String> = s.iter().map(usize::to_string).collect();
                        let noun = if list.len() == 1 { "stage" } else { "stages" };
                        format!("{noun} {}", list.join(", "))
                    }
                };
                let denoise = match c.placement {
                    Placement::None => "no denoise blocks".to_string(),
                    Placement::AfterStage => {
                        format!("{} denoise blocks after {stages}", c.denoise)
                    }
                    Placement::AfterEveryBlock => {
                        format!("{} denoise blocks after every block of {stages}", c.denoise)
                    }
                };
                format!(
                    "resnet-denoise {}x{}x{} → {} classes, widths {:?}, blocks {:?}, {denoise}",
                    c.in_channels,
                    c.image_size[0],
                    c.image_size[1],
                    c.num_classes,
                    c.widths,
                    c.blocks,
                )
            }
            ArchConfig::EfficientNetLite(c) => format!(
                "{} 3x{}x{} → {} classes",
                c.name(),
                c.image_size[0],
                c.image_size[1],
                c.num_classes
            ),
            ArchConfig::TorchResnet(c) => format!(
                "torchvision {} 3x{}x{} → {} classes",
                c.name(),
                c.image_size[0],
                c.image_size[1],
                c.num_classes
            ),
        }
    }
}

/// An architecture with its weights: everything an engine needs.
#[derive(Clone, Debug)]
pub struct Network {
    /// The configuration it was built from.
    pub config: ArchConfig,
    /// The architecture.
    pub graph: Graph,
    /// Parameters by name, in the layouts [`graph::Op`] documents.
    pub weights: BTreeMap<String, Array>,
    /// Class names, one per logit (generated as `class N` when the file has none).
    pub class_names: Vec<String>,
    /// Free-form metadata carried with the weights (for example the training record).
    pub metadata: BTreeMap<String, String>,
}

impl Network {
    /// A network with freshly initialised weights drawn from `seed`.
    pub fn random(config: ArchConfig, seed: u64) -> Result<Self, ModelError> {
        let graph = config.build()?;
        let weights = init::initialise(&graph, seed);
        let class_names = default_class_names(graph.num_classes);
        Ok(Self {
            config,
            graph,
            weights,
            class_names,
            metadata: BTreeMap::new(),
        })
    }

    /// Checks `weights` against the architecture and assembles the network. Errors name the
    /// missing, unexpected, mis-shaped or non-finite tensor.
    pub fn from_weights(
        config: ArchConfig,
        weights: BTreeMap<String, Array>,
        class_names: Option<Vec<String>>,
    ) -> Result<Self, ModelError> {
        let graph = config.build()?;
        for spec in &graph.params {
            let t = weights
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingTensor(spec.name.clone()))?;
            if t.shape() != spec.shape.as_slice() {
                return Err(ModelError::WrongShape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    actual: t.shape().to_vec(),
                });
            }
            if !t.all_finite() {
                return Err(ModelError::NonFinite(spec.name.clone()));
            }
        }
        if let Some(extra) = weights
            .keys()
            .find(|k| !graph.params.iter().any(|p| &p.name == *k))
        {
            return Err(ModelError::UnexpectedTensor(extra.clone()));
        }
        let class_names = match class_names {
            Some(names) if names.len() == graph.num_classes => names,
            Some(names) => {
                return Err(ModelError::Architecture(format!(
                    "{} class names for {} classes",
                    names.len(),
                    graph.num_classes
                )));
            }
            None => default_class_names(graph.num_classes),
        };
        Ok(Self {
            config,
            graph,
            weights,
            class_names,
            metadata: BTreeMap::new(),
        })
    }

    /// A parameter by name.
    pub fn param(&self, name: &str) -> Result<&Array, ModelError> {
        self.weights
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// Batch norm with tensors `names` (gamma, beta, mean, variance) in inference mode folded into
    /// a per-channel `(scale, shift)`: `gamma·(x − mean)/√(var + eps) + beta = scale·x + shift`.
    pub fn folded_batch_norm(
        &self,
        names: &[String; 4],
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
        let [g, b, m, v] = names;
        let (g, b, m, v) = (
            self.param(g)?.data(),
            self.param(b)?.data(),
            self.param(m)?.data(),
            self.param(v)?.data(),
        );
        let scale: Vec<f32> = g.iter().zip(v).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift = b
            .iter()
            .zip(m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }

    /// The model's evaluation resize (shorter side, before a centre crop), if it has one.
    pub fn eval_resize(&self) -> Option<usize> {
        match &self.config {
            ArchConfig::ResnetDenoise(c) => c.eval_resize,
            ArchConfig::EfficientNetLite(c) => c.eval_resize,
            ArchConfig::TorchResnet(c) => c.eval_resize,
        }
    }

    /// Input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        self.graph.input_shape
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.graph.num_classes
    }

    /// A multi-line description: architecture, metadata, nodes, taps and denoise blocks (what
    /// `advlens inspect` prints).
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let net = self;
        let g = &net.graph;
        let mut s = String::new();
        let _ = writeln!(s, "architecture: {}", net.config.summary());
        let _ = writeln!(
            s,
            "input: {:?} in [0, 1]; classes: {}; parameters: {}",
            g.input_shape,
            g.num_classes,
            g.param_count()
        );
        for (k, v) in &net.metadata {
            let _ = writeln!(s, "metadata {k}: {v}");
        }
        let _ = writeln!(s, "\nnodes ({}):", g.nodes.len());
        for node in &g.nodes {
            let _ = writeln!(
                s,
                "  {:<36} {:<16} {:?}",
                node.name,
                node.op.kind(),
                node.shape
            );
        }
        let _ = writeln!(s, "\ntaps ({}):", g.taps.len());
        for t in &g.taps {
            let _ = writeln!(
                s,
                "  {:<36} {:?} {:?}",
                t.name, t.kind, g.nodes[t.node].shape
            );
        }
        let _ = writeln!(s, "\ndenoise blocks ({}):", g.denoise_blocks.len());
        for d in &g.denoise_blocks {
            let _ = writeln!(s, "  {:<36} {}", d.name, d.variant);
        }
        s
    }

    /// The name of class `k`, or its number when out of range.
    pub fn class_name(&self, k: usize) -> String {
        self.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    }
}

fn default_class_names(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("class {k}")).collect()
}
