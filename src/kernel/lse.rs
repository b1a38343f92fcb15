//! Primitives shared by the kernels: max-shifted logsumexp, a vectorized logarithm and
//! the AVX2 wrapper for plain loops.

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

/// Weighted logsumexp `log Σ_j w_j exp(t_j)` for weights `w_j ≥ 0`: the signed one with
/// the weights as signs, so a zero weight drops its term whatever its `t_j` (`t` is
/// scratch, as there). `-∞` when every weight is zero or every term `-∞`.
#[inline]
pub(crate) fn lse_weighted<T: Real>(t: &mut [T], w: &[T]) -> T {
    lse_signed(t, w).0
}

/// Signed logsumexp: `Σ_j s_j exp(t_j) = sign · exp(result)`; returns `(result, sign)`.
///
/// A term of sign 0 is zero whatever its `t_j` (the contract of
/// [`crate::kernel::Kernel::apply_log_signed`]), so it must not set the shift: shifting by
/// the max over *all* terms would make every signed term underflow to 0 as soon as a
/// sign-0 entry has a large `t_j`, and `0 · exp(t_j − m)` could be `0 · ∞ = NaN`. `t` is
/// scratch: its sign-0 entries are overwritten with `-∞` (the canonical zero), so that
/// the max and the vectorized shifted sum both skip them.
#[inline]
pub(crate) fn lse_signed<T: Real>(t: &mut [T], s: &[T]) -> (T, T) {
    debug_assert_eq!(t.len(), s.len());
    for (tj, &sj) in t.iter_mut().zip(s) {
        if sj == T::zero() {
            *tj = T::neg_infinity();
        }
    }
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

/// Runs `f` inside a function compiled for AVX2 and FMA when the CPU has both, else as is.
///
/// The crate is built for baseline x86-64 (SSE2), where LLVM vectorizes a plain loop two
/// `f64` wide. Inlined into this wrapper the same loops get 256-bit vectors. The speedup
/// exists only for code LLVM inlines into the wrapper, so `f` must be an
/// `#[inline(always)]` closure around `#[inline(always)]` functions. Nothing in `f` may
/// depend on the path taken (no `mul_add`, which is a library call outside the wrapper):
/// both paths then compute identical results.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the wrapper's only precondition is CPU support for AVX2 and FMA,
            // detected just above.
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `out[i] = m[i] + ln(s[i])`, or `-∞` where `m[i] = -∞`: the last step of a max-shifted
/// logsumexp, vectorized.
pub(crate) fn shift_ln<T: Real>(m: &[T], s: &[T], out: &mut [T]) {
    vectorized(
        #[inline(always)]
        || {
            for ((o, &mi), &si) in out.iter_mut().zip(m).zip(s) {
                let l = mi + ln_lane(si);
                *o = if mi == T::neg_infinity() { mi } else { l };
            }
        },
    )
}

/// Natural logarithm of one value, branch-free so that loops over it vectorize.
///
/// fdlibm's `__ieee754_log` (Sun Microsystems, 1993; freely redistributable), evaluated in
/// `f64` for both precisions: `x = 2^k (1 + f)` with `1 + f ∈ [√2/2, √2)`,
/// `s = f / (2 + f)`, `ln(1 + f) = f − s (f − R(s²))` written as fdlibm does with the
/// minimax `R` of degree 14 (error below 2⁻⁵⁸·⁴⁵), and `k ln 2` split in two parts. Error
/// below 1 ulp in `f64`; `f32` results are the rounding of that. Subnormal inputs are
/// scaled by 2⁵⁴ first; `ln(0) = -∞`, `ln(x < 0) = NaN`, `ln(∞) = ∞`, NaN propagates.
#[inline(always)]
pub(crate) fn ln_lane<T: Real>(x: T) -> T {
    // fdlibm's constants, one copy for both logarithms of the crate.
    use crate::vexp::{LN2_HI, LN2_LO, LN_LG as LG};
    let xd = x.to_f64_();
    let sub = xd < f64::MIN_POSITIVE;
    let xs = if sub {
        xd * 18_014_398_509_481_984.0
    } else {
        xd
    }; // 2^54
    let bits = xs.to_bits();
    // Shift the exponent so that the mantissa lands in [√2/2, √2) (0x3fe6a09e = √2/2).
    let hx = ((bits >> 32) as u32).wrapping_add(0x3ff0_0000 - 0x3fe6_a09e);
    let k = (hx >> 20) as i32 - 0x3ff - if sub { 54 } else { 0 };
    let hm = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    let m = f64::from_bits(((hm as u64) << 32) | (bits & 0xffff_ffff));
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let r = t2 + t1;
    let kf = k as f64;
    let y = kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f);
    // Special values (x ≤ 0, ∞, NaN) by selects, so the loop stays branch-free.
    let y = if xd == 0.0 { f64::NEG_INFINITY } else { y };
    let y = if xd < 0.0 || xd.is_nan() { f64::NAN } else { y };
    let y = if xd == f64::INFINITY { xd } else { y };
    T::of(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vexp::tests::{ln_sweep, ulp32, ulp64};

    /// Within 1 ulp of `f64::ln` (both are within 1 ulp of the exact value, so they may
    /// differ by one rounding) over a log-uniform sweep of the whole range, subnormals
    /// and special values included; f32 within 1 ulp of the rounded f64 logarithm.
    #[test]
    fn ln_matches_std() {
        let xs = ln_sweep(200_000, 10_000);
        let worst = xs.iter().map(|&x| ulp64(x.ln(), ln_lane(x))).max().unwrap();
        assert!(worst <= 1, "f64 ln: {worst} ulp");
        let xs32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        for x in &xs32 {
            let (r, l) = (((*x as f64).ln()) as f32, ln_lane(*x));
            assert!(ulp32(r, l) <= 1, "f32 ln({x}) = {l}, expected {r}");
        }
    }
}
