//! `wassdl fit`: Wasserstein dictionary learning (Algorithm 2), with checkpoints.

use super::error::{from_lib, from_model, CliError};
use super::geometry::{parse_grid, precision, secs, GeometryArgs, GridShape, Units};
use super::input::{check_outputs, finite_output, renormalize, Input, Layout};
use super::model::{
    at_least_one, check_model, check_png_dir, item_shape, read_text, save_pictures,
    warn_line_search, write_model, Scalar,
};
use super::progress::Progress;
use super::Global;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wassdl::lbfgs::{Control, Termination};
use wassdl::dictionary::{fit_resumable, AtomInit, Fit, FitState, FnObserver, IterationInfo, KernelSpec, Model, WdlConfig, WeightInit};
use wassdl::metrics::Metrics;
use wassdl_cli::npy::Dtype;
use wassdl::{BarycenterConfig, Batch, Loss, Real, Scalings, Stop};

/// Wasserstein dictionary learning: atoms whose barycenters reconstruct the data.
///
/// Learns S atoms and one weight vector per datapoint such that each datapoint is
/// approximated by the barycenter of the atoms with its weights after L Sinkhorn
/// iterations (Algorithm 2 of Schmitz et al., eq. 9-13), by L-BFGS on the softmax
/// parametrization of atoms and weights.
///
/// Data: (M, N), one histogram per row, or (M, H, W) images (they define the grid when
/// neither --grid nor --cost is given); nonnegative, each summing to 1 (any mass with
/// --rho). The model file (--out, JSON) holds the atoms, the weights of the M datapoints,
/// the kernel recipe and every setting; `wassdl transform` and `wassdl reconstruct` read
/// it. --png DIR adds atoms.png and reconstructions.png for 1-D and 2-D supports.
///
/// Checkpoints: with --warm-restart k, L-BFGS restarts every k iterations from the current
/// point with the Sinkhorn scalings carried over (section 4.2); at a restart the whole
/// state is that point and those scalings, and --checkpoint FILE saves them (atomically).
/// `wassdl fit --resume FILE --data X.npy --out MODEL` continues the fit, and ends on the
/// same bits as a fit that was never interrupted. --max-iters with --resume raises the
/// budget of a fit that spent it. A checkpoint file is also a model file (the dictionary
/// at the checkpoint).
///
/// Example: wassdl fit --data X.npy --atoms 2 --reg 4e-3 --sinkhorn-iters 20 --warm-restart 10 --out model.json --png figs
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Datapoints (M, N) or (M, H, W); nonnegative, each summing to 1 (any mass with --rho)
    #[arg(long, value_name = "X.npy")]
    data: PathBuf,
    /// Make each datapoint of --data a histogram (divide by its sum): any nonnegative
    /// array, integer ones (e.g. uint8 images) included. Without it the datapoints must
    /// already sum to 1
    #[arg(long)]
    normalize: bool,
    /// Number of atoms S ≥ 1
    #[arg(
        long,
        value_name = "S",
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    atoms: Option<usize>,
    /// Fitting loss (Table 1): quadratic ‖p − x‖², kl KL(p|x), tv ‖p − x‖₁, or
    /// wasserstein[:L] (entropic OT cost after L Sinkhorn iterations, default L = 100)
    #[arg(long, value_name = "LOSS", default_value = "quadratic", value_parser = parse_loss, conflicts_with = "resume")]
    loss: Loss,
    /// Cost matrix C as .npy, shape (N, N), any finite entries; K = exp(-C/γ). Without
    /// --cost the histograms live on a regular grid (--grid)
    #[arg(long, value_name = "C.npy", conflicts_with_all = ["grid", "units", "resume"])]
    cost: Option<PathBuf>,
    /// Regular grid of 1 to 3 axes, e.g. 100, 32x32 or 16x16x16, with the squared
    /// Euclidean cost of --units [default: the shape of one datapoint: N for (M, N) rows,
    /// HxW for (M, H, W) images]
    #[arg(long, value_name = "N[xN[xN]]", value_parser = parse_grid, conflicts_with = "resume")]
    grid: Option<GridShape>,
    /// Units of --grid
    #[arg(long, value_enum, default_value_t = Units::Pot, conflicts_with = "resume")]
    units: Units,
    /// Entropic regularization γ > 0, in the units of the cost (a squared distance: with
    /// --units pot, γ = 1e-3 blurs over a length √γ ≈ 0.03 of the unit domain)
    #[arg(
        long,
        value_name = "γ",
        allow_negative_numbers = true,
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    reg: Option<f64>,
    /// Sinkhorn iterations L ≥ 1 of every barycenter (eq. 10 differentiates exactly L)
    #[arg(
        long,
        value_name = "L",
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    sinkhorn_iters: Option<usize>,
    /// Heavy-ball extrapolation τ ≤ 0 of the barycenter iterations (Algorithm 5;
    /// dimensionless); 0 is the plain iteration
    #[arg(
        long,
        value_name = "τ",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        conflicts_with = "resume"
    )]
    tau: f64,
    /// Unbalanced barycenters: KL marginal relaxation ρ > 0 (Algorithm 6), in the units
    /// of the cost [default: balanced]
    #[arg(
        long,
        value_name = "ρ",
        allow_negative_numbers = true,
        conflicts_with = "resume"
    )]
    rho: Option<f64>,
    /// Barycenter iterations in the log domain: stable at any γ, several times slower
    #[arg(long, conflicts_with = "resume")]
    log: bool,
    /// Weight scale ζ > 0 (section 3.1): the weights are softmax(ζ β̃); a larger ζ makes
    /// L-BFGS move the weights faster than the atoms
    #[arg(
        long,
        value_name = "ζ",
        default_value_t = 1.0,
        allow_negative_numbers = true,
        conflicts_with = "resume"
    )]
    zeta: f64,
    /// L-BFGS iterations in all [default: 100; with --resume, the checkpoint's]
    #[arg(long, value_name = "n")]
    max_iters: Option<u64>,
    /// Restart L-BFGS every k iterations, carrying the Sinkhorn scalings over (section
    /// 4.2; few Sinkhorn iterations then do as well as many cold ones) [default: no
    /// restarts]
    #[arg(long, value_name = "k", conflicts_with = "resume")]
    warm_restart: Option<usize>,
    /// Seed of the random initialization
    #[arg(long, value_name = "s", default_value_t = 0, conflicts_with = "resume")]
    seed: u64,
    /// Initial atoms: random (uniform entries, normalized), constant (1/N; needs
    /// --weight-init random when S ≥ 2) or data (S distinct datapoints, mixed with 1e-3 of
    /// the uniform histogram)
    #[arg(long, value_enum, default_value_t = AtomInitArg::Random, conflicts_with = "resume")]
    atom_init: AtomInitArg,
    /// Initial weights: uniform (1/S) or random (uniform entries, normalized)
    #[arg(long, value_enum, default_value_t = WeightInitArg::Uniform, conflicts_with = "resume")]
    weight_init: WeightInitArg,
    /// Save the state at L-BFGS restarts to FILE (atomically; needs --warm-restart), to
    /// continue with --resume FILE after an interruption
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Write a checkpoint at the first restart at least k iterations after the previous
    /// one, and when the budget is spent [default: at every restart]
    #[arg(long, value_name = "k", requires = "checkpoint")]
    checkpoint_every: Option<u64>,
    /// Continue the fit saved in this checkpoint (settings, support and precision come
    /// from it; give the same --data)
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Output model file (JSON, written atomically)
    #[arg(long, value_name = "MODEL")]
    out: PathBuf,
    /// Also draw atoms.png and reconstructions.png into this folder (created if needed;
    /// 1-D and 2-D supports)
    #[arg(long, value_name = "DIR")]
    png: Option<PathBuf>,
}

