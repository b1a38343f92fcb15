//! The scalar trait: everything in wassdl is generic over `f32` and `f64`.

use faer::traits::RealField;
use num_traits::Float;
use std::fmt::{Debug, Display};

/// A floating-point scalar usable by every solver: `f32` or `f64`.
///
/// Combines faer's [`RealField`] (needed by its GEMM) with [`num_traits::Float`]
/// (elementwise math), and adds the slice-level exponentials that the log-domain
/// kernels spend their time in, so each precision can dispatch to its vectorized
/// implementation (`src/vexp.rs`).
pub trait Real:
    RealField
    + Float
    + Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + std::iter::Sum
    + 'static
{
    /// Converts an `f64` constant (rounding for `f32`).
    fn of(x: f64) -> Self;
    /// Widens to `f64` (exact).
    fn to_f64_(self) -> f64;
    /// Name of the type, for messages and serialized models.
    const NAME: &'static str;
    /// `x[i] = exp(x[i])`, vectorized.
    fn exp_slice(x: &mut [Self]);
    /// `out[i] = ln(x[i])`, vectorized, within 1 ulp (`ln(0) = -∞`, `ln(x < 0) = NaN`).
    fn ln_slice(x: &[Self], out: &mut [Self]);
    /// `sum_i exp(x[i] - shift)`, vectorized.
    fn sum_exp_shift(x: &[Self], shift: Self) -> Self;
    /// `sum_i w[i] exp(x[i] - shift)`, vectorized.
    fn dot_exp_shift(w: &[Self], x: &[Self], shift: Self) -> Self;
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64_(self) -> f64 {
        self
    }
    const NAME: &'static str = "f64";
    fn exp_slice(x: &mut [Self]) {
        crate::vexp::exp_inplace_f64(x)
    }
    fn ln_slice(x: &[Self], out: &mut [Self]) {
        crate::vexp::ln_f64(x, out)
    }
    fn sum_exp_shift(x: &[Self], shift: Self) -> Self {
        crate::vexp::sum_exp_shift_f64(x, shift)
    }
    fn dot_exp_shift(w: &[Self], x: &[Self], shift: Self) -> Self {
        crate::vexp::dot_exp_shift_f64(w, x, shift)
    }
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64_(self) -> f64 {
        self as f64
    }
    const NAME: &'static str = "f32";
    fn exp_slice(x: &mut [Self]) {
        crate::vexp::exp_inplace_f32(x)
    }
    fn ln_slice(x: &[Self], out: &mut [Self]) {
        // In `f64` and rounded (`ln_lane`): within 1 ulp of the rounded `f64` logarithm.
        assert_eq!(x.len(), out.len(), "ln_slice: x and out lengths differ");
        crate::kernel::lse::vectorized(
            #[inline(always)]
            || {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = crate::kernel::lse::ln_lane(v);
                }
            },
        )
    }
    fn sum_exp_shift(x: &[Self], shift: Self) -> Self {
        crate::vexp::sum_exp_shift_f32(x, shift)
    }
    fn dot_exp_shift(w: &[Self], x: &[Self], shift: Self) -> Self {
        crate::vexp::dot_exp_shift_f32(w, x, shift)
    }
}

/// `Σ x` accumulated in `f64` and rounded once to `T`.
///
/// Every reduction of the objective goes through it. In `f64` it is the plain
/// left-to-right sum (bitwise). In `f32` a naive running sum of the `N·M ≈ 8.5·10⁵`
/// squared residuals of a cardiac-size fit drifts by about `√(NM)·2⁻²⁴ ≈ 5·10⁻⁵` of the
/// loss. That is the size of one late L-BFGS decrease, so the line searches cannot tell
/// a step from the noise. Widened, the sum carries one rounding (`2⁻²⁴`) whatever `N`.
/// The same holds for the masses the softmax (eq. 13) divides by.
#[inline]
pub(crate) fn wide_sum<T: Real>(it: impl IntoIterator<Item = T>) -> T {
    T::of(it.into_iter().fold(0.0, |a, b| a + b.to_f64_()))
}
