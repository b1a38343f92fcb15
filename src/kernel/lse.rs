//! Max-shifted logsumexp primitives shared by the dense and grid kernels.

use crate::real::Real;

/// `log Σ_j exp(t_j)` with the max shift; `-∞` when every term is `-∞`.
#[inline]
pub(crate) fn lse<T: Real>(t: &[T]) -> T {
    let m = t.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    if m == T::neg_infinity() {
        return m;
    }
    if m == T::infinity() {
        return m;
    }
    m + T::sum_exp_shift(t, m).ln()
}

/// Signed logsumexp: `Σ_j s_j exp(t_j) = sign · exp(result)`; returns `(result, sign)`.
#[inline]
pub(crate) fn lse_signed<T: Real>(t: &[T], s: &[T]) -> (T, T) {
    let m = t.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    if m == T::neg_infinity() || !m.is_finite() {
        return (m, T::zero());
    }
    let sum = T::dot_exp_shift(s, t, m);
    if sum == T::zero() {
        (T::neg_infinity(), T::zero())
    } else {
        (m + sum.abs().ln(), sum.signum())
    }
}
