//! Dictionary learning on Fashion-MNIST: atoms per class and for a mixture of classes,
//! against PCA and NMF.
//!
//! Data: `data/fashion_mnist_2000.npy` (28 × 28, uint8), the first `--count` (default 30)
//! images of each of three classes, trouser (1), sneaker (7) and bag (8), `+ 1` (in pixel
//! units 0-255) then normalized. One fit per class (`c1_`, `c7_`, `c8_`, `--atoms`
//! atoms, default 3) and one on the three classes together (`mix_`, twice as many
//! atoms). WDL: quadratic loss, `γ = 1 px²`, L = 25, at most 200 L-BFGS iterations,
//! stopping when an iteration lowers the loss by less than 10⁻⁶ of the initial loss,
//! random atoms, uniform weights. PCA and NMF keep as many components.
//!
//! Output: `<group>_atoms.png`, `<group>_reconstructions.png` and a `RESULT` line with,
//! per group, MSE, PSNR, mean exact `W₂²` (px²), time, iterations and how the fit ended.
//!
//! Run: `cargo run --release -p wassdl-cli --example fashion [-- --quick]`.

#[path = "common/mod.rs"]
pub mod common;
#[path = "common/realdata.rs"]
pub mod realdata;

use common::Settings;
use realdata::{compare, save_figure11, Comparison, Setup, WdlArgs};
use wassdl::dictionary::{AtomInit, WeightInit};
use wassdl::{Batch, Loss, Result};
use wassdl_cli::datasets::{fashion_mnist, HistogramOptions};

/// The classes used.
pub const CLASSES: [usize; 3] = [1, 7, 8];

/// What the example measured.
pub struct FashionMetrics {
    /// `(prefix, comparison)`: one per class, then the mixture.
    pub runs: Vec<(String, Comparison)>,
}

impl FashionMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        let p: Vec<(String, f64)> = self.runs.iter().flat_map(|(k, c)| c.pairs(k)).collect();
        let r: Vec<(&str, f64)> = p.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        common::result_line(&r)
    }
}

/// The default setting (full run) or the quick one.
pub fn setup(quick: bool) -> Setup {
    Setup {
        atoms: 3,
        gamma: 1.0,
        sinkhorn_iters: 25,
        max_iters: if quick { 8 } else { 200 },
        tol: 1e-6,
        zeta: 1.0,
        loss: Loss::Quadratic,
        atom_init: AtomInit::Random,
        weight_init: WeightInit::Uniform,
        log: false,
        restarts: 1,
        guard: true,
    }
}

/// Runs the per-class fits and the mixture with `args` over the defaults.
pub fn run_with(settings: &Settings, args: &WdlArgs) -> Result<FashionMetrics> {
    let count = args.count.unwrap_or(if settings.quick { 5 } else { 30 });
    let all = fashion_mnist()?;
    let opts = HistogramOptions {
        floor: args.floor.unwrap_or(1.0),
        invert: args.invert.then_some(all.peak),
    };
    let s = setup(settings.quick).with_args(args)?;
    let mut runs = Vec::new();
    let mut mix: Vec<f64> = Vec::new();
    for c in CLASSES {
        let data = all.select(Some(c), count)?.histograms(&opts)?;
        mix.extend_from_slice(data.as_slice());
        let prefix = format!("c{c}_");
        let cmp = compare(settings, &prefix, &data, 28, 28, &s)?;
        cmp.print(&format!("fashion class {c}: {count} images, {s:?}"));
        save_figure11(settings, &format!("c{c}"), &data, &cmp, 28, 28)?;
        runs.push((prefix, cmp));
    }
    let m = CLASSES.len() * count;
    let data = Batch::from_vec(28 * 28, m, mix);
    // interleave the classes so the figure's first columns show all three
    let data = Batch::from_fn(28 * 28, m, |i, j| {
        data.get(i, (j % CLASSES.len()) * count + j / CLASSES.len())
    });
    let mut sm = s.clone();
    sm.atoms = 2 * s.atoms;
    let cmp = compare(settings, "mix_", &data, 28, 28, &sm)?;
    cmp.print(&format!("fashion mixture: {m} images, {sm:?}"));
    save_figure11(settings, "mix", &data, &cmp, 28, 28)?;
    runs.push(("mix_".into(), cmp));
    Ok(FashionMetrics { runs })
}

/// The quick or full run with the defaults (what the tests call).
pub fn run(settings: &Settings) -> Result<FashionMetrics> {
    run_with(settings, &WdlArgs::default())
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    realdata::main_with("fashion", run_with, FashionMetrics::result_line)
}
