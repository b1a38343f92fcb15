//! Optimal transport between weighted point clouds (free-support measures).
//!
//! Three of the source documents work with measures `α = Σ_i a_i δ_{x_i}` rather than
//! histograms on a fixed grid; this module gives them the same tools:
//!
//! * [`PointCloud`]: positions (`dim × n`, one point per column) and validated weights.
//! * [`Cost`], [`cost_matrix`], [`cost_matrix_on_tape`]: ground costs (squared Euclidean,
//!   GeomLoss's `‖x−y‖^p/p`, Minkowski `‖x−y‖_q`), also recorded on the
//!   [`Tape`] so that losses differentiate with respect to positions.
//! * [`exact_ot`], [`wasserstein_on_tape`]: exact OT between clouds by the network
//!   simplex of [`crate::emd`], and its gradient with respect to weights and positions.
//! * [`sinkhorn_divergence`]: the debiased Sinkhorn divergence with GeomLoss's
//!   conventions (`blur`, `scaling`, ε-scaling, symmetric averaged updates and a last
//!   extrapolation, `002_f75a3e4357797dec.txt`), with gradients in weights and positions.
//! * [`eulerian_barycenter`], [`lagrangian_barycenter`]: Sinkhorn-divergence barycenters by
//!   L-BFGS on log-weights over fixed positions, or on positions with fixed weights
//!   (`002_f75a3e4357797dec.txt`).
//! * [`free_support_barycenter`]: POT's fixed-point free-support barycenter with exact or
//!   entropic inner OT.
//!
//! Conventions versus GeomLoss and POT are collected in `docs/pointcloud.md`.
//!
//! ```
//! use wassdl::{Batch, pointcloud::{PointCloud, SinkhornDivergenceConfig, sinkhorn_divergence}};
//! let x = PointCloud::uniform(Batch::from_vec(1, 3, vec![0.0f64, 0.1, 0.2])).unwrap();
//! let y = PointCloud::uniform(Batch::from_vec(1, 3, vec![0.5, 0.6, 0.7])).unwrap();
//! let cfg = SinkhornDivergenceConfig { blur: 0.01, scaling: 0.9, ..Default::default() };
//! let s = sinkhorn_divergence(&x, &y, &cfg).unwrap();
//! // every point moves by 0.5: W₂²/2 = 0.125, up to the blur
//! assert!((s.value - 0.125).abs() < 1e-3);
//! ```

pub(crate) mod cost;
pub mod dictionary;
mod divergence;
mod fit;
mod free_support;

pub(crate) use cost::cost_matrix_row_major;
pub use cost::{cost_matrix, cost_matrix_on_tape, Cost};
pub use divergence::{
    epsilon_schedule, max_diameter, sinkhorn_divergence, sinkhorn_divergence_on_tape, Divergence,
    SinkhornDivergenceConfig,
};
pub use fit::{eulerian_barycenter, lagrangian_barycenter, BarycenterFit, Snapshot};
pub use free_support::{
    free_support_barycenter, FreeSupportBarycenter, FreeSupportConfig, InnerOt,
};

use crate::batch::Batch;
use crate::emd::{emd, EmdError, EmdSolution};
use crate::error::{Error, Result};
use crate::ops::Ops;
use crate::real::Real;
use crate::tape::{Tape, Var};
use crate::validate;

/// A discrete measure `Σ_i w_i δ_{x_i}`: positions and weights, validated once.
///
/// Positions are the columns of a `dim × n` [`Batch`] (the transpose of the `(n, dim)`
/// arrays of NumPy/PyTorch code); weights are finite, nonnegative and sum to one within
/// [`validate::simplex_tol`]. Zero weights are allowed (a point that carries no mass).
#[derive(Clone, Debug, PartialEq)]
pub struct PointCloud<T: Real> {
    points: Batch<T>,
    weights: Vec<T>,
}

impl<T: Real> PointCloud<T> {
    /// Validates and wraps `points` (`dim × n`, `dim ≥ 1`, `n ≥ 1`, finite) and `weights`
    /// (length `n`, on the simplex).
    pub fn new(points: Batch<T>, weights: Vec<T>) -> Result<Self> {
        check_points("points", &points)?;
        let n = points.cols();
        let w = Batch::from_vec(weights.len(), 1, weights);
        validate::shape("weights", &w, n, 1)?;
        validate::simplex_columns("weights", &w)?;
        Ok(PointCloud {
            points,
            weights: w.into_vec(),
        })
    }

