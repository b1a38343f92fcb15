//! Fast vectorized `exp` for `f64` and `f32` slices, with runtime CPU-feature dispatch.
//!
//! These routines are the inner loops of log-domain Sinkhorn iterations (max-shifted
//! log-sum-exp over rows or columns of a kernel matrix): the exponential of every element of
//! a slice, optionally shifted, optionally summed or weighted.
//!
//! # Semantics
//!
//! * `exp(-inf) = +0` exactly, `exp(+inf) = +inf`, NaN propagates (as a NaN).
//! * `f64`: inputs below about `-745.1332` give `+0`, inputs above about `709.7827` give
//!   `+inf`. `f32`: the thresholds are about `-103.9721` and `88.7228`.
//! * Results in the subnormal range are computed with gradual underflow (one rounding from
//!   the polynomial value); they are **not** flushed to zero. (On AMD Zen 4, vectors that
//!   contain subnormal results run about 2-3x slower, like every other FP code there.)
//! * Per-element results do not depend on the slice length, the position of the element or
//!   the alignment: bulk and tail evaluate the same sequence of IEEE operations. They can
//!   differ in the last bit between the AVX2+FMA path and the portable path (fused versus
//!   unfused multiply-adds on x86 CPUs without FMA).
//!
//! # Accuracy
//!
//! Measured on the AVX2+FMA path: for `f64`, at most 1 ulp away from `f64::exp` on a dense
//! sweep of `[-745, 709]` (2^25 points), 2.5e7 random points and the overflow/underflow edges;
//! the largest error against a double-double reference is 1.07 ulp. For `f32`, at most 1 ulp
//! away from `(x as f64).exp() as f32` for *every* `f32` in `[-104, 89]`; largest error
//! against the `f64` reference 1.02 ulp. The unfused portable path (x86 without FMA) also
//! stayed within 1 ulp on 2e7-point sweeps; the unit tests below assert 2 ulp.
//!
//! # Speed
//!
//! On the development machine (AMD EPYC Zen 4 VM, AVX2+FMA path), compared with a loop
//! of `f64::exp` / `f32::exp` at about 200 / 350 M/s: about 0.8-0.9 G exps/s for `f64` and
//! 2.2-2.5 G exps/s for `f32`, i.e. 4x and 6-8x. The portable SSE2 path runs at about
//! 320 M/s (`f64`) and 900 M/s (`f32`).
//!
//! # Algorithm
//!
//! For every element `x`:
//!
//! 1. `x` is clamped to `[-745.2, 710]` (`f64`) or `[-104, 89]` (`f32`); this keeps the
//!    integer arithmetic below in range and NaN passes through the clamp. Inputs below the
//!    lower bound have their result forced to `+0` by zeroing a scale factor (see 4).
//! 2. Cody–Waite range reduction `x = k ln2 + r`, `k = round(x / ln2)` (via the 1.5·2^52
//!    shifter trick), `|r| <= ln2/2` up to rounding, with `ln2` split into a short high part
//!    (so that `k * ln2_hi` and `x - k * ln2_hi` are exact) and a low correction.
//! 3. `exp(r) - 1 ~= r + r^2 P(r)` where `P` is a minimax polynomial (Remez exchange with
//!    relative-error weight, coefficients rounded to the working precision) of degree 9 for
//!    `f64` (relative approximation error 1.1e-17) and degree 4 for `f32` (3.8e-9),
//!    evaluated with fused multiply-adds in Estrin's scheme (short dependency chains).
//! 4. Scaling by `2^k` uses two factors `2^k1 * 2^k2`, `k1 = floor(k/2)`, `k2 = k - k1`, built
//!    from exponent bits; both are normal numbers over the whole clamped range. The first
//!    scaling is folded into the final multiply-add, `(1 + em1) * 2^k1 = fma(em1, 2^k1,
//!    2^k1)`, which is exact scaling plus one rounding; the multiplication by `2^k2` only
//!    rounds again if the result is subnormal, and overflows to `+inf` when it should. For
//!    inputs below the lower bound `2^k2` is replaced by `0`, which gives an exact `+0`
//!    without an (on some CPUs very slow) underflowing multiplication.
//!
//! # Dispatch
//!
//! The hot loops are plain Rust loops over contiguous data, processing `L` elements per step
//! (8 `f64` or 16 `f32`, i.e. two AVX2 registers) so that LLVM vectorizes them. On
//! `x86`/`x86_64` they are compiled twice: into functions carrying
//! `#[target_feature(enable = "avx2,fma")]`, selected at run time when the CPU supports both
//! features (the detection is cached in a [`std::sync::OnceLock`]), and for the baseline
//! target. On other architectures only the baseline version exists (it uses fused
//! multiply-adds when the target has them, e.g. on `aarch64`).
//!
//! # Sums
//!
//! The summing functions accumulate in `L` per-lane partial sums of the element type over
//! blocks of `64 * L` elements (512 for `f64`, 1024 for `f32`) and add the block sums in
//! `f64`, which keeps the `f32` sums accurate for long slices at negligible cost. Elements
//! after the last multiple of `L` are summed in order. The order of all additions is fixed
//! by the length, so results are deterministic, and [`exp_shift_sum_f64`] and
//! [`sum_exp_shift_f64`] (likewise for `f32`) return bit-identical sums.

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
use std::sync::OnceLock;

