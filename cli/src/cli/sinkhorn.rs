//! `wassdl sinkhorn`: entropic OT between histograms (eq. 3-4).

use super::error::{from_lib, CliError};
use super::geometry::{
    build_kernel, converged, on_grid, precision, secs, stop_json, warn_unconverged, GeometryArgs,
    StopArgs, Support,
};
use super::input::{check_ext, check_outputs, renormalize, write_out, Input, Layout};
use super::progress::{run_blocks, Progress};
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl_cli::npy::{write_npz, Dtype, NpyArray};
use wassdl::{sinkhorn, Batch, OtSolution, Real, SinkhornConfig};

/// Entropic optimal transport between histograms (Sinkhorn's iterations, eq. 3-4).
///
/// Solves min_T ⟨T, C⟩ + γ Σ T (log T − 1) with T 1 = a, Tᵀ 1 = b, for one pair or a
/// batch of pairs, and writes an .npz with the arrays `cost` (the regularized cost),
/// `transport_cost` (⟨T, C⟩), `f`, `g` (dual potentials γ log u, γ log v; −inf where the
/// histogram is zero) and, with --plan, `plan`.
///
/// Shapes: a is (N1,) for one histogram, (M, N1) for one per row, or (M, H, W) for images;
/// b likewise with N2 bins. A single histogram is paired with every histogram of the
/// other file. Outputs: cost and transport_cost are () for one pair, (M,) otherwise; f and
/// g have the layout of a and b (with M rows if either input has them); plan is (N1, N2)
/// or (M, N1, N2).
///
/// Example: wassdl sinkhorn --a a.npy --b b.npy --grid 100 --reg 1e-2 --out ot.npz
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Source histograms (N1,), (M, N1) or (M, H, W); nonnegative, each summing to 1
    #[arg(long, value_name = "A.npy")]
    a: PathBuf,
    /// Target histograms (N2,), (M, N2) or (M, H, W); nonnegative, each summing to 1
    #[arg(long, value_name = "B.npy")]
    b: PathBuf,
    #[command(flatten)]
    geometry: GeometryArgs,
    #[command(flatten)]
    stop: StopArgs,
    /// Also write the dense transport plans (M · N1 · N2 numbers)
    #[arg(long)]
    plan: bool,
    /// Output .npz file (written atomically)
    #[arg(long, value_name = "OUT.npz")]
    out: PathBuf,
}

/// Shape of a per-pair output: `item` with the pair axis `m` in front when batched.
fn with_count(m: Option<usize>, item: &[usize]) -> Vec<usize> {
    m.into_iter().chain(item.iter().copied()).collect()
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    args.geometry.check_reg()?;
    args.stop.check()?;
    check_ext(
        "--out",
        &args.out,
        "npz",
        "an .npz archive (cost, transport_cost, f, g and plan)",
    )?;
    let mut inputs = vec![("--a", args.a.as_path()), ("--b", args.b.as_path())];
    if let Some(c) = &args.geometry.cost {
        inputs.push(("--cost", c.as_path()));
    }
    check_outputs(&[("--out", &args.out)], &inputs)?;
    let what = "(N,), (M, N) or (M, H, W)";
    let a = Input::load("--a", &args.a, Layout::Rows)?;
    a.expect_ndim(&[1, 2, 3], what)?;
    let b = Input::load("--b", &args.b, Layout::Rows)?;
    b.expect_ndim(&[1, 2, 3], what)?;
    let cost = args.geometry.load_cost()?;
    if let (Some(ma), Some(mb)) = (a.count(), b.count()) {
        if ma != mb {
            return Err(b.fail(format!(
                "holds {mb} histograms but {} holds {ma} (give the same number, or one of them as a single 1-D histogram)",
                a.name()
            )));
        }
    }
    let dtype = precision(
        global,
        &[&a, &b]
            .into_iter()
            .chain(cost.as_ref())
            .collect::<Vec<_>>(),
    );
    let support = match cost {
        Some(c) => {
            let (n1, n2) = (c.shape()[0], c.shape()[1]);
            for (h, n, axis) in [(&a, n1, "rows"), (&b, n2, "columns")] {
                if h.item_len() != n {
                    return Err(h.fail(format!(
                        "has {} bins per histogram (shape {}) but {} has {n} {axis} (shape {})",
                        h.item_len(),
                        h.shape_text(),
                        c.name(),
                        c.shape_text()
                    )));
                }
            }
            Support::Cost(c)
        }
        None => {
            let (grid, origin) = args.geometry.grid_for(&a)?;
            on_grid(&b, &grid, &origin)?;
            Support::Grid(grid)
        }
    };
    let read_s = secs(t_start);
    match dtype {
        Dtype::F32 => solve::<f32>(args, global, a, b, support, read_s, t_start),
        Dtype::F64 => solve::<f64>(args, global, a, b, support, read_s, t_start),
    }
}

