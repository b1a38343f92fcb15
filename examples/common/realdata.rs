//! Shared by the real-data examples (`digits`, `faces`, `fashion`): the WDL settings they
//! accept on the command line, one comparison of WDL with PCA and NMF at the same number
//! of atoms, and the figures of the paper's Figure 11.
//!
//! Included with `#[path = "common/realdata.rs"] mod realdata;` next to `common/mod.rs`.
//!
//! Scores, the same for the three methods (see `wassdl::metrics` for MSE and PSNR):
//! * MSE and mean PSNR of the raw reconstructions against the histograms;
//! * `ot`: the mean over datapoints of the exact optimal transport cost `W₂²` (px², the
//!   squared distance between pixels) between a datapoint and its reconstruction,
//!   [`wassdl::baselines::ot_cost`]; PCA and NMF reconstructions are clipped at 0 and
//!   renormalized first ([`wassdl::baselines::clip_renormalize`]), WDL's are histograms.
#![allow(dead_code)]

use super::common::{Progress, Settings};
use std::time::Instant;
use wassdl::baselines::{clip_renormalize, grid_cost_pixels, nmf, ot_cost, pca};
use wassdl::baselines::{NmfConfig, NmfInit, NmfLoss};
use wassdl::dictionary::{fit, AtomInit, Fit, Objective, WdlConfig, WeightInit};
use wassdl::lbfgs::Termination;
use wassdl::metrics::Metrics;
use wassdl::{BarycenterConfig, Batch, Grid, GridKernel, GridUnits, Loss, Result};
use wassdl_cli::figures::save_image_grid;

/// WDL settings an example accepts (each example has its own defaults).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WdlArgs {
    /// Number of atoms S (also the number of PCA and NMF components)
    #[arg(long)]
    pub atoms: Option<usize>,
    /// Number of images (per class for fashion)
    #[arg(long)]
    pub count: Option<usize>,
    /// Entropic regularization γ in px² (K = exp(-|i - j|²/γ), |i - j| in pixels)
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Sinkhorn iterations L of every barycenter
    #[arg(long)]
    pub sinkhorn_iters: Option<usize>,
    /// L-BFGS iteration cap
    #[arg(long)]
    pub max_iters: Option<u64>,
    /// Stop when one iteration lowers the loss by less than tol × the initial loss
    #[arg(long)]
    pub tol: Option<f64>,
    /// Weight scale ζ
    #[arg(long)]
    pub zeta: Option<f64>,
    /// quadratic or kl
    #[arg(long)]
    pub loss: Option<String>,
    /// constant, random or data
    #[arg(long)]
    pub atom_init: Option<String>,
    /// uniform or random
    #[arg(long)]
    pub weight_init: Option<String>,
    /// Barycenters in the log domain
    #[arg(long)]
    pub log: bool,
    /// Floor added to every pixel (image units) before normalizing
    #[arg(long)]
    pub floor: Option<f64>,
    /// Fits from seeds 0..R, keeping the lowest loss (time is the total)
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Inverted colours (peak − x)
    #[arg(long)]
    pub invert: bool,
    /// Turn off the line-search guard (a failed trial step then restarts L-BFGS): for
    /// before/after comparisons
    #[arg(long)]
    pub no_guard: bool,
}

/// The command line of a real-data example: the common options and [`WdlArgs`].
#[derive(clap::Parser, Debug, Clone)]
pub struct Cli {
    /// `--quick`, `--out`, `--quiet`.
    #[command(flatten)]
    pub common: super::common::Args,
    /// WDL settings.
    #[command(flatten)]
    pub wdl: WdlArgs,
}

impl Cli {
    /// Parses the command line; `name` names the default output folder.
    pub fn settings(name: &str) -> (Settings, WdlArgs) {
        let c = <Cli as clap::Parser>::parse();
        (
            Settings {
                quick: c.common.quick,
                out_dir: c
                    .common
                    .out
                    .unwrap_or_else(|| std::path::Path::new("out").join(name)),
                progress: !c.common.quiet,
            },
            c.wdl,
        )
    }
}

