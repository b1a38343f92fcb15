//! Finite-difference gradient checking for any scalar function of a vector.
//!
//! [`check_gradient`] compares an analytic gradient with central differences
//! `(f(x + h eᵢ) − f(x − h eᵢ)) / 2h`, coordinate by coordinate, and reports the
//! relative and absolute errors ([`FdReport`]).
//!
//! Everything here is `f64` on purpose: a central difference has a truncation error of
//! order `h² |f'''|` and a round-off error of order `ε |f| / h`, minimized at
//! `h ≈ ε^{1/3}`, where both are about `ε^{2/3}`. In `f32` (`ε ≈ 1.2e-7`) the best
//! achievable agreement is then about `2e-5` relative *at best*, and typically much
//! worse once `f` is a long Sinkhorn loop, so a finite-difference check in `f32` cannot
//! tell a correct gradient from a slightly wrong one. Check in `f64` (`ε^{2/3} ≈ 4e-11`)
//! and cast the `f32` results if needed.
//!
//! ```
//! use wassdl::gradcheck::{check_gradient, FdStep};
//! let f = |x: &[f64]| x[0] * x[0] + 3.0 * x[1].sin();
//! let x = [1.5, 0.3];
//! let grad = [3.0, 3.0 * 0.3f64.cos()];
//! let rep = check_gradient(f, &x, &grad, FdStep::Absolute(1e-5), None);
//! assert!(rep.max_rel_err < 1e-8, "{rep}");
//! ```

use std::fmt;

/// Denominator floor used by [`check_gradient`]: the relative error of coordinate `i` is
/// `|aᵢ − nᵢ| / max(|aᵢ|, |nᵢ|, DEFAULT_REL_FLOOR)`.
///
/// Why `1e-10`: with `|f| ≈ 1` and a step `h ≈ 1e-6`, the round-off noise of a central
/// difference is about `ε |f| / h ≈ 1e-10`; a gradient component smaller than that is
/// indistinguishable from zero by finite differences, so it should be judged by its
/// absolute error rather than blow up the relative one. Use
/// [`check_gradient_with_floor`] when `f` has another scale.
pub const DEFAULT_REL_FLOOR: f64 = 1e-10;

/// Smallest magnitude used to scale a [`FdStep::Relative`] step, so a coordinate at
/// exactly zero still gets a nonzero (if tiny) step. For coordinates at or near zero,
/// prefer [`FdStep::Absolute`].
pub const RELATIVE_STEP_TINY: f64 = f64::MIN_POSITIVE;

/// How the finite-difference step of each coordinate is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FdStep {
    /// The same step `h` for every coordinate.
    Absolute(f64),
    /// Step `h · max(|xᵢ|, RELATIVE_STEP_TINY)`: right for coordinates spanning many
    /// orders of magnitude (e.g. histogram entries from `1e-20` to `1e-1`).
    Relative(f64),
}

impl FdStep {
    /// The step for a coordinate of value `xi`.
    pub fn step(&self, xi: f64) -> f64 {
        match *self {
            FdStep::Absolute(h) => h,
            FdStep::Relative(h) => h * xi.abs().max(RELATIVE_STEP_TINY),
        }
    }
}

/// The finite-difference formula.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stencil {
    /// `(f(x + h) − f(x − h)) / 2h`: truncation error `h² |f⁽³⁾| / 6`.
    #[default]
    Central,
    /// The five-point stencil `(8 (f(x + h) − f(x − h)) − (f(x + 2h) − f(x − 2h))) / 12h`
    /// (the Richardson extrapolation of two central differences): truncation error
    /// `h⁴ |f⁽⁵⁾| / 30`, round-off `1.5 ε |f| / h`, twice the evaluations. For functions
    /// whose higher derivatives are large near the point (a cost `|x − y|^p`, p < 2, near
    /// `x = y`), where a central difference's truncation dominates.
    FivePoint,
}

/// One checked coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FdEntry {
    /// Index of the coordinate in `x`.
    pub index: usize,
    /// The analytic gradient component.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
    /// `|analytic − numeric| / max(|analytic|, |numeric|, floor)`.
    pub rel_err: f64,
}

impl FdEntry {
    /// `|analytic − numeric|`.
    pub fn abs_err(&self) -> f64 {
        (self.analytic - self.numeric).abs()
    }
}

/// Result of [`check_gradient`].
#[derive(Clone, Debug, PartialEq)]
pub struct FdReport {
    /// Largest relative error over the checked coordinates (NaN-aware: a NaN on either
    /// side counts as `+∞`).
    pub max_rel_err: f64,
    /// Largest absolute error over the checked coordinates.
    pub max_abs_err: f64,
    /// Index (into `x`) of the coordinate with the largest relative error.
    pub worst_index: usize,
    /// Every checked coordinate, in the order checked.
    pub per_coord: Vec<FdEntry>,
}