fn parse_loss(s: &str) -> Result<Loss, String> {
    match Loss::parse(s) {
        // The loss's own Sinkhorn needs an iteration: say so here, in the loss's terms.
        Ok(Loss::Wasserstein { iterations: 0 }) => Err(format!(
            "'{s}': the Sinkhorn iterations L of wasserstein:L must be >= 1"
        )),
        Ok(l) => Ok(l),
        Err(_) => Err(format!(
            "expected quadratic, kl, tv or wasserstein[:L], got '{s}'"
        )),
    }
}

/// `--atom-init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AtomInitArg {
    /// Uniform random entries, normalized
    Random,
    /// Every atom 1/N
    Constant,
    /// S distinct datapoints
    Data,
}

/// `--weight-init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightInitArg {
    /// 1/S
    Uniform,
    /// Uniform random entries, normalized
    Random,
}

/// Format of the `checkpoint` object that turns a model file into a checkpoint.
const CHECKPOINT_FORMAT: &str = "wassdl-checkpoint";
/// Its version.
const CHECKPOINT_VERSION: u32 = 1;

/// The `checkpoint` object: the [`FitState`] beyond the model's atoms and weights. Floats
/// are stored as their IEEE bits (u64, exact in JSON), because the log-domain scalings
/// may be −∞, which JSON numbers cannot hold.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    format: String,
    version: u32,
    iterations: u64,
    runs: usize,
    /// FNV-1a of the data's bits in the fit's precision, to refuse other data.
    data_fingerprint: String,
    x: Vec<u64>,
    warm_log: bool,
    warm_a: Vec<u64>,
    warm_b: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct CheckpointFile {
    checkpoint: Option<Checkpoint>,
    scalar: String,
}