// -------------------------------------------------------------------------------------------
// Constants
// -------------------------------------------------------------------------------------------

/// Elements per step for `f64` (two AVX2 registers).
const L64: usize = 8;
/// Elements per step for `f32` (two AVX2 registers).
const L32: usize = 16;
/// Steps per summation block.
const BLOCK: usize = 64;

mod c64 {
    //! Constants of the `f64` kernel.
    /// exp(x) rounds to +0 for x < -745.1332; below LO the result is set to +0 directly.
    pub const LO: f64 = -745.2;
    /// Clamp bound: exp(710) overflows to +inf.
    pub const HI: f64 = 710.0;
    /// 1/ln2.
    pub const LOG2E: f64 = std::f64::consts::LOG2_E;
    /// 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
    pub const SHIFTER: f64 = 6755399441055744.0;
    /// ln2 = LN2_HI + LN2_LO (+ 1.2e-26); LN2_HI has 32 significant bits, so k * LN2_HI is
    /// exact for |k| < 2^21 (here |k| <= 1076).
    pub const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
    /// Low part of ln2.
    pub const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    /// exp(r) ~= 1 + r + r^2 * (P0 + P1 r + ... + P9 r^9) on |r| <= ln2/2 (Remez, relative).
    pub const P: [f64; 10] = [
        0.5000000000000011,
        0.16666666666666413,
        0.041666666666530155,
        0.008333333333494461,
        0.0013888888943630114,
        0.00019841269506578688,
        2.480149309890655e-05,
        2.7557586373840165e-06,
        2.763024837921144e-07,
        2.5000061602835666e-08,
    ];
}

mod c32 {
    //! Constants of the `f32` kernel.
    /// exp(x) rounds to +0 for x < -103.9721; below LO the result is set to +0 directly.
    pub const LO: f32 = -104.0;
    /// Clamp bound: exp(89) overflows to +inf.
    pub const HI: f32 = 89.0;
    /// 1/ln2.
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// 1.5 * 2^23.
    pub const SHIFTER: f32 = 12582912.0;
    /// ln2 = LN2_HI + LN2_LO (+ 5.5e-14); LN2_HI has 15 significant bits, so k * LN2_HI is
    /// exact for |k| < 2^9 (here |k| <= 150).
    pub const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125
    /// Low part of ln2.
    pub const LN2_LO: f32 = 1.428_606_8e-6;
    /// exp(r) ~= 1 + r + r^2 * (P0 + ... + P4 r^4) on |r| <= ln2/2 (Remez, relative).
    pub const P: [f32; 5] = [
        0.499_999_94,
        0.166_665_21,
        0.041_668_39,
        0.008_368_717,
        0.001_381_459_9,
    ];
}

// -------------------------------------------------------------------------------------------
// Multiply-add flavours
// -------------------------------------------------------------------------------------------

