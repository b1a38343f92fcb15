//! GeomLoss's gallery example "Wasserstein barycenters in 1D"
//! (`002_f75a3e4357797dec.txt`), reproduced: the Sinkhorn barycenter
//! `argmin_γ ½ S_ε(γ, α) + ½ S_ε(γ, β)` of two uniform measures on `[0, 0.1]` and
//! `[0.8, 1]`, by an Eulerian scheme (L-BFGS on the log-weights of `N` fixed points,
//! `blur = 0.001`, `scaling = 0.99`) and a Lagrangian one (L-BFGS on the positions,
//! `blur = 0.01`, `scaling = 0.9` then `0.5`), all started from `N` points evenly spread
//! on `[0, 1]`.
//!
//! Data, exactly as the seed (no randomness there): `t = linspace(0, 1, N)`,
//! `X_i = 0.1 t`, `Y_j = 0.2 t + 0.8`, `Z_k = t`, `N = M = 500` (the gallery's GPU
//! setting; `--n 50` is its CPU setting).
//!
//! ```text
//! cargo run --release --example geomloss_barycenter_1d [-- --n 500 --threads 0]
//! ```
//!
//! Prints the cost at the evaluations the gallery shows (`nit = 0, 1, 2, 3, 4, 8, ...`),
//! writes `out/geomloss_barycenter_1d/{eulerian,lagrangian_scaling0.9,
//! lagrangian_scaling0.5}.png` and ends with
//! `RESULT eulerian_init=... lagrangian_init=... lagrangian_final=... eulerian_final=...`.

use clap::Parser;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wassdl::lbfgs::LbfgsConfig;
use wassdl::pointcloud::{
    eulerian_barycenter, lagrangian_barycenter, BarycenterFit, PointCloud, SinkhornDivergenceConfig,
};
use wassdl::{Batch, Real};

#[derive(Parser, Debug)]
#[command(about = "GeomLoss 1-D Sinkhorn barycenters (Eulerian and Lagrangian)")]
struct Args {
    /// Points per measure (N = M); the gallery uses 500 on GPU, 50 on CPU.
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Threads for the log-sum-exps (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Skip the (slow) Eulerian fit.
    #[arg(long)]
    skip_eulerian: bool,
    /// Run in single precision, as the gallery (float32 tensors); default float64.
    #[arg(long)]
    f32: bool,
    /// Output folder for the figures.
    #[arg(long, default_value = "out/geomloss_barycenter_1d")]
    out: PathBuf,
}

/// Evaluations shown by the gallery's "waffle" layout: `nit <= 4` or `nit % 4 == 0`.
fn shown(nit: usize) -> bool {
    nit <= 4 || nit % 4 == 0
}

fn linspace(n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| {
            if n == 1 {
                0.0
            } else {
                k as f64 / (n - 1) as f64
            }
        })
        .collect()
}

fn uniform<T: Real>(pts: Vec<f64>) -> wassdl::Result<PointCloud<T>> {
    let n = pts.len();
    PointCloud::uniform(Batch::from_vec(1, n, pts.into_iter().map(T::of).collect()))
}

struct Runs {
    eulerian: Option<BarycenterFit<f64>>,
    lag09: BarycenterFit<f64>,
    lag05: BarycenterFit<f64>,
    x: PointCloud<f64>,
    y: PointCloud<f64>,
}

fn report<T: Real>(name: &str, fit: &BarycenterFit<T>, secs: f64) {
    println!(
        "{name}: {} evaluations, {} L-BFGS iterations ({}), {secs:.1} s",
        fit.costs.len(),
        fit.iterations,
        fit.termination
    );
    let line: Vec<String> = fit
        .costs
        .iter()
        .enumerate()
        .filter(|(k, _)| shown(*k))
        .map(|(k, c)| format!("nit = {k}, cost = {c:.4}"))
        .collect();
    println!("  {}", line.join(" | "));
    println!(
        "  initial cost {:.6}, final cost {:.6}",
        fit.costs[0], fit.final_cost
    );
}

fn cast_fit<T: Real>(f: BarycenterFit<T>) -> BarycenterFit<f64> {
    BarycenterFit {
        cloud: f.cloud.cast(),
        costs: f.costs,
        final_cost: f.final_cost,
        snapshots: f
            .snapshots
            .into_iter()
            .map(|s| wassdl::pointcloud::Snapshot {
                eval: s.eval,
                cost: s.cost,
                cloud: s.cloud.cast(),
            })
            .collect(),
        iterations: f.iterations,
        termination: f.termination,
    }
}

