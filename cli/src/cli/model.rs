//! Pieces shared by the dictionary subcommands (`fit`, `transform`, `reconstruct`,
//! `demo`): model files, the NumPy layout of a model's support, and pictures.

use super::error::CliError;
use super::input::shape_text;
use std::path::{Path, PathBuf};
use wassdl::dictionary::{Fit, KernelSpec, Model, WdlConfig};
use wassdl::lbfgs::Termination;
use wassdl::{Batch, Real};
use wassdl_cli::figures::{save_histograms_1d, save_image_grid, HistPanel, HistRow};
use wassdl_cli::npy::write_atomic;

/// A precision a model can be saved in: what [`Model`] needs beyond [`Real`].
pub trait Scalar: Real + serde::Serialize + serde::de::DeserializeOwned {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// A model file in whichever precision it was saved.
pub enum AnyModel {
    /// `"scalar": "f32"`.
    F32(Model<f32>),
    /// `"scalar": "f64"`.
    F64(Model<f64>),
}

/// A model's parts in the precision a subcommand computes in.
pub struct Parts<T: Real> {
    /// How to rebuild the kernel.
    pub kernel: KernelSpec,
    /// The settings the model was fitted with.
    pub config: WdlConfig,
    /// Atoms, `N × S`.
    pub atoms: Batch<T>,
    /// The fitted datapoints' weights, `S × M`.
    pub weights: Batch<T>,
}

/// [`Parts`] in either precision.
pub enum AnyParts {
    /// Computed in f32.
    F32(Parts<f32>),
    /// Computed in f64.
    F64(Parts<f64>),
}

impl AnyModel {
    /// The model's parts in f64 when `f64` is set (an f32 model's atoms and weights are
    /// cast, exactly), in the model's own precision otherwise.
    pub fn into_parts(self, f64: bool) -> AnyParts {
        fn parts<T: Scalar>(m: Model<T>) -> Parts<T> {
            let (atoms, weights) = (m.atoms(), m.weights());
            Parts {
                kernel: m.kernel,
                config: m.config,
                atoms,
                weights,
            }
        }
        match self {
            AnyModel::F64(m) => AnyParts::F64(parts(m)),
            AnyModel::F32(m) if f64 => {
                let p = parts(m);
                AnyParts::F64(Parts {
                    kernel: p.kernel,
                    config: p.config,
                    atoms: p.atoms.cast(),
                    weights: p.weights.cast(),
                })
            }
            AnyModel::F32(m) => AnyParts::F32(parts(m)),
        }
    }
}

/// Warns on stderr when `fitted` ended on failed line searches (its result still stands).
pub fn warn_line_search<T: Real>(global: &super::Global, fitted: &Fit<T>) {
    if let Termination::LineSearch(msg) = &fitted.termination {
        global.warn(&format!(
            "L-BFGS stopped after {} iterations, its line search failing: {msg}; the last accepted point is saved",
            fitted.iterations
        ));
    }
}

/// Just the precision field of a model (or checkpoint) file.
#[derive(serde::Deserialize)]
struct ScalarField {
    scalar: String,
}

/// Reads the text of the file given to `opt`.
pub fn read_text(opt: &str, path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::InvalidData => "not a text (JSON) file".to_string(),
            _ => e.to_string(),
        };
        CliError(format!("{opt} {}: {what}", path.display()))
    })
}

/// Loads the model (or checkpoint, which is a model with one more field) given to `opt`.
pub fn load_model(opt: &str, path: &Path) -> Result<(AnyModel, String), CliError> {
    let text = read_text(opt, path)?;
    let fail = |what: String| CliError(format!("{opt} {}: {what}", path.display()));
    let scalar: ScalarField = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "not a wassdl model file ({e}); `wassdl fit --out` writes them"
        ))
    })?;
    let model = match scalar.scalar.as_str() {
        "f32" => wassdl_cli::json::model_from_json::<f32>(&text).map(AnyModel::F32),
        "f64" => wassdl_cli::json::model_from_json::<f64>(&text).map(AnyModel::F64),
        other => return Err(fail(format!("unknown precision \"scalar\": {other:?}"))),
    }
    .map_err(|e| fail(e.to_string()))?;
    let checked = match &model {
        AnyModel::F32(m) => check_model(m),
        AnyModel::F64(m) => check_model(m),
    };
    checked.map_err(fail)?;
    Ok((model, text))
}

/// Where the library's parameter `arg` lives in a model file.
pub fn model_field(arg: &str) -> String {
    match arg {
        "tau" | "rho" | "log_domain" => format!("config.barycenter.{arg}"),
        "iterations" | "tol" | "max_iter" | "barycenter.stop" => "config.barycenter.stop".into(),
        "gamma" => "kernel.gamma".into(),
        other => format!("config.{other}"),
    }
}

