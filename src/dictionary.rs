//! Wasserstein dictionary learning (Algorithm 2 of Schmitz et al. 2018): learn `S` atoms
//! `D` (`N × S`) and barycentric weights `Λ` (`S × M`) such that each datapoint `x_m` is
//! approximated by the barycenter `P^(L)(D, λ_m)` of the atoms (eq. 9-10).
//!
//! ```
//! use wassdl::{Batch, BarycenterConfig, Grid, GridKernel, Loss};
//! use wassdl::dictionary::{fit, NoObserver, WdlConfig};
//! let grid = Grid::new(&[30]).unwrap();
//! let k = GridKernel::<f64>::new(&grid, 5e-3).unwrap();
//! // three bumps, translated: the data of a two-atom dictionary
//! let data = Batch::from_fn(30, 3, |i, m| {
//!     (-((i as f64 - 10.0 - 5.0 * m as f64) / 2.0).powi(2)).exp()
//! });
//! let sums = data.col_sums();
//! let data = Batch::from_fn(30, 3, |i, m| data.get(i, m) / sums[m]);
//! let cfg = WdlConfig::new(2)
//!     .barycenter(BarycenterConfig::iterations(20))
//!     .loss(Loss::Quadratic)
//!     .max_iter(15)
//!     .seed(1);
//! let out = fit(&k, &data, &cfg, &mut NoObserver).unwrap();
//! assert_eq!(out.atoms.shape(), (30, 2));
//! assert!(out.loss < out.history[0].loss);
//! ```
//!
//! # Parametrization (eq. 13) and the weight scale ζ (section 3.1)
//!
//! Atoms and weights stay in their simplices through the softmax change of variables
//! `d_s = softmax(α_s)` and `λ_m = softmax(β_m)`. L-BFGS (argmin's, in `f64`) works on
//! one vector `concat(α, β̃)`, both column-major, with `β = ζ β̃`. The gradient of the
//! energy `G(α, β̃) = E_L(softmax(α), softmax(ζ β̃))` is therefore
//!
//! * `∇_{α_s} G = (I − d_s 1ᵀ) Δ(d_s) ∇_{d_s} E_L = d_s ⊙ (g_s − ⟨d_s, g_s⟩)`,
//! * `∇_{β̃_m} G = ζ · λ_m ⊙ (h_m − ⟨λ_m, h_m⟩)`,
//!
//! with `g = ∇_D E_L` and `h = ∇_Λ E_L` from [`crate::gradient::loss_and_grad`] (eq.
//! 11-12, any barycenter variant, chunked and checkpointed). That is the paper's "multiply
//! every gradient entry of the weights by ζ", realized as a change of variables so that
//! the objective seen by the line search stays consistent with its gradient (the
//! authors' Python code scales the gradient alone, which makes the Wolfe tests compare
//! slopes of a different function). A large ζ makes L-BFGS move the weights faster than
//! the atoms; ζ = 1 is the plain eq. 13.
//!
//! # Warm restarts (section 4.2)
//!
//! With [`WdlConfig::warm_restart`] = `Some(k)`, a fresh L-BFGS starts every `k`
//! iterations from the current point, and the Sinkhorn scalings of the barycenters are
//! initialized from the evaluation at that point in the previous run. Within a run the
//! warm scalings are constants (the paper's "different, more accurate, energy" per run),
//! so each run minimizes one consistent objective; the loss can jump at a restart.
//! The first run starts cold (`a = b = 1`). Scalings accumulate iterations across runs:
//! use the log domain if they over- or underflow. Between two runs the whole state is
//! the point and the warm scalings ([`FitState`]): [`fit_resumable`] hands it out at every
//! restart and continues a fit from it bit-exactly (checkpointing, `wassdl fit --resume`).
//!
//! # Cost of an iteration
//!
//! argmin calls `cost` and `gradient` separately, usually at the same point. The problem
//! caches its last evaluation (loss, gradient, barycenters, scalings), keyed by the
//! exact parameter vector, so each point costs one forward pass: with More-Thuente or
//! Hager-Zhang `cost` runs forward and backward at once (its gradient is always asked
//! next); with backtracking `cost` runs the forward pass only and `gradient` re-runs it
//! on the tape at the accepted point. [`Fit::counts`] reports every count.
//!
//! # Memory
//!
//! A fit holds, for `P = N·S + S·M` parameters and `b = size_of::<T>()` bytes:
//!
//! * the tape of one chunk of `m_c` datapoints ([`crate::GradConfig::chunk`]), reported
//!   as [`crate::LossGrad::peak_bytes`] (kept in [`Fit::peak_tape_bytes`]). For the plain
//!   balanced scaling-domain iteration it is `L · (6S + 2) · N · m_c · b` plus
//!   `O(N·S·m_c·b)` (tests/dictionary.rs checks the slope in `L` exactly); with
//!   checkpointing every `k` iterations, `k · (6S + 2) · N · m_c · b + ⌈L/k⌉ · 2 · N·S·m_c · b`;
//! * the data and the cached evaluation (barycenters and scalings):
//!   `(2 + 2S) · N · M · b` (the cache is emptied before the next evaluation fills it);
//! * with warm restarts, the warm scalings `2S · N · M · b`, plus the copy that
//!   [`crate::gradient::loss_and_grad`] converts per chunk, another `2S · N · M · b`;
//! * L-BFGS: about `(2 · memory + 8) · P · 8` bytes (the correction pairs, the current
//!   and previous points and gradients, the line search's copies);
//!
//! so peak ≈ `tape(m_c) + (2 + 2S) · N · M · b + (2 · memory + 8) · P · 8`, plus
//! `4S · N · M · b` with warm restarts. Choose `m_c` to bound the first term: for
//! Figure 2's problem (N = 100, S = 2, M = 5, L = 50, f64, one chunk) the tape is
//! 50 · 14 · 100 · 5 · 8 B = 2.8 MB; for 20 images of 64 × 64 with S = 5 and L = 25 it
//! is 25 · 32 · 4096 · 20 · 8 B = 524 MB in f64, 262 MB in f32, and `m_c = 4` divides
//! it by five.
//!
//! # Saving
//!
//! [`Model`] stores the kernel recipe ([`KernelSpec`]), the configuration, the atoms and
//! the weights; with the `serde` feature it is (de)serializable, and `wassdl-cli` writes
//! it as self-describing, versioned JSON whose save/load round trip is exact to the bit.

