//! Wasserstein unmixing (`003_d677dd5d7bb685d2.txt`, POT's "Wasserstein unmixing with
//! PyTorch"): estimate the weights `w ∈ Δ_K` of a mixture of `K` source distributions
//! that best explains a target distribution in Wasserstein distance,
//!
//! ```text
//! min_{w ∈ Δ_K} OT(H w, b; M)
//! ```
//!
//! where the columns of `H` (`n_s × K`) are the source distributions on a common support
//! of `n_s` points (each column sums to one), `b` is the target's weight vector on its
//! `n_t` points and `M` the `n_s × n_t` ground cost. The problem is solved as in the seed
//! by projected gradient with a fixed step:
//!
//! ```text
//! w ← proj_Δ(w − lr · Hᵀ ∇_a OT(H w, b)),
//! ```
//!
//! with the gradient of the OT cost with respect to the source weights given by its dual
//! potential:
//!
//! * [`InnerOt::Exact`]: `OT` is the exact cost (`ot.emd2`), solved by the network
//!   simplex of [`crate::emd`]; the gradient is `u − mean(u)` with `u` the dual
//!   potential centred as POT's `center_dual=True`, which is exactly what `ot.emd2`
//!   registers with PyTorch's autograd;
//! * [`InnerOt::Entropic`]: `OT` is the entropic cost with the relative entropy
//!   `KL(T | a ⊗ b)` (GeomLoss's and OTT's convention), solved by the log-domain
//!   [`sinkhorn`]; the gradient is its potential `f = −γ log Σ_j exp((g_j − M_ij)/γ)`,
//!   finite even where `a_i = 0` (POT's `sinkhorn2` regularizes by the entropy of `T`
//!   alone, whose gradient `γ log a_i` diverges on the boundary of the simplex, where
//!   unmixing weights typically end up).

use crate::batch::Batch;
use crate::emd::{emd, proj_simplex};
use crate::error::{Error, Result};
use crate::kernel::{apply_log_new, DenseKernel};
/// The inner OT solver of [`unmix`] (the same type as the point-cloud solvers').
pub use crate::pointcloud::InnerOt;
use crate::pointcloud::{cost_matrix, emd_error, Cost, PointCloud};
use crate::sinkhorn::{sinkhorn, SinkhornConfig};
use crate::solver::Stop;
use crate::validate;

/// Settings of [`unmix`], defaulted as the seed: `lr = 2e-3`, 500 iterations, exact OT,
/// started from uniform weights.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnmixingConfig {
    /// Fixed step of the projected gradient.
    pub lr: f64,
    /// Number of projected-gradient steps.
    pub iterations: usize,
    /// Inner OT solver.
    pub solver: InnerOt,
}

impl Default for UnmixingConfig {
    fn default() -> Self {
        UnmixingConfig {
            lr: 2e-3,
            iterations: 500,
            solver: InnerOt::Exact { max_iter: 100_000 },
        }
    }
}

/// Result of [`unmix`].
#[derive(Clone, Debug)]
pub struct Unmixing {
    /// The estimated mixture weights (on the simplex).
    pub weights: Vec<f64>,
    /// The OT cost before each step (the seed's `losses`).
    pub losses: Vec<f64>,
}

/// Checked inputs of the unmixing problem, with the cost in the row-major layout of
/// [`emd`] and, for the entropic solver, its Gibbs kernel.
pub struct MixtureProblem {
    h: Batch<f64>,
    b: Vec<f64>,
    cost_rm: Vec<f64>,
    cost_max: f64,
    kernel: Option<DenseKernel<f64>>,
    solver: InnerOt,
}

impl MixtureProblem {
    /// Validates `h` (`n_s × K`, every column on the simplex), `target` (length `n_t`, on
    /// the simplex) and `cost` (`n_s × n_t`, finite) for `solver`.
    pub fn new(h: &Batch<f64>, target: &[f64], cost: &Batch<f64>, solver: InnerOt) -> Result<Self> {
        validate::rows("h", h, h.rows())?;
        validate::simplex_columns("h", h)?;
        let b = Batch::from_vec(target.len(), 1, target.to_vec());
        validate::simplex_columns("target", &b)?;
        validate::shape("cost", cost, h.rows(), target.len())?;
        if let Some((row, col)) = cost.first_non_finite() {
            return Err(Error::NonFinite {
                arg: "cost",
                row,
                col,
            });
        }
        let kernel = match solver {
            InnerOt::Exact { .. } => None,
            InnerOt::Entropic { gamma: reg, .. } => Some(DenseKernel::new(cost.view(), reg)?),
        };
        let (ns, nt) = cost.shape();
        let mut cost_rm = Vec::with_capacity(ns * nt);
        for i in 0..ns {
            cost_rm.extend((0..nt).map(|j| cost.get(i, j)));
        }
        let cost_max = cost_rm.iter().fold(0.0f64, |m, &c| m.max(c.abs()));
        Ok(MixtureProblem {
            h: h.clone(),
            b: target.to_vec(),
            cost_rm,
            cost_max,
            kernel,
            solver,
        })
    }