/// Checks every setting of a model (or checkpoint) file before it is used, so that a bad
/// value is reported as the file's field, not as an option of the subcommand reading it.
pub fn check_model<T: Real>(m: &Model<T>) -> Result<(), String> {
    let field = |name: &str, value: f64, req: &str| {
        Err(format!(
            "field {name} = {value} is invalid: it must be {req}"
        ))
    };
    match &m.kernel {
        KernelSpec::Grid { shape, gamma, .. } => {
            if !(gamma.is_finite() && *gamma > 0.0) {
                return field("kernel.Grid.gamma", *gamma, "finite and > 0");
            }
            if shape.is_empty() || shape.len() > 3 || shape.contains(&0) {
                return Err(format!(
                    "field kernel.Grid.shape = {shape:?} is invalid: it must have 1 to 3 positive axes"
                ));
            }
        }
        KernelSpec::Dense { cost, n, gamma } => {
            if !(gamma.is_finite() && *gamma > 0.0) {
                return field("kernel.Dense.gamma", *gamma, "finite and > 0");
            }
            if Some(cost.len()) != n.checked_mul(*n) {
                return Err(format!(
                    "field kernel.Dense.cost has {} entries but kernel.Dense.n = {n} needs {n} x {n}",
                    cost.len()
                ));
            }
            if let Some(k) = cost.iter().position(|c| !c.is_finite()) {
                return field(
                    &format!("kernel.Dense.cost[{k}]"),
                    cost[k],
                    "finite (a cost matrix entry)",
                );
            }
        }
    }
    let cfg = &m.config;
    if let Err(wassdl::Error::InvalidParameter {
        arg,
        requirement,
        value,
    }) = cfg.validate()
    {
        return field(&model_field(arg), value, requirement);
    }
    cfg.validate()
        .map_err(|e| format!("invalid settings: {e}"))?;
    if cfg.barycenter.tau <= -1.0 {
        return field(
            "config.barycenter.tau",
            cfg.barycenter.tau,
            super::geometry::TAU_RANGE,
        );
    }
    if matches!(cfg.loss, wassdl::Loss::Wasserstein { iterations: 0 }) {
        return field(
            "config.loss.Wasserstein.iterations",
            0.0,
            ">= 1 (Sinkhorn iterations of the loss)",
        );
    }
    if cfg.lbfgs.max_iter == 0 {
        return field("config.lbfgs.max_iter", 0.0, ">= 1");
    }
    for (name, v) in [("atoms", &m.atoms), ("weights", &m.weights)] {
        if let Some(k) = v.iter().position(|x| !x.is_finite() || *x < T::zero()) {
            return field(
                &format!("{name}[{k}]"),
                v[k].to_f64_(),
                "finite and >= 0 (a histogram entry)",
            );
        }
    }
    Ok(())
}

/// Checks the folder given to `--png` before any work: it is a directory, or can be
/// created as one, and its pictures are neither directories nor one of `inputs`.
pub fn check_png_dir(dir: &Path, inputs: &[(&str, &Path)]) -> Result<(), CliError> {
    let fail = |what: String| CliError(format!("--png {}: {what}", dir.display()));
    if dir.exists() && !dir.is_dir() {
        return Err(fail("exists and is not a directory".into()));
    }
    // The nearest existing ancestor must be a directory we can write in.
    let mut anc = dir;
    while !anc.as_os_str().is_empty() && !anc.exists() {
        anc = anc.parent().unwrap_or(Path::new(""));
    }
    let anc = if anc.as_os_str().is_empty() {
        Path::new(".")
    } else {
        anc
    };
    if !anc.is_dir() {
        return Err(fail(format!(
            "cannot be created: {} is not a directory",
            anc.display()
        )));
    }
    super::input::probe_dir(anc)
        .map_err(|e| fail(format!("cannot write in {}: {e}", anc.display())))?;
    // A folder still to be created holds no input.
    if dir.is_dir() {
        for name in ["atoms.png", "reconstructions.png"] {
            super::input::check_outputs(&[("--png", &dir.join(name))], inputs)?;
        }
    }
    Ok(())
}

/// Writes `model` atomically as JSON, with `extra` (`"key": value` pairs, already JSON)
/// appended to its top-level object.
pub fn write_model<T: Scalar>(
    opt: &str,
    path: &Path,
    model: &Model<T>,
    extra: Option<&str>,
) -> Result<(), CliError> {
    let internal = |e: wassdl::Error| CliError(format!("internal: {e}"));
    let mut text = wassdl_cli::json::model_to_json(model).map_err(internal)?;
    if let Some(extra) = extra {
        // Splicing text keeps the model's floats exactly as `to_json` printed them (a
        // detour through serde_json::Value would re-parse them, not always exactly).
        let body = text.trim_end().strip_suffix('}').ok_or_else(|| {
            CliError("internal: a model's JSON does not end with `}`".to_string())
        })?;
        text = format!("{},\n  {extra}\n}}", body.trim_end());
    }
    text.push('\n');
    write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
        .map_err(|e| CliError(format!("{opt} {e}")))
}

/// Shape of one histogram on the support of `spec`: the grid's shape, or `[N]` for a
/// cost matrix.
pub fn item_shape(spec: &KernelSpec) -> Vec<usize> {
    match spec {
        KernelSpec::Grid { shape, .. } => shape.clone(),
        KernelSpec::Dense { n, .. } => vec![*n],
    }
}