use crate::barycenter::{barycenters, BarycenterConfig, Scalings};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::gradient::{loss_and_grad_in, GradConfig};
use crate::kernel::{DenseKernel, Grid, GridKernel, GridUnits, Kernel};
use crate::lbfgs::{
    self, Control, Differentiable, Hooks, LbfgsConfig, LineSearchKind, Step, Termination,
};
use crate::loss::Loss;
use crate::metrics::Metrics;
use crate::real::Real;
use crate::solver::Stop;
use crate::tape::softmax_cols;
use crate::tape::TapeBuffers;
use crate::validate;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to rebuild the kernel of a saved model.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KernelSpec {
    /// A separable [`GridKernel`] on a regular grid.
    Grid {
        /// Grid shape, slowest axis first.
        shape: Vec<usize>,
        /// Coordinate convention.
        units: GridUnits,
        /// Regularization γ.
        gamma: f64,
    },
    /// A [`DenseKernel`] from an `n × n` cost matrix.
    Dense {
        /// The cost matrix, row-major.
        cost: Vec<f64>,
        /// Support size.
        n: usize,
        /// Regularization γ.
        gamma: f64,
    },
}

impl KernelSpec {
    /// The recipe of `GridKernel::new(grid, gamma)`.
    pub fn grid(grid: &Grid, gamma: f64) -> Self {
        KernelSpec::Grid {
            shape: grid.shape().to_vec(),
            units: grid.units(),
            gamma,
        }
    }
    /// The recipe of `DenseKernel::new(cost, gamma)` for a square cost matrix.
    pub fn dense(cost: &Batch<f64>, gamma: f64) -> Result<Self> {
        let n = cost.rows();
        validate::shape("cost", cost, n, n)?;
        Ok(KernelSpec::Dense {
            cost: (0..n * n).map(|k| cost.get(k / n, k % n)).collect(),
            n,
            gamma,
        })
    }
    /// Support size `N`.
    pub fn len(&self) -> usize {
        match self {
            KernelSpec::Grid { shape, .. } => shape.iter().product(),
            KernelSpec::Dense { n, .. } => *n,
        }
    }
    /// Always false: a kernel has at least one cell (an empty spec fails in [`Self::build`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Builds the kernel in precision `T`.
    pub fn build<T: Real>(&self) -> Result<Box<dyn Kernel<T>>> {
        match self {
            KernelSpec::Grid {
                shape,
                units,
                gamma,
            } => {
                let grid = Grid::new(shape)?.with_units(*units);
                Ok(Box::new(GridKernel::new(&grid, T::of(*gamma))?))
            }
            KernelSpec::Dense { cost, n, gamma } => {
                if cost.len() != n * n {
                    return Err(Error::ShapeMismatch {
                        arg: "cost",
                        expected: format!("{n} x {n} ({} entries)", n * n),
                        found: format!("{} entries", cost.len()),
                    });
                }
                let c: Vec<T> = cost.iter().map(|&v| T::of(v)).collect();
                let view = faer::MatRef::from_row_major_slice(&c, *n, *n);
                Ok(Box::new(DenseKernel::new(view, T::of(*gamma))?))
            }
        }
    }
}

/// Initial atoms.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AtomInit {
    /// Every atom uniform, `1/N` (the paper's PSF and cardiac experiments). Needs
    /// non-uniform initial weights when `S ≥ 2`: otherwise every atom gets the same
    /// gradient and they stay identical.
    Constant,
    /// Entries uniform in `(0, 1]`, normalized (the authors' `"random"`), seeded.
    #[default]
    Random,
    /// `S` distinct datapoints drawn at random (seeded), mixed with `10⁻³` of the uniform
    /// histogram so that every entry is positive (a softmax cannot represent zeros).
    FromData,
    /// Given `N × S` atoms, column-major, each column in the simplex with positive
    /// entries: to continue a fit from its result, e.g. in `f64` after an `f32` fit.
    Given(Vec<f64>),
}

/// Initial weights.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WeightInit {
    /// `1/S` everywhere.
    #[default]
    Uniform,
    /// Entries uniform in `(0, 1]`, normalized per datapoint, seeded.
    Random,
    /// Given `S × M` weights, column-major, each column in the simplex with positive
    /// entries (a softmax cannot represent a zero weight).
    Given(Vec<f64>),
}

/// Settings of [`fit`] and [`transform`] (builder style; checked by [`Self::validate`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WdlConfig {
    /// Number of atoms `S`.
    pub n_atoms: usize,
    /// Barycenter variant; its stop rule must be `Stop::Iterations(L)` (eq. 10
    /// differentiates exactly `L` iterations).
    pub barycenter: BarycenterConfig,
    /// Fitting loss (Table 1).
    pub loss: Loss,
    /// Weight scale ζ > 0 (section 3.1): `β = ζ β̃` (see the module docs).
    pub zeta: f64,
    /// L-BFGS settings.
    pub lbfgs: LbfgsConfig,
    /// Restart L-BFGS every `k` iterations, carrying the scalings over (section 4.2).
    pub warm_restart: Option<usize>,
    /// Initial atoms.
    pub atom_init: AtomInit,
    /// Initial weights.
    pub weight_init: WeightInit,
    /// Seed of every random initialization (`StdRng`: deterministic for a given seed and
    /// `rand` version).
    pub seed: u64,
    /// Gradient source, chunking and checkpointing.
    pub gradient: GradConfig,
}

impl Default for WdlConfig {
    fn default() -> Self {
        Self::new(2)
    }
}