/// The `main` of a real-data example: parses [`Cli`], runs `run` and reports its result
/// line (see [`super::common::report`]).
pub fn main_with<M>(
    name: &str,
    run: impl FnOnce(&Settings, &WdlArgs) -> Result<M>,
    line: impl FnOnce(&M) -> String,
) -> std::process::ExitCode {
    let (settings, args) = Cli::settings(name);
    super::common::report(name, &settings, run(&settings, &args), line)
}

/// One WDL setting, after the example's defaults and the command line.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Atoms S.
    pub atoms: usize,
    /// γ in px².
    pub gamma: f64,
    /// Sinkhorn iterations L.
    pub sinkhorn_iters: usize,
    /// L-BFGS cap.
    pub max_iters: u64,
    /// Relative loss-change tolerance (0: run the cap).
    pub tol: f64,
    /// ζ.
    pub zeta: f64,
    /// Loss.
    pub loss: Loss,
    /// Atom initialization.
    pub atom_init: AtomInit,
    /// Weight initialization.
    pub weight_init: WeightInit,
    /// Log domain.
    pub log: bool,
    /// Number of seeds.
    pub restarts: usize,
    /// Line-search guard ([`wassdl::lbfgs::LbfgsConfig::guard_steps`]).
    pub guard: bool,
}

impl Setup {
    /// `self` with every option given on the command line replaced.
    pub fn with_args(mut self, a: &WdlArgs) -> Result<Self> {
        let bad = |arg: &'static str| wassdl::Error::InvalidParameter {
            arg,
            requirement: "a known value (see --help)",
            value: f64::NAN,
        };
        if let Some(v) = a.atoms {
            self.atoms = v;
        }
        if let Some(v) = a.gamma {
            self.gamma = v;
        }
        if let Some(v) = a.sinkhorn_iters {
            self.sinkhorn_iters = v;
        }
        if let Some(v) = a.max_iters {
            self.max_iters = v;
        }
        if let Some(v) = a.tol {
            self.tol = v;
        }
        if let Some(v) = a.zeta {
            self.zeta = v;
        }
        if let Some(v) = &a.loss {
            self.loss = match v.as_str() {
                "quadratic" => Loss::Quadratic,
                "kl" => Loss::KullbackLeibler,
                _ => return Err(bad("loss")),
            };
        }
        if let Some(v) = &a.atom_init {
            self.atom_init = match v.as_str() {
                "constant" => AtomInit::Constant,
                "random" => AtomInit::Random,
                "data" => AtomInit::FromData,
                _ => return Err(bad("atom_init")),
            };
        }
        if let Some(v) = &a.weight_init {
            self.weight_init = match v.as_str() {
                "uniform" => WeightInit::Uniform,
                "random" => WeightInit::Random,
                _ => return Err(bad("weight_init")),
            };
        }
        if a.log {
            self.log = true;
        }
        if a.no_guard {
            self.guard = false;
        }
        if let Some(v) = a.restarts {
            self.restarts = v.max(1);
        }
        Ok(self)
    }

    /// The library configuration with seed `seed` (the tolerance is set by [`compare`]).
    pub fn config(&self, seed: u64) -> WdlConfig {
        WdlConfig::new(self.atoms)
            .barycenter(BarycenterConfig {
                log_domain: self.log,
                ..BarycenterConfig::iterations(self.sinkhorn_iters)
            })
            .loss(self.loss)
            .zeta(self.zeta)
            .atom_init(self.atom_init.clone())
            .weight_init(self.weight_init.clone())
            .max_iter(self.max_iters)
            .seed(seed)
            .lbfgs(wassdl::lbfgs::LbfgsConfig {
                max_iter: self.max_iters,
                guard_steps: self.guard,
                ..Default::default()
            })
    }
}

/// Scores of one method.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    /// Mean squared error over all entries.
    pub mse: f64,
    /// Mean PSNR (dB).
    pub psnr: f64,
    /// Mean exact `W₂²` (px²) between a datapoint and its reconstruction.
    pub ot: f64,
    /// Seconds to fit.
    pub seconds: f64,
}

