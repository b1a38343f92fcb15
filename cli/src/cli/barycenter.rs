//! `wassdl barycenter`: entropic Wasserstein barycenters, one per weight vector.

use super::error::{from_lib, CliError};
use super::geometry::{
    build_kernel, converged, precision, secs, stop_json, warn_unconverged, GeometryArgs, StopArgs,
    Support,
};
use super::input::{check_ext, check_outputs, renormalize, write_out, Input, Layout};
use super::progress::{run_blocks, Progress};
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl_cli::npy::{write_npy, Dtype, NpyArray};
use wassdl::{barycenters, BarycenterConfig, Barycenters, Real, Stop};

/// Entropic Wasserstein barycenters of atoms, one per weight vector (eq. 6-8).
///
/// For each weight vector λ (nonnegative, summing to 1) computes the barycenter
/// argmin_p Σ_s λ_s W_γ(p, d_s) of the atoms d_s on a common support, by the scaling
/// iterations of eq. 6-8, heavy-ball extrapolated with --tau < 0 (Algorithm 5), KL-relaxed
/// (unbalanced) with --rho (Algorithm 6), in the log domain with --log (eq. 22-24).
///
/// Shapes: atoms are (S, N), one histogram per row, or (S, H, W) images (flattened
/// row-major onto an HxW grid); weights are (M, S), one weight vector per row, or a single
/// (S,). The output has the atoms' layout with one barycenter per weight row: (M, N) or
/// (M, H, W); a single (S,) weight vector gives (N,) or (H, W), as W @ D does in NumPy.
///
/// Example: wassdl barycenter --atoms shapes.npy --weights w.npy --reg 4e-3 --out p.npy
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Atoms (S, N) or (S, H, W); nonnegative, each summing to 1 (any mass with --rho)
    #[arg(long, value_name = "D.npy")]
    atoms: PathBuf,
    /// Barycentric weights (M, S) or (S,); nonnegative, each row summing to 1
    #[arg(long, value_name = "W.npy")]
    weights: PathBuf,
    #[command(flatten)]
    geometry: GeometryArgs,
    #[command(flatten)]
    stop: StopArgs,
    /// Heavy-ball extrapolation τ ≤ 0 (Algorithm 5; dimensionless, e.g. -0.5); 0 is the
    /// plain iteration
    #[arg(
        long,
        value_name = "τ",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    tau: f64,
    /// Unbalanced barycenter: KL marginal relaxation ρ > 0 (Algorithm 6), in the units of
    /// the cost like γ [default: balanced]
    #[arg(long, value_name = "ρ", allow_negative_numbers = true)]
    rho: Option<f64>,
    /// Output .npy file (written atomically)
    #[arg(long, value_name = "P.npy")]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    args.geometry.check_reg()?;
    super::geometry::check_tau(args.tau)?;
    // τ, ρ and the stopping rule, by the library's own check
    let cfg = BarycenterConfig {
        tau: args.tau,
        rho: args.rho,
        log_domain: args.geometry.log,
        stop: args.stop.stop(Dtype::F64),
    };
    cfg.validate().map_err(|e| from_lib(e, args.geometry.log))?;
    check_ext("--out", &args.out, "npy", "one .npy array (the barycenters)")?;
    let mut inputs = vec![
        ("--atoms", args.atoms.as_path()),
        ("--weights", args.weights.as_path()),
    ];
    if let Some(c) = &args.geometry.cost {
        inputs.push(("--cost", c.as_path()));
    }
    check_outputs(&[("--out", &args.out)], &inputs)?;
    let atoms = Input::load("--atoms", &args.atoms, Layout::Rows)?;
    atoms.expect_ndim(&[2, 3], "(S, N) or (S, H, W): one atom per row")?;
    let weights = Input::load("--weights", &args.weights, Layout::Rows)?;
    weights.expect_ndim(&[1, 2], "(S,) or (M, S): one weight vector per row")?;
    let s = atoms.shape()[0];
    let per_row = *weights.shape().last().unwrap_or(&0);
    if per_row != s {
        return Err(weights.fail(format!(
            "has {per_row} weights per vector (shape {}) but {} holds {s} atoms (shape {})",
            weights.shape_text(),
            atoms.name(),
            atoms.shape_text()
        )));
    }
    let cost = args.geometry.load_cost()?;
    let dtype = precision(
        global,
        &[&atoms, &weights]
            .into_iter()
            .chain(cost.as_ref())
            .collect::<Vec<_>>(),
    );
    let support = match cost {
        Some(c) => {
            let n = atoms.item_len();
            if c.shape() != [n, n] {
                return Err(c.fail(format!(
                    "has shape {} but the atoms of {} have {n} bins: barycenters need a square ({n}, {n}) cost",
                    c.shape_text(),
                    atoms.name()
                )));
            }
            Support::Cost(c)
        }
        None => Support::Grid(args.geometry.grid_for(&atoms)?.0),
    };
    let read_s = secs(t_start);
    match dtype {
        Dtype::F32 => solve::<f32>(args, global, atoms, weights, support, read_s, t_start),
        Dtype::F64 => solve::<f64>(args, global, atoms, weights, support, read_s, t_start),
    }
}