impl WdlConfig {
    /// `n_atoms` atoms; L = 25 plain iterations, quadratic loss, ζ = 1, default L-BFGS,
    /// no warm restart, random atoms, uniform weights, seed 0, tape gradients.
    pub fn new(n_atoms: usize) -> Self {
        WdlConfig {
            n_atoms,
            barycenter: BarycenterConfig::iterations(25),
            loss: Loss::Quadratic,
            zeta: 1.0,
            lbfgs: LbfgsConfig::default(),
            warm_restart: None,
            atom_init: AtomInit::Random,
            weight_init: WeightInit::Uniform,
            seed: 0,
            gradient: GradConfig::default(),
        }
    }
    /// Sets the number of atoms.
    pub fn n_atoms(mut self, s: usize) -> Self {
        self.n_atoms = s;
        self
    }
    /// Sets the barycenter variant.
    pub fn barycenter(mut self, cfg: BarycenterConfig) -> Self {
        self.barycenter = cfg;
        self
    }
    /// Sets the loss.
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }
    /// Sets ζ.
    pub fn zeta(mut self, zeta: f64) -> Self {
        self.zeta = zeta;
        self
    }
    /// Sets every L-BFGS setting.
    pub fn lbfgs(mut self, s: LbfgsConfig) -> Self {
        self.lbfgs = s;
        self
    }
    /// Sets the total number of L-BFGS iterations.
    pub fn max_iter(mut self, n: u64) -> Self {
        self.lbfgs.max_iter = n;
        self
    }
    /// Sets the line search.
    pub fn line_search(mut self, kind: LineSearchKind) -> Self {
        self.lbfgs.line_search = kind;
        self
    }
    /// Restarts L-BFGS every `k` iterations with warm scalings.
    pub fn warm_restart(mut self, k: usize) -> Self {
        self.warm_restart = Some(k);
        self
    }
    /// Sets the atom initialization.
    pub fn atom_init(mut self, init: AtomInit) -> Self {
        self.atom_init = init;
        self
    }
    /// Sets the weight initialization.
    pub fn weight_init(mut self, init: WeightInit) -> Self {
        self.weight_init = init;
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the gradient options.
    pub fn gradient(mut self, opts: GradConfig) -> Self {
        self.gradient = opts;
        self
    }

    /// Checks every setting that does not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.n_atoms == 0 {
            return Err(Error::InvalidParameter {
                arg: "n_atoms",
                requirement: ">= 1",
                value: 0.0,
            });
        }
        self.barycenter.validate()?;
        if !matches!(self.barycenter.stop, Stop::Iterations(_)) {
            return Err(Error::InvalidParameter {
                arg: "barycenter.stop",
                requirement: "Stop::Iterations(L): learning differentiates a fixed number of iterations (eq. 10)",
                value: f64::NAN,
            });
        }
        validate::positive("zeta", self.zeta)?;
        self.lbfgs.validate()?;
        if self.warm_restart == Some(0) {
            return Err(Error::InvalidParameter {
                arg: "warm_restart",
                requirement: ">= 1 iteration per L-BFGS run",
                value: 0.0,
            });
        }
        if self.n_atoms >= 2
            && self.atom_init == AtomInit::Constant
            && self.weight_init == WeightInit::Uniform
        {
            return Err(Error::InvalidParameter {
                arg: "atom_init",
                requirement: "not Constant together with WeightInit::Uniform when n_atoms >= 2 \
                              (every atom would get the same gradient and stay identical)",
                value: self.n_atoms as f64,
            });
        }
        Ok(())
    }
}

/// What an [`Observer`] sees after each L-BFGS iteration (and once at the start).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IterationInfo {
    /// L-BFGS iterations done so far, over all runs (0: the initial point).
    pub iteration: u64,
    /// The objective `E_L` (eq. 10) at the current point, with the current run's warm
    /// scalings.
    pub loss: f64,
    /// Euclidean norm of the gradient in the L-BFGS variables `(α, β̃)`.
    pub grad_norm: f64,
    /// Time since the fit started.
    pub elapsed: Duration,
    /// Which L-BFGS run (0 without warm restarts).
    pub restart_index: usize,
    /// Forward (barycenter) passes so far.
    pub evaluations: usize,
    /// Reconstruction metrics at the current point, if the observer asked for them.
    pub metrics: Option<Metrics>,
}

/// Called once at the initial point and after every L-BFGS iteration.
pub trait Observer {
    /// Sees the iteration; returning [`Control::Stop`] ends the fit early.
    fn observe(&mut self, it: &IterationInfo) -> Control;
    /// Whether [`IterationInfo::metrics`] should be computed (a pass over the data).
    fn wants_metrics(&self) -> bool {
        false
    }
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&mut self, _: &IterationInfo) -> Control {
        Control::Continue
    }
}

/// Wraps a closure as an [`Observer`].
///
/// ```
/// use wassdl::dictionary::FnObserver;
/// use wassdl::lbfgs::Control;
/// let mut seen = 0;
/// let mut obs = FnObserver::new(|it| { seen += 1; if it.iteration >= 5 { Control::Stop } else { Control::Continue } })
///     .with_metrics();
/// # let _ = &mut obs;
/// ```
pub struct FnObserver<F> {
    f: F,
    metrics: bool,
}

impl<F: FnMut(&IterationInfo) -> Control> FnObserver<F> {
    /// Calls `f` at each iteration, without metrics.
    pub fn new(f: F) -> Self {
        FnObserver { f, metrics: false }
    }
    /// Also computes MSE/NMSE/PSNR of the reconstructions at each iteration.
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }
}

impl<F: FnMut(&IterationInfo) -> Control> Observer for FnObserver<F> {
    fn observe(&mut self, it: &IterationInfo) -> Control {
        (self.f)(it)
    }
    fn wants_metrics(&self) -> bool {
        self.metrics
    }
}

