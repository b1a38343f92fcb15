//! Free-support Wasserstein barycenter of point clouds (Cuturi & Doucet 2014, Algorithm 2;
//! POT's `ot.lp.free_support_barycenter`).
//!
//! For the squared Euclidean cost, with the barycenter's weights `b` fixed and its
//! positions `X` free, the fixed-point iteration
//!
//! ```text
//! X ← Σ_s λ_s diag(1/b) T_s Y_s,   T_s = optimal plan between (b, X) and (a_s, Y_s)
//! ```
//!
//! moves every barycenter point to the λ-average of the barycentric projections of its
//! mass onto the input clouds. It stops when `‖X_new − X‖²_F ≤ tol` (POT's `stopThr`) or
//! after `max_iter` iterations.

use super::cost::{cost_matrix_row_major, Cost};
use super::{emd_error, PointCloud};
use crate::batch::Batch;
use crate::emd::{emd, PlanEntry};
use crate::error::{Error, Result};
use crate::kernel::DenseKernel;
use crate::sinkhorn::{sinkhorn, SinkhornConfig};
use crate::solver::Stop;
use crate::validate;

/// An inner OT solver: inside each free-support fixed-point iteration, in point-cloud
/// dictionaries, and in Wasserstein unmixing ([`crate::unmixing`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum InnerOt {
    /// Exact OT by the network simplex ([`crate::emd::emd`]) with this pivot cap (POT's
    /// `numInnerItermax`, default `100_000`).
    Exact {
        /// Pivot cap.
        max_iter: usize,
    },
    /// Entropic OT ([`sinkhorn`]) with regularization `gamma` (POT's `reg`), `KL(T | a ⊗ b)`
    /// (POT's `ot.bregman.free_support_sinkhorn_barycenter` for free-support barycenters).
    Entropic {
        /// Regularization γ > 0, in units of the cost.
        gamma: f64,
        /// Sinkhorn stopping rule.
        stop: Stop,
    },
}

/// Settings of [`free_support_barycenter`], defaulted as POT's.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FreeSupportConfig {
    /// Outer iteration cap (POT's `numItermax = 100`).
    pub max_iter: usize,
    /// Stop when `‖X_new − X‖²_F ≤ tol` (POT's `stopThr = 1e-7`).
    pub tol: f64,
    /// Inner OT solver.
    pub inner: InnerOt,
}

impl Default for FreeSupportConfig {
    fn default() -> Self {
        FreeSupportConfig {
            max_iter: 100,
            tol: 1e-7,
            inner: InnerOt::Exact { max_iter: 100_000 },
        }
    }
}

/// Result of [`free_support_barycenter`].
#[derive(Clone, Debug)]
pub struct FreeSupportBarycenter {
    /// The barycenter: final positions, with the weights of the initial cloud.
    pub cloud: PointCloud<f64>,
    /// `‖X_new − X‖²_F` at each iteration (POT's `log["displacement_square_norms"]`).
    pub displacement_square_norms: Vec<f64>,
    /// `Σ_s λ_s OT(γ, β_s)` at the final positions (squared Euclidean cost, with the
    /// inner solver's transport cost `⟨T, C⟩`), evaluated after the last update.
    pub objective: f64,
}

/// An OT plan (sparse, row-major order of `(i, j)`) and its transport cost `⟨π, C⟩`.
pub(crate) struct Plan {
    pub(crate) entries: Vec<PlanEntry>,
    pub(crate) cost: f64,
}

/// The inner OT of every free-support fixed point (this module's and the point-cloud
/// dictionaries'): exact or entropic OT between weights `a` (rows) and `b` (columns) for
/// the row-major `a.len() × b.len()` cost `c`. `names` name the two sides in errors and
/// `solver` the caller. An entropic solve that stops on its cap before its tolerance is
/// an error ([`Stop::check_converged`]): its plan would be off its marginals.
pub(crate) fn inner_plan(
    c: &[f64],
    a: &[f64],
    b: &[f64],
    inner: &InnerOt,
    names: (&'static str, &'static str),
    solver: &'static str,
) -> Result<Plan> {
    let (n, m) = (a.len(), b.len());
    match *inner {
        InnerOt::Exact { max_iter } => {
            let sol =
                emd(a, b, c, max_iter).map_err(|e| emd_error(e, (names.0, a), (names.1, b)))?;
            Ok(Plan {
                entries: sol.plan,
                cost: sol.cost,
            })
        }
        InnerOt::Entropic { gamma: reg, stop } => {
            let cm = Batch::from_fn(n, m, |i, j| c[i * m + j]);
            let k = DenseKernel::new(cm.view(), reg)?;
            let cfg = SinkhornConfig {
                log_domain: true,
                stop,
                plan: true,
            };
            let sol = sinkhorn(
                &k,
                &Batch::from_vec(n, 1, a.to_vec()),
                &Batch::from_vec(m, 1, b.to_vec()),
                &cfg,
                None,
            )?;
            stop.check_converged(sol.error, sol.iterations, solver)?;
            let p = sol
                .plans
                .and_then(|mut v| v.pop())
                .ok_or(Error::Numerical {
                    solver,
                    iteration: 0,
                    message: "sinkhorn returned no plan".into(),
                })?;
            let mut entries = Vec::new();
            for i in 0..n {
                for j in 0..m {
                    let mass = p.get(i, j);
                    if mass > 0.0 {
                        entries.push(PlanEntry { i, j, mass });
                    }
                }
            }
            Ok(Plan {
                entries,
                cost: sol.transport_cost[0],
            })
        }
    }
}

