//! `wassdl demo`: the built-in example, Figure 2 of the paper from the command line.

use super::error::CliError;
use super::fit;
use super::geometry::secs;
use super::input::write_out;
use super::model::{at_least_one, load_model, AnyParts};
use super::Global;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wassdl_cli::datasets::fig2_gaussians;
use wassdl_cli::npy::{write_npy, NpyArray};

/// The built-in example: two Wasserstein atoms of the paper's Figure 2 data, in a folder.
///
/// Learns two atoms from five translated Gaussians and writes everything into one
/// folder. The data are five Gaussians of σ = 0.05 centred at 0.3, 0.4, ..., 0.7 on 100 bins of
/// [0, 1]. The fit is exactly
///
///   wassdl fit --data DIR/data.npy --atoms 2 --reg 4e-3 --sinkhorn-iters 5
///              --warm-restart 10 --max-iters 100 --seed 2 --weight-init random
///              --out DIR/model.json --png DIR
///
/// (γ = 4e-3 in POT units, L = 5 Sinkhorn iterations with warm restarts every 10 L-BFGS
/// iterations, section 4.2), which takes a fraction of a second and reaches a
/// reconstruction MSE near 1e-6. The atoms come out
/// sharper than the data, near its two ends, and the weights of the five datapoints near
/// 1, 0.75, 0.5, 0.25, 0: displacement interpolation between the atoms.
///
/// Files in DIR: data.npy (5, 100), model.json, atoms.png, reconstructions.png. Try
/// `wassdl transform --model DIR/model.json --data DIR/data.npy --out w.npy` next.
///
/// Example: wassdl demo --dir wassdl-demo
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Folder for the files (created if needed)
    #[arg(long, value_name = "DIR", default_value = "wassdl-demo")]
    dir: PathBuf,
    /// L-BFGS iterations
    #[arg(long, value_name = "n", default_value_t = 100)]
    max_iters: u64,
    /// Seed of the random initial atoms (WDL is non-convex: other seeds may end in a local
    /// minimum, as the paper's "best of a few random starts" says)
    #[arg(long, value_name = "s", default_value_t = 2)]
    seed: u64,
}

/// `wassdl fit`'s arguments alone, parsed from the command line the demo spells out.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct FitLine {
    #[command(flatten)]
    args: fit::Args,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    at_least_one("--max-iters", args.max_iters)?;
    let dir = &args.dir;
    if dir.exists() && !dir.is_dir() {
        return Err(CliError(format!(
            "--dir {}: exists and is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError(format!("--dir {}: cannot create: {e}", dir.display())))?;
    let data = fig2_gaussians();
    let data_path = dir.join("data.npy");
    let model_path = dir.join("model.json");
    let (n, m) = data.shape();
    let arr =
        NpyArray::from_batch(data, vec![m, n]).map_err(|e| CliError(format!("internal: {e}")))?;
    write_out("--dir", write_npy(&data_path, &arr))?;

    let line: Vec<String> = [
        "--data",
        &data_path.display().to_string(),
        "--atoms",
        "2",
        "--reg",
        "4e-3",
        "--sinkhorn-iters",
        "5",
        "--warm-restart",
        "10",
        "--max-iters",
        &args.max_iters.to_string(),
        "--seed",
        &args.seed.to_string(),
        "--weight-init",
        "random",
        "--out",
        &model_path.display().to_string(),
        "--png",
        &dir.display().to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let fit_args = FitLine::try_parse_from(&line)
        .map_err(|e| CliError(format!("internal: the demo's fit line does not parse: {e}")))?
        .args;
    let mut summary = fit::run(fit_args, global)?;

    // The weights of the five datapoints, read back from the model just written.
    let (model, _) = load_model("--dir", &model_path)?;
    let AnyParts::F64(parts) = model.into_parts(true) else {
        unreachable!("into_parts(true) is f64")
    };
    let w = parts.weights;
    let weights: Vec<Vec<f64>> = (0..w.cols()).map(|j| w.col(j).to_vec()).collect();
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("command".into(), json!("demo"));
        obj.insert("dir".into(), json!(dir.display().to_string()));
        obj.insert("data".into(), json!(data_path.display().to_string()));
        obj.insert("weights".into(), json!(weights));
        obj.insert(
            "equivalent_command".into(),
            json!(format!("wassdl fit {}", line.join(" "))),
        );
        obj.insert("demo_total_s".into(), json!(secs(t_start)));
    }
    Ok(summary)
}