    /// The cloud with uniform weights `1/n`.
    pub fn uniform(points: Batch<T>) -> Result<Self> {
        check_points("points", &points)?;
        let n = points.cols();
        let w = vec![T::one() / T::of(n as f64); n];
        Ok(PointCloud { points, weights: w })
    }

    /// From NumPy's layout: `rows` holds `n` points of dimension `dim` one after the other
    /// (row-major `n × dim`). Uniform weights when `weights` is `None`.
    pub fn from_rows(dim: usize, rows: &[T], weights: Option<Vec<T>>) -> Result<Self> {
        if dim == 0 || rows.len() % dim != 0 {
            return Err(Error::ShapeMismatch {
                arg: "rows",
                expected: format!("a multiple of dim = {dim} (>= 1)"),
                found: format!("{} values", rows.len()),
            });
        }
        let n = rows.len() / dim;
        let points = Batch::from_fn(dim, n, |d, i| rows[i * dim + d]);
        match weights {
            Some(w) => Self::new(points, w),
            None => Self::uniform(points),
        }
    }

    /// Same weights, new positions (validated: same shape, finite).
    pub fn with_points(&self, points: Batch<T>) -> Result<Self> {
        check_points("points", &points)?;
        validate::shape("points", &points, self.dim(), self.len())?;
        Ok(PointCloud {
            points,
            weights: self.weights.clone(),
        })
    }

    /// Same positions, new weights (validated).
    pub fn with_weights(&self, weights: Vec<T>) -> Result<Self> {
        Self::new(self.points.clone(), weights)
    }

    /// Positions, `dim × n`.
    pub fn points(&self) -> &Batch<T> {
        &self.points
    }
    /// Weights, length `n`.
    pub fn weights(&self) -> &[T] {
        &self.weights
    }
    /// Point `i` (its `dim` coordinates).
    pub fn point(&self, i: usize) -> &[T] {
        self.points.col(i)
    }
    /// Dimension of the ambient space.
    pub fn dim(&self) -> usize {
        self.points.rows()
    }
    /// Number of points (at least one).
    pub fn len(&self) -> usize {
        self.points.cols()
    }
    /// Always `false`: a cloud has at least one point.
    pub fn is_empty(&self) -> bool {
        self.points.cols() == 0
    }
    /// Positions and weights.
    pub fn into_parts(self) -> (Batch<T>, Vec<T>) {
        (self.points, self.weights)
    }
    /// Converts the precision.
    pub fn cast<U: Real>(&self) -> PointCloud<U> {
        PointCloud {
            points: self.points.cast(),
            weights: self.weights.iter().map(|&w| U::of(w.to_f64_())).collect(),
        }
    }
}

/// `dim ≥ 1`, `n ≥ 1`, every coordinate finite.
fn check_points<T: Real>(arg: &'static str, points: &Batch<T>) -> Result<()> {
    if points.rows() == 0 || points.cols() == 0 {
        return Err(Error::ShapeMismatch {
            arg,
            expected: "(>= 1) x (>= 1) (dim x points)".into(),
            found: format!("{} x {}", points.rows(), points.cols()),
        });
    }
    if let Some((row, col)) = points.first_non_finite() {
        return Err(Error::NonFinite { arg, row, col });
    }
    Ok(())
}

