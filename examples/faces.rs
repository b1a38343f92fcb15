//! Wasserstein faces (section 5.3, Figure 11): WDL atoms against Eigenfaces (PCA) and NMF.
//!
//! Data: the first `--count` (default 20) of the 100 LFW face crops of `data/` (25 × 25,
//! values in [0, 1]), `+ 10⁻³` then normalized, with and without inverted colours
//! (`1 − x`: the dark eyebrows, eyes and mouth carry the mass). Unlike the paper's 20
//! images of one person of the MUG database, these are 20 different people, so the
//! paper's PSNR (33.8 WDL, 33.6 Eigenfaces, 33.5 NMF) is a point of comparison, not a
//! target. Settings of section 5.3: 5 atoms, 25 Sinkhorn iterations, constant initial
//! atoms, random initial weights, at most 450 L-BFGS iterations, the KL and the quadratic
//! loss (NMF then uses the matching KL or Frobenius objective); `γ = 1 px²`. Four fits:
//! `q_` quadratic, `qi_` quadratic inverted, `kl_` KL, `kli_` KL inverted.
//!
//! Output: `<variant>_atoms.png` (rows: data, Eigenfaces, NMF atoms, WDL atoms),
//! `<variant>_reconstructions.png` (rows: data and the reconstructions of each method),
//! and a `RESULT` line with MSE, PSNR, mean exact `W₂²` (px²), time, L-BFGS iterations and
//! how each fit ended (see `examples/common/realdata.rs`).
//!
//! Run: `cargo run --release -p wassdl-cli --example faces [-- --quick]`.

#[path = "common/mod.rs"]
pub mod common;
#[path = "common/realdata.rs"]
pub mod realdata;

use common::Settings;
use realdata::{compare, save_figure11, Comparison, Setup, WdlArgs};
use wassdl::dictionary::{AtomInit, WeightInit};
use wassdl::{Loss, Result};
use wassdl_cli::datasets::{faces, HistogramOptions};

/// What the example measured: one comparison per (loss, inversion).
pub struct FacesMetrics {
    /// `(prefix, comparison)`: `q_`, `qi_`, `kl_`, `kli_`.
    pub runs: Vec<(&'static str, Comparison)>,
}

impl FacesMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        let p: Vec<(String, f64)> = self.runs.iter().flat_map(|(k, c)| c.pairs(k)).collect();
        let r: Vec<(&str, f64)> = p.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        common::result_line(&r)
    }
}

/// The section 5.3 setting for `loss` (full run) or its quick form.
pub fn setup(quick: bool, loss: Loss) -> Setup {
    Setup {
        atoms: 5,
        gamma: 1.0,
        sinkhorn_iters: 25,
        max_iters: if quick { 15 } else { 450 },
        tol: 1e-6,
        zeta: 1.0,
        loss,
        atom_init: AtomInit::Constant,
        weight_init: WeightInit::Random,
        log: false,
        restarts: 1,
        guard: true,
    }
}

/// Runs the four fits with `args` over the defaults (`--loss` or `--invert` keep only the
/// matching fits).
pub fn run_with(settings: &Settings, args: &WdlArgs) -> Result<FacesMetrics> {
    let count = args.count.unwrap_or(if settings.quick { 8 } else { 20 });
    let set = faces()?.select(None, count)?;
    let mut runs = Vec::new();
    for (prefix, loss, invert) in [
        ("q_", Loss::Quadratic, false),
        ("qi_", Loss::Quadratic, true),
        ("kl_", Loss::KullbackLeibler, false),
        ("kli_", Loss::KullbackLeibler, true),
    ] {
        let wanted_loss = args
            .loss
            .as_deref()
            .is_none_or(|l| (l == "kl") == (loss == Loss::KullbackLeibler));
        if !wanted_loss || (args.invert && !invert) {
            continue;
        }
        let data = set.histograms(&HistogramOptions {
            floor: args.floor.unwrap_or(1e-3),
            invert: invert.then_some(set.peak),
        })?;
        let s = setup(settings.quick, loss).with_args(args)?;
        let cmp = compare(settings, prefix, &data, 25, 25, &s)?;
        cmp.print(&format!("faces {prefix}: {count} faces, {s:?}"));
        save_figure11(settings, prefix.trim_end_matches('_'), &data, &cmp, 25, 25)?;
        runs.push((prefix, cmp));
    }
    Ok(FacesMetrics { runs })
}

/// The quick or full run with the defaults (what the tests call).
pub fn run(settings: &Settings) -> Result<FacesMetrics> {
    run_with(settings, &WdlArgs::default())
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    realdata::main_with("faces", run_with, FacesMetrics::result_line)
}