fn run<T: Real>(args: &Args) -> wassdl::Result<Runs> {
    let n = args.n;
    let t = linspace(n);
    let x = uniform::<T>(t.iter().map(|&v| 0.1 * v).collect())?;
    let y = uniform::<T>(t.iter().map(|&v| 0.2 * v + 0.8).collect())?;
    let z = uniform::<T>(t.clone())?;
    let targets = vec![(x.clone(), 0.5), (y.clone(), 0.5)];
    let keep: Vec<usize> = (0..=500).filter(|&k| shown(k)).collect();
    let cfg = |blur: f64, scaling: f64| SinkhornDivergenceConfig {
        p: 2.0,
        blur,
        scaling,
        threads: args.threads,
        ..Default::default()
    };

    let t0 = Instant::now();
    let lag09 = lagrangian_barycenter(
        &z,
        &targets,
        &cfg(0.01, 0.9),
        &LbfgsConfig::with_tol(1e-10),
        &keep,
    )?;
    report(
        "Lagrangian, blur 0.01, scaling 0.9, tol 1e-10",
        &lag09,
        t0.elapsed().as_secs_f64(),
    );
    let t0 = Instant::now();
    let lag05 = lagrangian_barycenter(
        &z,
        &targets,
        &cfg(0.01, 0.5),
        &LbfgsConfig::with_tol(1e-5),
        &keep,
    )?;
    report(
        "Lagrangian, blur 0.01, scaling 0.5, tol 1e-5",
        &lag05,
        t0.elapsed().as_secs_f64(),
    );
    let eulerian = if args.skip_eulerian {
        None
    } else {
        let t0 = Instant::now();
        let e = eulerian_barycenter(
            &z,
            &targets,
            &cfg(0.001, 0.99),
            &LbfgsConfig::with_tol(1e-10),
            &keep,
        )?;
        report(
            "Eulerian, blur 0.001, scaling 0.99, tol 1e-10",
            &e,
            t0.elapsed().as_secs_f64(),
        );
        Some(cast_fit(e))
    };
    Ok(Runs {
        eulerian,
        lag09: cast_fit(lag09),
        lag05: cast_fit(lag05),
        x: x.cast(),
        y: y.cast(),
    })
}

/// sklearn's `KernelDensity(kernel="gaussian", bandwidth=h)` with sample weights,
/// evaluated on `t`, with the end values set to 0 as the gallery does (closed fill).
fn density(cloud: &PointCloud<f64>, h: f64, t: &[f64]) -> Vec<f64> {
    let norm = 1.0 / (h * (2.0 * std::f64::consts::PI).sqrt());
    let wsum: f64 = cloud.weights().iter().sum();
    let mut d: Vec<f64> = t
        .iter()
        .map(|&s| {
            (0..cloud.len())
                .map(|k| {
                    let u = (s - cloud.point(k)[0]) / h;
                    cloud.weights()[k] * (-0.5 * u * u).exp()
                })
                .sum::<f64>()
                * norm
                / wsum
        })
        .collect();
    let last = d.len() - 1;
    d[0] = 0.0;
    d[last] = 0.0;
    d
}

fn io_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> wassdl::Error + '_ {
    move |e| wassdl::Error::Io(format!("cannot write {}: {e}", path.display()))
}

/// The gallery's panels: red α, blue β, green barycenter (blurred a little more), four
/// panels per row, titled "nit = k, cost = c".
fn figure(path: &Path, runs: &Runs, fit: &BarycenterFit<f64>) -> wassdl::Result<()> {
    let t: Vec<f64> = (0..1000).map(|k| -0.1 + 1.2 * k as f64 / 999.0).collect();
    let dx = density(&runs.x, 0.002, &t);
    let dy = density(&runs.y, 0.002, &t);
    // The gallery's panels (nit = 0..4, then every 4th evaluation), at most 23 of them,
    // and the returned barycenter last.
    let mut panels: Vec<(String, &PointCloud<f64>)> = fit
        .snapshots
        .iter()
        .take(23)
        .map(|s| (format!("nit = {}, cost = {:.4}", s.eval, s.cost), &s.cloud))
        .collect();
    panels.push((
        format!(
            "final ({} evals), cost = {:.4}",
            fit.costs.len(),
            fit.final_cost
        ),
        &fit.cloud,
    ));
    let cols = 4;
    let rows = panels.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (1600, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(io_err(path))?;
    let areas = root.split_evenly((rows, cols));
    for (area, (title, cloud)) in areas.iter().zip(panels.iter()) {
        let dz = density(cloud, 0.005, &t);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .build_cartesian_2d(-0.1f64..1.1f64, -0.1f64..20.5f64)
            .map_err(io_err(path))?;
        for (d, c) in [
            (&dx, RGBColor(242, 140, 140)),
            (&dy, RGBColor(140, 140, 242)),
            (&dz, RGBColor(140, 242, 140)),
        ] {
            let poly: Vec<(f64, f64)> = t
                .iter()
                .copied()
                .zip(d.iter().map(|v| v.min(20.5)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(poly, c.filled())))
                .map_err(io_err(path))?;
        }
    }
    root.present().map_err(io_err(path))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.n < 2 {
        return Err("--n must be at least 2".into());
    }
    println!(
        "N = M = {}, {} precision (the gallery: float32; its printed costs are for N = 500)",
        args.n,
        if args.f32 { "single" } else { "double" }
    );
    let runs = if args.f32 {
        run::<f32>(&args)?
    } else {
        run::<f64>(&args)?
    };

    wassdl_cli::figures::ensure_font()?;
    std::fs::create_dir_all(&args.out)?;
    let mut figs = vec![
        ("lagrangian_scaling0.9.png", &runs.lag09),
        ("lagrangian_scaling0.5.png", &runs.lag05),
    ];
    if let Some(e) = &runs.eulerian {
        figs.push(("eulerian.png", e));
    }
    for (name, fit) in figs {
        let p = args.out.join(name);
        figure(&p, &runs, fit)?;
        println!("wrote {}", p.display());
    }
    let (ei, ef) = match &runs.eulerian {
        Some(e) => (format!("{:.6}", e.costs[0]), format!("{:.6}", e.final_cost)),
        None => ("not_run".into(), "not_run".into()),
    };
    println!(
        "RESULT eulerian_init={ei} lagrangian_init={:.6} lagrangian_final={:.6} eulerian_final={ef}",
        runs.lag09.costs[0], runs.lag09.final_cost
    );
    Ok(())
}
