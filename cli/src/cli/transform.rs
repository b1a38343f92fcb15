//! `wassdl transform`: barycentric weights of new data on a learned dictionary.

use super::error::{from_model, CliError};
use super::fit::termination_text;
use super::geometry::secs;
use super::input::{check_ext, check_outputs, finite_output, renormalize, write_out, Input, Layout};
use super::model::{
    at_least_one, check_item, item_shape, load_model, warn_line_search, AnyParts, Parts,
};
use super::progress::Progress;
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl::lbfgs::{Control};
use wassdl::dictionary::{transform_fit, FnObserver, IterationInfo, WeightInit};
use wassdl::metrics::Metrics;
use wassdl_cli::npy::{write_npy, Dtype, NpyArray};
use wassdl::Real;

/// Barycentric weights of new datapoints on the atoms of a learned dictionary.
///
/// For each datapoint x finds the weights λ (in the simplex) minimizing the model's loss
/// between x and the barycenter of the model's atoms with weights λ, by the same L-BFGS
/// as `fit` with the atoms fixed, and the model's settings (loss, γ, L, τ, ρ, ζ, warm
/// restarts, seed), starting from uniform weights (random ones if the model was fitted
/// from random weights).
///
/// Shapes: data (M, N) one histogram per row, (M, H, W) images, or one histogram (N,), on
/// the model's support; output (M, S), one weight vector per row ((S,) for one histogram),
/// which `wassdl reconstruct --weights` and `wassdl barycenter --weights` accept. The
/// computation runs in the model's precision (float64 with --f64).
///
/// Example: wassdl transform --model model.json --data new.npy --out w.npy
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Model file written by `wassdl fit` (or a checkpoint)
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Datapoints (M, N), (M, H, W) or (N,); nonnegative, each summing to 1 (any mass if
    /// the model is unbalanced)
    #[arg(long, value_name = "X.npy")]
    data: PathBuf,
    /// Make each datapoint of --data a histogram (divide by its sum): any nonnegative
    /// array, integer ones (e.g. uint8 images) included. Without it the datapoints must
    /// already sum to 1
    #[arg(long)]
    normalize: bool,
    /// L-BFGS iterations [default: the model's --max-iters]
    #[arg(long, value_name = "n")]
    max_iters: Option<u64>,
    /// Output weights .npy, (M, S) or (S,) (written atomically)
    #[arg(long, value_name = "W.npy")]
    out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    if let Some(n) = args.max_iters {
        at_least_one("--max-iters", n)?;
    }
    check_ext("--out", &args.out, "npy", "one .npy array (the weights)")?;
    check_outputs(
        &[("--out", &args.out)],
        &[("--model", &args.model), ("--data", &args.data)],
    )?;
    let (model, _) = load_model("--model", &args.model)?;
    let data = if args.normalize {
        Input::load_normalized("--data", &args.data)?
    } else {
        Input::load("--data", &args.data, Layout::Rows)?
    };
    data.expect_ndim(
        &[1, 2, 3],
        "(N,), (M, N) or (M, H, W): one datapoint per row",
    )?;
    let model_name = format!("the model --model {}", args.model.display());
    let read_s = secs(t_start);
    let ctx = Ctx {
        args: &args,
        global,
        model_name: &model_name,
        read_s,
        t_start,
    };
    match model.into_parts(global.force_f64) {
        AnyParts::F64(parts) => go(&ctx, parts, data),
        AnyParts::F32(parts) => go(&ctx, parts, data),
    }
}

/// What `go` needs from `run`, whatever the precision.
struct Ctx<'a> {
    args: &'a Args,
    global: &'a Global,
    model_name: &'a str,
    read_s: f64,
    t_start: Instant,
}

fn go<T: Real>(
    ctx: &Ctx<'_>,
    parts: Parts<T>,
    mut data: Input,
) -> Result<serde_json::Value, CliError> {
    let Ctx {
        args,
        global,
        model_name,
        read_s,
        t_start,
    } = *ctx;
    let Parts {
        kernel: spec,
        config: mut cfg,
        atoms,
        ..
    } = parts;
    let item = item_shape(&spec);
    check_item(
        &data.name(),
        data.shape(),
        &item,
        &format!("the support of {model_name}"),
    )?;
    let count = data.count();
    let mut x = data.take_batch::<T>();
    if cfg.barycenter.rho.is_none() {
        data.check(&x, |x| wassdl::validate::simplex_columns("data", x))?;
        renormalize(&mut x, data.dtype());
    } else {
        data.check(&x, |x| wassdl::validate::nonnegative("data", x))?;
    }
    // The fit's given weights describe its own datapoints, not these.
    if matches!(cfg.weight_init, WeightInit::Given(_)) {
        cfg.weight_init = WeightInit::Uniform;
    }
    if let Some(n) = args.max_iters {
        cfg.lbfgs.max_iter = n;
    }
    let file = format!("--model {}", args.model.display());
    let t = Instant::now();
    let kernel = spec.build::<T>().map_err(|e| from_model(e, &file))?;
    let kernel_s = secs(t);

    let t = Instant::now();
    let progress = Progress::new(global.quiet, cfg.lbfgs.max_iter as usize, "transform");
    let mut observer = FnObserver::new(|it: &IterationInfo| {
        progress.update(it.iteration, || format!("loss {:.4e}", it.loss));
        Control::Continue
    });
    let fitted = transform_fit(kernel.as_ref(), &atoms, &x, &cfg, &mut observer)
        .map_err(|e| from_model(e, &file))?;
    drop(progress);
    let solve_s = secs(t);
    warn_line_search(global, &fitted);

    finite_output("--out", "weights", &fitted.weights)?;
    let t = Instant::now();
    let s = fitted.weights.rows();
    let shape: Vec<usize> = count.into_iter().chain([s]).collect();
    // The weights are S × M, one column per datapoint: the (M, S) file's rows.
    let w = NpyArray::from_batch(fitted.weights.clone(), shape.clone())
        .map_err(|e| CliError(format!("internal: {e}")))?;
    write_out("--out", write_npy(&args.out, &w))?;
    let write_s = secs(t);
    let metrics = Metrics::compute(&x, &fitted.reconstruction).ok();
    Ok(json!({
        "command": "transform",
        "precision": Dtype::of::<T>().name(),
        "kernel": kernel.describe(),
        "atoms": s,
        "datapoints": x.cols(),
        "output_shape": shape,
        "loss": fitted.loss,
        "iterations": fitted.iterations,
        "runs": fitted.runs,
        "termination": termination_text(&fitted.termination),
        "mse": metrics.map(|m| m.mse),
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
