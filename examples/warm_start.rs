//! Section 4.2 of the paper (Figure 4): warm-started Sinkhorn scalings across L-BFGS
//! restarts, against cold starts with as few and with many Sinkhorn iterations.
//!
//! Three fits of the same dictionary, each followed by the mean PSNR of its
//! reconstructions after every L-BFGS iteration, and timed:
//!
//! * **warm, few**: `NSH = 2` Sinkhorn iterations, L-BFGS restarted every 10 iterations
//!   with the scalings of the previous run as the starting point (section 4.2);
//! * **cold, few**: `NSH = 2`, every barycenter from `b = 1`;
//! * **cold, many**: `NSH = 100`, from `b = 1`.
//!
//! Data: the faces of section 5.3 are not available; like them, ours are images of one
//! object under small deformations: 12 disks of random position and size on 32 × 32
//! ([`wassdl_cli::datasets::shapes_2d_of`]), mixed with 1% of the uniform image so that the
//! KL loss (the one of Figure 4) is finite everywhere. As for the faces: constant initial
//! atoms, random initial weights (seed 0), 3 atoms; `γ = 2` in pixel units
//! (`K = exp(-|i-j|²/γ)`); 100 L-BFGS iterations (the paper's runs are longer). The
//! reconstructions scored are those the learner computes at each point, i.e. with the
//! warm scalings in the warm run, as in the paper.
//!
//! Outcome here (full run, 2026-11-22): with the paper's KL loss, not reproduced. Each
//! restart makes the barycenters of the current dictionary more converged (the carried
//! scalings accumulate iterations), the PSNR drops at the restart and only partly recovers
//! within its 10 iterations, and the atoms collapse towards Diracs: the warm run ends at
//! 7.09 dB, below both cold ones (12.48 dB with NSH 2, 11.62 dB with NSH 100).
//!
//! The example then runs the same three fits with the quadratic loss as a control, and
//! there Figure 4a's ordering holds: warm NSH 2 leads from about iteration 22 and ends at
//! 15.81 dB, above cold NSH 2 (15.59 dB) and level with cold NSH 100 (15.80 dB) in 1/34 of
//! its time (0.96 s vs 32.6 s on an idle machine; paper: 1/36). So the failure is tied to
//! the KL loss on these data. The mechanism is not verified. A likely one: with `KL(p|x)` (reconstruction `p`
//! first, Table 1) a reconstruction shrunk inside its disk costs little, and the more
//! converged the barycenters, the sharper they can be.
//!
//! Run: `cargo run --release --example warm_start [-- --quick]`.

#[path = "common/mod.rs"]
pub mod common;

use common::{result_line, Progress, Settings};
use std::time::Instant;
use wassdl::dictionary::{fit, AtomInit, Fit, WdlConfig, WeightInit};
use wassdl::{BarycenterConfig, Batch, Grid, GridKernel, GridUnits, Loss, Result};
use wassdl_cli::datasets::{shapes_2d_of, ShapeKind};
use wassdl_cli::figures::{save_image_grid, save_line_plot};

/// What the example measured.
#[derive(Clone, Debug)]
pub struct WarmStartMetrics {
    /// Final mean PSNR (dB), warm start with few Sinkhorn iterations.
    pub warm_few_psnr: f64,
    /// Final mean PSNR, cold start with few iterations.
    pub cold_few_psnr: f64,
    /// Final mean PSNR, cold start with many iterations.
    pub cold_many_psnr: f64,
    /// Seconds of each fit.
    pub warm_few_seconds: f64,
    /// Seconds, cold few.
    pub cold_few_seconds: f64,
    /// Seconds, cold many.
    pub cold_many_seconds: f64,
    /// The control with the quadratic loss: final mean PSNR, warm start, few iterations.
    pub quad_warm_few_psnr: f64,
    /// Control: cold start, few iterations.
    pub quad_cold_few_psnr: f64,
    /// Control: cold start, many iterations.
    pub quad_cold_many_psnr: f64,
    /// Control: seconds of the warm fit.
    pub quad_warm_few_seconds: f64,
    /// Control: seconds of the cold fit with many iterations.
    pub quad_cold_many_seconds: f64,
    /// The "few" number of Sinkhorn iterations.
    pub nsh_few: usize,
    /// The "many" number.
    pub nsh_many: usize,
}