/// How `a * b + c` is evaluated inside a kernel instantiation.
trait MulAdd {
    fn f64(a: f64, b: f64, c: f64) -> f64;
    fn f32(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add (single rounding). Only used where the target (or the enclosing
/// `#[target_feature]` function) has hardware FMA; otherwise it would call the slow libm `fma`.
#[allow(dead_code)] // unused on targets where neither the x86 dispatch nor hardware FMA exists
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn f64(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn f32(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Separate multiply and add (two roundings); for targets without hardware FMA.
#[allow(dead_code)] // unused on targets with hardware FMA (e.g. aarch64)
struct Unfused;

impl MulAdd for Unfused {
    #[inline(always)]
    fn f64(a: f64, b: f64, c: f64) -> f64 {
        a * b + c
    }
    #[inline(always)]
    fn f32(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Multiply-add flavour of the portable (non-dispatched) code path.
#[cfg(any(target_feature = "fma", target_arch = "aarch64"))]
type PortableMulAdd = Fused;
/// Multiply-add flavour of the portable (non-dispatched) code path.
#[cfg(not(any(target_feature = "fma", target_arch = "aarch64")))]
type PortableMulAdd = Unfused;

// -------------------------------------------------------------------------------------------
// One element (the code LLVM vectorizes)
// -------------------------------------------------------------------------------------------

/// exp of one `f64`. Branch-free so that it vectorizes.
#[inline(always)]
fn exp_lane_f64<M: MulAdd>(x: f64) -> f64 {
    use c64::*;
    // Inputs below LO (result +0) get their second scale factor set to 0 below, so that
    // their result is an exact +0 without an underflowing multiplication (underflow and
    // subnormal results cost a microcode assist on some CPUs: 2-3x slower on AMD Zen 4).
    let zero = x < LO;
    // Clamp, written so that a NaN `x` falls through both selects unchanged (maxpd/minpd).
    let xc = if LO > x { LO } else { x };
    let xc = if HI < xc { HI } else { xc };
    // k = round(x / ln2), held both as a float and in the low mantissa bits of `t`.
    let t = M::f64(xc, LOG2E, SHIFTER);
    let kf = t - SHIFTER;
    // r = x - k ln2 (the first step is exact).
    let r = M::f64(kf, -LN2_HI, xc);
    let r = M::f64(kf, -LN2_LO, r);
    // exp(r) - 1 = r + r^2 P(r), P evaluated with Estrin's scheme (dependency depth 4).
    let r2 = r * r;
    let r4 = r2 * r2;
    let q01 = M::f64(P[1], r, P[0]);
    let q23 = M::f64(P[3], r, P[2]);
    let q45 = M::f64(P[5], r, P[4]);
    let q67 = M::f64(P[7], r, P[6]);
    let q89 = M::f64(P[9], r, P[8]);
    let q03 = M::f64(q23, r2, q01);
    let q47 = M::f64(q67, r2, q45);
    let q07 = M::f64(q47, r4, q03);
    let p = M::f64(q89, r4 * r4, q07);
    let em1 = M::f64(r2, p, r);
    // 2^k = 2^k1 * 2^k2 with k1 = floor(k/2): both factors are normal for k in [-1076, 1024].
    // (For NaN input the integers are garbage, wrapping is harmless and em1 is NaN.)
    let k = (t.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let k1 = ((k.wrapping_add(2048) as u64) >> 1) as i64 - 1024;
    let k2 = k.wrapping_sub(k1);
    let s1 = f64::from_bits((k1.wrapping_add(1023) as u64) << 52);
    let s2 = f64::from_bits((k2.wrapping_add(1023) as u64) << 52);
    let s2 = if zero { 0.0 } else { s2 };
    // (1 + em1) * 2^k1, rounded once (exact scaling: the product is normal), then * 2^k2,
    // which only rounds again if the result is subnormal (gradual underflow) or overflows.
    M::f64(em1, s1, s1) * s2
}

/// exp of one `f32`. Branch-free so that it vectorizes. Same structure as [`exp_lane_f64`].
#[inline(always)]
fn exp_lane_f32<M: MulAdd>(x: f32) -> f32 {
    use c32::*;
    let zero = x < LO;
    let xc = if LO > x { LO } else { x };
    let xc = if HI < xc { HI } else { xc };
    let t = M::f32(xc, LOG2E, SHIFTER);
    let kf = t - SHIFTER;
    let r = M::f32(kf, -LN2_HI, xc);
    let r = M::f32(kf, -LN2_LO, r);
    let r2 = r * r;
    let q01 = M::f32(P[1], r, P[0]);
    let q23 = M::f32(P[3], r, P[2]);
    let q24 = M::f32(P[4], r2, q23);
    let p = M::f32(q24, r2, q01);
    let em1 = M::f32(r2, p, r);
    // k in [-150, 128]; k1 = floor(k/2), k2 = k - k1 both in [-75, 64]: normal factors.
    let k = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let k1 = k >> 1;
    let k2 = k.wrapping_sub(k1);
    let s1 = f32::from_bits((k1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((k2.wrapping_add(127) as u32) << 23);
    let s2 = if zero { 0.0 } else { s2 };
    M::f32(em1, s1, s1) * s2
}

/// fdlibm's `Lg1..Lg7`, the minimax `R(s²)` of its logarithm, by their bit patterns
/// (exactly as published); shared with [`crate::kernel::lse::ln_lane`].
pub(crate) const LN_LG: [f64; 7] = [
    f64::from_bits(0x3fe5_5555_5555_5593),
    f64::from_bits(0x3fd9_9999_9997_fa04),
    f64::from_bits(0x3fd2_4924_9422_9359),
    f64::from_bits(0x3fcc_71c5_1d8e_78af),
    f64::from_bits(0x3fc7_4664_96cb_03de),
    f64::from_bits(0x3fc3_9a09_d078_c69f),
    f64::from_bits(0x3fc2_f112_df3e_5244),
];

/// `ln 2` in two parts (fdlibm's `ln2_hi`, `ln2_lo`), for [`crate::kernel::lse::ln_lane`].
pub(crate) const LN2_HI: f64 = c64::LN2_HI;
/// See [`LN2_HI`].
pub(crate) const LN2_LO: f64 = c64::LN2_LO;

/// Natural logarithm of one `f64`, branch-free so that it vectorizes: fdlibm's
/// `__ieee754_log` as in [`crate::kernel::lse::ln_lane`] (same reduction, constants and
/// final combination), with two changes that make its AVX2 loop 20-30 % faster (63
/// instructions per four values instead of 72, shorter dependency chains): the exponent
/// arithmetic stays in 64-bit lanes (no packing of the high words to 32 bits and back;
/// integer operations, so the same values), and the minimax `R(s²)` is evaluated with the
/// flavour's multiply-adds. `R` is about `2s²/3` and enters the result multiplied by
/// `s` (`|s| < 0.172`, the result about `2s`), so the few roundings a fused evaluation
/// changes in `R` move the result by far less than one of its ulps: the error stays
/// below 1 ulp (fdlibm's bound), checked against `f64::ln` in the tests. `ln(0) = -∞`, `ln(x < 0) = NaN`, `ln(∞) = ∞`,
/// NaN propagates, subnormal inputs are scaled by 2⁵⁴ first.
#[inline(always)]
fn ln_lane_f64<M: MulAdd>(x: f64) -> f64 {
    use c64::{LN2_HI, LN2_LO};
    const LG: [f64; 7] = LN_LG;
    let sub = x < f64::MIN_POSITIVE;
    let xs = if sub { x * 18_014_398_509_481_984.0 } else { x }; // 2^54
                                                                 // Shift the exponent so that the mantissa lands in [√2/2, √2) (0x3fe6a09e = √2/2).
    let hx = (xs.to_bits() as i64).wrapping_add((0x3ff0_0000 - 0x3fe6_a09e) << 32);
    let k = (hx >> 52) - 0x3ff - if sub { 54 } else { 0 };
    let m = f64::from_bits(((hx & 0x000f_ffff_ffff_ffff) + (0x3fe6_a09e << 32)) as u64);
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * M::f64(M::f64(LG[5], w, LG[3]), w, LG[1]);
    let t2 = z * M::f64(M::f64(M::f64(LG[6], w, LG[4]), w, LG[2]), w, LG[0]);
    let r = t2 + t1;
    let kf = k as f64;
    let y = kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f);
    // Special values (x ≤ 0, ∞, NaN) by selects, so the loop stays branch-free.
    let y = if x == 0.0 { f64::NEG_INFINITY } else { y };
    let y = if x < 0.0 || x.is_nan() { f64::NAN } else { y };
    if x == f64::INFINITY {
        x
    } else {
        y
    }
}

/// `out[i] = ln(x[i])` through [`ln_lane_f64`], one plain loop for the vectorizer.
#[inline(always)]
fn ln_into_f64<M: MulAdd>(x: &[f64], out: &mut [f64]) {
    assert_eq!(x.len(), out.len(), "ln_f64: x and out lengths differ");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ln_lane_f64::<M>(v);
    }
}

// -------------------------------------------------------------------------------------------
// Slice kernels, generic over the element type (via macro) and the multiply-add flavour.
// All are `#[inline(always)]` so that they are compiled into each dispatch entry point with
// that entry point's target features.
// -------------------------------------------------------------------------------------------

macro_rules! kernels {
    ($modname:ident, $t:ty, $lanes:expr, $lane:ident, $fma:ident) => {
        mod $modname {
            use super::{MulAdd, BLOCK};
            /// Elements per step, and number of accumulator lanes.
            const L: usize = $lanes;
            /// Elements per summation block.
            const B: usize = L * BLOCK;

            /// Fixed pairwise reduction of the lane accumulators.
            #[inline(always)]
            fn hsum(mut a: [$t; L]) -> f64 {
                let mut w = L / 2;
                while w > 0 {
                    for i in 0..w {
                        a[i] += a[i + w];
                    }
                    w /= 2;
                }
                a[0] as f64
            }

            // All loops below process `L` elements per step: the fixed-length inner loop is
            // unrolled and vectorized (SLP), with `acc` living in registers. The remaining
            // `len % L` elements go through the same per-element function one by one (vector
            // FMA lanes round exactly like scalar FMAs, so every element gets the same result
            // wherever it sits in the slice); their contributions are summed in order into
            // `tail`. The sums never go through memory: a scratch buffer on the stack made
            // the speed depend on the input's address modulo 4 KiB (store/load aliasing).

            #[inline(always)]
            pub(crate) fn exp_inplace<M: MulAdd>(x: &mut [$t]) {
                let mut it = x.chunks_exact_mut(L);
                for c in &mut it {
                    for i in 0..L {
                        c[i] = super::$lane::<M>(c[i]);
                    }
                }
                for v in it.into_remainder() {
                    *v = super::$lane::<M>(*v);
                }
            }

            // Stores the exponentials as well: the tests' oracle for the summing kernels.
            #[cfg(test)]
            #[inline(always)]
            pub(crate) fn exp_shift_sum<M: MulAdd>(x: &[$t], shift: $t, out: &mut [$t]) -> $t {
                assert_eq!(
                    x.len(),
                    out.len(),
                    "exp_shift_sum: x and out lengths differ"
                );
                let mut total = 0.0f64;
                for (xb, ob) in x.chunks(B).zip(out.chunks_mut(B)) {
                    let mut acc = [0.0; L];
                    let mut xi = xb.chunks_exact(L);
                    let mut oi = ob.chunks_exact_mut(L);
                    for (xc, oc) in (&mut xi).zip(&mut oi) {
                        for i in 0..L {
                            let e = super::$lane::<M>(xc[i] - shift);
                            oc[i] = e;
                            acc[i] += e;
                        }
                    }
                    let mut tail = 0.0;
                    for (o, &v) in oi.into_remainder().iter_mut().zip(xi.remainder()) {
                        let e = super::$lane::<M>(v - shift);
                        *o = e;
                        tail += e;
                    }
                    total += hsum(acc) + tail as f64;
                }
                total as $t
            }

            #[inline(always)]
            pub(crate) fn sum_exp_shift<M: MulAdd>(x: &[$t], shift: $t) -> $t {
                let mut total = 0.0f64;
                for xb in x.chunks(B) {
                    let mut acc = [0.0; L];
                    let mut xi = xb.chunks_exact(L);
                    for xc in &mut xi {
                        for i in 0..L {
                            acc[i] += super::$lane::<M>(xc[i] - shift);
                        }
                    }
                    let mut tail = 0.0;
                    for &v in xi.remainder() {
                        tail += super::$lane::<M>(v - shift);
                    }
                    total += hsum(acc) + tail as f64;
                }
                total as $t
            }

            #[inline(always)]
            pub(crate) fn dot_exp_shift<M: MulAdd>(w: &[$t], x: &[$t], shift: $t) -> $t {
                assert_eq!(w.len(), x.len(), "dot_exp_shift: w and x lengths differ");
                let mut total = 0.0f64;
                for (wb, xb) in w.chunks(B).zip(x.chunks(B)) {
                    let mut acc = [0.0; L];
                    let mut wi = wb.chunks_exact(L);
                    let mut xi = xb.chunks_exact(L);
                    for (wc, xc) in (&mut wi).zip(&mut xi) {
                        for i in 0..L {
                            let e = super::$lane::<M>(xc[i] - shift);
                            acc[i] = M::$fma(wc[i], e, acc[i]);
                        }
                    }
                    let mut tail = 0.0;
                    for (&wv, &v) in wi.remainder().iter().zip(xi.remainder()) {
                        tail = M::$fma(wv, super::$lane::<M>(v - shift), tail);
                    }
                    total += hsum(acc) + tail as f64;
                }
                total as $t
            }
        }
    };
}

kernels!(k64, f64, super::L64, exp_lane_f64, f64);
kernels!(k32, f32, super::L32, exp_lane_f32, f32);

// -------------------------------------------------------------------------------------------
// Instantiations
// -------------------------------------------------------------------------------------------

/// Portable instantiation (baseline target features).
mod portable {
    use super::{k32, k64, PortableMulAdd as M};

    pub(super) fn ln_f64(x: &[f64], out: &mut [f64]) {
        super::ln_into_f64::<M>(x, out)
    }

    pub(super) fn exp_inplace_f64(x: &mut [f64]) {
        k64::exp_inplace::<M>(x)
    }
    pub(super) fn exp_inplace_f32(x: &mut [f32]) {
        k32::exp_inplace::<M>(x)
    }
    #[cfg(test)]
    pub(super) fn exp_shift_sum_f64(x: &[f64], shift: f64, out: &mut [f64]) -> f64 {
        k64::exp_shift_sum::<M>(x, shift, out)
    }
    #[cfg(test)]
    pub(super) fn exp_shift_sum_f32(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
        k32::exp_shift_sum::<M>(x, shift, out)
    }
    pub(super) fn sum_exp_shift_f64(x: &[f64], shift: f64) -> f64 {
        k64::sum_exp_shift::<M>(x, shift)
    }
    pub(super) fn sum_exp_shift_f32(x: &[f32], shift: f32) -> f32 {
        k32::sum_exp_shift::<M>(x, shift)
    }
    pub(super) fn dot_exp_shift_f64(w: &[f64], x: &[f64], shift: f64) -> f64 {
        k64::dot_exp_shift::<M>(w, x, shift)
    }
    pub(super) fn dot_exp_shift_f32(w: &[f32], x: &[f32], shift: f32) -> f32 {
        k32::dot_exp_shift::<M>(w, x, shift)
    }
}

/// AVX2 + FMA instantiation. Every function here is `unsafe` only because of
/// `#[target_feature]`: callers must ensure the CPU supports `avx2` and `fma`.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod avx2 {
    use super::{k32, k64, Fused as M};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn ln_f64(x: &[f64], out: &mut [f64]) {
        super::ln_into_f64::<M>(x, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_inplace_f64(x: &mut [f64]) {
        k64::exp_inplace::<M>(x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_inplace_f32(x: &mut [f32]) {
        k32::exp_inplace::<M>(x)
    }
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum_f64(x: &[f64], shift: f64, out: &mut [f64]) -> f64 {
        k64::exp_shift_sum::<M>(x, shift, out)
    }
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum_f32(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
        k32::exp_shift_sum::<M>(x, shift, out)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp_shift_f64(x: &[f64], shift: f64) -> f64 {
        k64::sum_exp_shift::<M>(x, shift)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp_shift_f32(x: &[f32], shift: f32) -> f32 {
        k32::sum_exp_shift::<M>(x, shift)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_exp_shift_f64(w: &[f64], x: &[f64], shift: f64) -> f64 {
        k64::dot_exp_shift::<M>(w, x, shift)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_exp_shift_f32(w: &[f32], x: &[f32], shift: f32) -> f32 {
        k32::dot_exp_shift::<M>(w, x, shift)
    }
}

/// Whether the running CPU supports AVX2 and FMA (detected once, then cached).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Defines a public entry point that dispatches to the AVX2+FMA or the portable kernel.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            {
                if has_avx2_fma() {
                    // SAFETY: the only precondition of the `#[target_feature(enable =
                    // "avx2,fma")]` function is that the CPU supports AVX2 and FMA, which
                    // `has_avx2_fma` has just verified at run time.
                    return unsafe { avx2::$name($($arg),*) };
                }
            }
            portable::$name($($arg),*)
        }
    };
}

dispatch!(
    /// Exponential in place: `x[i] = exp(x[i])`.
    ///
    /// `exp(-inf) = 0`, `exp(+inf) = +inf`, NaN propagates; inputs below about `-745.13`
    /// give `0` and inputs above about `709.78` give `+inf`; results in the subnormal range
    /// are computed (not flushed). Error at most 2 ulp, measured at most 1 ulp (module docs).
    exp_inplace_f64(x: &mut [f64])
);

dispatch!(
    /// Natural logarithm: `out[i] = ln(x[i])`.
    ///
    /// `ln(0) = -∞`, `ln(x < 0) = NaN`, `ln(∞) = ∞`, NaN propagates, subnormal inputs are
    /// exact. Error below 1 ulp (fdlibm's algorithm, see [`ln_lane_f64`]); measured within
    /// 1 ulp of `f64::ln` (tests). The AVX2+FMA and the portable paths may differ in the
    /// last bit (fused or unfused evaluation of the correction polynomial).
    ///
    /// # Panics
    /// If `x.len() != out.len()`.
    ln_f64(x: &[f64], out: &mut [f64])
);

dispatch!(
    /// Exponential in place: `x[i] = exp(x[i])`, single precision.
    ///
    /// `exp(-inf) = 0`, `exp(+inf) = +inf`, NaN propagates; inputs below about `-103.97`
    /// give `0` and inputs above about `88.72` give `+inf`; results in the subnormal range
    /// are computed (not flushed). Error at most 2 ulp, measured at most 1 ulp (module docs).
    exp_inplace_f32(x: &mut [f32])
);

#[cfg(test)]
dispatch!(
    /// Shifted exponential with sum: `out[i] = exp(x[i] - shift)`; returns `sum_i out[i]`.
    ///
    /// This is the core of a max-shifted log-sum-exp (`shift = max_i x[i]`). The sum is
    /// accumulated blockwise (see the module docs). Elements equal to `-inf` contribute an
    /// exact 0, but `shift = -inf` together with an element `-inf` gives NaN (`-inf - -inf`):
    /// special-case all-`-inf` rows in the caller.
    ///
    /// # Panics
    /// If `x.len() != out.len()`.
    exp_shift_sum_f64(x: &[f64], shift: f64, out: &mut [f64]) -> f64
);

#[cfg(test)]
dispatch!(
    /// Shifted exponential with sum, single precision: `out[i] = exp(x[i] - shift)`;
    /// returns `sum_i out[i]`.
    ///
    /// Block sums are combined in `f64` before the final rounding to `f32` (see the module
    /// docs). `shift = -inf` together with an element `-inf` gives NaN.
    ///
    /// # Panics
    /// If `x.len() != out.len()`.
    exp_shift_sum_f32(x: &[f32], shift: f32, out: &mut [f32]) -> f32
);

dispatch!(
    /// `sum_i exp(x[i] - shift)` without storing the exponentials.
    ///
    /// The per-element values are identical to those of [`exp_shift_sum_f64`], and so is
    /// the returned sum.
    sum_exp_shift_f64(x: &[f64], shift: f64) -> f64
);

dispatch!(
    /// `sum_i exp(x[i] - shift)` without storing the exponentials, single precision.
    ///
    /// The per-element values are identical to those of [`exp_shift_sum_f32`], and so is
    /// the returned sum.
    sum_exp_shift_f32(x: &[f32], shift: f32) -> f32
);

dispatch!(
    /// Weighted shifted exponential sum: `sum_i w[i] * exp(x[i] - shift)`.
    ///
    /// The weights may have any sign. Products are accumulated with fused multiply-adds on
    /// the AVX2+FMA path.
    ///
    /// # Panics
    /// If `w.len() != x.len()`.
    dot_exp_shift_f64(w: &[f64], x: &[f64], shift: f64) -> f64
);

dispatch!(
    /// Weighted shifted exponential sum, single precision: `sum_i w[i] * exp(x[i] - shift)`.
    ///
    /// The weights may have any sign. Block sums are combined in `f64` before the final
    /// rounding to `f32`.
    ///
    /// # Panics
    /// If `w.len() != x.len()`.
    dot_exp_shift_f32(w: &[f32], x: &[f32], shift: f32) -> f32
);

// -------------------------------------------------------------------------------------------
// AVX upper state
// -------------------------------------------------------------------------------------------

/// Number of `vzeroupper` instructions issued by [`clear_upper_state`] so far (all threads).
static UPPER_CLEARS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether to issue `vzeroupper` after GEMMs: the CPU supports AVX and the environment
/// variable `WASSDL_KEEP_UPPER_STATE` is unset (it exists only to measure the penalty the
/// clearing avoids, in one binary and one sitting; see `docs/benchmarks.md`). Detected
/// once, then cached.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn has_avx() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx") && std::env::var_os("WASSDL_KEEP_UPPER_STATE").is_none()
    })
}

/// `vzeroupper`, in a function compiled with AVX so that the intrinsic is available.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::_mm256_zeroupper;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::_mm256_zeroupper;
    _mm256_zeroupper();
}

/// Marks the upper halves of the vector registers clean (`vzeroupper`) on x86 CPUs with
/// AVX; does nothing elsewhere.
///
/// faer's AVX-512 GEMM microkernels (crate `private-gemm-x86`, inline assembly) return
/// with the upper 384 bits of `zmm0`-`zmm15` dirty and no `vzeroupper`: the assembly is
/// opaque to the compiler, which inserts `vzeroupper` only after code it generated with
/// AVX itself. On Intel CPUs every later SSE-encoded instruction (libm `ln`, any loop
/// compiled for baseline x86-64) then pays the AVX→SSE transition penalty (a scalar
/// `ln` loop measured 44× slower on a Xeon with AVX-512; see `docs/benchmarks.md`).
/// Every GEMM of this crate therefore goes through [`crate::kernel`]'s wrapper, which
/// calls this right after faer returns. `vzeroupper` only zeroes bits 128 and above of
/// registers that hold no live value across the call (every vector register is
/// caller-saved in the x86-64 System V and Windows ABIs above bit 127), so it cannot
/// change a result.
#[inline]
pub fn clear_upper_state() {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if has_avx() {
        // SAFETY: `zeroupper`'s only precondition is AVX support, just checked.
        unsafe { zeroupper() };
        UPPER_CLEARS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many times [`clear_upper_state`] has issued `vzeroupper` in this process (0 on
/// CPUs without AVX, on other architectures and with `WASSDL_KEEP_UPPER_STATE` set):
/// lets tests check that the path runs.
pub fn upper_state_clears() -> u64 {
    UPPER_CLEARS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Distance in units in the last place (0 for equal values and for two NaNs).
    pub(crate) fn ulp64(a: f64, b: f64) -> u64 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// [`ulp64`] in `f32`.
    pub(crate) fn ulp32(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        (a.to_bits() as i32 - b.to_bits() as i32).unsigned_abs()
    }

    /// Arguments for a logarithm's accuracy test: `points + 1` log-uniform values from the
    /// smallest subnormal to `f64::MAX`, the special values (zeros, negatives, infinities,
    /// NaN, 1, the normal and subnormal extremes, √2/2 where the reduction switches
    /// exponent), and `dense` evenly spaced values of `[0.5, 1.5)`.
    pub(crate) fn ln_sweep(points: usize, dense: usize) -> Vec<f64> {
        let mut xs: Vec<f64> = (0..=points)
            .map(|i| 2f64.powf(-1074.0 + 2097.0 * i as f64 / points as f64))
            .collect();
        xs.extend([
            0.0,
            -0.0,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            5e-324,
            2.0f64.sqrt() / 2.0,
        ]);
        xs.extend((0..dense).map(|i| 0.5 + i as f64 / dense as f64));
        xs
    }

    /// Both paths of `ln_f64` within 1 ulp of `f64::ln` (each is within 1 ulp of the exact
    /// value, so they may differ by one rounding) over a log-uniform sweep of the whole
    /// range, subnormals and special values included, and over `[0.5, 1.5]` where the
    /// reduction switches exponent; the two paths within 1 ulp of each other.
    #[test]
    fn ln_matches_std() {
        let xs = ln_sweep(400_000, 100_000);
        let mut fast = vec![0.0; xs.len()];
        ln_f64(&xs, &mut fast);
        let mut plain = vec![0.0; xs.len()];
        portable::ln_f64(&xs, &mut plain);
        for ((&x, &f), &p) in xs.iter().zip(&fast).zip(&plain) {
            assert!(ulp64(x.ln(), f) <= 1, "ln({x:e}) = {f:e}, std {:e}", x.ln());
            assert!(ulp64(x.ln(), p) <= 1, "portable ln({x:e}) = {p:e}");
            assert!(ulp64(f, p) <= 1, "paths differ at {x:e}: {f:e} {p:e}");
        }
        let mut one = [f64::NAN];
        ln_f64(&[1.0], &mut one);
        assert_eq!(
            one[0].to_bits(),
            0.0f64.to_bits(),
            "ln(1) must be exactly +0"
        );
    }

    #[test]
    fn special_values() {
        let mut v = [
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NAN,
            0.0,
            -0.0,
            1e300,
            -1e300,
        ];
        exp_inplace_f64(&mut v);
        assert_eq!(v[0].to_bits(), 0.0f64.to_bits());
        assert_eq!(v[1], f64::INFINITY);
        assert!(v[2].is_nan());
        assert_eq!(v[3], 1.0);
        assert_eq!(v[4], 1.0);
        assert_eq!(v[5], f64::INFINITY);
        assert_eq!(v[6].to_bits(), 0);
        let mut w = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            1e30,
            -1e30,
        ];
        exp_inplace_f32(&mut w);
        assert_eq!(w[0].to_bits(), 0);
        assert_eq!(w[1], f32::INFINITY);
        assert!(w[2].is_nan());
        assert_eq!(w[3], 1.0);
        assert_eq!(w[4], 1.0);
        assert_eq!(w[5], f32::INFINITY);
        assert_eq!(w[6].to_bits(), 0);
    }

    /// The portable path (whatever multiply-add flavour) and the unfused path are accurate too.
    #[test]
    fn all_paths_accurate() {
        let n = 200_001;
        let xs: Vec<f64> = (0..n)
            .map(|i| -745.0 + 1454.0 * i as f64 / (n - 1) as f64)
            .collect();
        let mut m = [0u64; 3];
        for &x in &xs {
            let r = x.exp();
            m[0] = m[0].max(ulp64(exp_lane_f64::<Unfused>(x), r));
            m[1] = m[1].max(ulp64(exp_lane_f64::<PortableMulAdd>(x), r));
            let mut one = [x];
            portable::exp_inplace_f64(&mut one);
            m[2] = m[2].max(ulp64(one[0], r));
        }
        assert!(m.iter().all(|&u| u <= 2), "f64 ulp {m:?}");
        let mut m = [0u32; 2];
        for i in 0..n {
            let x = (-103.0 + 191.7 * i as f64 / (n - 1) as f64) as f32;
            let r = (x as f64).exp() as f32;
            m[0] = m[0].max(ulp32(exp_lane_f32::<Unfused>(x), r));
            m[1] = m[1].max(ulp32(exp_lane_f32::<PortableMulAdd>(x), r));
        }
        assert!(m.iter().all(|&u| u <= 2), "f32 ulp {m:?}");
    }

    /// The portable instantiation agrees with the dispatched one (which may be the same).
    #[test]
    fn portable_matches_dispatched() {
        let n = 1003;
        let x: Vec<f64> = (0..n).map(|i| -40.0 + 0.037 * i as f64).collect();
        let w: Vec<f64> = (0..n).map(|i| (i % 7) as f64 - 3.0).collect();
        let (mut o1, mut o2) = (vec![0.0; n], vec![0.0; n]);
        let s1 = exp_shift_sum_f64(&x, 1.0, &mut o1);
        let s2 = portable::exp_shift_sum_f64(&x, 1.0, &mut o2);
        assert!(o1.iter().zip(&o2).all(|(a, b)| ulp64(*a, *b) <= 2));
        assert!((s1 - s2).abs() <= 1e-14 * s1);
        assert_eq!(s2, portable::sum_exp_shift_f64(&x, 1.0));
        let d1 = dot_exp_shift_f64(&w, &x, 1.0);
        let d2 = portable::dot_exp_shift_f64(&w, &x, 1.0);
        assert!((d1 - d2).abs() <= 1e-13 * s1);
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let (mut o1, mut o2) = (vec![0.0; n], vec![0.0; n]);
        let s1 = exp_shift_sum_f32(&x, 1.0, &mut o1);
        let s2 = portable::exp_shift_sum_f32(&x, 1.0, &mut o2);
        assert!(o1.iter().zip(&o2).all(|(a, b)| ulp32(*a, *b) <= 2));
        assert!((s1 - s2).abs() <= 1e-5 * s1);
        assert_eq!(s2, portable::sum_exp_shift_f32(&x, 1.0));
        let d1 = dot_exp_shift_f32(&w, &x, 1.0);
        let d2 = portable::dot_exp_shift_f32(&w, &x, 1.0);
        assert!((d1 - d2).abs() <= 1e-5 * s1);
        // same path, same element function: bit-identical
        let mut y: Vec<f32> = x.iter().map(|&v| v - 1.0).collect();
        portable::exp_inplace_f32(&mut y);
        assert!(y.iter().zip(&o2).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