impl FdReport {
    /// One line: number of coordinates, worst relative and absolute errors, and the
    /// worst coordinate's analytic and numeric values.
    pub fn summary(&self) -> String {
        let worst = self
            .per_coord
            .iter()
            .find(|e| e.index == self.worst_index)
            .copied();
        match worst {
            Some(w) => format!(
                "{} coords: max rel err {:.3e}, max abs err {:.3e}; worst at index {}: analytic {:.12e} vs numeric {:.12e}",
                self.per_coord.len(),
                self.max_rel_err,
                self.max_abs_err,
                w.index,
                w.analytic,
                w.numeric
            ),
            None => "0 coords checked".to_string(),
        }
    }

    /// The `k` entries with the largest relative errors, worst first.
    pub fn worst(&self, k: usize) -> Vec<FdEntry> {
        let mut v = self.per_coord.clone();
        v.sort_by(|a, b| nan_big(b.rel_err).total_cmp(&nan_big(a.rel_err)));
        v.truncate(k);
        v
    }
}

impl fmt::Display for FdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for e in self.worst(5) {
            writeln!(
                f,
                "  [{:>5}] analytic {:+.12e}  numeric {:+.12e}  rel {:.2e}  abs {:.2e}",
                e.index,
                e.analytic,
                e.numeric,
                e.rel_err,
                e.abs_err()
            )?;
        }
        Ok(())
    }
}

