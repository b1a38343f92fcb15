//! `wassdl emd`: exact optimal transport (network simplex, `wassdl::emd`).

use super::error::CliError;
use super::geometry::secs;
use super::input::{check_ext, check_outputs, write_out, Input, Layout};
use super::model::at_least_one;
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl::emd::{emd, EmdError};
use wassdl_cli::npy::{write_npz, NpyArray};

/// Exact (unregularized) optimal transport by network simplex.
///
/// Solves min_T ⟨T, C⟩ with T ≥ 0, T 1 = a, Tᵀ 1 = b exactly, in float64 whatever the
/// precision of the files, and writes an .npz with `cost` and `transport_cost` (both
/// ⟨T, C⟩, shape ()), `plan` (the dense optimal plan, (N1, N2); at most N1 + N2 − 1
/// nonzero entries), `f` (N1,) and `g` (N2,) (optimal dual potentials: f_i + g_j ≤ C_ij,
/// with equality where the plan is positive, centred so that ⟨a, f⟩ = ⟨b, g⟩).
///
/// a and b must each sum to 1 (within √N · 1e-6); both are divided by their sums before
/// solving, so float32 rounding of the masses is not a mass mismatch.
///
/// Example: wassdl emd --a a.npy --b b.npy --cost C.npy --out emd.npz
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Source histogram (N1,); nonnegative, summing to 1
    #[arg(long, value_name = "A.npy")]
    a: PathBuf,
    /// Target histogram (N2,); nonnegative, summing to 1
    #[arg(long, value_name = "B.npy")]
    b: PathBuf,
    /// Cost matrix (N1, N2), any finite real entries
    #[arg(long, value_name = "C.npy")]
    cost: PathBuf,
    /// Cap on network-simplex pivots (POT's default)
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_iters: usize,
    /// Output .npz file (written atomically)
    #[arg(long, value_name = "OUT.npz")]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args, _global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    at_least_one("--max-iters", args.max_iters as u64)?;
    check_ext(
        "--out",
        &args.out,
        "npz",
        "an .npz archive (cost, transport_cost, plan, f and g)",
    )?;
    check_outputs(
        &[("--out", &args.out)],
        &[("--a", &args.a), ("--b", &args.b), ("--cost", &args.cost)],
    )?;
    let mut a = Input::load("--a", &args.a, Layout::Rows)?;
    a.expect_ndim(&[1], "one histogram (N1,)")?;
    let mut b = Input::load("--b", &args.b, Layout::Rows)?;
    b.expect_ndim(&[1], "one histogram (N2,)")?;
    let mut c = Input::load("--cost", &args.cost, Layout::Matrix)?;
    c.expect_ndim(&[2], "a 2-D cost matrix (N1, N2)")?;
    let (n1, n2) = (a.item_len(), b.item_len());
    if c.shape() != [n1, n2] {
        return Err(c.fail(format!(
            "has shape {} but {} and {} need ({n1}, {n2})",
            c.shape_text(),
            a.name(),
            b.name()
        )));
    }
    let ab = a.take_batch::<f64>();
    a.check(&ab, |x| wassdl::validate::simplex_columns("a", x))?;
    let bb = b.take_batch::<f64>();
    b.check(&bb, |x| wassdl::validate::simplex_columns("b", x))?;
    let unit = |x: &[f64]| {
        let s: f64 = x.iter().sum();
        x.iter().map(|v| v / s).collect::<Vec<_>>()
    };
    let (av, bv) = (unit(ab.as_slice()), unit(bb.as_slice()));
    let cost: Vec<f64> = c.take_vec();
    let read_s = secs(t_start);

    let t = Instant::now();
    let sol = emd(&av, &bv, &cost, args.max_iters).map_err(|e| match e {
        EmdError::NonFinite {
            which: "cost",
            index,
        } => c.fail(format!(
            "entry [{}, {}] is not finite ({})",
            index / n2,
            index % n2,
            cost[index]
        )),
        EmdError::MaxIterations { iterations } => CliError(format!(
            "the network simplex did not converge within {iterations} pivots (raise --max-iters)"
        )),
        EmdError::NonFiniteResult { what, .. } => CliError(format!(
            "emd: no usable solution: {what}; the costs of {} are too close to the float \
             limit (largest |C| = {:e}): rescale them",
            c.name(),
            cost.iter().fold(0.0f64, |m, x| m.max(x.abs()))
        )),
        other => CliError(format!("emd: {other}")),
    })?;
    let solve_s = secs(t);

    let t = Instant::now();
    let mut plan = vec![0.0f64; n1 * n2];
    for e in &sol.plan {
        plan[e.i * n2 + e.j] = e.mass;
    }
    let arr = |shape: Vec<usize>, v: Vec<f64>| {
        NpyArray::new(shape, v).map_err(|e| CliError(format!("internal: {e}")))
    };
    let cost_arr = arr(vec![], vec![sol.cost])?;
    let plan_arr = arr(vec![n1, n2], plan)?;
    let f_arr = arr(vec![n1], sol.f)?;
    let g_arr = arr(vec![n2], sol.g)?;
    write_out(
        "--out",
        write_npz(
            &args.out,
            &[
                ("cost", &cost_arr),
                ("transport_cost", &cost_arr),
                ("plan", &plan_arr),
                ("f", &f_arr),
                ("g", &g_arr),
            ],
        ),
    )?;
    let write_s = secs(t);
    Ok(json!({
        "command": "emd",
        "precision": "float64",
        "n1": n1,
        "n2": n2,
        "iterations": sol.iterations,
        "cost": sol.cost,
        "plan_nonzeros": sol.plan.len(),
        "out": args.out.display().to_string(),
        "timings": {
            "read_s": read_s,
            "solve_s": solve_s,
            "write_s": write_s,
            "total_s": secs(t_start),
        },
    }))
}
