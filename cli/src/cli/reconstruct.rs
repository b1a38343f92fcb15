//! `wassdl reconstruct`: barycenters of a learned dictionary's atoms.

use super::error::{from_model, CliError};
use super::geometry::secs;
use super::input::{check_ext, check_outputs, finite_output, renormalize, write_out, Input, Layout};
use super::model::{
    at_least_one, check_png_dir, item_shape, load_model, save_pictures, AnyParts, Parts,
};
use super::Global;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl::dictionary::reconstruct;
use wassdl_cli::npy::{write_npy, Dtype, NpyArray};
use wassdl::{Real, Stop};

/// Reconstructions from a learned dictionary: the barycenters of its atoms.
///
/// Computes, for each weight vector λ, the barycenter of the model's atoms with weights λ
/// after L Sinkhorn iterations from a cold start, with the model's γ, τ, ρ and domain.
/// Without --weights, the weights are the model's own (one per datapoint it was fitted
/// on), so the output approximates the training data.
///
/// A model fitted with --warm-restart learned its atoms with scalings carried over many
/// restarts: its cold L-iteration barycenters can be blurrier than the fit's. Raise
/// --sinkhorn-iters to get closer to converged barycenters.
///
/// Shapes: weights (M, S), one weight vector per row, or a single (S,); output one
/// barycenter per weight row on the model's support: (M, N), or (M, H, W) for a 2-D grid;
/// a single (S,) weight vector gives (N,) or (H, W).
///
/// Example: wassdl reconstruct --model model.json --weights w.npy --out p.npy
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Model file written by `wassdl fit` (or a checkpoint)
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Weights (M, S) or (S,), each row nonnegative and summing to 1 [default: the
    /// model's weights]
    #[arg(long, value_name = "W.npy")]
    weights: Option<PathBuf>,
    /// Sinkhorn iterations L ≥ 1 [default: the model's]
    #[arg(long, value_name = "L")]
    sinkhorn_iters: Option<usize>,
    /// Output .npy (written atomically)
    #[arg(long, value_name = "P.npy")]
    out: PathBuf,
    /// Also draw atoms.png and reconstructions.png into this folder (1-D and 2-D
    /// supports)
    #[arg(long, value_name = "DIR")]
    png: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    if let Some(l) = args.sinkhorn_iters {
        at_least_one("--sinkhorn-iters", l as u64)?;
    }
    check_ext("--out", &args.out, "npy", "one .npy array (the barycenters)")?;
    let mut inputs = vec![("--model", args.model.as_path())];
    if let Some(w) = &args.weights {
        inputs.push(("--weights", w.as_path()));
    }
    check_outputs(&[("--out", &args.out)], &inputs)?;
    if let Some(dir) = &args.png {
        inputs.push(("--out", args.out.as_path()));
        check_png_dir(dir, &inputs)?;
    }
    let (model, _) = load_model("--model", &args.model)?;
    let model_name = format!("the model --model {}", args.model.display());
    let weights = match &args.weights {
        Some(p) => {
            let w = Input::load("--weights", p, Layout::Rows)?;
            w.expect_ndim(&[1, 2], "(S,) or (M, S): one weight vector per row")?;
            Some(w)
        }
        None => None,
    };
    let read_s = secs(t_start);
    let f64_inputs = global.force_f64 || weights.as_ref().is_some_and(|w| w.dtype() == Dtype::F64);
    let ctx = Ctx {
        args: &args,
        model_name: &model_name,
        read_s,
        t_start,
    };
    match model.into_parts(f64_inputs) {
        AnyParts::F64(parts) => go(&ctx, parts, weights),
        AnyParts::F32(parts) => go(&ctx, parts, weights),
    }
}

/// What `go` needs from `run`, whatever the precision.
struct Ctx<'a> {
    args: &'a Args,
    model_name: &'a str,
    read_s: f64,
    t_start: Instant,
}

fn go<T: Real>(
    ctx: &Ctx<'_>,
    parts: Parts<T>,
    weights: Option<Input>,
) -> Result<serde_json::Value, CliError> {
    let Ctx {
        args,
        model_name,
        read_s,
        t_start,
    } = *ctx;
    let Parts {
        kernel: spec,
        config: mut cfg,
        atoms,
        weights: own,
    } = parts;
    let s = atoms.cols();
    let (w, count) = match weights {
        Some(mut wi) => {
            let per_row = *wi.shape().last().unwrap_or(&0);
            if per_row != s {
                return Err(wi.fail(format!(
                    "has {per_row} weights per vector (shape {}) but {model_name} has {s} atoms",
                    wi.shape_text()
                )));
            }
            let count = wi.count();
            let mut w = wi.take_batch::<T>();
            wi.check(&w, |x| wassdl::validate::simplex_columns("weights", x))?;
            renormalize(&mut w, wi.dtype());
            (w, count)
        }
        None => {
            let m = own.cols();
            (own, Some(m))
        }
    };
    if let Some(l) = args.sinkhorn_iters {
        cfg.barycenter.stop = Stop::Iterations(l);
    }
    let file = format!("--model {}", args.model.display());
    let t = Instant::now();
    let kernel = spec.build::<T>().map_err(|e| from_model(e, &file))?;
    let kernel_s = secs(t);
    let t = Instant::now();
    let p = reconstruct(kernel.as_ref(), &atoms, &w, &cfg).map_err(|e| from_model(e, &file))?;
    finite_output("--out", "reconstruction", &p)?;
    let solve_s = secs(t);

    let t = Instant::now();
    let item = item_shape(&spec);
    let pictures = match &args.png {
        Some(dir) => save_pictures(dir, &item, &atoms, None, &p)?,
        None => Vec::new(),
    };
    let shape: Vec<usize> = count.into_iter().chain(item).collect();
    let m = p.cols();
    let arr =
        NpyArray::from_batch(p, shape.clone()).map_err(|e| CliError(format!("internal: {e}")))?;
    write_out("--out", write_npy(&args.out, &arr))?;
    let write_s = secs(t);
    Ok(json!({
        "command": "reconstruct",
        "precision": Dtype::of::<T>().name(),
        "kernel": kernel.describe(),
        "atoms": s,
        "barycenters": m,
        "sinkhorn_iters": match cfg.barycenter.stop { Stop::Iterations(l) => Some(l), _ => None },
        "output_shape": shape,
        "out": args.out.display().to_string(),
        "png": pictures.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "timings": {
            "read_s": read_s,
            "kernel_s": kernel_s,
            "solve_s": solve_s,
            "write_s": write_s,
            "total_s": secs(t_start),
        },
    }))
}
