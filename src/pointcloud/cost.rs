//! Ground costs between point clouds: dense matrices, pairwise gradients, and the same
//! matrices recorded on the [`Tape`] so that any loss built on them differentiates with
//! respect to the positions.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::ops::Ops;
use crate::real::Real;
use crate::tape::{Tape, Var};

/// A ground cost `C(x, y)` between two points of `R^dim`.
///
/// All three are symmetric (`C(x, y) = C(y, x)`) and vanish on the diagonal.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Cost {
    /// `‖x − y‖₂²`: POT's `ot.dist` default (`metric="sqeuclidean"`), the cost of
    /// `ot.emd2` in the unmixing example and of the free-support barycenter.
    SqEuclidean,
    /// `‖x − y‖₂^p / p`: GeomLoss's convention (`SamplesLoss(p=...)`), so `p = 2` is
    /// `‖x − y‖² / 2` and `p = 1` the Euclidean distance. Requires `p ≥ 1`.
    Power {
        /// The exponent `p ≥ 1`.
        p: f64,
    },
    /// `‖x − y‖_q = (Σ_k |x_k − y_k|^q)^{1/q}`, the Minkowski distance (POT's
    /// `metric="minkowski"`). Requires `q ≥ 1`.
    Minkowski {
        /// The norm index `q ≥ 1`.
        q: f64,
    },
}

impl Cost {
    /// The cost of GeomLoss's `SamplesLoss(p=2)`: `‖x − y‖² / 2`.
    pub const HALF_SQ_EUCLIDEAN: Cost = Cost::Power { p: 2.0 };

    /// Checks the exponent (`p ≥ 1`, `q ≥ 1`, finite).
    pub fn validate(&self) -> Result<()> {
        let (arg, v) = match *self {
            Cost::SqEuclidean => return Ok(()),
            Cost::Power { p } => ("p", p),
            Cost::Minkowski { q } => ("q", q),
        };
        if v.is_finite() && v >= 1.0 {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                arg,
                requirement: "finite and >= 1",
                value: v,
            })
        }
    }

    /// `C(x, y)` for two points given as coordinate slices of equal length.
    #[inline]
    pub fn eval<T: Real>(&self, x: &[T], y: &[T]) -> T {
        match *self {
            Cost::SqEuclidean => sq_dist(x, y),
            Cost::Power { p } => {
                let s = sq_dist(x, y);
                if p == 2.0 {
                    s * T::of(0.5)
                } else if p == 1.0 {
                    s.sqrt()
                } else {
                    s.powf(T::of(p / 2.0)) / T::of(p)
                }
            }
            Cost::Minkowski { q } => {
                let qt = T::of(q);
                let s = x
                    .iter()
                    .zip(y)
                    .fold(T::zero(), |acc, (&a, &b)| acc + (a - b).abs().powf(qt));
                s.powf(T::one() / qt)
            }
        }
    }

    /// `out += scale · ∇ₓ C(x, y)` (the gradient in the first argument; by symmetry the
    /// gradient in `y` is its negative).
    ///
    /// Where the cost is not differentiable (`x = y` for `Power { p: 1 }` and
    /// `Minkowski`), the subgradient `0` is used, as GeomLoss does for `p = 1` (it clamps
    /// the squared distance away from zero, so its gradient vanishes there too).
    #[inline]
    pub fn grad_x_into<T: Real>(&self, x: &[T], y: &[T], scale: T, out: &mut [T]) {
        match *self {
            Cost::SqEuclidean => {
                let c = scale + scale;
                for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
                    *o += c * (a - b);
                }
            }
            Cost::Power { p } => {
                // ∇ ‖d‖^p / p = ‖d‖^{p-2} d
                let c = if p == 2.0 {
                    scale
                } else {
                    let s = sq_dist(x, y);
                    if s == T::zero() {
                        return;
                    }
                    scale * s.powf(T::of((p - 2.0) / 2.0))
                };
                for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
                    *o += c * (a - b);
                }
            }
            Cost::Minkowski { q } => {
                // ∂‖d‖_q / ∂d_k = sign(d_k) |d_k|^{q-1} / ‖d‖_q^{q-1}
                let norm = self.eval(x, y);
                if norm == T::zero() {
                    return;
                }
                let qm1 = T::of(q - 1.0);
                let c = scale / norm.powf(qm1);
                for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
                    let d = a - b;
                    if d != T::zero() {
                        *o += c * d.signum() * d.abs().powf(qm1);
                    }
                }
            }
        }
    }
}

#[inline]
fn sq_dist<T: Real>(x: &[T], y: &[T]) -> T {
    x.iter().zip(y).fold(T::zero(), |acc, (&a, &b)| {
        let d = a - b;
        acc + d * d
    })
}

