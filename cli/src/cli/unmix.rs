//! `wassdl unmix`: Wasserstein unmixing, the mixture of sources closest to a target.

use super::error::{from_lib, CliError};
use super::geometry::{secs, stop_json, DEFAULT_MAX_ITERS, DEFAULT_TOL_F64};
use super::input::{check_ext, check_outputs, renormalize, write_out, Input, Layout};
use super::model::at_least_one;
use super::progress::Progress;
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl_cli::npy::{write_npy, NpyArray};
use wassdl::unmixing::{unmix, MixtureProblem, UnmixingConfig, InnerOt};
use wassdl::Stop;

/// Default pivot cap of the exact solver (POT's).
const DEFAULT_PIVOTS: usize = 100_000;

/// Wasserstein unmixing: the mixture of sources closest to a target in OT cost.
///
/// Finds the mixture weights w of K source distributions that best explain a target:
/// solves min over w in the simplex of OT(H w, y; C), where the rows of --sources are the
/// K source histograms on a common support of n_s points (H has them as columns), y is
/// the target histogram on n_t points and C the (n_s, n_t) ground cost, by projected
/// gradient with a fixed step: w ← proj(w − lr · Hᵀ ∇_a OT(H w, y)), the gradient being
/// the dual potential of the source side. OT is the exact cost (network simplex) by
/// default, or the entropic cost with --reg γ (relative entropy KL(T | a ⊗ b), log-domain
/// Sinkhorn to --tol, warm-started between steps). Computes in float64.
///
/// Shapes: sources (K, n_s), target (n_t,), cost (n_s, n_t), optional --init (K,); the
/// output is w, (K,).
///
/// Example: wassdl unmix --sources H.npy --target y.npy --cost C.npy --lr 0.05 --out w.npy
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Source histograms (K, n_s), one per row; nonnegative, each summing to 1
    #[arg(long, value_name = "H.npy")]
    sources: PathBuf,
    /// Target histogram (n_t,); nonnegative, summing to 1
    #[arg(long, value_name = "y.npy")]
    target: PathBuf,
    /// Ground cost (n_s, n_t), any finite entries
    #[arg(long, value_name = "C.npy")]
    cost: PathBuf,
    /// Entropic OT with regularization γ > 0, in the units of the cost [default: exact OT]
    #[arg(long, value_name = "γ", allow_negative_numbers = true)]
    reg: Option<f64>,
    /// Step of the projected gradient, in weight per unit of cost
    #[arg(
        long,
        value_name = "η",
        default_value_t = 2e-3,
        allow_negative_numbers = true
    )]
    lr: f64,
    /// Projected-gradient steps
    #[arg(long, value_name = "n", default_value_t = 500)]
    iters: usize,
    /// With --reg: Sinkhorn tolerance on the L¹ marginal error (dimensionless)
    #[arg(long, value_name = "t", default_value_t = DEFAULT_TOL_F64, allow_negative_numbers = true, requires = "reg")]
    tol: f64,
    /// Cap on the inner solver per step: network-simplex pivots [default: 100000], or
    /// Sinkhorn iterations with --reg [default: 10000]
    #[arg(long, value_name = "N")]
    max_iters: Option<usize>,
    /// Starting weights (K,), in the simplex [default: uniform 1/K]
    #[arg(long, value_name = "w0.npy")]
    init: Option<PathBuf>,
    /// Output weights .npy, (K,) (written atomically)
    #[arg(long, value_name = "w.npy")]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    wassdl::validate::positive("lr", args.lr).map_err(|e| from_lib(e, false))?;
    if let Some(reg) = args.reg {
        wassdl::validate::positive("gamma", reg).map_err(|e| from_lib(e, true))?;
        wassdl::validate::positive("tol", args.tol).map_err(|e| from_lib(e, true))?;
    }
    if let Some(n) = args.max_iters {
        at_least_one("--max-iters", n as u64)?;
    }
    at_least_one("--iters", args.iters as u64)?;
    check_ext("--out", &args.out, "npy", "one .npy array (the weights)")?;
    let mut inputs = vec![
        ("--sources", args.sources.as_path()),
        ("--target", args.target.as_path()),
        ("--cost", args.cost.as_path()),
    ];
    if let Some(p) = &args.init {
        inputs.push(("--init", p.as_path()));
    }
    check_outputs(&[("--out", &args.out)], &inputs)?;
    let mut sources = Input::load("--sources", &args.sources, Layout::Rows)?;
    sources.expect_ndim(&[2], "(K, n_s): one source histogram per row")?;
    let mut target = Input::load("--target", &args.target, Layout::Rows)?;
    target.expect_ndim(&[1], "one histogram (n_t,)")?;
    let mut cost = Input::load("--cost", &args.cost, Layout::Matrix)?;
    cost.expect_ndim(&[2], "a 2-D cost matrix (n_s, n_t)")?;
    let (k, ns, nt) = (sources.shape()[0], sources.shape()[1], target.shape()[0]);
    if cost.shape() != [ns, nt] {
        return Err(cost.fail(format!(
            "has shape {} but {} and {} need ({ns}, {nt})",
            cost.shape_text(),
            sources.name(),
            target.name()
        )));
    }
    let mut h = sources.take_batch::<f64>();
    sources.check(&h, |x| wassdl::validate::simplex_columns("sources", x))?;
    renormalize(&mut h, sources.dtype());
    let mut y = target.take_batch::<f64>();
    target.check(&y, |x| wassdl::validate::simplex_columns("target", x))?;
    renormalize(&mut y, target.dtype());
    let cm = cost.take_finite_matrix()?;
    let init = match &args.init {
        Some(p) => {
            let mut w0 = Input::load("--init", p, Layout::Rows)?;
            w0.expect_ndim(&[1], "one weight vector (K,)")?;
            if w0.shape()[0] != k {
                return Err(w0.fail(format!(
                    "has {} weights but {} holds {k} sources",
                    w0.shape()[0],
                    sources.name()
                )));
            }
            let mut w = w0.take_batch::<f64>();
            w0.check(&w, |x| wassdl::validate::simplex_columns("init", x))?;
            renormalize(&mut w, w0.dtype());
            Some(w.into_vec())
        }
        None => None,
    };
    let read_s = secs(t_start);

    let solver = match args.reg {
        Some(reg) => InnerOt::Entropic {
            gamma: reg,
            stop: Stop::Tolerance {
                tol: args.tol,
                max_iter: args.max_iters.unwrap_or(DEFAULT_MAX_ITERS),
            },
        },
        None => InnerOt::Exact {
            max_iter: args.max_iters.unwrap_or(DEFAULT_PIVOTS),
        },
    };
    // unmix has no --log (its entropic solver picks the domain): never suggest it.
    let log = true;
    let t = Instant::now();
    let ys = y.into_vec();
    let progress = Progress::new(global.quiet, args.iters, "unmix");
    // Projected gradient resumes exactly from its iterate, so a bar costs nothing but the
    // entropic solver's warm potentials, which restart with each block.
    let block = if progress.visible() { 20 } else { args.iters };
    let mut w = init.clone();
    let mut losses = Vec::with_capacity(args.iters);
    while losses.len() < args.iters {
        let n = block.min(args.iters - losses.len());
        let cfg = UnmixingConfig {
            lr: args.lr,
            iterations: n,
            solver,
        };
        let done = losses.len();
        let r = unmix(&h, &ys, &cm, w.as_deref(), &cfg).map_err(|e| match e {
            // The library counts the steps of this block; report the run's count.
            wassdl::Error::Numerical {
                solver,
                iteration,
                message,
            } => from_lib(
                wassdl::Error::Numerical {
                    solver,
                    iteration: iteration + done,
                    message,
                },
                log,
            ),
            e => from_lib(e, log),
        })?;
        losses.extend(r.losses);
        w = Some(r.weights);
        progress.update(losses.len() as u64, || {
            format!("OT cost {:.4e}", losses.last().copied().unwrap_or(f64::NAN))
        });
    }
    drop(progress);
    let w = w.unwrap_or_else(|| vec![1.0 / k as f64; k]);
    let problem = MixtureProblem::new(&h, &ys, &cm, solver).map_err(|e| from_lib(e, log))?;
    let (final_loss, _) = problem.loss_and_grad(&w).map_err(|e| from_lib(e, log))?;
    let solve_s = secs(t);

    let t = Instant::now();
    let arr = NpyArray::new(vec![k], w.clone()).map_err(|e| CliError(format!("internal: {e}")))?;
    write_out("--out", write_npy(&args.out, &arr))?;
    let write_s = secs(t);
    let solver_json = match solver {
        InnerOt::Exact { max_iter } => json!({ "exact": { "max_pivots": max_iter } }),
        InnerOt::Entropic { gamma: reg, stop } => {
            json!({ "entropic": { "reg": reg, "stop": stop_json(stop) } })
        }
    };
    Ok(json!({
        "command": "unmix",
        "precision": "float64",
        "sources": k,
        "source_support": ns,
        "target_support": nt,
        "solver": solver_json,
        "lr": args.lr,
        "iterations": losses.len(),
        "weights": w,
        "initial_loss": losses.first(),
        "loss": final_loss,
        "out": args.out.display().to_string(),
        "timings": {
            "read_s": read_s,
            "solve_s": solve_s,
            "write_s": write_s,
            "total_s": secs(t_start),
        },
    }))
}
