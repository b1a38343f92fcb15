//! Learned dictionaries ([`Model`]) as self-describing, versioned JSON, exact to the bit.
//!
//! Exactness comes from serde_json's `float_roundtrip` feature (enabled by this crate):
//! numbers are written in shortest round-trip form and parsed correctly rounded. An f32
//! model is written with f32's shortest strings and read through f64; that double
//! rounding returns every finite f32 unchanged (checked exhaustively over all 2³¹ − 2²³
//! positive finite f32, see `docs/cli.md`).

use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use wassdl::dictionary::{Model, MODEL_FORMAT, MODEL_VERSION};
use wassdl::{Error, Real, Result};

/// The fields checked before the whole model is read.
#[derive(serde::Deserialize)]
struct Header {
    format: String,
    version: u32,
    scalar: String,
}

/// The model as pretty-printed JSON.
pub fn model_to_json<T: Real + Serialize>(model: &Model<T>) -> Result<String> {
    serde_json::to_string_pretty(model).map_err(|e| Error::external("model to JSON", e))
}

/// Reads a model written by [`model_to_json`] (fields it does not know, such as a
/// checkpoint's, are ignored), checking its format, version and precision first.
pub fn model_from_json<T: Real + DeserializeOwned>(text: &str) -> Result<Model<T>> {
    let bad = |msg: String| Error::Io(format!("not a {MODEL_FORMAT} file: {msg}"));
    let h: Header = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if h.format != MODEL_FORMAT {
        return Err(bad(format!("format is {:?}", h.format)));
    }
    if h.version != MODEL_VERSION {
        return Err(Error::Io(format!(
            "{MODEL_FORMAT} version {} is not supported (this build reads version {MODEL_VERSION})",
            h.version
        )));
    }
    if h.scalar != T::NAME {
        return Err(Error::Io(format!(
            "the model holds {} values; load it as Model<{}>",
            h.scalar, h.scalar
        )));
    }
    let model: Model<T> = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let d = model.dims;
    for (what, len, expected) in [
        ("atoms", model.atoms.len(), d.n * d.n_atoms),
        ("weights", model.weights.len(), d.n_atoms * d.m),
    ] {
        if len != expected {
            return Err(bad(format!(
                "`{what}` has {len} entries, dims say {expected}"
            )));
        }
    }
    Ok(model)
}

/// Writes [`model_to_json`] to `path`.
pub fn save_model<T: Real + Serialize>(model: &Model<T>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, model_to_json(model)?)
        .map_err(|e| Error::external(path.display().to_string(), e))
}

/// Reads a model saved by [`save_model`].
pub fn load_model<T: Real + DeserializeOwned>(path: impl AsRef<Path>) -> Result<Model<T>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::external(path.display().to_string(), e))?;
    model_from_json(&text)
}