/// FNV-1a (64 bit) over the shape and the bits of the values.
fn fingerprint<T: Real>(x: &Batch<T>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let (n, m) = x.shape();
    let words = [n as u64, m as u64]
        .into_iter()
        .chain(x.as_slice().iter().map(|v| v.to_f64_().to_bits()));
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn bits<T: Real>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64_().to_bits()).collect()
}

/// The fit to run: fresh or resumed, with everything the run needs.
struct Job<T: Real> {
    spec: KernelSpec,
    cfg: WdlConfig,
    start: Option<FitState<T>>,
    data: Input,
    origin: String,
}

/// Runs the subcommand.
pub fn run(args: Args, global: &Global) -> Result<serde_json::Value, CliError> {
    let t_start = Instant::now();
    if let Some(n) = args.max_iters {
        at_least_one("--max-iters", n)?;
    }
    if let Some(k) = args.checkpoint_every {
        at_least_one("--checkpoint-every", k)?;
    }
    // Every output is checked before the work: none may be an input (a checkpoint may
    // be the one resumed from, which it continues), nor a file of another output.
    let mut inputs = vec![("--data", args.data.as_path())];
    if let Some(c) = &args.cost {
        inputs.push(("--cost", c.as_path()));
    }
    let mut outputs = vec![("--out", args.out.as_path())];
    if let Some(c) = &args.checkpoint {
        outputs.push(("--checkpoint", c.as_path()));
    }
    check_outputs(&outputs, &inputs)?;
    if let Some(r) = &args.resume {
        check_outputs(&[("--out", &args.out)], &[("--resume", r.as_path())])?;
    }
    if let Some(dir) = &args.png {
        let mut taken = inputs.clone();
        taken.extend(&outputs);
        taken.extend(args.resume.as_deref().map(|r| ("--resume", r)));
        check_png_dir(dir, &taken)?;
    }
    if let Some(resume) = args.resume.clone() {
        return resume_fit(args, global, &resume, t_start);
    }
    // clap enforces these without --resume; the messages are for the impossible case
    let missing = |opt: &str| CliError(format!("{opt} is required"));
    let s = args.atoms.ok_or_else(|| missing("--atoms"))?;
    let reg = args.reg.ok_or_else(|| missing("--reg"))?;
    let l = args
        .sinkhorn_iters
        .ok_or_else(|| missing("--sinkhorn-iters"))?;
    at_least_one("--atoms", s as u64)?;
    at_least_one("--sinkhorn-iters", l as u64)?;
    super::geometry::check_tau(args.tau)?;
    if let Some(k) = args.warm_restart {
        at_least_one("--warm-restart", k as u64)?;
    }
    let geometry = GeometryArgs {
        cost: args.cost.clone(),
        grid: args.grid.clone(),
        units: args.units,
        reg,
        log: args.log,
    };
    geometry.check_reg()?;
    let mut cfg = WdlConfig::new(s)
        .barycenter(BarycenterConfig {
            tau: args.tau,
            rho: args.rho,
            log_domain: args.log,
            stop: Stop::Iterations(l),
        })
        .loss(args.loss)
        .zeta(args.zeta)
        .max_iter(args.max_iters.unwrap_or(100))
        .atom_init(match args.atom_init {
            AtomInitArg::Random => AtomInit::Random,
            AtomInitArg::Constant => AtomInit::Constant,
            AtomInitArg::Data => AtomInit::FromData,
        })
        .weight_init(match args.weight_init {
            WeightInitArg::Uniform => WeightInit::Uniform,
            WeightInitArg::Random => WeightInit::Random,
        })
        .seed(args.seed);
    cfg.warm_restart = args.warm_restart;
    if cfg.atom_init == AtomInit::Constant && cfg.weight_init == WeightInit::Uniform && s >= 2 {
        return Err(CliError(
            "--atom-init constant with --weight-init uniform gives every atom the same gradient: \
             use --weight-init random"
                .into(),
        ));
    }
    cfg.validate().map_err(|e| from_lib(e, args.log))?;
    if args.checkpoint.is_some() && cfg.warm_restart.is_none() {
        return Err(CliError(
            "--checkpoint needs --warm-restart k: checkpoints are taken when L-BFGS restarts, \
             where its whole state is the point and the warm scalings"
                .into(),
        ));
    }
    let data = if args.normalize {
        Input::load_normalized("--data", &args.data)?
    } else {
        Input::load("--data", &args.data, Layout::Rows)?
    };
    data.expect_ndim(&[2, 3], "(M, N) or (M, H, W): one datapoint per row")?;
    let m = data.shape()[0];
    if cfg.atom_init == AtomInit::FromData && s > m {
        return Err(CliError(format!(
            "--atom-init data needs --atoms ≤ the {m} datapoints of {}, got --atoms {s}",
            data.name()
        )));
    }
    let cost = geometry.load_cost()?;
    let dtype = precision(
        global,
        &[Some(&data), cost.as_ref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
    );
    let (spec, origin) = match cost {
        Some(mut c) => {
            let n = data.item_len();
            if c.shape() != [n, n] {
                return Err(c.fail(format!(
                    "has shape {} but the datapoints of {} have {n} bins: the cost must be ({n}, {n})",
                    c.shape_text(),
                    data.name()
                )));
            }
            let cb = c.take_finite_matrix()?;
            let spec = KernelSpec::dense(&cb, reg).map_err(|e| c.fail(e))?;
            (spec, format!("the cost {}", c.name()))
        }
        None => {
            let (grid, origin) = geometry.grid_for(&data)?;
            (KernelSpec::grid(&grid, reg), origin)
        }
    };
    let read_s = secs(t_start);
    match dtype {
        Dtype::F32 => run_job::<f32>(
            &args,
            global,
            Job {
                spec,
                cfg,
                start: None,
                data,
                origin,
            },
            read_s,
            t_start,
        ),
        Dtype::F64 => run_job::<f64>(
            &args,
            global,
            Job {
                spec,
                cfg,
                start: None,
                data,
                origin,
            },
            read_s,
            t_start,
        ),
    }
}

/// `--resume FILE`: the settings, support and precision come from the checkpoint.
fn resume_fit(
    args: Args,
    global: &Global,
    path: &Path,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    let text = read_text("--resume", path)?;
    let fail = |what: String| CliError(format!("--resume {}: {what}", path.display()));
    let head: CheckpointFile = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "not a wassdl checkpoint ({e}); `wassdl fit --checkpoint` writes them"
        ))
    })?;
    let Some(ck) = head.checkpoint else {
        return Err(fail(
            "is a model without checkpoint state (write one with fit --checkpoint FILE --warm-restart k)"
                .into(),
        ));
    };
    if ck.format != CHECKPOINT_FORMAT || ck.version != CHECKPOINT_VERSION {
        return Err(fail(format!(
            "checkpoint format {:?} version {} is not supported (this build reads {CHECKPOINT_FORMAT:?} version {CHECKPOINT_VERSION})",
            ck.format, ck.version
        )));
    }
    let data = if args.normalize {
        Input::load_normalized("--data", &args.data)?
    } else {
        Input::load("--data", &args.data, Layout::Rows)?
    };
    data.expect_ndim(&[2, 3], "(M, N) or (M, H, W): one datapoint per row")?;
    match head.scalar.as_str() {
        "f32" => resume_as::<f32>(args, global, path, &text, ck, data, t_start),
        "f64" => resume_as::<f64>(args, global, path, &text, ck, data, t_start),
        other => Err(fail(format!("unknown precision \"scalar\": {other:?}"))),
    }
}