    /// Number of sources `K`.
    pub fn sources(&self) -> usize {
        self.h.cols()
    }

    /// `a = H w`.
    pub fn mixture(&self, w: &[f64]) -> Vec<f64> {
        let mut a = vec![0.0; self.h.rows()];
        for (k, &wk) in w.iter().enumerate() {
            for (ai, &hik) in a.iter_mut().zip(self.h.col(k)) {
                *ai += hik * wk;
            }
        }
        a
    }

    /// The OT cost `OT(H w, b)` and its gradient `Hᵀ ∇_a OT` with respect to `w` (see the
    /// module docs for the potential used by each solver).
    pub fn loss_and_grad(&self, w: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.eval(w, &mut None)
    }

    /// [`Self::loss_and_grad`], warm-starting the entropic solver from (and updating) the
    /// potentials of the previous call: successive projected-gradient iterates are close,
    /// so a few Sinkhorn iterations suffice instead of thousands.
    fn eval(
        &self,
        w: &[f64],
        warm: &mut Option<(Batch<f64>, Batch<f64>)>,
    ) -> Result<(f64, Vec<f64>)> {
        let wb = Batch::from_vec(w.len(), 1, w.to_vec());
        validate::shape("w", &wb, self.sources(), 1)?;
        validate::nonnegative("w", &wb)?;
        let a = self.mixture(w);
        let (loss, mut u) = match (self.solver, &self.kernel) {
            (InnerOt::Exact { max_iter }, _) => {
                let sol = emd(&a, &self.b, &self.cost_rm, max_iter)
                    .map_err(|e| emd_error(e, ("w", &a), ("target", &self.b)))?;
                (sol.cost, sol.f)
            }
            (InnerOt::Entropic { stop, .. }, Some(k)) => self.entropic(k, &a, stop, warm)?,
            (InnerOt::Entropic { .. }, None) => unreachable!("kernel built in new()"),
        };
        if !loss.is_finite() || u.iter().any(|x| !x.is_finite()) {
            return Err(Error::Numerical {
                solver: "unmix",
                iteration: 0,
                message: format!(
                    "the OT cost ({loss:e}) or its potential is not finite: the cost \
                     matrix (largest |C| = {:e}) is beyond the range of f64; rescale it",
                    self.cost_max
                ),
            });
        }
        // POT's registered gradient: u − mean(u).
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        u.iter_mut().for_each(|x| *x -= mean);
        let grad = (0..self.sources())
            .map(|k| self.h.col(k).iter().zip(&u).map(|(&h, &x)| h * x).sum())
            .collect();
        Ok((loss, grad))
    }

    /// `OT_γ(a, b)` with `KL(T | a ⊗ b)` and its potential on `a`, from the log-domain
    /// Sinkhorn potentials `(f, g)` of POT's convention: `g' = g − γ log b` and
    /// `f'_i = −γ log Σ_j exp((g_j − M_ij)/γ)` (a c-transform, finite where `a_i = 0`).
    fn entropic(
        &self,
        k: &DenseKernel<f64>,
        a: &[f64],
        stop: Stop,
        warm: &mut Option<(Batch<f64>, Batch<f64>)>,
    ) -> Result<(f64, Vec<f64>)> {
        let InnerOt::Entropic { gamma: reg, .. } = self.solver else {
            unreachable!("called for the entropic solver only")
        };
        // The scaling domain is ~50x faster and safe while exp(−M/γ) stays well above
        // f64's underflow (e^{−600} ≈ 1e−261); beyond that, the log domain.
        let cfg = SinkhornConfig {
            log_domain: self.cost_max / reg > 600.0,
            stop,
            plan: false,
        };
        let ab = Batch::from_vec(a.len(), 1, a.to_vec());
        let bb = Batch::from_vec(self.b.len(), 1, self.b.clone());
        let sol = sinkhorn(k, &ab, &bb, &cfg, warm.as_ref().map(|(f, g)| (f, g)))?;
        stop.check_converged(sol.error, sol.iterations, "sinkhorn")?;
        let g_over = sol.g.map(|x| x / reg);
        let lk = apply_log_new(k, &g_over, false);
        let f: Vec<f64> = lk.as_slice().iter().map(|&l| -reg * l).collect();
        let af: f64 = a.iter().zip(&f).map(|(&x, &y)| x * y).sum();
        let bg: f64 = self
            .b
            .iter()
            .zip(sol.g.as_slice())
            .filter(|(&bj, _)| bj > 0.0)
            .map(|(&bj, &gj)| bj * (gj - reg * bj.ln()))
            .sum();
        // Only g seeds the next call (its first half-step recomputes f from g), and g is
        // finite wherever the target has mass.
        let g_warm = sol.g.clone();
        *warm = Some((Batch::zeros(a.len(), 1), g_warm));
        Ok((af + bg, f))
    }
}