fn nan_big(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

/// Central-difference gradient of `f` at `x` for the coordinates `coords` (all of them
/// when `None`), in the order given; the result has one entry per checked coordinate.
/// [`numeric_gradient_with`] with [`Stencil::Central`].
pub fn numeric_gradient(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    step: FdStep,
    coords: Option<&[usize]>,
) -> Vec<f64> {
    numeric_gradient_with(f, x, step, Stencil::Central, coords)
}

/// Finite-difference gradient of `f` at `x` with `stencil`, for the coordinates `coords`
/// (all of them when `None`), in the order given.
///
/// Each step is rounded so that `xᵢ ± h` are exactly representable offsets (the
/// difference actually taken, `(xᵢ + h) − (xᵢ − h)`, is used as the denominator), which
/// removes the representation error of the step from the estimate.
pub fn numeric_gradient_with(
    mut f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    step: FdStep,
    stencil: Stencil,
    coords: Option<&[usize]>,
) -> Vec<f64> {
    let all: Vec<usize>;
    let idx = match coords {
        Some(c) => c,
        None => {
            all = (0..x.len()).collect();
            &all
        }
    };
    let mut xp = x.to_vec();
    let mut central = |i: usize, h: f64| {
        let (hi, lo) = (x[i] + h, x[i] - h);
        xp[i] = hi;
        let fp = f(&xp);
        xp[i] = lo;
        let fm = f(&xp);
        xp[i] = x[i];
        (fp - fm) / (hi - lo)
    };
    idx.iter()
        .map(|&i| {
            let h = step.step(x[i]);
            match stencil {
                Stencil::Central => central(i, h),
                // D(h) + (D(h) − D(2h)) / 3 cancels the h² term of the central difference
                Stencil::FivePoint => {
                    let (d1, d2) = (central(i, h), central(i, 2.0 * h));
                    d1 + (d1 - d2) / 3.0
                }
            }
        })
        .collect()
}

/// Compares `analytic` (the gradient of `f` at `x`, same length as `x`) with central
/// differences on `coords` (all coordinates when `None`), with the relative-error floor
/// [`DEFAULT_REL_FLOOR`]. See [`check_gradient_with_floor`].
pub fn check_gradient(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    step: FdStep,
    coords: Option<&[usize]>,
) -> FdReport {
    check_gradient_with_floor(f, x, analytic, step, coords, DEFAULT_REL_FLOOR)
}

/// The denominator floor for [`check_gradient_with_floor`] that matches the
/// finite-difference noise: when each evaluation of `f` is off by at most `eval_err`
/// (absolute), a central difference with step `h` carries up to `eval_err / h` of noise, so
/// a component is judged relatively (at `rel_tol`) only where that noise is below
/// `rel_tol` of it, and by its absolute error (at most `eval_err / h`) below. Returns
/// `eval_err / (h · rel_tol)`.
///
/// `eval_err` is a property of `f`: a few `ε |f(x)|` for a straight computation, times the
/// error growth of a loop; the stopping tolerance for an iterative solver run to
/// convergence. Measure it rather than guess (the crate's own tests use `10 ε |f(x)|` for
/// fixed-L Sinkhorn losses after measuring at most `2 ε |f(x)|`).
///
/// ```
/// use wassdl::gradcheck::{check_gradient_with_floor, noise_floor, FdStep};
/// let f = |x: &[f64]| x[0] * x[0] + 1e-6 * x[1];
/// let x = [1.5, 0.3];
/// let h = 1e-6;
/// let floor = noise_floor(10.0 * f64::EPSILON * f(&x).abs(), h, 1e-6);
/// let rep = check_gradient_with_floor(f, &x, &[3.0, 1e-6], FdStep::Absolute(h), None, floor);
/// assert!(rep.max_rel_err < 1e-6, "{rep}");
/// ```
pub fn noise_floor(eval_err: f64, h: f64, rel_tol: f64) -> f64 {
    eval_err / (h * rel_tol)
}

/// [`check_gradient`] with an explicit denominator floor: the relative error of
/// coordinate `i` is `|aᵢ − nᵢ| / max(|aᵢ|, |nᵢ|, floor)`. [`noise_floor`] gives the floor
/// that matches the finite-difference noise of `f`; `floor = 0` gives the pure relative
/// error (`0/0` counts as 0).
///
/// Panics if `analytic.len() != x.len()`, a coordinate is out of range or `floor` is
/// negative or not finite (programming errors in a test).
pub fn check_gradient_with_floor(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    step: FdStep,
    coords: Option<&[usize]>,
    floor: f64,
) -> FdReport {
    check_gradient_with(f, x, analytic, step, Stencil::Central, coords, floor)
}

/// [`check_gradient_with_floor`] with a choice of finite-difference [`Stencil`].
pub fn check_gradient_with(
    f: impl FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    step: FdStep,
    stencil: Stencil,
    coords: Option<&[usize]>,
    floor: f64,
) -> FdReport {
    assert_eq!(
        analytic.len(),
        x.len(),
        "check_gradient: analytic gradient and x differ in length"
    );
    assert!(
        floor.is_finite() && floor >= 0.0,
        "check_gradient: floor must be finite and >= 0, got {floor}"
    );
    let all: Vec<usize>;
    let idx = match coords {
        Some(c) => c,
        None => {
            all = (0..x.len()).collect();
            &all
        }
    };
    let numeric = numeric_gradient_with(f, x, step, stencil, Some(idx));
    let mut per_coord = Vec::with_capacity(idx.len());
    let (mut max_rel, mut max_abs, mut worst) = (0.0f64, 0.0f64, idx.first().copied().unwrap_or(0));
    for (&i, &n) in idx.iter().zip(&numeric) {
        let a = analytic[i];
        let abs = (a - n).abs();
        let den = a.abs().max(n.abs()).max(floor);
        let rel = if abs == 0.0 {
            0.0
        } else if a.is_nan() || n.is_nan() {
            f64::NAN
        } else {
            abs / den
        };
        if nan_big(rel) > max_rel || (per_coord.is_empty() && rel.is_nan()) {
            max_rel = nan_big(rel);
            worst = i;
        }
        max_abs = max_abs.max(nan_big(abs));
        per_coord.push(FdEntry {
            index: i,
            analytic: a,
            numeric: n,
            rel_err: rel,
        });
    }
    FdReport {
        max_rel_err: max_rel,
        max_abs_err: max_abs,
        worst_index: worst,
        per_coord,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_wrong_component() {
        let f = |x: &[f64]| x[0].exp() * x[1] + x[2].powi(3);
        let x: [f64; 3] = [0.3, -1.2, 2.0];
        let good = [x[0].exp() * x[1], x[0].exp(), 3.0 * x[2] * x[2]];
        let rep = check_gradient(f, &x, &good, FdStep::Relative(1e-5), None);
        // central differences with h ≈ 1e-5 |x|: truncation ≈ h² ≈ 1e-10 relative
        assert!(rep.max_rel_err < 1e-8, "{rep}");
        let mut bad = good;
        bad[2] *= 1.001;
        let rep = check_gradient(f, &x, &bad, FdStep::Relative(1e-5), None);
        assert_eq!(rep.worst_index, 2);
        assert!((rep.max_rel_err - 1e-3).abs() < 1e-5, "{rep}");
        let sub = check_gradient(f, &x, &bad, FdStep::Relative(1e-5), Some(&[0, 1]));
        assert_eq!(sub.per_coord.len(), 2);
        assert!(sub.max_rel_err < 1e-8);
        assert!(format!("{rep}").contains("index 2"));
    }

    #[test]
    fn five_point_cancels_the_h2_term() {
        // f = |x|^1.5 near 0.01: f''' is large, so the h² truncation dominates
        let f = |x: &[f64]| x[0].abs().powf(1.5);
        let x = [0.01];
        let exact = 1.5 * 0.01f64.sqrt();
        let h = FdStep::Absolute(1e-4);
        let c = numeric_gradient_with(f, &x, h, Stencil::Central, None)[0];
        let p = numeric_gradient_with(f, &x, h, Stencil::FivePoint, None)[0];
        // central: h² |f'''| / 6 = 1e-8 · 0.375 · 0.01^-1.5 / 6 ≈ 6e-8, relative 4e-7;
        // five-point: h⁴ |f⁽⁵⁾| / 30 ≈ 1e-16 · 1.4 · 0.01^-3.5 / 30 ≈ 5e-11, plus round-off
        // 1.5 ε f / h ≈ 3e-15
        assert!(((c - exact) / exact).abs() > 1e-7);
        assert!(((p - exact) / exact).abs() < 1e-9, "{p} vs {exact}");
    }
}
