//! # wassdl-cli — the `wassdl` command line and what it needs beyond the numerics
//!
//! The numerical library is the `wassdl` crate; this one holds what a researcher who
//! embeds it does not need: the NumPy file reader and writer ([`npy`]), PNG figures
//! ([`figures`]), the synthetic and real datasets of the examples ([`datasets`]), and
//! exact JSON for models and checkpoints ([`json`]). The binary (`src/main.rs`) is the
//! `wassdl` command described in `docs/cli.md`.
#![deny(missing_docs)]

pub mod datasets;
pub mod figures;
pub mod json;
pub mod npy;