impl WarmStartMetrics {
    /// The `RESULT` line.
    pub fn result_line(&self) -> String {
        result_line(&[
            ("warm_few_psnr", self.warm_few_psnr),
            ("cold_few_psnr", self.cold_few_psnr),
            ("cold_many_psnr", self.cold_many_psnr),
            ("warm_few_seconds", self.warm_few_seconds),
            ("cold_few_seconds", self.cold_few_seconds),
            ("cold_many_seconds", self.cold_many_seconds),
            ("quad_warm_few_psnr", self.quad_warm_few_psnr),
            ("quad_cold_few_psnr", self.quad_cold_few_psnr),
            ("quad_cold_many_psnr", self.quad_cold_many_psnr),
            ("quad_warm_few_seconds", self.quad_warm_few_seconds),
            ("quad_cold_many_seconds", self.quad_cold_many_seconds),
            ("nsh_few", self.nsh_few as f64),
            ("nsh_many", self.nsh_many as f64),
        ])
    }
}

/// `(iteration, PSNR)` points.
type Curve = Vec<(f64, f64)>;

/// Side of the images.
const SIDE: usize = 32;

/// One fit: the result, its seconds and its PSNR curve.
struct Run {
    fit: Fit<f64>,
    secs: f64,
    curve: Curve,
}

impl Run {
    fn last_psnr(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.1)
    }
}

/// The three fits of Figure 4 (warm few, cold few, cold many) with `loss`.
fn three_fits(
    settings: &Settings,
    kernel: &GridKernel<f64>,
    data: &Batch<f64>,
    base: &WdlConfig,
    nsh: (usize, usize),
) -> Result<[Run; 3]> {
    let iters = base.lbfgs.max_iter;
    let learn = |label: &str, cfg: WdlConfig| -> Result<Run> {
        let mut bar = Progress::new(settings, label, iters, true);
        let t0 = Instant::now();
        let fit = fit(kernel, data, &cfg, &mut bar)?;
        let secs = t0.elapsed().as_secs_f64();
        bar.finish();
        let curve: Curve = fit
            .history
            .iter()
            .filter_map(|h| h.metrics.as_ref().map(|m| (h.iteration as f64, m.psnr)))
            .collect();
        let run = Run { fit, secs, curve };
        println!(
            "{label}: final mean PSNR {:.2} dB, {secs:.1} s, {} L-BFGS iterations, {} forward passes ({:?})",
            run.last_psnr(),
            run.fit.iterations,
            run.fit.evaluations,
            run.fit.termination
        );
        Ok(run)
    };
    let loss = format!("{:?}", base.loss);
    Ok([
        learn(
            &format!("{loss}, warm, NSH {}", nsh.0),
            base.clone()
                .barycenter(BarycenterConfig::iterations(nsh.0))
                .warm_restart(10),
        )?,
        learn(
            &format!("{loss}, cold, NSH {}", nsh.0),
            base.clone().barycenter(BarycenterConfig::iterations(nsh.0)),
        )?,
        learn(
            &format!("{loss}, cold, NSH {}", nsh.1),
            base.clone().barycenter(BarycenterConfig::iterations(nsh.1)),
        )?,
    ])
}

/// Figure 4's plot of the three curves.
fn plot(
    settings: &Settings,
    file: &str,
    title: &str,
    runs: &[Run; 3],
    nsh: (usize, usize),
) -> Result<()> {
    let [warm, cold, many] = runs;
    save_line_plot(
        settings.path(file),
        title,
        "L-BFGS iteration",
        "mean PSNR (dB)",
        &[
            (
                &format!("warm start, NSH = {} ({:.0} s)", nsh.0, warm.secs),
                &warm.curve,
            ),
            (
                &format!("no warm start, NSH = {} ({:.0} s)", nsh.0, cold.secs),
                &cold.curve,
            ),
            (
                &format!("no warm start, NSH = {} ({:.0} s)", nsh.1, many.secs),
                &many.curve,
            ),
        ],
    )
}