/// How many times each piece of work ran during a fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CallCounts {
    /// `cost` calls from argmin.
    pub cost_calls: usize,
    /// `gradient` calls from argmin.
    pub gradient_calls: usize,
    /// Forward barycenter passes actually run (the rest were cache hits).
    pub forward: usize,
    /// Backward passes actually run.
    pub backward: usize,
    /// Trial steps of a line search whose evaluation failed numerically (barycenters that
    /// over- or underflow, a non-finite loss or gradient) and that the line search
    /// shortened in place (`GuardedLineSearch`), keeping L-BFGS's memory.
    #[cfg_attr(feature = "serde", serde(default))]
    pub step_shrinks: usize,
}

/// Result of [`fit`] (and of [`transform_fit`], whose atoms are the given ones).
#[derive(Clone, Debug)]
pub struct Fit<T: Real> {
    /// Learned atoms, `N × S`, columns in the simplex.
    pub atoms: Batch<T>,
    /// Learned weights, `S × M`, columns in the simplex.
    pub weights: Batch<T>,
    /// The objective at the returned point (with the last run's warm scalings).
    pub loss: f64,
    /// The barycenters at the returned point, `N × M` (with the last run's warm
    /// scalings; [`reconstruct`] recomputes them from a cold start).
    pub reconstruction: Batch<T>,
    /// L-BFGS iterations done, over all runs.
    pub iterations: u64,
    /// Forward barycenter passes run (equal to `counts.forward`).
    pub evaluations: usize,
    /// Every call count.
    pub counts: CallCounts,
    /// L-BFGS runs (1 + number of warm restarts).
    pub runs: usize,
    /// Why it stopped.
    pub termination: Termination,
    /// The initial point and every iteration.
    pub history: Vec<IterationInfo>,
    /// Scalings of the evaluation at the returned point (to warm-start a continuation).
    pub scalings: Scalings<T>,
    /// Largest tape footprint of one chunk seen ([`crate::LossGrad::peak_bytes`]).
    pub peak_tape_bytes: usize,
}

// ---------------------------------------------------------------------------------------
// The problem L-BFGS sees

struct Eval<T: Real> {
    x: Vec<f64>,
    loss: f64,
    grad: Option<Vec<f64>>,
    p: Batch<T>,
    scalings: Scalings<T>,
}

#[derive(Default)]
struct Counters {
    cost_calls: AtomicUsize,
    gradient_calls: AtomicUsize,
    forward: AtomicUsize,
    backward: AtomicUsize,
    peak: AtomicUsize,
    /// Trial steps shortened by the line search (known when the fit ends).
    shrinks: AtomicUsize,
}

/// `G(α, β̃)` of eq. 13 with the cache of the last evaluation. Atoms are optimized too
/// unless `fixed_atoms` is set ([`transform`]).
///
/// argmin only ever holds a reference to this state ([`crate::lbfgs`]): it drops its
/// problem when a line search fails.
struct Shared<'a, T: Real> {
    kernel: &'a dyn Kernel<T>,
    data: &'a Batch<T>,
    cfg: &'a WdlConfig,
    n: usize,
    s: usize,
    m: usize,
    fixed_atoms: Option<&'a Batch<T>>,
    /// Warm-start scalings of the current L-BFGS run: constants of its objective.
    warm: Mutex<Option<Scalings<T>>>,
    /// `cost` runs the forward pass only (backtracking asks for few gradients).
    lazy_gradient: bool,
    cache: Mutex<Option<Eval<T>>>,
    /// The tape's memory, kept from one evaluation to the next: the L-BFGS loop then
    /// allocates, page-faults and zeroes no tape buffer after the first evaluation.
    buffers: Mutex<TapeBuffers<T>>,
    counters: Counters,
}

impl<T: Real> Shared<'_, T> {
    fn n_alpha(&self) -> usize {
        if self.fixed_atoms.is_some() {
            0
        } else {
            self.n * self.s
        }
    }

    /// `softmax(α)` (`None` when the atoms are fixed) and `softmax(ζ β̃)`, in `f64`.
    fn unpack(&self, x: &[f64]) -> (Option<Batch<f64>>, Batch<f64>) {
        let (xa, xb) = x.split_at(self.n_alpha());
        let atoms = (self.fixed_atoms.is_none())
            .then(|| softmax_cols(&Batch::from_vec(self.n, self.s, xa.to_vec())));
        let zeta = self.cfg.zeta;
        let beta = Batch::from_vec(self.s, self.m, xb.iter().map(|&b| zeta * b).collect());
        (atoms, softmax_cols(&beta))
    }

    /// Loss (and gradient, eq. 11-13) at `x`, one forward pass.
    fn evaluate(&self, x: &[f64], with_grad: bool) -> Result<Eval<T>> {
        let (d64, w64) = self.unpack(x);
        let owned = d64.as_ref().map(|d| d.cast::<T>());
        let atoms = match (&owned, self.fixed_atoms) {
            (Some(d), _) => d,
            (None, Some(d)) => d,
            (None, None) => unreachable!("atoms are either optimized or fixed"),
        };
        let weights = w64.cast::<T>();
        let cfg = self.cfg;
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        self.counters.forward.fetch_add(1, Ordering::Relaxed);
        let (loss, grad, p, scalings) = if with_grad {
            self.counters.backward.fetch_add(1, Ordering::Relaxed);
            let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
            let lg = loss_and_grad_in(
                self.kernel,
                atoms,
                &weights,
                self.data,
                &cfg.loss,
                &cfg.barycenter,
                warm.as_ref(),
                &cfg.gradient,
                &mut buffers,
            )?;
            drop(buffers);
            self.counters
                .peak
                .fetch_max(lg.peak_bytes, Ordering::Relaxed);
            let mut g = Vec::with_capacity(x.len());
            if let Some(d) = &d64 {
                softmax_vjp(d, &lg.grad_atoms, 1.0, &mut g);
            }
            softmax_vjp(&w64, &lg.grad_weights, cfg.zeta, &mut g);
            (lg.loss, Some(g), lg.p, lg.scalings)
        } else {
            let b = barycenters(self.kernel, atoms, &weights, &cfg.barycenter, warm.as_ref())?;
            let (l, _) = cfg.loss.value_and_grad(&b.p, self.data, self.kernel)?;
            (l, None, b.p, b.scalings)
        };
        let loss = loss.to_f64_();
        if !loss.is_finite() {
            return Err(Error::Numerical {
                solver: "dictionary learning",
                iteration: 0,
                message: format!(
                    "the loss is {loss}: the data vanishes on a bin where a reconstruction \
                     does not (KL loss) or the barycenters overflowed"
                ),
            });
        }
        Ok(Eval {
            x: x.to_vec(),
            loss,
            grad,
            p,
            scalings,
        })
    }

    /// Runs `f` on the evaluation at `x`, from the cache when it holds `x` (with a
    /// gradient if `need_grad`), else after one new evaluation that replaces it.
    fn with_eval<R>(&self, x: &[f64], need_grad: bool, f: impl FnOnce(&Eval<T>) -> R) -> Result<R> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache
            .as_ref()
            .is_some_and(|e| e.x == x && (e.grad.is_some() || !need_grad));
        if !hit {
            *cache = None; // release the old evaluation before building the new one
            *cache = Some(self.evaluate(x, need_grad)?);
        }
        Ok(f(cache.as_ref().expect("filled above")))
    }

    /// New warm scalings for the next run: the cached evaluation no longer matches its
    /// objective.
    fn set_warm(&self, warm: Scalings<T>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        *self.warm.lock().unwrap_or_else(|e| e.into_inner()) = Some(warm);
        *cache = None;
    }

    fn counts(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            cost_calls: c.cost_calls.load(Ordering::Relaxed),
            gradient_calls: c.gradient_calls.load(Ordering::Relaxed),
            forward: c.forward.load(Ordering::Relaxed),
            backward: c.backward.load(Ordering::Relaxed),
            step_shrinks: c.shrinks.load(Ordering::Relaxed),
        }
    }
}