/// [`Error::from`] an [`EmdError`], with the caller's names for the two weight vectors
/// (`emd` calls them `a` and `b`) and the offending value of a negative weight.
pub(crate) fn emd_error(
    e: EmdError,
    (a, wa): (&'static str, &[f64]),
    (b, wb): (&'static str, &[f64]),
) -> Error {
    let named = |w: &'static str| match w {
        "a" => a,
        "b" => b,
        other => other,
    };
    match Error::from(e) {
        Error::NonFinite { arg, row, col } => Error::NonFinite {
            arg: named(arg),
            row,
            col,
        },
        Error::Negative { arg, row, col, .. } => Error::Negative {
            arg: named(arg),
            row,
            col,
            value: if arg == "a" { wa } else { wb }
                .get(row)
                .copied()
                .unwrap_or(f64::NAN),
        },
        Error::ShapeMismatch {
            arg,
            expected,
            found,
        } => Error::ShapeMismatch {
            arg: named(arg),
            expected,
            found,
        },
        other => other,
    }
}

/// Exact optimal transport between two clouds for `cost` (network simplex, [`emd`]):
/// cost, sparse plan and dual potentials (centred as POT's `center_dual=True`; see
/// [`EmdSolution`]). `max_iter` caps the pivots (POT's default is `100_000`).
///
/// ```
/// use wassdl::{Batch, pointcloud::{exact_ot, Cost, PointCloud}};
/// let x = PointCloud::uniform(Batch::from_vec(1, 2, vec![0.0, 1.0])).unwrap();
/// let y = PointCloud::uniform(Batch::from_vec(1, 2, vec![1.5, 0.5])).unwrap();
/// let ot = exact_ot(&x, &y, Cost::SqEuclidean, 100_000).unwrap();
/// assert!((ot.cost - 0.25).abs() < 1e-15); // 0 → 0.5 and 1 → 1.5
/// ```
pub fn exact_ot(
    x: &PointCloud<f64>,
    y: &PointCloud<f64>,
    cost: Cost,
    max_iter: usize,
) -> Result<EmdSolution> {
    same_dim(x, y)?;
    cost.validate()?;
    let c = cost_matrix_row_major(x.points(), y.points(), cost);
    emd(x.weights(), y.weights(), &c, max_iter)
        .map_err(|e| emd_error(e, ("x", x.weights()), ("y", y.weights())))
}

fn same_dim<T: Real>(x: &PointCloud<T>, y: &PointCloud<T>) -> Result<()> {
    if x.dim() != y.dim() {
        return Err(Error::ShapeMismatch {
            arg: "y",
            expected: format!("points of dimension {}", x.dim()),
            found: format!("dimension {}", y.dim()),
        });
    }
    Ok(())
}

/// The exact OT cost `W_C(a, b)` between the clouds `(a, x)` and `(b, y)` recorded on the
/// tape, differentiable with respect to all four inputs.
///
/// `a` (`n × 1`), `x` (`dim × n`), `b` (`m × 1`), `y` (`dim × m`) are nodes (leaves or
/// constants). The optimal plan `P` is computed by [`emd`] on the current values and
/// held fixed: by the envelope theorem (Danskin), `∂W/∂C = P`, so the node is
/// `⟨P, C(x, y)⟩` with `C` from [`cost_matrix_on_tape`] and the position gradients flow
/// through the recorded cost. The weight gradients are the dual potentials centred to
/// zero mean, `f − mean(f)` and `g − mean(g)`, exactly what POT's `ot.emd2` registers with
/// its autodiff backends (they are defined up to a constant, since the weights live on the
/// simplex).
pub fn wasserstein_on_tape(
    tape: &mut Tape<'_, f64>,
    a: &Var,
    x: &Var,
    b: &Var,
    y: &Var,
    cost: Cost,
    max_iter: usize,
) -> Result<Var> {
    let (n, m) = (tape.value(x).cols(), tape.value(y).cols());
    validate::shape("a", tape.value(a), n, 1)?;
    validate::shape("b", tape.value(b), m, 1)?;
    let xc = PointCloud::new(tape.value(x).clone(), tape.value(a).as_slice().to_vec())?;
    let yc = PointCloud::new(tape.value(y).clone(), tape.value(b).as_slice().to_vec())?;
    let sol = exact_ot(&xc, &yc, cost, max_iter)?;
    let mut plan = vec![0.0; n * m];
    for e in &sol.plan {
        plan[e.i + e.j * n] = e.mass;
    }
    let c = cost_matrix_on_tape(tape, x, y, cost)?;
    let p = tape.constant(Batch::from_vec(1, n * m, plan));
    let value = tape.dot(&c, &p);
    let centred = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|&z| z - mean).collect::<Vec<_>>()
    };
    let ga = tape.given(a, 0.0, Batch::from_vec(n, 1, centred(&sol.f)));
    let gb = tape.given(b, 0.0, Batch::from_vec(m, 1, centred(&sol.g)));
    let v = tape.add(&value, &ga);
    Ok(tape.add(&v, &gb))
}