/// Checks that the histograms of a file of shape `file_shape` (one per row) live on a
/// support of item shape `item`: the bin counts agree, and images have the grid's shape.
pub fn check_item(
    name: &str,
    file_shape: &[usize],
    item: &[usize],
    of: &str,
) -> Result<(), CliError> {
    let (got, len): (&[usize], usize) = match file_shape.len() {
        0 | 1 => (file_shape, file_shape.iter().product()),
        _ => (&file_shape[1..], file_shape[1..].iter().product()),
    };
    let n: usize = item.iter().product();
    let images_mismatch = file_shape.len() == 3 && got != item;
    if len != n || images_mismatch {
        return Err(CliError(format!(
            "{name}: has shape {} but {of} is {} ({n} bins per histogram)",
            shape_text(file_shape),
            item.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )));
    }
    Ok(())
}

/// Renders a picture with `draw` to a temporary `.png` beside `path`, then renames it,
/// so an interrupted run leaves no half-drawn picture under the final name.
fn atomic_png(path: &Path, draw: impl FnOnce(&Path) -> wassdl::Result<()>) -> Result<(), CliError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // plotters picks the encoder from the extension: the temporary name keeps `.png`.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp.png", std::process::id()));
    let result = draw(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .map_err(|e| wassdl::Error::external(path.display().to_string(), e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| CliError(format!("--png {e}")))
}

/// At most this many datapoints are drawn (the pictures are for a look, not a report).
const MAX_SHOWN: usize = 8;

/// Draws `atoms.png` (the `S` atoms) and `reconstructions.png` (the first datapoints and
/// their reconstructions) into `dir`, for 1-D supports (histogram panels) and 2-D grids
/// (grayscale images). Returns the files written; 3-D grids get none.
pub fn save_pictures<T: Real>(
    dir: &Path,
    item: &[usize],
    atoms: &Batch<T>,
    data: Option<&Batch<T>>,
    recon: &Batch<T>,
) -> Result<Vec<PathBuf>, CliError> {
    if item.len() > 2 {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError(format!("--png {}: cannot create: {e}", dir.display())))?;
    let cols = |b: &Batch<T>, k: usize| -> Vec<Vec<f64>> {
        (0..b.cols().min(k))
            .map(|j| b.col(j).iter().map(|v| v.to_f64_()).collect())
            .collect()
    };
    let a = cols(atoms, usize::MAX);
    let r = cols(recon, MAX_SHOWN);
    let d = data.map(|d| cols(d, MAX_SHOWN));
    let atoms_png = dir.join("atoms.png");
    let recon_png = dir.join("reconstructions.png");
    if let [h, w] = *item {
        let titles: Vec<String> = (1..=a.len()).map(|s| format!("atom {s}")).collect();
        let refs: Vec<&[f64]> = a.iter().map(Vec::as_slice).collect();
        let trefs: Vec<&str> = titles.iter().map(String::as_str).collect();
        atomic_png(&atoms_png, |p| {
            save_image_grid(p, &refs, h, w, a.len().min(MAX_SHOWN), &trefs)
        })?;
        let mut images: Vec<&[f64]> = Vec::new();
        let mut titles: Vec<String> = Vec::new();
        if let Some(d) = &d {
            images.extend(d.iter().map(Vec::as_slice));
            titles.extend((1..=d.len()).map(|j| format!("data {j}")));
        }
        images.extend(r.iter().map(Vec::as_slice));
        titles.extend((1..=r.len()).map(|j| format!("reconstruction {j}")));
        let trefs: Vec<&str> = titles.iter().map(String::as_str).collect();
        atomic_png(&recon_png, |p| {
            save_image_grid(p, &images, h, w, r.len(), &trefs)
        })?;
    } else {
        let atom_row = HistRow {
            label: "atoms".into(),
            panels: a
                .iter()
                .enumerate()
                .map(|(s, c)| HistPanel {
                    title: format!("atom {}", s + 1),
                    curves: vec![c.as_slice()],
                })
                .collect(),
        };
        atomic_png(&atoms_png, |p| {
            save_histograms_1d(p, "Learned atoms", &["atom"], &[atom_row])
        })?;
        let panels = r
            .iter()
            .enumerate()
            .map(|(j, rc)| HistPanel {
                title: format!("datapoint {}", j + 1),
                curves: match &d {
                    Some(d) => vec![d[j].as_slice(), rc.as_slice()],
                    None => vec![rc.as_slice()],
                },
            })
            .collect();
        let legend: &[&str] = if d.is_some() {
            &["data", "reconstruction"]
        } else {
            &["reconstruction"]
        };
        let row = HistRow {
            label: "fits".into(),
            panels,
        };
        atomic_png(&recon_png, |p| {
            save_histograms_1d(p, "Barycenters of the atoms", legend, &[row])
        })?;
    }
    Ok(vec![atoms_png, recon_png])
}

/// `--max-iters` style count from clap, checked ≥ 1 with a message naming `opt`.
pub fn at_least_one(opt: &str, v: u64) -> Result<(), CliError> {
    if v == 0 {
        Err(CliError(format!("{opt} = 0 is invalid: it must be >= 1")))
    } else {
        Ok(())
    }
}