/// Appends `scale · [∂F]ᵀ g` for each column: `f ⊙ (g − ⟨f, g⟩)`, the softmax Jacobian
/// `(I − F 1ᵀ) Δ(F)` of section 3.1 applied to `g` (eq. 13).
fn softmax_vjp<T: Real>(f: &Batch<f64>, g: &Batch<T>, scale: f64, out: &mut Vec<f64>) {
    for j in 0..f.cols() {
        let (fc, gc) = (f.col(j), g.col(j));
        let dot: f64 = fc.iter().zip(gc).map(|(&a, &b)| a * b.to_f64_()).sum();
        out.extend(
            fc.iter()
                .zip(gc)
                .map(|(&a, &b)| scale * a * (b.to_f64_() - dot)),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Initialization

/// `ln(u)` for `u` uniform in `(0, 1]`: a softmax of these is a normalized uniform draw.
fn log_uniform(rng: &mut rand::rngs::StdRng) -> f64 {
    (1.0 - rng.random::<f64>()).ln()
}

fn init_alpha<T: Real>(
    data: &Batch<T>,
    cfg: &WdlConfig,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<f64>> {
    let (n, m, s) = (data.rows(), data.cols(), cfg.n_atoms);
    Ok(match &cfg.atom_init {
        AtomInit::Constant => vec![0.0; n * s],
        AtomInit::Random => (0..n * s).map(|_| log_uniform(rng)).collect(),
        AtomInit::FromData => {
            if s > m {
                return Err(Error::InvalidParameter {
                    arg: "n_atoms",
                    requirement: "<= the number of datapoints for AtomInit::FromData",
                    value: s as f64,
                });
            }
            const MIX: f64 = 1e-3;
            let picks = rand::seq::index::sample(rng, m, s);
            picks
                .iter()
                .flat_map(|j| {
                    data.col(j)
                        .iter()
                        .map(|&v| ((1.0 - MIX) * v.to_f64_() + MIX / n as f64).ln())
                })
                .collect()
        }
        AtomInit::Given(d) => {
            given_simplex("atom_init", d, n, s)?;
            d.iter().map(|&v| v.ln()).collect()
        }
    })
}

/// `β̃ = ln(λ)/ζ`, `S × M` column-major.
fn init_beta(
    s: usize,
    m: usize,
    cfg: &WdlConfig,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<f64>> {
    let z = cfg.zeta;
    Ok(match &cfg.weight_init {
        WeightInit::Uniform => vec![0.0; s * m],
        WeightInit::Random => (0..s * m).map(|_| log_uniform(rng) / z).collect(),
        WeightInit::Given(w) => {
            given_simplex("weight_init", w, s, m)?;
            w.iter().map(|&v| v.ln() / z).collect()
        }
    })
}

/// Checks a given initialization: `rows × cols` entries, column-major, each column in the
/// simplex, every entry positive (the softmax of eq. 13 cannot represent a zero).
fn given_simplex(arg: &'static str, v: &[f64], rows: usize, cols: usize) -> Result<()> {
    if v.len() != rows * cols {
        return Err(Error::ShapeMismatch {
            arg,
            expected: format!("{rows} x {cols} ({} entries)", rows * cols),
            found: format!("{} entries", v.len()),
        });
    }
    validate::simplex_columns(arg, &Batch::from_vec(rows, cols, v.to_vec()))?;
    if let Some(k) = v.iter().position(|&x| x <= 0.0) {
        return Err(Error::InvalidParameter {
            arg,
            requirement: "every entry > 0 (a softmax cannot represent 0; use e.g. 1e-3)",
            value: v[k],
        });
    }
    Ok(())
}

impl<T: Real> Differentiable for Shared<'_, T> {
    fn cost(&self, x: &[f64]) -> Result<f64> {
        self.counters.cost_calls.fetch_add(1, Ordering::Relaxed);
        self.with_eval(x, !self.lazy_gradient, |e| e.loss)
    }
    fn gradient(&self, x: &[f64]) -> Result<Vec<f64>> {
        self.counters.gradient_calls.fetch_add(1, Ordering::Relaxed);
        self.with_eval(x, true, |e| e.grad.clone().expect("requested"))
    }
}

/// Where a fit starts (see [`lbfgs::Start`]) and what it calls at every restart boundary.
struct Start<'c, T: Real> {
    x0: Vec<f64>,
    done: u64,
    runs: usize,
    on_restart: &'c mut dyn FnMut(&FitState<T>) -> Result<()>,
}

/// The fit as the observer sees it, and the warm restarts of section 4.2 at the
/// boundaries.
struct Watch<'w, 's, 'a, T: Real> {
    shared: &'s Shared<'a, T>,
    observer: &'w mut dyn Observer,
    on_restart: &'w mut dyn FnMut(&FitState<T>) -> Result<()>,
    start: Instant,
    history: Vec<IterationInfo>,
}

impl<T: Real> Hooks for Watch<'_, '_, '_, T> {
    fn step(&mut self, s: &Step<'_>) -> Result<Control> {
        let shared = self.shared;
        let metrics = if self.observer.wants_metrics() {
            Some(shared.with_eval(s.x, false, |e| Metrics::compute(shared.data, &e.p))??)
        } else {
            None
        };
        let it = IterationInfo {
            iteration: s.iteration,
            loss: s.cost,
            grad_norm: s.grad_norm,
            elapsed: self.start.elapsed(),
            restart_index: s.run,
            evaluations: shared.counters.forward.load(Ordering::Relaxed),
            metrics,
        };
        let c = self.observer.observe(&it);
        self.history.push(it);
        Ok(c)
    }

    fn boundary(&mut self, x: &[f64], done: u64, runs: usize, last: bool) -> Result<()> {
        let shared = self.shared;
        // section 4.2: the next run starts from the scalings reached at this point
        let (warm, loss) = shared.with_eval(x, false, |e| (e.scalings.clone(), e.loss))?;
        let (d, w) = shared.unpack(x);
        (self.on_restart)(&FitState {
            x: x.to_vec(),
            warm: warm.clone(),
            iterations: done,
            runs,
            atoms: d
                .map_or_else(|| shared.fixed_atoms.cloned(), |d| Some(d.cast()))
                .expect("atoms are either optimized or fixed"),
            weights: w.cast(),
            loss,
        })?;
        if !last {
            shared.set_warm(warm);
        }
        Ok(())
    }
}

fn check_data<T: Real>(kernel: &dyn Kernel<T>, data: &Batch<T>, cfg: &WdlConfig) -> Result<()> {
    cfg.validate()?;
    validate::rows("data", data, kernel.nrows())?;
    if cfg.barycenter.rho.is_none() {
        validate::simplex_columns("data", data)
    } else {
        validate::nonnegative("data", data)
    }
}

#[allow(clippy::too_many_arguments)]
fn solve<'a, T: Real>(
    kernel: &'a dyn Kernel<T>,
    data: &'a Batch<T>,
    cfg: &'a WdlConfig,
    s: usize,
    fixed_atoms: Option<&'a Batch<T>>,
    from: Start<'_, T>,
    warm: Option<Scalings<T>>,
    observer: &mut dyn Observer,
) -> Result<Fit<T>> {
    let prob = Shared {
        kernel,
        data,
        cfg,
        n: data.rows(),
        s,
        m: data.cols(),
        fixed_atoms,
        warm: Mutex::new(warm),
        lazy_gradient: cfg.lbfgs.line_search == LineSearchKind::Backtracking,
        cache: Mutex::new(None),
        buffers: Mutex::new(TapeBuffers::new()),
        counters: Counters::default(),
    };
    let Start {
        x0,
        done,
        runs,
        on_restart,
    } = from;
    let mut watch = Watch {
        shared: &prob,
        observer,
        on_restart,
        start: Instant::now(),
        history: Vec::new(),
    };
    let out = lbfgs::minimize(
        &prob,
        &cfg.lbfgs,
        lbfgs::Start { x0, done, runs },
        cfg.warm_restart,
        T::epsilon().to_f64_(),
        &mut watch,
    )?;
    let history = watch.history;
    prob.counters
        .shrinks
        .store(out.step_shrinks, Ordering::Relaxed);
    let (loss, reconstruction, scalings) =
        prob.with_eval(&out.x, false, |e| (e.loss, e.p.clone(), e.scalings.clone()))?;
    let (d64, w64) = prob.unpack(&out.x);
    let atoms = match (d64, fixed_atoms) {
        (Some(d), _) => d.cast(),
        (None, Some(d)) => d.clone(),
        (None, None) => unreachable!("atoms are either optimized or fixed"),
    };
    let counts = prob.counts();
    Ok(Fit {
        atoms,
        weights: w64.cast(),
        loss,
        reconstruction,
        iterations: out.iterations,
        evaluations: counts.forward,
        counts,
        runs: out.runs,
        termination: out.termination,
        history,
        scalings,
        peak_tape_bytes: prob.counters.peak.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------------------------------
// Public entry points

/// Learns `cfg.n_atoms` atoms and the weights of every column of `data` (`N × M`,
/// columns in the simplex; nonnegative for unbalanced barycenters) on the support of
/// `kernel` (Algorithm 2 with the parametrization of eq. 13).
pub fn fit<T: Real>(
    kernel: &dyn Kernel<T>,
    data: &Batch<T>,
    cfg: &WdlConfig,
    observer: &mut dyn Observer,
) -> Result<Fit<T>> {
    fit_resumable(kernel, data, cfg, None, observer, &mut |_| Ok(()))
}

/// The whole state of a warm-restarted fit between two L-BFGS runs (section 4.2): each
/// run starts a fresh L-BFGS from `x` with the constant scalings `warm`, so nothing else
/// carries over, and [`fit_resumable`] continues from it to the same bits as a fit that
/// was never interrupted.
#[derive(Clone, Debug, PartialEq)]
pub struct FitState<T: Real> {
    /// The L-BFGS variables `concat(α, β̃)` (column-major, `N·S + S·M` entries).
    pub x: Vec<f64>,
    /// The Sinkhorn scalings the next run starts every evaluation from.
    pub warm: Scalings<T>,
    /// L-BFGS iterations done, over all runs.
    pub iterations: u64,
    /// L-BFGS runs done.
    pub runs: usize,
    /// Atoms `softmax(α)` at `x`, `N × S` (for saving a usable dictionary).
    pub atoms: Batch<T>,
    /// Weights `softmax(ζ β̃)` at `x`, `S × M`.
    pub weights: Batch<T>,
    /// The objective at `x` with the scalings of the run that just ended.
    pub loss: f64,
}

/// [`fit`] that can be stopped and continued: `on_restart` is called with the state at
/// every L-BFGS restart boundary (every `cfg.warm_restart` iterations, including when the
/// budget is spent on one; a retry after a failed line search is not a boundary), and
/// `start` continues a fit from such a state instead of initializing one.
///
/// A fit continued from the state it had after `k` iterations ends bit-identical (atoms,
/// weights, loss) to the uninterrupted fit with the same `cfg`; `cfg.lbfgs.max_iter` may
/// be raised to extend a fit that spent its budget. Requires `cfg.warm_restart` (without
/// restarts L-BFGS's correction pairs would be state too; `on_restart` is then never
/// called). An error from `on_restart` ends the fit with that error. The returned
/// [`Fit::history`] and [`Fit::counts`] cover this call only.
pub fn fit_resumable<T: Real>(
    kernel: &dyn Kernel<T>,
    data: &Batch<T>,
    cfg: &WdlConfig,
    start: Option<&FitState<T>>,
    observer: &mut dyn Observer,
    on_restart: &mut dyn FnMut(&FitState<T>) -> Result<()>,
) -> Result<Fit<T>> {
    check_data(kernel, data, cfg)?;
    let Some(st) = start else {
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let mut x0 = init_alpha(data, cfg, &mut rng)?;
        x0.extend(init_beta(cfg.n_atoms, data.cols(), cfg, &mut rng)?);
        let from = Start {
            x0,
            done: 0,
            runs: 0,
            on_restart,
        };
        return solve(kernel, data, cfg, cfg.n_atoms, None, from, None, observer);
    };
    if cfg.warm_restart.is_none() {
        return Err(Error::InvalidParameter {
            arg: "warm_restart",
            requirement: "set (Some(k)) to continue a fit from a FitState",
            value: f64::NAN,
        });
    }
    if st.iterations >= cfg.lbfgs.max_iter {
        return Err(Error::InvalidParameter {
            arg: "lbfgs.max_iter",
            requirement: "greater than the iterations already done by the FitState",
            value: cfg.lbfgs.max_iter as f64,
        });
    }
    let (n, m, s) = (data.rows(), data.cols(), cfg.n_atoms);
    if st.x.len() != n * s + s * m {
        return Err(Error::ShapeMismatch {
            arg: "start.x",
            expected: format!("{} entries (N·S + S·M)", n * s + s * m),
            found: format!("{} entries", st.x.len()),
        });
    }
    validate::shape("start.warm.a", &st.warm.a, n, s * m)?;
    validate::shape("start.warm.b", &st.warm.b, n, s * m)?;
    let from = Start {
        x0: st.x.clone(),
        done: st.iterations,
        runs: st.runs,
        on_restart,
    };
    let warm = Some(st.warm.clone());
    solve(kernel, data, cfg, s, None, from, warm, observer)
}

/// Barycentric coordinates of each column of `data` with the atoms fixed: the weights
/// minimizing `Σ_m L(P(D, λ_m), x_m)` over `λ_m = softmax(ζ β̃_m)`, by the same L-BFGS
/// machinery as [`fit`] (`cfg.n_atoms` is ignored: `S = atoms.cols()`;
/// `cfg.weight_init` gives the starting weights).
pub fn transform<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    data: &Batch<T>,
    cfg: &WdlConfig,
) -> Result<Batch<T>> {
    transform_fit(kernel, atoms, data, cfg, &mut NoObserver).map(|f| f.weights)
}

/// [`transform`] with an observer, returning the whole [`Fit`] (its atoms are `atoms`).
pub fn transform_fit<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    data: &Batch<T>,
    cfg: &WdlConfig,
    observer: &mut dyn Observer,
) -> Result<Fit<T>> {
    let s = atoms.cols();
    // n_atoms plays no role here; the Constant/Uniform symmetry check does not apply.
    let mut c = cfg.clone();
    c.n_atoms = s.max(1);
    c.atom_init = AtomInit::Random;
    check_data(kernel, data, &c)?;
    validate::rows("atoms", atoms, kernel.nrows())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let from = Start {
        x0: init_beta(s, data.cols(), cfg, &mut rng)?,
        done: 0,
        runs: 0,
        on_restart: &mut |_| Ok(()),
    };
    let mut fit = solve(kernel, data, cfg, s, Some(atoms), from, None, observer)?;
    fit.atoms = atoms.clone();
    Ok(fit)
}

/// The barycenters of `atoms` for each column of `weights` with `cfg.barycenter`, from a
/// cold start: the reconstructions of a learned dictionary.
pub fn reconstruct<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    cfg: &WdlConfig,
) -> Result<Batch<T>> {
    Ok(barycenters(kernel, atoms, weights, &cfg.barycenter, None)?.p)
}