fn resume_as<T: Scalar>(
    args: Args,
    global: &Global,
    path: &Path,
    text: &str,
    ck: Checkpoint,
    data: Input,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    let fail = |what: String| CliError(format!("--resume {}: {what}", path.display()));
    let model = wassdl_cli::json::model_from_json::<T>(text).map_err(|e| fail(e.to_string()))?;
    check_model(&model).map_err(fail)?;
    let (n, s, m) = (model.dims.n, model.dims.n_atoms, model.dims.m);
    let item = item_shape(&model.kernel);
    let origin = format!("the support of the checkpoint --resume {}", path.display());
    if data.shape()[0] != m {
        return Err(data.fail(format!(
            "holds {} datapoints (shape {}) but the checkpoint --resume {} was fitted on {m}",
            data.shape()[0],
            data.shape_text(),
            path.display()
        )));
    }
    super::model::check_item(&data.name(), data.shape(), &item, &origin)?;
    let mut cfg = model.config.clone();
    if let Some(budget) = args.max_iters {
        cfg.lbfgs.max_iter = budget;
    }
    if ck.iterations >= cfg.lbfgs.max_iter {
        return Err(fail(format!(
            "the checkpoint is at iteration {} and the budget is {} iterations: nothing to continue (raise --max-iters)",
            ck.iterations, cfg.lbfgs.max_iter
        )));
    }
    let len_ok =
        ck.x.len() == n * s + s * m && ck.warm_a.len() == n * s * m && ck.warm_b.len() == n * s * m;
    if !len_ok {
        return Err(fail(format!(
            "the fields checkpoint.x, checkpoint.warm_a, checkpoint.warm_b have {}, {} and {} \
             entries, not the {}, {} and {} of {n} bins, {s} atoms and {m} datapoints",
            ck.x.len(),
            ck.warm_a.len(),
            ck.warm_b.len(),
            n * s + s * m,
            n * s * m,
            n * s * m
        )));
    }
    let of_bits = |v: &[u64]| -> Vec<T> { v.iter().map(|&b| T::of(f64::from_bits(b))).collect() };
    let start = FitState {
        x: ck.x.iter().map(|&b| f64::from_bits(b)).collect(),
        warm: Scalings {
            a: Batch::from_vec(n, s * m, of_bits(&ck.warm_a)),
            b: Batch::from_vec(n, s * m, of_bits(&ck.warm_b)),
            log: ck.warm_log,
        },
        iterations: ck.iterations,
        runs: ck.runs,
        atoms: model.atoms(),
        weights: model.weights(),
        loss: model.loss,
    };
    let job = Job {
        spec: model.kernel.clone(),
        cfg,
        start: Some(start),
        data,
        origin,
    };
    let expected = (ck.data_fingerprint, format!("--resume {}", path.display()));
    run_job_checked(&args, global, job, Some(expected), secs(t_start), t_start)
}