/// `out[:, i] += w(π_ij) · y[:, j]` over the plan's entries: one term of the barycentric
/// projection `Σ_s λ_s diag(1/b) π_s Y_s` (`w(π_ij) = λ_s π_ij / b_i`, evaluated in the
/// caller's order of operations).
pub(crate) fn add_projection(
    plan: &[PlanEntry],
    weight: impl Fn(&PlanEntry) -> f64,
    y: &Batch<f64>,
    out: &mut Batch<f64>,
) {
    for e in plan {
        let w = weight(e);
        for (o, &v) in out.col_mut(e.i).iter_mut().zip(y.col(e.j)) {
            *o += w * v;
        }
    }
}

/// The plan between `(b, x)` and `cloud` for the squared Euclidean cost.
fn plan(x: &Batch<f64>, b: &[f64], cloud: &PointCloud<f64>, inner: &InnerOt) -> Result<Plan> {
    let c = cost_matrix_row_major(x, cloud.points(), Cost::SqEuclidean);
    inner_plan(
        &c,
        b,
        cloud.weights(),
        inner,
        ("init", "clouds"),
        "free_support_barycenter",
    )
}

/// Free-support barycenter of `clouds` with barycentric weights `lambdas` (on the
/// simplex), starting from the positions and weights of `init` (the weights stay fixed
/// and must be positive). See the module docs for the iteration.
///
/// ```
/// use wassdl::{Batch, pointcloud::{free_support_barycenter, FreeSupportConfig, PointCloud}};
/// let a = PointCloud::uniform(Batch::from_vec(1, 2, vec![0.0, 1.0])).unwrap();
/// let b = PointCloud::uniform(Batch::from_vec(1, 2, vec![2.0, 3.0])).unwrap();
/// let init = PointCloud::uniform(Batch::from_vec(1, 2, vec![0.0, 0.1])).unwrap();
/// let bar = free_support_barycenter(&[a, b], &[0.5, 0.5], &init, &FreeSupportConfig::default())
///     .unwrap();
/// // the midpoint of each matched pair
/// assert_eq!(bar.cloud.points().as_slice(), &[1.0, 2.0]);
/// ```
///
/// # Errors
/// Invalid inputs (dimensions, weights), or an inner solver failure.
pub fn free_support_barycenter(
    clouds: &[PointCloud<f64>],
    lambdas: &[f64],
    init: &PointCloud<f64>,
    cfg: &FreeSupportConfig,
) -> Result<FreeSupportBarycenter> {
    let lam = Batch::from_vec(lambdas.len(), 1, lambdas.to_vec());
    validate::shape("lambdas", &lam, clouds.len(), 1)?;
    if clouds.is_empty() {
        return Err(Error::ShapeMismatch {
            arg: "clouds",
            expected: "at least one cloud".into(),
            found: "none".into(),
        });
    }
    validate::simplex_columns("lambdas", &lam)?;
    if !(cfg.tol.is_finite() && cfg.tol >= 0.0) {
        return Err(Error::InvalidParameter {
            arg: "tol",
            requirement: "finite and >= 0",
            value: cfg.tol,
        });
    }
    if let InnerOt::Entropic { gamma: reg, .. } = cfg.inner {
        validate::positive("reg", reg)?;
    }
    let (dim, n) = (init.dim(), init.len());
    for c in clouds {
        super::same_dim(init, c)?;
    }
    let b = init.weights();
    if let Some(i) = b.iter().position(|&w| w <= 0.0) {
        return Err(Error::InvalidParameter {
            arg: "init.weights",
            requirement: "> 0 (each barycenter point is divided by its weight)",
            value: b[i],
        });
    }
    let mut x = init.points().clone();
    let mut disp = Vec::new();
    let mut displacement = cfg.tol + 1.0;
    while displacement > cfg.tol && disp.len() < cfg.max_iter {
        let mut t_sum = Batch::zeros(dim, n);
        for (cloud, &l) in clouds.iter().zip(lambdas) {
            let p = plan(&x, b, cloud, &cfg.inner)?;
            add_projection(
                &p.entries,
                |e| l / b[e.i] * e.mass,
                cloud.points(),
                &mut t_sum,
            );
        }
        displacement = t_sum
            .as_slice()
            .iter()
            .zip(x.as_slice())
            .map(|(&u, &v)| (u - v) * (u - v))
            .sum();
        disp.push(displacement);
        x = t_sum;
    }
    let mut objective = 0.0;
    for (cloud, &l) in clouds.iter().zip(lambdas) {
        objective += l * plan(&x, b, cloud, &cfg.inner)?.cost;
    }
    Ok(FreeSupportBarycenter {
        cloud: init.with_points(x)?,
        displacement_square_norms: disp,
        objective,
    })
}