/// The objective `G(α, β̃)` of eq. 13 as a plain function of the L-BFGS variables
/// `x = concat(α, β̃)` (column-major, `β = ζ β̃`), with the same cache as [`fit`]: for
/// another optimizer, or to check the gradient.
pub struct Objective<'a, T: Real> {
    inner: Shared<'a, T>,
}

impl<'a, T: Real> Objective<'a, T> {
    /// The objective of [`fit`] for `data` (atoms and weights free).
    pub fn new(kernel: &'a dyn Kernel<T>, data: &'a Batch<T>, cfg: &'a WdlConfig) -> Result<Self> {
        check_data(kernel, data, cfg)?;
        Ok(Objective {
            inner: Shared {
                kernel,
                data,
                cfg,
                n: data.rows(),
                s: cfg.n_atoms,
                m: data.cols(),
                fixed_atoms: None,
                warm: Mutex::new(None),
                lazy_gradient: false,
                cache: Mutex::new(None),
                buffers: Mutex::new(TapeBuffers::new()),
                counters: Counters::default(),
            },
        })
    }
    /// Uses `warm` as the (constant) initial scalings of every evaluation, as within one
    /// run of a warm-restarted fit.
    pub fn with_warm(self, warm: Scalings<T>) -> Self {
        self.inner.set_warm(warm);
        self
    }
    /// Number of variables, `N·S + S·M`.
    pub fn len(&self) -> usize {
        self.inner.n_alpha() + self.inner.s * self.inner.m
    }
    /// Always false (`S, M ≥ 1`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The starting point [`fit`] uses for this configuration and seed.
    pub fn initial_point(&self) -> Result<Vec<f64>> {
        let cfg = self.inner.cfg;
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let mut x = init_alpha(self.inner.data, cfg, &mut rng)?;
        x.extend(init_beta(cfg.n_atoms, self.inner.m, cfg, &mut rng)?);
        Ok(x)
    }
    fn check_len(&self, x: &[f64]) -> Result<()> {
        if x.len() != self.len() {
            return Err(Error::ShapeMismatch {
                arg: "x",
                expected: format!("{} entries (N·S + S·M)", self.len()),
                found: format!("{} entries", x.len()),
            });
        }
        Ok(())
    }
    /// `G(x)`.
    pub fn value(&self, x: &[f64]) -> Result<f64> {
        self.check_len(x)?;
        self.inner.with_eval(x, false, |e| e.loss)
    }
    /// `G(x)` and `∇G(x)`.
    pub fn value_and_gradient(&self, x: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.check_len(x)?;
        self.inner
            .with_eval(x, true, |e| (e.loss, e.grad.clone().expect("requested")))
    }
    /// Barycenters and scalings at `x` (from the cache when possible).
    pub fn reconstruction(&self, x: &[f64]) -> Result<(Batch<T>, Scalings<T>)> {
        self.check_len(x)?;
        self.inner
            .with_eval(x, false, |e| (e.p.clone(), e.scalings.clone()))
    }
    /// Atoms `softmax(α)` and weights `softmax(ζ β̃)` at `x`.
    pub fn dictionary(&self, x: &[f64]) -> Result<(Batch<T>, Batch<T>)> {
        self.check_len(x)?;
        let (d, w) = self.inner.unpack(x);
        Ok((d.expect("atoms are free").cast(), w.cast()))
    }
    /// Work done so far.
    pub fn counts(&self) -> CallCounts {
        self.inner.counts()
    }
}