/// Wasserstein unmixing by projected gradient (see the module docs): `h` is `n_s × K`
/// (one source distribution per column), `target` the target weights (length `n_t`),
/// `cost` the `n_s × n_t` ground cost; `init` the starting weights (uniform `1/K` when
/// `None`, as the seed's `ot.unif(2)`).
///
/// ```
/// use wassdl::{Batch, unmixing::{unmix, UnmixingConfig}};
/// // two sources on a 3-point line, the target is all at the middle point
/// let h = Batch::from_vec(3, 2, vec![1.0, 0.0, 0.0, 0.0, 0.5, 0.5]);
/// let target = [0.0, 1.0, 0.0];
/// let cost = Batch::from_fn(3, 3, |i, j| ((i as f64) - (j as f64)).powi(2));
/// let cfg = UnmixingConfig { lr: 0.05, iterations: 100, ..Default::default() };
/// let r = unmix(&h, &target, &cost, None, &cfg).unwrap();
/// assert!(r.weights[1] > 0.99); // the second source is half at the middle point
/// ```
///
/// # Errors
/// Invalid inputs or a failure of the inner OT solver.
pub fn unmix(
    h: &Batch<f64>,
    target: &[f64],
    cost: &Batch<f64>,
    init: Option<&[f64]>,
    cfg: &UnmixingConfig,
) -> Result<Unmixing> {
    validate::positive("lr", cfg.lr)?;
    if cfg.iterations == 0 {
        return Err(Error::InvalidParameter {
            arg: "iterations",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    let problem = MixtureProblem::new(h, target, cost, cfg.solver)?;
    let k = problem.sources();
    let mut w = match init {
        Some(w0) => {
            let wb = Batch::from_vec(w0.len(), 1, w0.to_vec());
            validate::shape("init", &wb, k, 1)?;
            validate::simplex_columns("init", &wb)?;
            w0.to_vec()
        }
        None => vec![1.0 / k as f64; k],
    };
    let mut losses = Vec::with_capacity(cfg.iterations);
    let mut warm = None;
    for it in 1..=cfg.iterations {
        let (loss, grad) = problem.eval(&w, &mut warm).map_err(|e| at_step(e, it))?;
        losses.push(loss);
        let step: Vec<f64> = w
            .iter()
            .zip(&grad)
            .map(|(&wi, &gi)| wi - cfg.lr * gi)
            .collect();
        w = proj_simplex(&step);
        // A step lr·∇ far above 1 leaves the weights below the float resolution of the
        // step: the projection then rounds off the simplex (or to NaN), and the next
        // solve would see a mixture of the wrong mass. That is the step's fault.
        let sum = validate::sum_f64(&w);
        if !(sum.is_finite() && (sum - 1.0).abs() <= validate::simplex_tol(k)) {
            let gmax = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            return Err(Error::Numerical {
                solver: "unmix",
                iteration: it,
                message: format!(
                    "the step `lr` × gradient = {:e} × {gmax:e} is beyond the float precision \
                     of the weights: their projection onto the simplex sums to {sum:e}; lower \
                     `lr` (or rescale the cost)",
                    cfg.lr
                ),
            });
        }
    }
    Ok(Unmixing { weights: w, losses })
}

/// An inner solver's failure at projected-gradient step `it`, reported as the unmixing's
/// (its own iteration count would read as the step's).
fn at_step(e: Error, it: usize) -> Error {
    match e {
        Error::Numerical {
            solver, message, ..
        } => Error::Numerical {
            solver: "unmix",
            iteration: it,
            message: if solver == "unmix" {
                message
            } else {
                format!("{solver}: {message}")
            },
        },
        other => other,
    }
}

/// [`unmix`] for point clouds: the sources' points are stacked into one support (their
/// weights into the columns of `H`) and the ground cost is `cost` between that support
/// and the target's points (`Cost::SqEuclidean` is the seed's `ot.dist`).
pub fn unmix_clouds(
    sources: &[PointCloud<f64>],
    target: &PointCloud<f64>,
    cost: Cost,
    cfg: &UnmixingConfig,
) -> Result<Unmixing> {
    if sources.is_empty() {
        return Err(Error::ShapeMismatch {
            arg: "sources",
            expected: "at least one source".into(),
            found: "none".into(),
        });
    }
    let dim = target.dim();
    let ns: usize = sources.iter().map(|s| s.len()).sum();
    let mut pts = Vec::with_capacity(ns * dim);
    let mut h = Batch::zeros(ns, sources.len());
    let mut off = 0;
    for (k, s) in sources.iter().enumerate() {
        if s.dim() != dim {
            return Err(Error::ShapeMismatch {
                arg: "sources",
                expected: format!("points of dimension {dim}"),
                found: format!("dimension {}", s.dim()),
            });
        }
        pts.extend_from_slice(s.points().as_slice());
        h.col_mut(k)[off..off + s.len()].copy_from_slice(s.weights());
        off += s.len();
    }
    let support = Batch::from_vec(dim, ns, pts);
    let m = cost_matrix(&support, target.points(), cost)?;
    unmix(&h, target.weights(), &m, None, cfg)
}