fn solve<T: Real>(
    args: Args,
    global: &Global,
    mut atoms: Input,
    mut weights: Input,
    mut support: Support,
    read_s: f64,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    let log = args.geometry.log;
    let t = Instant::now();
    let kernel = build_kernel::<T>(&mut support, args.geometry.reg, log)?;
    let kernel_s = secs(t);
    let item = atoms.item_shape().to_vec();
    let count = weights.count();
    let mut d = atoms.take_batch::<T>();
    if args.rho.is_none() {
        atoms.check(&d, |x| wassdl::validate::simplex_columns("atoms", x))?;
        renormalize(&mut d, atoms.dtype());
    } else {
        atoms.check(&d, |x| wassdl::validate::nonnegative("atoms", x))?;
    }
    let mut w = weights.take_batch::<T>();
    weights.check(&w, |x| wassdl::validate::simplex_columns("weights", x))?;
    renormalize(&mut w, weights.dtype());

    let stop = args.stop.stop(Dtype::of::<T>());
    let cfg = BarycenterConfig {
        tau: args.tau,
        rho: args.rho,
        log_domain: log,
        stop,
    };
    let t = Instant::now();
    let progress = Progress::new(
        global.quiet,
        match stop {
            Stop::Iterations(l) => l,
            Stop::Tolerance { max_iter, .. } => max_iter,
        },
        "barycenter",
    );
    let (out, iterations) = run_blocks(stop, &progress, |rule, prev: Option<&Barycenters<T>>| {
        let cfg = BarycenterConfig { stop: rule, ..cfg };
        barycenters(kernel.as_ref(), &d, &w, &cfg, prev.map(|p| &p.scalings))
    })
    .map_err(|e| {
        let mut m = from_lib(e, log);
        if args.tau <= -0.5 && m.0.contains("flow") {
            m.0.push_str(&format!(
                " (or a --tau nearer 0: at --tau {} the extrapolation itself can overflow)",
                args.tau
            ));
        }
        m
    })?;
    drop(progress);
    let solve_s = secs(t);
    super::input::finite_output("--out", "barycenter", &out.p)?;
    warn_unconverged(global, stop, iterations, out.error);

    let t = Instant::now();
    let m = out.p.cols();
    let shape: Vec<usize> = count.into_iter().chain(item).collect();
    let p = NpyArray::from_batch(out.p, shape.clone())
        .map_err(|e| CliError(format!("internal: {e}")))?;
    write_out("--out", write_npy(&args.out, &p))?;
    let write_s = secs(t);

    let variant = match (args.rho, args.tau) {
        (Some(_), _) => "unbalanced (Algorithm 6)",
        (None, tau) if tau < 0.0 => "heavy-ball (Algorithm 5)",
        _ => "plain (eq. 6-8)",
    };
    Ok(json!({
        "command": "barycenter",
        "precision": Dtype::of::<T>().name(),
        "kernel": kernel.describe(),
        "log_domain": log,
        "variant": variant,
        "tau": args.tau,
        "rho": args.rho,
        "atoms": d.cols(),
        "barycenters": m,
        "support": kernel.nrows(),
        "output_shape": shape,
        "stop": stop_json(stop),
        "iterations": iterations,
        "error": out.error,
        "converged": converged(stop, out.error),
        "out": args.out.display().to_string(),
        "timings": {
            "read_s": read_s,
            "kernel_s": kernel_s,
            "solve_s": solve_s,
            "write_s": write_s,
            "total_s": secs(t_start),
        },
    }))
}
