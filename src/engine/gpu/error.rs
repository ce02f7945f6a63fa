//! How the gpu engine reports a failure: as an [`EngineError::Backend`] tagged `gpu`.

use crate::engine::EngineError;

/// A gpu engine failure with `message`.
pub(crate) fn gpu_err(message: impl Into<String>) -> EngineError {
    EngineError::Backend {
        engine: "gpu",
        message: message.into(),
    }
}