/// WDL, PCA and NMF on one dataset.
pub struct Comparison {
    /// WDL.
    pub wdl: Score,
    /// PCA (S components plus the mean).
    pub pca: Score,
    /// NMF (S components).
    pub nmf: Score,
    /// The kept WDL fit.
    pub fit: Fit<f64>,
    /// PCA components, `N × S`.
    pub pca_components: Batch<f64>,
    /// PCA reconstructions.
    pub pca_recon: Batch<f64>,
    /// NMF components, `N × S`.
    pub nmf_components: Batch<f64>,
    /// NMF reconstructions.
    pub nmf_recon: Batch<f64>,
}

/// 0 iteration cap, 1 converged (tolerance), 2 line search gave up, 3 observer.
pub fn termination_code(t: &Termination) -> f64 {
    match t {
        Termination::MaxIter => 0.0,
        Termination::Converged => 1.0,
        Termination::LineSearch(_) => 2.0,
        Termination::Observer => 3.0,
    }
}

impl Comparison {
    /// `RESULT` pairs with keys prefixed by `prefix`.
    pub fn pairs(&self, prefix: &str) -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for (k, f) in [
            ("mse", (|s: &Score| s.mse) as fn(&Score) -> f64),
            ("psnr", |s| s.psnr),
            ("ot", |s| s.ot),
            ("seconds", |s| s.seconds),
        ] {
            for (m, s) in [("wdl", &self.wdl), ("pca", &self.pca), ("nmf", &self.nmf)] {
                v.push((format!("{prefix}{m}_{k}"), f(s)));
            }
        }
        v.push((format!("{prefix}wdl_iters"), self.fit.iterations as f64));
        v.push((
            format!("{prefix}wdl_end"),
            termination_code(&self.fit.termination),
        ));
        v
    }
    /// Prints a table and how the fit ended.
    pub fn print(&self, title: &str) {
        println!("{title}");
        for (name, s) in [("WDL", &self.wdl), ("PCA", &self.pca), ("NMF", &self.nmf)] {
            println!(
                "  {name}: MSE {:.3e}  PSNR {:.2} dB  W2² {:.4} px²  {:.2} s",
                s.mse, s.psnr, s.ot, s.seconds
            );
        }
        println!(
            "  WDL fit: {} L-BFGS iterations in {} runs, {} forward passes, {} step shrinks, loss {:.4e}, ended: {:?}",
            self.fit.iterations,
            self.fit.runs,
            self.fit.evaluations,
            self.fit.counts.step_shrinks,
            self.fit.loss,
            self.fit.termination
        );
    }
}

/// Mean exact `W₂²` between the columns of `data` and of `recon` (already histograms).
pub fn mean_ot(data: &Batch<f64>, recon: &Batch<f64>, cost: &[f64]) -> Result<f64> {
    let m = data.cols();
    let mut s = 0.0;
    for j in 0..m {
        s += ot_cost(data.col(j), recon.col(j), cost)?;
    }
    Ok(s / m as f64)
}