/// Runs the three fits with the KL loss (the paper's) and, as a control, with the
/// quadratic loss; writes `fig4_psnr.png`, `fig4_psnr_quadratic.png`,
/// `reconstructions.png` and `atoms.png` (the KL fits).
pub fn run(settings: &Settings) -> Result<WarmStartMetrics> {
    let (count, iters, nsh_many) = if settings.quick {
        (6, 20, 30)
    } else {
        (12, 100, 100)
    };
    let nsh = (2, nsh_many);
    let shapes = shapes_2d_of(1, SIDE, count, &[ShapeKind::Disk])?;
    let n = SIDE * SIDE;
    let mix = 0.01;
    let data = shapes.images.map(|v| (1.0 - mix) * v + mix / n as f64);
    let grid = Grid::new(&[SIDE, SIDE])?.with_units(GridUnits::Pixel);
    let kernel = GridKernel::<f64>::new(&grid, 2.0)?;
    let base = WdlConfig::new(3)
        .loss(Loss::KullbackLeibler)
        .atom_init(AtomInit::Constant)
        .weight_init(WeightInit::Random)
        .max_iter(iters)
        .seed(0);

    let kl = three_fits(settings, &kernel, &data, &base, nsh)?;
    let quad = three_fits(
        settings,
        &kernel,
        &data,
        &base.clone().loss(Loss::Quadratic),
        nsh,
    )?;
    plot(
        settings,
        "fig4_psnr.png",
        "Figure 4: mean PSNR of the reconstructions per L-BFGS iteration (KL loss)",
        &kl,
        nsh,
    )?;
    plot(
        settings,
        "fig4_psnr_quadratic.png",
        "Control: the same with the quadratic loss",
        &quad,
        nsh,
    )?;
    let [warm, cold, many] = &kl;
    let shown = count.min(6);
    let mut imgs: Vec<&[f64]> = Vec::new();
    let mut titles: Vec<String> = Vec::new();
    for (label, b) in [
        ("data", &data),
        ("warm 2", &warm.fit.reconstruction),
        ("cold 2", &cold.fit.reconstruction),
        ("cold many", &many.fit.reconstruction),
    ] {
        for j in 0..shown {
            imgs.push(b.col(j));
            titles.push(format!("{label} #{j}"));
        }
    }
    let t: Vec<&str> = titles.iter().map(String::as_str).collect();
    save_image_grid(
        settings.path("reconstructions.png"),
        &imgs,
        SIDE,
        SIDE,
        shown,
        &t,
    )?;
    let atoms: Vec<&[f64]> = [&warm.fit.atoms, &cold.fit.atoms, &many.fit.atoms]
        .iter()
        .flat_map(|a: &&Batch<f64>| (0..3).map(move |s| a.col(s)))
        .collect();
    save_image_grid(
        settings.path("atoms.png"),
        &atoms,
        SIDE,
        SIDE,
        3,
        &[
            "warm 2: atom 1",
            "atom 2",
            "atom 3",
            "cold 2: atom 1",
            "atom 2",
            "atom 3",
            "cold many: atom 1",
            "atom 2",
            "atom 3",
        ],
    )?;
    Ok(WarmStartMetrics {
        warm_few_psnr: warm.last_psnr(),
        cold_few_psnr: cold.last_psnr(),
        cold_many_psnr: many.last_psnr(),
        warm_few_seconds: warm.secs,
        cold_few_seconds: cold.secs,
        cold_many_seconds: many.secs,
        quad_warm_few_psnr: quad[0].last_psnr(),
        quad_cold_few_psnr: quad[1].last_psnr(),
        quad_cold_many_psnr: quad[2].last_psnr(),
        quad_warm_few_seconds: quad[0].secs,
        quad_cold_many_seconds: quad[2].secs,
        nsh_few: nsh.0,
        nsh_many: nsh.1,
    })
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    common::main_with("warm_start", run, WarmStartMetrics::result_line)
}
