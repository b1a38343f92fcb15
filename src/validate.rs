//! Input validation shared by every entry point, so each check exists once.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;

/// Tolerance on `|Σ x - 1|` for inputs that must be probability vectors: a histogram
/// normalized in `f32` and handed over carries up to about `n · ε₃₂` of rounding, so the
/// check allows `√n · 1e-6` (f32 data of 10⁶ bins still passes; a forgotten
/// normalization, off by far more, does not).
pub fn simplex_tol(n: usize) -> f64 {
    1e-6 * (n.max(1) as f64).sqrt()
}

/// `value > 0` and finite.
pub fn positive<T: Real>(arg: &'static str, value: T) -> Result<()> {
    if value.is_finite() && value > T::zero() {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            arg,
            requirement: "finite and > 0",
            value: value.to_f64_(),
        })
    }
}

/// Every entry finite and `>= 0`.
pub fn nonnegative<T: Real>(arg: &'static str, x: &Batch<T>) -> Result<()> {
    if let Some((row, col)) = x.first_non_finite() {
        return Err(Error::NonFinite { arg, row, col });
    }
    if let Some(k) = x.as_slice().iter().position(|&v| v < T::zero()) {
        let rows = x.rows().max(1);
        return Err(Error::Negative {
            arg,
            row: k % rows,
            col: k / rows,
            value: x.as_slice()[k].to_f64_(),
        });
    }
    Ok(())
}

/// Every entry a logarithm of a nonnegative number: no NaN and no `+∞`; `-∞` (the log
/// of a zero) is allowed. For warm-start log scalings and dual potentials, which are
/// `-∞` exactly where a marginal is zero.
pub fn log_values<T: Real>(arg: &'static str, x: &Batch<T>) -> Result<()> {
    let rows = x.rows().max(1);
    match x
        .as_slice()
        .iter()
        .position(|&v| v.is_nan() || v == T::infinity())
    {
        Some(k) => Err(Error::NonFinite {
            arg,
            row: k % rows,
            col: k / rows,
        }),
        None => Ok(()),
    }
}

/// The largest of `xs`, NaN if any is NaN (`f64::max` drops NaN, which would hide a
/// diverged solve from a stopping test); `0` when empty. For error norms, all `>= 0`.
pub fn nan_max(xs: impl IntoIterator<Item = f64>) -> f64 {
    xs.into_iter().fold(0.0, |m, x| {
        if m.is_nan() || x.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    })
}

/// `Σ xs` in f64 with Neumaier's compensation, whatever the precision of `xs`: a mass
/// summed in f32 carries up to `n · ε₃₂` of rounding (0.06 for 10⁶ bins), more than the
/// tolerance of [`simplex_tol`] it is compared with, and masses compared across two
/// precisions must be summed in the same one.
pub fn sum_f64<T: Real>(xs: &[T]) -> f64 {
    let (mut s, mut comp) = (0.0f64, 0.0f64);
    for x in xs.iter().map(|x| x.to_f64_()) {
        let t = s + x;
        comp += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    // An overflowed sum is `∞`, not the NaN that `∞ − ∞` makes of the compensation.
    if s.is_finite() {
        s + comp
    } else {
        s
    }
}

/// Nonnegative, finite, and every column sums to one within [`simplex_tol`] (summed by
/// [`sum_f64`]).
pub fn simplex_columns<T: Real>(arg: &'static str, x: &Batch<T>) -> Result<()> {
    nonnegative(arg, x)?;
    let tol = simplex_tol(x.rows());
    for col in 0..x.cols() {
        let s = sum_f64(x.col(col));
        if s.is_nan() || (s - 1.0).abs() > tol {
            return Err(Error::NotNormalized {
                arg,
                col,
                sum: s,
                tol,
            });
        }
    }
    Ok(())
}

/// `x` has exactly `rows × cols`.
pub fn shape<T: Real>(arg: &'static str, x: &Batch<T>, rows: usize, cols: usize) -> Result<()> {
    if x.rows() != rows || x.cols() != cols {
        return Err(Error::ShapeMismatch {
            arg,
            expected: format!("{rows} x {cols}"),
            found: format!("{} x {}", x.rows(), x.cols()),
        });
    }
    Ok(())
}

/// `x.rows() == rows` (any number of columns, at least one).
pub fn rows<T: Real>(arg: &'static str, x: &Batch<T>, rows: usize) -> Result<()> {
    if x.rows() != rows || x.cols() == 0 {
        return Err(Error::ShapeMismatch {
            arg,
            expected: format!("{rows} x (>= 1)"),
            found: format!("{} x {}", x.rows(), x.cols()),
        });
    }
    Ok(())
}