// ---------------------------------------------------------------------------------------
// Saved models

/// Value of [`Model::format`].
pub const MODEL_FORMAT: &str = "wassdl-model";
/// Value of [`Model::version`] written by this crate.
pub const MODEL_VERSION: u32 = 1;

/// Sizes of a saved dictionary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelDims {
    /// Support size `N`.
    pub n: usize,
    /// Number of atoms `S`.
    pub n_atoms: usize,
    /// Number of datapoints `M` the weights describe.
    pub m: usize,
}

/// A learned dictionary, saved as self-describing JSON: `format`, `version`, `scalar`,
/// the kernel recipe, the configuration, the dimensions, the final loss, then the atoms
/// (`N × S`) and weights (`S × M`) column-major in precision `T`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Model<T> {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// [`MODEL_VERSION`].
    pub version: u32,
    /// `"f32"` or `"f64"`.
    pub scalar: String,
    /// Sizes.
    pub dims: ModelDims,
    /// How to rebuild the kernel.
    pub kernel: KernelSpec,
    /// The settings the dictionary was learned with.
    pub config: WdlConfig,
    /// Final objective.
    pub loss: f64,
    /// Atoms, `N × S`, column-major.
    pub atoms: Vec<T>,
    /// Weights, `S × M`, column-major.
    pub weights: Vec<T>,
}