fn run_job<T: Scalar>(
    args: &Args,
    global: &Global,
    job: Job<T>,
    read_s: f64,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    run_job_checked(args, global, job, None, read_s, t_start)
}

fn run_job_checked<T: Scalar>(
    args: &Args,
    global: &Global,
    job: Job<T>,
    expected_fingerprint: Option<(String, String)>,
    read_s: f64,
    t_start: Instant,
) -> Result<serde_json::Value, CliError> {
    let Job {
        spec,
        cfg,
        start,
        mut data,
        origin,
    } = job;
    let log = cfg.barycenter.log_domain;
    let mut x = data.take_batch::<T>();
    if cfg.barycenter.rho.is_none() {
        data.check(&x, |x| wassdl::validate::simplex_columns("data", x))?;
        renormalize(&mut x, data.dtype());
    } else {
        data.check(&x, |x| wassdl::validate::nonnegative("data", x))?;
    }
    if cfg.loss == Loss::KullbackLeibler {
        // Barycenters of a Gibbs kernel are positive on every bin, so a zero bin of the
        // data makes KL(p|x) infinite at the first evaluation: refuse it before the work.
        if let Some(k) = x.as_slice().iter().position(|&v| v == T::zero()) {
            let rows = x.rows().max(1);
            return Err(data.fail(format!(
                "entry {} is 0: the KL loss KL(p|x) = Σ p log(p/x) − p + x is infinite wherever \
                 the data x vanishes and the reconstruction p does not, and barycenters are \
                 positive on every bin; use --loss quadratic, tv or wasserstein, or mix the data \
                 with a little of the uniform histogram",
                data.index(k % rows, k / rows)
            )));
        }
    }
    let fp = fingerprint(&x);
    if let Some((want, checkpoint)) = &expected_fingerprint {
        if *want != fp {
            return Err(data.fail(format!(
                "is not the data the checkpoint {checkpoint} was fitted on (the values differ)"
            )));
        }
    }
    let t = Instant::now();
    let kernel = match &expected_fingerprint {
        Some((_, file)) => spec.build::<T>().map_err(|e| from_model(e, file))?,
        None => spec.build::<T>().map_err(|e| from_lib(e, log))?,
    };
    let kernel_s = secs(t);

    let budget = cfg.lbfgs.max_iter;
    // The last iteration the observer saw, to date a failure inside the next one.
    let seen = std::cell::Cell::new(None::<u64>);
    let resumed_from = start.as_ref().map(|s| s.iterations);
    let every = args.checkpoint_every.unwrap_or(1);
    let mut last_ck = resumed_from.unwrap_or(0);
    let mut written: Vec<u64> = Vec::new();
    let mut ck_error: Option<CliError> = None;
    let t = Instant::now();
    let progress = Progress::new(global.quiet, budget as usize, "fit");
    progress.update(resumed_from.unwrap_or(0), String::new);
    let mut observer = FnObserver::new(|it: &IterationInfo| {
        seen.set(Some(it.iteration));
        progress.update(it.iteration, || format!("loss {:.4e}", it.loss));
        Control::Continue
    });
    let mut on_restart = |st: &FitState<T>| -> wassdl::Result<()> {
        let Some(path) = &args.checkpoint else {
            return Ok(());
        };
        if st.iterations - last_ck < every && st.iterations < budget {
            return Ok(());
        }
        let res = write_checkpoint(path, &spec, &cfg, st, &fp);
        match res {
            Ok(()) => {
                last_ck = st.iterations;
                written.push(st.iterations);
                Ok(())
            }
            Err(e) => {
                let msg = e.0.clone();
                ck_error = Some(e);
                Err(wassdl::Error::Io(msg))
            }
        }
    };
    let fitted = fit_resumable(
        kernel.as_ref(),
        &x,
        &cfg,
        start.as_ref(),
        &mut observer,
        &mut on_restart,
    );
    drop(progress);
    let fitted: Fit<T> = match fitted {
        Ok(f) => f,
        Err(e) => {
            // The learner's evaluation does not know the L-BFGS iteration it serves: an
            // evaluation after the observer saw iteration k belongs to iteration k + 1.
            let e = match (e, seen.get()) {
                (
                    wassdl::Error::Numerical {
                        solver,
                        iteration: 0,
                        message,
                    },
                    Some(k),
                ) => wassdl::Error::Numerical {
                    solver,
                    iteration: k as usize + 1,
                    message,
                },
                (e, _) => e,
            };
            return Err(ck_error.unwrap_or_else(|| from_lib(e, cfg.barycenter.log_domain)));
        }
    };
    let solve_s = secs(t);
    warn_line_search(global, &fitted);
    finite_output("--out", "atoms", &fitted.atoms)?;
    finite_output("--out", "weights", &fitted.weights)?;

    let t = Instant::now();
    let model = Model::new(spec.clone(), cfg.clone(), &fitted)
        .map_err(|e| CliError(format!("--out {}: {e}", args.out.display())))?;
    write_model("--out", &args.out, &model, None)?;
    let pictures = match &args.png {
        Some(dir) => save_pictures(
            dir,
            &item_shape(&spec),
            &fitted.atoms,
            Some(&x),
            &fitted.reconstruction,
        )?,
        None => Vec::new(),
    };
    if args.png.is_some() && pictures.is_empty() {
        global.warn("--png: no pictures for 3-D grids");
    }
    let write_s = secs(t);
    let metrics = Metrics::compute(&x, &fitted.reconstruction).ok();
    Ok(json!({
        "command": "fit",
        "precision": Dtype::of::<T>().name(),
        "kernel": kernel.describe(),
        "support": kernel.nrows(),
        "support_from": origin,
        "atoms": fitted.atoms.cols(),
        "datapoints": x.cols(),
        "loss": fitted.loss,
        "loss_kind": format!("{:?}", cfg.loss),
        "sinkhorn_iters": match cfg.barycenter.stop { Stop::Iterations(l) => Some(l), _ => None },
        "iterations": fitted.iterations,
        "max_iters": budget,
        "runs": fitted.runs,
        "termination": termination_text(&fitted.termination),
        "evaluations": fitted.evaluations,
        "resumed_from": resumed_from,
        "checkpoint": args.checkpoint.as_ref().map(|p| p.display().to_string()),
        "checkpoints_at": written,
        "mse": metrics.map(|m| m.mse),
        "nmse": metrics.map(|m| m.nmse),
        "psnr": metrics.map(|m| m.psnr),
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

/// Why a fit stopped, in words.
pub fn termination_text(t: &Termination) -> String {
    t.to_string()
}

/// Writes the state `st` as a checkpoint: the model at `st` plus the `checkpoint` object.
fn write_checkpoint<T: Scalar>(
    path: &Path,
    spec: &KernelSpec,
    cfg: &WdlConfig,
    st: &FitState<T>,
    fingerprint: &str,
) -> Result<(), CliError> {
    let model = Model::from_parts(spec.clone(), cfg.clone(), &st.atoms, &st.weights, st.loss)
        .map_err(|e| CliError(format!("--checkpoint {}: {e}", path.display())))?;
    let ck = Checkpoint {
        format: CHECKPOINT_FORMAT.into(),
        version: CHECKPOINT_VERSION,
        iterations: st.iterations,
        runs: st.runs,
        data_fingerprint: fingerprint.into(),
        x: st.x.iter().map(|v| v.to_bits()).collect(),
        warm_log: st.warm.log,
        warm_a: bits(st.warm.a.as_slice()),
        warm_b: bits(st.warm.b.as_slice()),
    };
    let body = serde_json::to_string(&ck).map_err(|e| CliError(format!("internal: {e}")))?;
    write_model(
        "--checkpoint",
        path,
        &model,
        Some(&format!("\"checkpoint\": {body}")),
    )
}
