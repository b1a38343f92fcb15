//! Quick start: learn a two-atom Wasserstein dictionary from five translated Gaussians
//! (the paper's Figure 2 data) in a few seconds, look at what it learned, use it on a
//! new histogram, and save it.
//!
//! Run: `cargo run --release --example quickstart` (figures in `out/quickstart/`).
//!
//! The steps, each one call of the library:
//! 1. data: `datasets::fig2_gaussians()`, a `Batch` with one histogram per column;
//! 2. a kernel: `GridKernel` on the 100-bin grid of `[0, 1]`, `γ = 0.005`;
//! 3. `dictionary::fit` with a `WdlConfig` (2 atoms, 100 Sinkhorn iterations, quadratic
//!    loss), a progress bar as its observer, from four random starts (the best is kept);
//! 4. `dictionary::transform` on a histogram it has never seen: its barycentric weights;
//! 5. `dictionary::Model::save` / `load`: the dictionary as versioned JSON.

#[path = "common/mod.rs"]
pub mod common;

use common::{result_line, Progress, Settings};
use std::time::Instant;
use wassdl::baselines::pca;
use wassdl::dictionary::{fit, reconstruct, transform, AtomInit, KernelSpec, Model, WdlConfig};
use wassdl::metrics::mse;
use wassdl::{BarycenterConfig, Batch, Grid, GridKernel, Loss, Result};
use wassdl_cli::datasets::{fig2_gaussians, gaussians_1d, linspace};
use wassdl_cli::figures::{save_histograms_1d, HistPanel, HistRow};

/// What the quick start measured.
#[derive(Clone, Debug)]
pub struct QuickstartMetrics {
    /// MSE of the reconstructions of the five datapoints.
    pub wdl_mse: f64,
    /// MSE of a rank-2 PCA, for scale.
    pub pca_mse: f64,
    /// Weight of the left atom (the one with the smaller mean) for a new Gaussian at 0.45.
    pub new_left_weight: f64,
    /// What an exact displacement interpolation between the atoms' means would give.
    pub new_left_expected: f64,
    /// Seconds spent learning.
    pub fit_seconds: f64,
}

impl QuickstartMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        result_line(&[
            ("wdl_mse", self.wdl_mse),
            ("pca_mse", self.pca_mse),
            ("new_left_weight", self.new_left_weight),
            ("new_left_expected", self.new_left_expected),
            ("fit_seconds", self.fit_seconds),
        ])
    }
}

