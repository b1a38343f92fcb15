//! Wasserstein dictionary learning on real handwritten digits, against PCA and NMF.
//!
//! Data: scikit-learn's digits (`data/digits_images.npy`, 8 × 8, values 0-16), the first
//! `--count` images of the digit 3 (default 60), each `+ 10⁻³` then normalized
//! ([`wassdl_cli::datasets::to_histograms`]). Defaults (decided by measurement, see
//! `docs/dictionary.md`): 3 atoms drawn from the data, quadratic loss, `γ = 0.5 px²`, L = 50, 300 L-BFGS
//! iterations at most, stopping when an iteration lowers the loss by less than 10⁻⁶ of
//! the initial loss; every WDL option can be changed on the command line (`--help`).
//! PCA keeps 3 components plus the mean, NMF 3 (Frobenius, NNDSVDa).
//!
//! Output: `digits_atoms.png`, `digits_reconstructions.png`, `wdl_loss.png` and a
//! `RESULT` line with MSE, PSNR, the mean exact `W₂²` (px²) between each datapoint and
//! its reconstruction and the fit time of each method, the L-BFGS iterations and how the
//! fit ended (`wdl_end`: 0 iteration cap, 1 tolerance met, 2 line search gave up).
//!
//! Run: `cargo run --release -p wassdl-cli --example digits [-- --quick]`.

#[path = "common/mod.rs"]
pub mod common;
#[path = "common/realdata.rs"]
pub mod realdata;

use common::Settings;
use realdata::{compare, save_figure11, Comparison, Setup, WdlArgs};
use wassdl::dictionary::{AtomInit, WeightInit};
use wassdl::{Loss, Result};
use wassdl_cli::datasets::{digits, HistogramOptions};

/// What the example measured.
pub struct DigitsMetrics {
    /// The comparison.
    pub cmp: Comparison,
}

impl DigitsMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        let p = self.cmp.pairs("");
        let r: Vec<(&str, f64)> = p.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        common::result_line(&r)
    }
}

/// The default setting (full run) or the quick one.
pub fn setup(quick: bool) -> Setup {
    Setup {
        atoms: 3,
        gamma: 0.5,
        sinkhorn_iters: if quick { 20 } else { 50 },
        max_iters: if quick { 30 } else { 300 },
        tol: 1e-6,
        zeta: 1.0,
        loss: Loss::Quadratic,
        atom_init: AtomInit::FromData,
        weight_init: WeightInit::Uniform,
        log: false,
        restarts: 1,
        guard: true,
    }
}

/// Runs the comparison with `args` over the defaults.
pub fn run_with(settings: &Settings, args: &WdlArgs) -> Result<DigitsMetrics> {
    let count = args.count.unwrap_or(if settings.quick { 20 } else { 60 });
    let set = digits()?.select(Some(3), count)?;
    let data = set.histograms(&HistogramOptions {
        floor: args.floor.unwrap_or(1e-3),
        invert: args.invert.then_some(set.peak),
    })?;
    let s = setup(settings.quick).with_args(args)?;
    let cmp = compare(settings, "WDL digits", &data, 8, 8, &s)?;
    cmp.print(&format!("digits: {count} threes, {s:?}"));
    save_figure11(settings, "digits", &data, &cmp, 8, 8)?;
    common::save_loss_curve(settings, &cmp.fit, "quadratic loss")?;
    Ok(DigitsMetrics { cmp })
}

/// The quick or full run with the defaults (what the tests call).
pub fn run(settings: &Settings) -> Result<DigitsMetrics> {
    run_with(settings, &WdlArgs::default())
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    realdata::main_with("digits", run_with, DigitsMetrics::result_line)
}