fn same_dim<T: Real>(x: &Batch<T>, y: &Batch<T>) -> Result<()> {
    if x.rows() != y.rows() {
        return Err(Error::ShapeMismatch {
            arg: "y",
            expected: format!("{} x _ (one point per column)", x.rows()),
            found: format!("{} x {}", y.rows(), y.cols()),
        });
    }
    Ok(())
}

/// The cost matrix `C_ij = C(x_i, y_j)` between the columns of `x` (`dim × n`) and of `y`
/// (`dim × m`), as an `n × m` [`Batch`] (column-major).
///
/// ```
/// use wassdl::{Batch, pointcloud::{cost_matrix, Cost}};
/// let x = Batch::from_vec(1, 2, vec![0.0, 1.0]);
/// let y = Batch::from_vec(1, 1, vec![3.0]);
/// let c = cost_matrix(&x, &y, Cost::SqEuclidean).unwrap();
/// assert_eq!(c.as_slice(), &[9.0, 4.0]);
/// ```
pub fn cost_matrix<T: Real>(x: &Batch<T>, y: &Batch<T>, cost: Cost) -> Result<Batch<T>> {
    same_dim(x, y)?;
    cost.validate()?;
    Ok(Batch::from_fn(x.cols(), y.cols(), |i, j| {
        cost.eval(x.col(i), y.col(j))
    }))
}

/// The same matrix in row-major order (`out[i * m + j] = C(x_i, y_j)`), the layout of
/// [`crate::emd::emd`] and of the row-wise softmins of the Sinkhorn divergence.
pub(crate) fn cost_matrix_row_major<T: Real>(x: &Batch<T>, y: &Batch<T>, cost: Cost) -> Vec<T> {
    let (n, m) = (x.cols(), y.cols());
    let mut out = Vec::with_capacity(n * m);
    for i in 0..n {
        let xi = x.col(i);
        out.extend((0..m).map(|j| cost.eval(xi, y.col(j))));
    }
    out
}

/// Records the cost matrix between the points `x` (`dim × n`) and `y` (`dim × m`) on the
/// tape, as compositions of existing tape operations, so that the gradient of any scalar
/// built on it flows back to the positions.
///
/// The result is a `1 × (n·m)` node holding the `n × m` matrix in column-major order:
/// entry `i + j·n` is `C(x_i, y_j)` (the order of [`Batch::as_slice`] for an `n × m`
/// batch, so a plan `P` stored as an `n × m` [`Batch`] pairs with it by
/// `Batch::from_vec(1, n * m, P.into_vec())`).
///
/// The differences `x_i − y_j` are formed as a `dim × (n·m)` node (memory `dim·n·m`).
/// Gradients at coincident points: `SqEuclidean` and `Power { p: 2 }` are smooth; for
/// `Power { p < 2 }` and `Minkowski` the recorded `powf` has an infinite derivative at
/// `x_i = y_j`, so keep such pairs apart (or use the closed-form gradients of
/// [`Cost::grad_x_into`], which take the subgradient `0` there).
///
/// ```
/// use wassdl::{Batch, Ops, tape::Tape, pointcloud::{cost_matrix_on_tape, Cost}};
/// let mut t = Tape::<f64>::new();
/// let x = t.var(Batch::from_vec(1, 2, vec![0.0, 1.0]));
/// let y = t.constant(Batch::from_vec(1, 1, vec![3.0]));
/// let c = cost_matrix_on_tape(&mut t, &x, &y, Cost::SqEuclidean).unwrap();
/// let s = t.sum(&c); // (0-3)² + (1-3)²
/// let g = t.backward(s).wrt(x);
/// assert_eq!(g.as_slice(), &[-6.0, -4.0]);
/// ```
pub fn cost_matrix_on_tape<T: Real>(
    tape: &mut Tape<'_, T>,
    x: &Var,
    y: &Var,
    cost: Cost,
) -> Result<Var> {
    cost.validate()?;
    let (xv, yv) = (tape.value(x), tape.value(y));
    same_dim(xv, yv)?;
    let (n, m) = (xv.cols(), yv.cols());
    // Column i + j·n of the tiled x is x_i, of the repeated y is y_j.
    let xt = tape.tile(x, m);
    let yr = tape.repeat(y, n);
    let d = tape.sub(&xt, &yr);
    Ok(match cost {
        Cost::SqEuclidean => {
            let d2 = tape.mul(&d, &d);
            tape.col_sums(&d2)
        }
        Cost::Power { p } => {
            let d2 = tape.mul(&d, &d);
            let s = tape.col_sums(&d2);
            if p == 2.0 {
                tape.scale(&s, T::of(0.5))
            } else {
                let r = tape.powf(&s, T::of(p / 2.0));
                tape.scale(&r, T::of(1.0 / p))
            }
        }
        Cost::Minkowski { q } => {
            let ad = tape.abs(&d);
            let pw = tape.powf(&ad, T::of(q));
            let s = tape.col_sums(&pw);
            tape.powf(&s, T::of(1.0 / q))
        }
    })
}