/// Learns, prints, transforms, saves; writes `quickstart.png`.
pub fn run(settings: &Settings) -> Result<QuickstartMetrics> {
    // 1-2. Data and kernel: the blur of K (variance γ/2) equals the data's (σ² = 0.0025).
    let data = fig2_gaussians();
    let grid = Grid::new(&[100])?;
    let gamma = 0.005;
    let kernel = GridKernel::<f64>::new(&grid, gamma)?;

    // 3. Learn. WDL is non-convex: as the paper does for this figure, start from a few
    //    random initializations and keep the lowest loss.
    let (restarts, iters) = if settings.quick { (4, 30) } else { (4, 60) };
    let cfg = WdlConfig::new(2)
        .barycenter(BarycenterConfig::iterations(100))
        .loss(Loss::Quadratic)
        .atom_init(AtomInit::Random)
        .max_iter(iters);
    let t0 = Instant::now();
    let mut best = None;
    for seed in 0..restarts {
        let mut bar = Progress::new(
            settings,
            &format!("start {}/{restarts}", seed + 1),
            iters,
            false,
        );
        let f = fit(&kernel, &data, &cfg.clone().seed(seed), &mut bar)?;
        bar.finish();
        println!("start {}: loss {:.3e}", seed + 1, f.loss);
        if best
            .as_ref()
            .is_none_or(|b: &wassdl::dictionary::Fit<f64>| f.loss < b.loss)
        {
            best = Some(f);
        }
    }
    let learned = best.expect("at least one start");
    let fit_seconds = t0.elapsed().as_secs_f64();

    let x = linspace(0.0, 1.0, 100);
    let mean = |h: &[f64]| h.iter().zip(&x).map(|(p, x)| p * x).sum::<f64>();
    let means = [mean(learned.atoms.col(0)), mean(learned.atoms.col(1))];
    let left = usize::from(means[1] < means[0]);
    println!(
        "kept the best of {restarts} starts: 2 atoms, loss {:.3e} ({fit_seconds:.1} s in all)",
        learned.loss
    );
    for (s, m) in means.iter().enumerate() {
        let peak = learned.atoms.col(s).iter().copied().fold(0.0, f64::max);
        println!(
            "  atom {}: centred at {m:.3}, largest bin holds {:.0}% of its mass",
            s + 1,
            100.0 * peak
        );
    }
    let centres = linspace(0.3, 0.7, 5);
    for (j, c) in centres.iter().enumerate() {
        println!(
            "  datapoint {} (Gaussian at {c:.1}): weights ({:.3}, {:.3})",
            j + 1,
            learned.weights.get(0, j),
            learned.weights.get(1, j)
        );
    }

    // Reconstructions from a cold start, against PCA.
    let recon = reconstruct(&kernel, &learned.atoms, &learned.weights, &cfg)?;
    let wdl_mse = mse(&data, &recon)?;
    let pca_mse = mse(&data, &pca(&data, 2)?.reconstruction)?;
    println!("reconstruction MSE: WDL {wdl_mse:.3e}, PCA {pca_mse:.3e}");

    // 4. A histogram the dictionary has never seen: a Gaussian at 0.45. Its barycentric
    //    weights place it between the atoms, as displacement interpolation would.
    let new = gaussians_1d(100, &[0.45], 0.05)?;
    let w = transform(&kernel, &learned.atoms, &new, &cfg.clone().max_iter(50))?;
    let new_left_weight = w.get(left, 0);
    let new_left_expected = (means[1 - left] - 0.45) / (means[1 - left] - means[left]);
    println!(
        "new Gaussian at 0.45: weight {new_left_weight:.3} on the left atom \
         (displacement interpolation between the atom centres: {new_left_expected:.3})"
    );

    // 5. Save and reload.
    let model = Model::new(KernelSpec::grid(&grid, gamma), cfg.clone(), &learned)?;
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|e| wassdl::Error::Io(format!("{}: {e}", settings.out_dir.display())))?;
    let path = settings.path("model.json");
    wassdl_cli::json::save_model(&model, &path)?;
    let back = wassdl_cli::json::load_model::<f64>(&path)?;
    assert_eq!(
        back.atoms(),
        learned.atoms,
        "a save/load round trip is exact"
    );
    println!("saved the dictionary to {}", path.display());

    let new_recon = reconstruct(&kernel, &learned.atoms, &w, &cfg)?;
    let panels =
        |label: &str, a: &'_ Batch<f64>, b: &'_ Batch<f64>| -> Vec<(String, Vec<f64>, Vec<f64>)> {
            (0..a.cols())
                .map(|j| {
                    (
                        format!("{label} {}", j + 1),
                        a.col(j).to_vec(),
                        b.col(j).to_vec(),
                    )
                })
                .collect()
        };
    let mut all = panels("datapoint", &data, &recon);
    all.extend(panels("new", &new, &new_recon));
    let atoms: Vec<(String, Vec<f64>)> = (0..2)
        .map(|s| (format!("atom {}", s + 1), learned.atoms.col(s).to_vec()))
        .collect();
    let rows = [
        HistRow {
            label: "atoms".into(),
            panels: atoms
                .iter()
                .map(|(t, a)| HistPanel {
                    title: t.clone(),
                    curves: vec![a],
                })
                .collect(),
        },
        HistRow {
            label: "fits".into(),
            panels: all
                .iter()
                .map(|(t, d, r)| HistPanel {
                    title: t.clone(),
                    curves: vec![d, r],
                })
                .collect(),
        },
    ];
    save_histograms_1d(
        settings.path("quickstart.png"),
        &format!("Quick start: two Wasserstein atoms (MSE {wdl_mse:.2e}; PCA {pca_mse:.2e})"),
        &["data / atom", "barycenter of the atoms"],
        &rows,
    )?;

    Ok(QuickstartMetrics {
        wdl_mse,
        pca_mse,
        new_left_weight,
        new_left_expected,
        fit_seconds,
    })
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    common::main_with("quickstart", run, QuickstartMetrics::result_line)
}