impl<T: Real> Model<T> {
    /// Packs a fit.
    pub fn new(kernel: KernelSpec, config: WdlConfig, fit: &Fit<T>) -> Result<Self> {
        Self::from_parts(kernel, config, &fit.atoms, &fit.weights, fit.loss)
    }

    /// Packs atoms (`N × S`) and weights (`S × M`).
    pub fn from_parts(
        kernel: KernelSpec,
        config: WdlConfig,
        atoms: &Batch<T>,
        weights: &Batch<T>,
        loss: f64,
    ) -> Result<Self> {
        let (n, s) = atoms.shape();
        if kernel.len() != n {
            return Err(Error::ShapeMismatch {
                arg: "atoms",
                expected: format!("{} x _ (the kernel's support)", kernel.len()),
                found: format!("{n} x {s}"),
            });
        }
        validate::rows("weights", weights, s)?;
        for (arg, b) in [("atoms", atoms), ("weights", weights)] {
            if let Some((row, col)) = b.first_non_finite() {
                return Err(Error::NonFinite { arg, row, col });
            }
        }
        Ok(Model {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            scalar: T::NAME.into(),
            dims: ModelDims {
                n,
                n_atoms: s,
                m: weights.cols(),
            },
            kernel,
            config,
            loss,
            atoms: atoms.as_slice().to_vec(),
            weights: weights.as_slice().to_vec(),
        })
    }

    /// Atoms, `N × S`.
    pub fn atoms(&self) -> Batch<T> {
        Batch::from_vec(self.dims.n, self.dims.n_atoms, self.atoms.clone())
    }

    /// Weights, `S × M`.
    pub fn weights(&self) -> Batch<T> {
        Batch::from_vec(self.dims.n_atoms, self.dims.m, self.weights.clone())
    }

    /// Rebuilds the kernel.
    pub fn kernel(&self) -> Result<Box<dyn Kernel<T>>> {
        self.kernel.build()
    }
}
