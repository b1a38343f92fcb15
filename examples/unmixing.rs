//! POT's gallery example "Wasserstein unmixing with PyTorch"
//! (`003_d677dd5d7bb685d2.txt`), reproduced: estimate the mixture weights `w ∈ Δ₂` of two
//! source clouds that best explain a target cloud, by 500 projected-gradient steps
//! (`lr = 2e-3`, from `w = [½, ½]`) through the exact OT cost `ot.emd2(H w, b, M)`.
//!
//! The data are the seed's own arrays (`np.random.RandomState(2)` draws, as saved in
//! `tests/reference/unmixing_seed/`): sources `xs` (100 × 2, two clusters of 50),
//! target `xt` (100 × 2, 10 % near `(1, 0)`, 90 % near `(0, 1)`), the reweighting matrix
//! `H` and `M = ot.dist(xs, xt)` (squared Euclidean, recomputed here and checked).
//!
//! ```text
//! cargo run --release --example unmixing [-- --data tests/reference/unmixing_seed]
//! ```
//!
//! Ends with `RESULT w1=... w2=...` (the seed prints `[0.09980706 0.90019294]`).

use clap::Parser;
use std::path::{Path, PathBuf};
use wassdl::barycenter::Stop;
use wassdl::pointcloud::{cost_matrix, Cost, PointCloud};
use wassdl::unmixing::{unmix, InnerOt, UnmixingConfig};
use wassdl::Batch;

#[derive(Parser, Debug)]
#[command(about = "Wasserstein unmixing (POT gallery example)")]
struct Args {
    /// Folder with xs.npy, xt.npy, H.npy, b.npy, M.npy.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/reference/unmixing_seed"))]
    data: PathBuf,
    /// Regularization of the entropic variant (also run, for comparison).
    #[arg(long, default_value_t = 0.1)]
    reg: f64,
}

/// A float64 `.npy` file as (shape, row-major data).
fn load(dir: &Path, name: &str) -> Result<(Vec<usize>, Vec<f64>), Box<dyn std::error::Error>> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("{}: {e}", path.display()))?;
    if npy.order() != npyz::Order::C {
        return Err(format!("{}: expected C order", path.display()).into());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let data: Vec<f64> = npy
        .into_vec()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((shape, data))
}

/// A row-major `(r, c)` array as an `r × c` [`Batch`].
fn matrix(shape: &[usize], data: &[f64]) -> Result<Batch<f64>, Box<dyn std::error::Error>> {
    match *shape {
        [r, c] if r * c == data.len() => Ok(Batch::from_fn(r, c, |i, j| data[i * c + j])),
        _ => Err(format!("expected a 2-D array, got shape {shape:?}").into()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (sx, xs) = load(&args.data, "xs.npy")?;
    let (st, xt) = load(&args.data, "xt.npy")?;
    let (sh, h) = load(&args.data, "H.npy")?;
    let (sm, m) = load(&args.data, "M.npy")?;
    let (_, b) = load(&args.data, "b.npy")?;
    let dim = *sx.last().ok_or("xs.npy: empty shape")?;
    let src = PointCloud::from_rows(dim, &xs, None)?;
    let tgt = PointCloud::from_rows(
        *st.last().ok_or("xt.npy: empty shape")?,
        &xt,
        Some(b.clone()),
    )?;
    let h = matrix(&sh, &h)?;
    let m_saved = matrix(&sm, &m)?;
    // ot.dist(xs, xt) recomputed: the same squared Euclidean cost up to rounding.
    let m = cost_matrix(src.points(), tgt.points(), Cost::SqEuclidean)?;
    let dev = m
        .as_slice()
        .iter()
        .zip(m_saved.as_slice())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    println!(
        "{} source points ({} sources), {} target points; max |dist - M.npy| = {dev:.1e}",
        src.len(),
        h.cols(),
        tgt.len()
    );
    // The saved M is what POT used: run on it so that every bit matches.
    let exact = unmix(&h, &b, &m_saved, None, &UnmixingConfig::default())?;
    println!(
        "exact OT (ot.emd2): loss {:.10} -> {:.10} over {} steps",
        exact.losses[0],
        exact.losses.last().copied().unwrap_or(f64::NAN),
        exact.losses.len()
    );
    println!(
        "Estimated mixture: [{:.8} {:.8}]",
        exact.weights[0], exact.weights[1]
    );
    let ent_cfg = UnmixingConfig {
        solver: InnerOt::Entropic {
            gamma: args.reg,
            stop: Stop::Tolerance {
                tol: 1e-9,
                max_iter: 100_000,
            },
        },
        ..Default::default()
    };
    let ent = unmix(&h, &b, &m_saved, None, &ent_cfg)?;
    println!(
        "entropic OT (reg {}): loss {:.6} -> {:.6}, mixture [{:.8} {:.8}]",
        args.reg,
        ent.losses[0],
        ent.losses.last().copied().unwrap_or(f64::NAN),
        ent.weights[0],
        ent.weights[1]
    );
    println!(
        "RESULT w1={:.8} w2={:.8}",
        exact.weights[0], exact.weights[1]
    );
    Ok(())
}