/// Repeats a single column `m` times (one histogram paired with a batch).
fn broadcast<T: Real>(x: Batch<T>, m: usize) -> Batch<T> {
    if x.cols() == m {
        return x;
    }
    let n = x.rows();
    Batch::from_fn(n, m, |i, _| x.get(i, 0))
}

fn solve<T: Real>(
    args: Args,
    global: &Global,
    mut a: Input,
    mut b: Input,
    mut support: Support,
    read_s: f64,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    let log = args.geometry.log;
    let t = Instant::now();
    let kernel = build_kernel::<T>(&mut support, args.geometry.reg, log)?;
    let kernel_s = secs(t);
    let count = a.count().or(b.count());
    let m = count.unwrap_or(1);
    let (a_item, b_item) = (a.item_shape().to_vec(), b.item_shape().to_vec());
    let mut ab = a.take_batch::<T>();
    a.check(&ab, |x| wassdl::validate::simplex_columns("a", x))?;
    renormalize(&mut ab, a.dtype());
    let mut bb = b.take_batch::<T>();
    b.check(&bb, |x| wassdl::validate::simplex_columns("b", x))?;
    renormalize(&mut bb, b.dtype());
    let (ab, bb) = (broadcast(ab, m), broadcast(bb, m));

    let stop = args.stop.stop(Dtype::of::<T>());
    let cfg = SinkhornConfig {
        log_domain: log,
        stop,
        plan: args.plan,
    };
    let t = Instant::now();
    let progress = Progress::new(
        global.quiet,
        match stop {
            wassdl::Stop::Iterations(l) => l,
            wassdl::Stop::Tolerance { max_iter, .. } => max_iter,
        },
        "sinkhorn",
    );
    // With a progress bar every block builds its plans (the last one's are kept): the
    // plan is O(N1 N2) per pair, a bounded overhead on blocks of half a second or more.
    let (sol, iterations) = run_blocks(stop, &progress, |rule, prev: Option<&OtSolution<T>>| {
        let cfg = SinkhornConfig { stop: rule, ..cfg };
        sinkhorn(kernel.as_ref(), &ab, &bb, &cfg, prev.map(|p| (&p.f, &p.g)))
    })
    .map_err(|e| from_lib(e, log))?;
    drop(progress);
    let solve_s = secs(t);
    warn_unconverged(global, stop, iterations, Some(sol.error));

    let t = Instant::now();
    let scalar_shape = with_count(count, &[]);
    let costs = sol.cost.clone();
    let tcosts = sol.transport_cost.clone();
    let arr = |shape: Vec<usize>, v: Vec<T>| {
        NpyArray::new(shape, v).map_err(|e| CliError(format!("internal: {e}")))
    };
    let cost_arr = arr(scalar_shape.clone(), sol.cost)?;
    let tc_arr = arr(scalar_shape, sol.transport_cost)?;
    let f_arr = arr(with_count(count, &a_item), sol.f.into_vec())?;
    let g_arr = arr(with_count(count, &b_item), sol.g.into_vec())?;
    let mut named: Vec<(&str, &NpyArray)> = vec![
        ("cost", &cost_arr),
        ("transport_cost", &tc_arr),
        ("f", &f_arr),
        ("g", &g_arr),
    ];
    let plan_arr;
    if let Some(plans) = sol.plans {
        let (n1, n2) = (kernel.nrows(), kernel.ncols());
        // Each plan is column-major n1 × n2; NumPy wants [i, j] at i·n2 + j.
        let mut data = Vec::with_capacity(m * n1 * n2);
        for p in &plans {
            data.extend((0..n1 * n2).map(|q| p.get(q / n2, q % n2)));
        }
        plan_arr = arr(with_count(count, &[n1, n2]), data)?;
        named.push(("plan", &plan_arr));
    }
    write_out("--out", write_npz(&args.out, &named))?;
    let write_s = secs(t);

    let to_f64 = |v: &[T]| v.iter().map(|x| x.to_f64_()).collect::<Vec<_>>();
    Ok(json!({
        "command": "sinkhorn",
        "precision": Dtype::of::<T>().name(),
        "kernel": kernel.describe(),
        "log_domain": log,
        "pairs": m,
        "n1": kernel.nrows(),
        "n2": kernel.ncols(),
        "stop": stop_json(stop),
        "iterations": iterations,
        "error": sol.error,
        "converged": converged(stop, Some(sol.error)),
        "cost": to_f64(&costs),
        "transport_cost": to_f64(&tcosts),
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
