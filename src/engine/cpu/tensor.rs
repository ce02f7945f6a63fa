//! The boundary between candle and the rest of advlens: candle tensors to host arrays, candle
//! errors to engine errors.

use candle_core::{DType, Tensor};

use crate::array::Array;
use crate::engine::EngineError;

/// Wraps a candle error as an engine error.
pub(crate) fn backend(e: candle_core::Error) -> EngineError {
    EngineError::Backend {
        engine: "cpu",
        message: e.to_string(),
    }
}

/// Copies a candle tensor to a host array.
pub fn to_array(t: &Tensor) -> Result<Array, EngineError> {
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(backend)?;
    Array::new(shape, data).map_err(|e| EngineError::Backend {
        engine: "cpu",
        message: e.to_string(),
    })
}