/// Fits WDL (`setup`, on the `h × w` pixel grid), PCA and NMF with `setup.atoms`
/// components to `data` (histograms, `N × M`) and scores all three.
pub fn compare(
    settings: &Settings,
    label: &str,
    data: &Batch<f64>,
    h: usize,
    w: usize,
    setup: &Setup,
) -> Result<Comparison> {
    let s = setup.atoms;
    let grid = Grid::new(&[h, w])?.with_units(GridUnits::Pixel);
    let kernel = GridKernel::<f64>::new(&grid, setup.gamma)?;
    let t0 = Instant::now();
    let mut best: Option<Fit<f64>> = None;
    for seed in 0..setup.restarts as u64 {
        let mut cfg = setup.config(seed);
        if setup.tol > 0.0 {
            // argmin's cost tolerance is absolute: scale by the initial loss so that the
            // stop is a relative decrease per iteration
            let obj = Objective::new(&kernel, data, &cfg)?;
            let l0 = obj.value(&obj.initial_point()?)?;
            cfg.lbfgs.tol_cost = setup.tol * l0;
        }
        let mut bar = Progress::new(settings, label, setup.max_iters, false);
        let f = fit(&kernel, data, &cfg, &mut bar)?;
        bar.finish();
        if best.as_ref().is_none_or(|b| f.loss < b.loss) {
            best = Some(f);
        }
    }
    let wdl_seconds = t0.elapsed().as_secs_f64();
    let fit = best.expect("restarts >= 1");
    let cost = grid_cost_pixels(&[h, w]);
    let score = |recon: &Batch<f64>, seconds: f64| -> Result<Score> {
        let m = Metrics::compute(data, recon)?;
        Ok(Score {
            mse: m.mse,
            psnr: m.psnr,
            ot: mean_ot(data, &clip_renormalize(recon), &cost)?,
            seconds,
        })
    };
    let wdl = score(&fit.reconstruction, wdl_seconds)?;
    let t0 = Instant::now();
    let p = pca(data, s)?;
    let pca_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let nm = nmf(
        data,
        &NmfConfig::new(s)
            .loss(match setup.loss {
                Loss::KullbackLeibler => NmfLoss::KullbackLeibler,
                _ => NmfLoss::Frobenius,
            })
            .init(NmfInit::Nndsvda)
            .max_iter(if settings.quick { 2000 } else { 20_000 })
            .tol(1e-10),
    )?;
    let nmf_s = t0.elapsed().as_secs_f64();
    Ok(Comparison {
        wdl,
        pca: score(&p.reconstruction, pca_s)?,
        nmf: score(&nm.reconstruction, nmf_s)?,
        pca_components: p.components,
        pca_recon: p.reconstruction,
        nmf_components: nm.components,
        nmf_recon: nm.reconstruction,
        fit,
    })
}

/// Figure 11's two panels in `settings`'s folder: `<stem>_atoms.png` (rows: data, PCA
/// components ("Eigenfaces"), NMF atoms, WDL atoms) and `<stem>_reconstructions.png`
/// (rows: data, PCA, NMF, WDL reconstructions of the first images).
pub fn save_figure11(
    settings: &Settings,
    stem: &str,
    data: &Batch<f64>,
    c: &Comparison,
    h: usize,
    w: usize,
) -> Result<()> {
    let s = c.fit.atoms.cols();
    let cols = s.max(6).min(data.cols());
    let mut imgs: Vec<&[f64]> = Vec::new();
    let mut titles: Vec<String> = Vec::new();
    let blank = vec![0.0; h * w];
    let rows: [(&str, &Batch<f64>); 4] = [
        ("data", data),
        ("PCA", &c.pca_components),
        ("NMF", &c.nmf_components),
        ("WDL", &c.fit.atoms),
    ];
    for (name, b) in rows {
        let k = if name == "data" { cols } else { s.min(cols) };
        for j in 0..cols {
            imgs.push(if j < k { b.col(j) } else { &blank });
            titles.push(if j < k {
                format!("{name} {}", j + 1)
            } else {
                String::new()
            });
        }
    }
    let t: Vec<&str> = titles.iter().map(String::as_str).collect();
    save_image_grid(
        settings.path(&format!("{stem}_atoms.png")),
        &imgs,
        h,
        w,
        cols,
        &t,
    )?;
    let shown = data.cols().min(8);
    let mut imgs: Vec<&[f64]> = Vec::new();
    let mut titles: Vec<String> = Vec::new();
    let rows: [(&str, &Batch<f64>); 4] = [
        ("data", data),
        ("PCA", &c.pca_recon),
        ("NMF", &c.nmf_recon),
        ("WDL", &c.fit.reconstruction),
    ];
    for (name, b) in rows {
        for j in 0..shown {
            imgs.push(b.col(j));
            titles.push(format!("{name} #{j}"));
        }
    }
    let t: Vec<&str> = titles.iter().map(String::as_str).collect();
    save_image_grid(
        settings.path(&format!("{stem}_reconstructions.png")),
        &imgs,
        h,
        w,
        shown,
        &t,
    )
}
