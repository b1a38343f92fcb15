//! The whole-matrix operations every barycenter iteration is written in.
//!
//! Each Sinkhorn variant is written once, generic over [`Ops`]: run with [`Eager`] it is
//! the plain forward solver (values only, nothing recorded); run with the reverse-mode
//! [`crate::tape::Tape`] the same code records a differentiable graph.

use crate::batch::Batch;
use crate::kernel::lse::lse_weighted;
use crate::kernel::{apply_log_new, apply_new, Kernel};
use crate::real::Real;
use crate::solver::{
    part_len, run_parts_queued, threads_above, EXP_WORK, GEMM_PAR_MIN_WORK, PARTS_PER_THREAD,
};
use faer::Par;

/// Operations on batches of column vectors (`N × B` matrices).
///
/// Column layout for a batch of `M` barycenters of `S` atoms: column `m·S + s` holds the
/// scaling of atom `s` for barycenter `m`.
pub trait Ops<'k, T: Real> {
    /// A value in this backend (a matrix, or a handle to one on a tape).
    type V: Clone;
    /// The numbers behind a value.
    fn value<'a>(&'a self, v: &'a Self::V) -> &'a Batch<T>;
    /// A constant (no gradient flows into it).
    fn constant(&mut self, x: Batch<T>) -> Self::V;
    /// `K x` (or `Kᵀ x`).
    fn kernel(&mut self, k: &'k dyn Kernel<T>, x: &Self::V, transpose: bool) -> Self::V;
    /// `log(K exp(x))` (or with `Kᵀ`), Algorithm 3.
    fn log_kernel(&mut self, k: &'k dyn Kernel<T>, x: &Self::V, transpose: bool) -> Self::V;
    /// `a + b`.
    fn add(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// `a - b`.
    fn sub(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// `a ⊙ b`.
    fn mul(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// `a ÷ b` elementwise.
    fn div(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// `c · a`.
    fn scale(&mut self, a: &Self::V, c: T) -> Self::V;
    /// `a^c` elementwise.
    fn powf(&mut self, a: &Self::V, c: T) -> Self::V;
    /// `exp(a)` elementwise.
    fn exp(&mut self, a: &Self::V) -> Self::V;
    /// `log(a)` elementwise.
    fn log(&mut self, a: &Self::V) -> Self::V;
    /// The heavy-ball step of Algorithm 5 (eq. 25-26), elementwise: `prev^τ · new^{1-τ}`,
    /// or on logarithms (`log`) `τ·prev + (1-τ)·new`, with a zero `new` kept at zero
    /// (`-∞` in the log domain) where the formula is `∞ · 0` (`∞ - ∞`) for τ < 0. Both
    /// backends compute the value with the same shared function.
    fn heavy_ball(&mut self, prev: &Self::V, new: &Self::V, tau: T, log: bool) -> Self::V;
    /// `N × S` → `N × (S·reps)`: column `m·S + s` is column `s` (atoms tiled over a batch).
    fn tile(&mut self, d: &Self::V, reps: usize) -> Self::V;
    /// `N × M` → `N × (M·s)`: column `m·s + k` is column `m` (one barycenter per atom slot).
    fn repeat(&mut self, p: &Self::V, s: usize) -> Self::V;
    /// `x: N × (S·M)`, `w: S × M` → `N × M`, column `m` = `Σ_s w[s, m] x[:, m·S + s]`.
    fn block_dot(&mut self, x: &Self::V, w: &Self::V) -> Self::V;
    /// Same shapes as [`Ops::block_dot`]: column `m` = `log Σ_s w[s, m] exp(x[:, m·S + s])`.
    fn block_lse(&mut self, x: &Self::V, w: &Self::V) -> Self::V;
    /// The balanced barycenter and the new `b̃` of eq. 7-8 from `kta = Kᵀa`
    /// (`N × (S·M)`) and the weights `w` (`S × M`): `p = exp(Σ_s w_s log kta_s)`
    /// (`N × M`, [`Ops::log`], [`Ops::block_dot`], [`Ops::exp`]) and `b̃ = p / kta`
    /// (column `m·S + s` is `p_m / kta_{m·S+s}`, [`Ops::repeat`], [`Ops::div`]). This
    /// default composes those operations (what the tape records); a backend may fuse them
    /// into fewer passes over memory, and split them over the threads `par` allows (the
    /// kernel's setting), if it computes the same bits.
    fn geometric_step(&mut self, kta: &Self::V, w: &Self::V, par: Par) -> (Self::V, Self::V) {
        let _ = par;
        let s = self.value(w).rows();
        let lk = self.log(kta);
        let lp = self.block_dot(&lk, w);
        let p = self.exp(&lp);
        let rep = self.repeat(&p, s);
        let bt = self.div(&rep, kta);
        (p, bt)
    }
}

/// Forward-only backend: values are plain [`Batch`]es, nothing is recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Eager;

/// `f` applied entry by entry to two batches of the same shape, vectorized when `f`
/// inlines (the arithmetic of every Sinkhorn step).
pub(crate) fn zip_map<T: Real>(
    a: &Batch<T>,
    b: &Batch<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> Batch<T> {
    assert_eq!(a.shape(), b.shape(), "zip_map: shapes differ");
    zip_columns_new(a.rows(), a.cols(), 1, |c| (a.col(c), b.col(c)), f)
}

/// A new `rows × cols` batch whose column `c` is `f` applied entry by entry to the two
/// columns `cols_of(c)` returns, written once: the storage is not filled with zeros first,
/// which saved a pass over memory per elementwise result (a few percent of a 256×256
/// grid barycenter, P2). Vectorized when `f` inlines; columns spread over `threads`
/// threads ([`run_parts_queued`]) when more than one.
pub(crate) fn zip_columns_new<'a, T: Real>(
    rows: usize,
    cols: usize,
    threads: usize,
    cols_of: impl Fn(usize) -> (&'a [T], &'a [T]) + Sync,
    f: impl Fn(T, T) -> T + Sync,
) -> Batch<T> {
    let len = rows * cols;
    let mut data: Vec<T> = Vec::with_capacity(len);
    let spare = &mut data.spare_capacity_mut()[..len];
    let column = |(c, out): (usize, &mut [std::mem::MaybeUninit<T>])| {
        let (x, y) = cols_of(c);
        assert!(
            x.len() == rows && y.len() == rows,
            "zip_columns_new: column length"
        );
        crate::kernel::lse::vectorized(
            #[inline(always)]
            || {
                for ((o, &xi), &yi) in out.iter_mut().zip(x).zip(y) {
                    o.write(f(xi, yi));
                }
            },
        );
    };
    let columns = spare.chunks_exact_mut(rows.max(1)).enumerate().take(cols);
    if threads > 1 {
        run_parts_queued(threads, columns, column);
    } else {
        columns.for_each(column);
    }
    // SAFETY: every one of the `cols` chunks of `rows` entries that make up the first
    // `len` slots (`rows == 0` means `len == 0`) went through `column` (a panic in a part
    // is resumed by `run_parts_queued`, before this point), and in each, the zip of three
    // slices of length `rows` (asserted) writes every slot: all `len` entries are
    // initialized.
    unsafe { data.set_len(len) };
    Batch::from_vec(rows, cols, data)
}

/// [`zip_map`] into `out` (same shape; every entry overwritten, so its previous contents
/// do not matter: the tape passes reused buffers).
pub(crate) fn zip_map_into<T: Real>(
    a: &Batch<T>,
    b: &Batch<T>,
    out: &mut Batch<T>,
    f: impl Fn(T, T) -> T,
) {
    debug_assert_eq!(a.shape(), b.shape());
    debug_assert_eq!(a.shape(), out.shape());
    // A plain loop: an iterator `collect` would not be inlined into the vectorized wrapper.
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for ((o, &x), &y) in out
                .as_mut_slice()
                .iter_mut()
                .zip(a.as_slice())
                .zip(b.as_slice())
            {
                *o = f(x, y);
            }
        },
    );
}

/// `f` applied to every entry, vectorized when `f` inlines.
fn map<T: Real>(a: &Batch<T>, f: impl Fn(T) -> T) -> Batch<T> {
    let mut out = Batch::zeros(a.rows(), a.cols());
    map_into(a, &mut out, f);
    out
}

/// [`map`] into `out` (same shape, every entry overwritten).
pub(crate) fn map_into<T: Real>(a: &Batch<T>, out: &mut Batch<T>, f: impl Fn(T) -> T) {
    debug_assert_eq!(a.shape(), out.shape());
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (o, &x) in out.as_mut_slice().iter_mut().zip(a.as_slice()) {
                *o = f(x);
            }
        },
    );
}

/// The heavy-ball step over two batches: the forward value of [`Ops::heavy_ball`], shared
/// by every backend so that they give the same bits (see [`heavy_ball_into`]).
pub(crate) fn heavy_ball<T: Real>(prev: &Batch<T>, new: &Batch<T>, tau: T, log: bool) -> Batch<T> {
    let mut out = Batch::zeros(prev.rows(), prev.cols());
    heavy_ball_into(prev, new, tau, log, &mut out);
    out
}

/// The heavy-ball step of Algorithm 5 (eq. 25-26) into `out` (same shape, every entry
/// overwritten): `prev^τ · new^{1-τ}`, or `τ·prev + (1-τ)·new` on logarithms.
///
/// Where `new` is zero (`-∞` in the log domain) the result is zero (`-∞`). The formula
/// itself is undefined there for τ < 0: an atom bin `d_i = 0` gives `ã_i = 0` at every
/// iteration, so from the second one on `a_i = 0^τ · 0^{1-τ} = ∞ · 0` (NaN), and in the
/// log domain `τ·(-∞) + (1-τ)·(-∞) = ∞ - ∞`. The limit `d_i = ε → 0` is zero: with
/// `log ã_i = log ε + O(1)` at every step and `a⁰ = 1`, the recursion
/// `log a_i ← τ log a_i + (1-τ) log ã_i` gives `log a_i = (1 - τ^l) log ε + O(1)` after
/// `l` steps, and `1 - τ^l > 0` for the over-relaxation range `-1 < τ ≤ 0` where the
/// iteration converges. It is also the fixed point (`a_i = d_i / (K b)_i = 0` in
/// eq. 6-8, which heavy ball must share): a zero mass stays a zero scaling.
///
/// The scaling form is evaluated as `new · exp(τ ln(prev / new))`, in three vectorized
/// passes, instead of two library `powf` calls per entry (half of a `psf_chromatic`
/// evaluation). The quotient, `ln_lane`, the vectorized `exp` and the product round once
/// each, and the rounding of the argument costs `|τ ln(prev/new)| ε` relative: both inputs
/// are scalings of the same entry at consecutive iterations, so the ratio is near 1 once
/// the iteration settles and the result is within a few ulp of `prev^τ · new^{1-τ}`,
/// where `exp(τ ln prev + (1-τ) ln new)` would lose up to `ln(10³⁰⁸) ε ≈ 700 ε` to the
/// size of its argument (test `heavy_ball_matches_the_power_form`). At the edges it gives what the
/// power form gives, with a zero `new` pinned to zero as above: a zero `prev`
/// or infinite `new` gives `∞`, an infinite `prev` gives 0, NaN propagates.
pub(crate) fn heavy_ball_into<T: Real>(
    prev: &Batch<T>,
    new: &Batch<T>,
    tau: T,
    log: bool,
    out: &mut Batch<T>,
) {
    if log {
        let one = T::one();
        zip_map_into(prev, new, out, |p, n| {
            if n == T::neg_infinity() {
                n
            } else {
                tau * p + (one - tau) * n
            }
        });
        return;
    }
    // eq. 25-26 (Algorithm 5): prev^τ new^{1-τ} = new · (prev/new)^τ.
    zip_map_into(prev, new, out, |p, n| {
        tau * crate::kernel::lse::ln_lane(p / n)
    });
    T::exp_slice(out.as_mut_slice());
    debug_assert_eq!(new.shape(), out.shape());
    crate::kernel::lse::vectorized(
        #[inline(always)]
        || {
            for (o, &n) in out.as_mut_slice().iter_mut().zip(new.as_slice()) {
                *o = if n == T::zero() { n } else { n * *o };
            }
        },
    );
}

pub(crate) fn tile<T: Real>(d: &Batch<T>, reps: usize) -> Batch<T> {
    let mut out = Batch::zeros(d.rows(), d.cols() * reps);
    tile_into(d, &mut out);
    out
}

/// [`tile`] into `out` (`N × (S·reps)`, every entry overwritten).
pub(crate) fn tile_into<T: Real>(d: &Batch<T>, out: &mut Batch<T>) {
    for o in out.as_mut_slice().chunks_exact_mut(d.as_slice().len()) {
        o.copy_from_slice(d.as_slice());
    }
}

pub(crate) fn repeat<T: Real>(p: &Batch<T>, s: usize) -> Batch<T> {
    let mut out = Batch::zeros(p.rows(), p.cols() * s);
    repeat_into(p, s, &mut out);
    out
}

/// [`repeat`] into `out` (`N × (M·s)`, every entry overwritten).
pub(crate) fn repeat_into<T: Real>(p: &Batch<T>, s: usize, out: &mut Batch<T>) {
    for (c, o) in out.as_mut_slice().chunks_exact_mut(p.rows()).enumerate() {
        o.copy_from_slice(p.col(c / s));
    }
}

pub(crate) fn block_dot<T: Real>(x: &Batch<T>, w: &Batch<T>) -> Batch<T> {
    let mut out = Batch::zeros(x.rows(), w.cols());
    block_dot_into(x, w, &mut out);
    out
}

/// [`block_dot`] into `out` (`N × M`, every entry overwritten). Each column starts from
/// zero and adds `w_k x_k` atom by atom, the same operations (and bits) as ever.
pub(crate) fn block_dot_into<T: Real>(x: &Batch<T>, w: &Batch<T>, out: &mut Batch<T>) {
    let (s, m) = (w.rows(), w.cols());
    debug_assert_eq!(x.cols(), s * m);
    for j in 0..m {
        let o = out.col_mut(j);
        o.fill(T::zero());
        for k in 0..s {
            let wk = w.get(k, j);
            if wk == T::zero() {
                // 0 · (±∞) must not poison the sum: a zero weight drops the atom.
                continue;
            }
            let xc = x.col(j * s + k);
            crate::kernel::lse::vectorized(
                #[inline(always)]
                || {
                    for (oi, &xi) in o.iter_mut().zip(xc) {
                        *oi += wk * xi;
                    }
                },
            );
        }
    }
}

/// Column `m` = `log Σ_s w[s, m] exp(x[:, m·S + s])` (eq. 22-24's barycenter in the log
/// domain), by the crate's one weighted logsumexp ([`crate::kernel::lse::lse_weighted`]):
/// a zero weight drops its atom whatever its `x` (`0 · e^{+∞}` must not poison the sum).
pub(crate) fn block_lse<T: Real>(x: &Batch<T>, w: &Batch<T>) -> Batch<T> {
    let (n, s, m) = (x.rows(), w.rows(), w.cols());
    debug_assert_eq!(x.cols(), s * m);
    let mut out = Batch::zeros(n, m);
    let mut t = vec![T::zero(); s];
    for j in 0..m {
        let wj = w.col(j);
        for i in 0..n {
            for (k, tk) in t.iter_mut().enumerate() {
                *tk = x.get(i, j * s + k);
            }
            out.set(i, j, lse_weighted(&mut t, wj));
        }
    }
    out
}

impl<'k, T: Real> Ops<'k, T> for Eager {
    type V = Batch<T>;
    fn value<'a>(&'a self, v: &'a Batch<T>) -> &'a Batch<T> {
        v
    }
    fn constant(&mut self, x: Batch<T>) -> Batch<T> {
        x
    }
    fn kernel(&mut self, k: &'k dyn Kernel<T>, x: &Batch<T>, transpose: bool) -> Batch<T> {
        apply_new(k, x, transpose)
    }
    fn log_kernel(&mut self, k: &'k dyn Kernel<T>, x: &Batch<T>, transpose: bool) -> Batch<T> {
        apply_log_new(k, x, transpose)
    }
    fn add(&mut self, a: &Batch<T>, b: &Batch<T>) -> Batch<T> {
        zip_map(a, b, |x, y| x + y)
    }
    fn sub(&mut self, a: &Batch<T>, b: &Batch<T>) -> Batch<T> {
        zip_map(a, b, |x, y| x - y)
    }
    fn mul(&mut self, a: &Batch<T>, b: &Batch<T>) -> Batch<T> {
        zip_map(a, b, |x, y| x * y)
    }
    fn div(&mut self, a: &Batch<T>, b: &Batch<T>) -> Batch<T> {
        zip_map(a, b, |x, y| x / y)
    }
    fn scale(&mut self, a: &Batch<T>, c: T) -> Batch<T> {
        map(a, |x| c * x)
    }
    fn powf(&mut self, a: &Batch<T>, c: T) -> Batch<T> {
        a.map(|x| x.powf(c))
    }
    fn exp(&mut self, a: &Batch<T>) -> Batch<T> {
        let mut out = a.clone();
        T::exp_slice(out.as_mut_slice());
        out
    }
    fn log(&mut self, a: &Batch<T>) -> Batch<T> {
        // The tape's `log` is the same `Real::ln_slice` (vectorized, within 1 ulp of
        // `f64::ln`): both backends must give the same bits. The scalar library `ln` took
        // a fifth of a 64×64 grid barycenter (P2).
        let mut out = Batch::zeros(a.rows(), a.cols());
        T::ln_slice(a.as_slice(), out.as_mut_slice());
        out
    }
    fn heavy_ball(&mut self, prev: &Batch<T>, new: &Batch<T>, tau: T, log: bool) -> Batch<T> {
        heavy_ball(prev, new, tau, log)
    }
    fn tile(&mut self, d: &Batch<T>, reps: usize) -> Batch<T> {
        tile(d, reps)
    }
    fn repeat(&mut self, p: &Batch<T>, s: usize) -> Batch<T> {
        repeat(p, s)
    }
    fn block_dot(&mut self, x: &Batch<T>, w: &Batch<T>) -> Batch<T> {
        block_dot(x, w)
    }
    fn block_lse(&mut self, x: &Batch<T>, w: &Batch<T>) -> Batch<T> {
        block_lse(x, w)
    }
    fn geometric_step(&mut self, kta: &Batch<T>, w: &Batch<T>, par: Par) -> (Batch<T>, Batch<T>) {
        geometric_step(kta, w, par)
    }
}

/// [`Ops::geometric_step`] in two passes over `kta` instead of seven over `N × (S·M)`
/// batches: the logarithms of a chunk of pixels stay in a stack buffer and go straight
/// into the weighted sum, and `b̃` is divided from `p` without the repeated copy. Each
/// entry goes through the same operations in the same order as the composed default
/// (`ln` by [`Real::ln_slice`], the sum from zero over the atoms in order with zero
/// weights skipped as in [`block_dot_into`], `exp` by [`Real::exp_slice`], one division),
/// so both give the same bits, on any number of threads: with several (above
/// [`GEMM_PAR_MIN_WORK`] units, an `ln` counting as [`EXP_WORK`]), the first pass is split
/// by pixel ranges and the second by columns.
fn geometric_step<T: Real>(kta: &Batch<T>, w: &Batch<T>, par: Par) -> (Batch<T>, Batch<T>) {
    let th = threads_above(
        par,
        kta.as_slice().len() * (EXP_WORK + 2),
        GEMM_PAR_MIN_WORK,
    );
    geometric_step_threads(kta, w, th)
}

/// [`geometric_step`] on `th` threads.
fn geometric_step_threads<T: Real>(
    kta: &Batch<T>,
    w: &Batch<T>,
    th: usize,
) -> (Batch<T>, Batch<T>) {
    const CHUNK: usize = 256;
    let (n, s, m) = (kta.rows(), w.rows(), w.cols());
    assert_eq!(kta.cols(), s * m, "geometric_step: kta is not N × (S·M)");
    let mut p = Batch::zeros(n, m);
    // `p[i0.., j]` for one range of pixels of barycenter `j`.
    let mean = |j: usize, i0: usize, acc: &mut [T]| {
        let mut ln = [T::zero(); CHUNK];
        for (c, acc) in acc.chunks_mut(CHUNK).enumerate() {
            let (a, ln) = (i0 + c * CHUNK, &mut ln[..acc.len()]);
            for k in 0..s {
                let wk = w.get(k, j);
                if wk == T::zero() {
                    // 0 · (±∞) must not poison the sum: a zero weight drops the atom.
                    continue;
                }
                T::ln_slice(&kta.col(j * s + k)[a..a + acc.len()], ln);
                crate::kernel::lse::vectorized(
                    #[inline(always)]
                    || {
                        for (o, &l) in acc.iter_mut().zip(ln.iter()) {
                            *o += wk * l;
                        }
                    },
                );
            }
        }
        T::exp_slice(acc);
    };
    if th == 1 {
        for j in 0..m {
            mean(j, 0, p.col_mut(j));
        }
    } else {
        let per = part_len(n, CHUNK, th * PARTS_PER_THREAD);
        let ranges = (p.as_mut_slice().chunks_mut(n.max(1)).enumerate()).flat_map(|(j, col)| {
            col.chunks_mut(per)
                .enumerate()
                .map(move |(r, a)| (j, r * per, a))
        });
        run_parts_queued(th, ranges, |(j, i0, acc)| mean(j, i0, acc));
    }
    let bt = zip_columns_new(
        n,
        s * m,
        th,
        |c| (p.col(c / s), kta.col(c)),
        |pv, kv| pv / kv,
    );
    (p, bt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorized heavy-ball step (`ln_lane`, `vexp`) against `new · (prev/new)^τ`
    /// with the library `powf`, over scalings from 10⁻²⁹² to 10²⁹² and ratios up to
    /// 10^±12. Ours rounds four times and its argument carries `|τ ln(prev/new)| ε` from
    /// the rounding of `ln`; the reference rounds three times (glibc's `pow` is within
    /// 1 ulp): `(8 + 2|τ ln r|) ε` relative bounds the difference with room. (The two-power
    /// form `prev^τ · new^{1-τ}` is no reference here: `1 - τ` is rounded, and
    /// `new^{fl(1-τ)}` is then off by up to `ln(10³⁰⁰) ε ≈ 700 ε`; 5·10⁻¹⁴ was seen.) The
    /// edges follow the power form.
    #[test]
    fn heavy_ball_matches_the_power_form() {
        let (mut prev, mut new) = (Vec::new(), Vec::new());
        for e in (-280..=280).step_by(7) {
            for d in [-12, -5, -1, 0, 1, 3, 12] {
                for frac in [1.0, 1.0 + 1e-9, 1.37, 0.61] {
                    prev.push(10f64.powi(e) * frac);
                    new.push(10f64.powi(e + d));
                }
            }
        }
        let n = prev.len();
        let (p, q) = (Batch::from_vec(n, 1, prev), Batch::from_vec(n, 1, new));
        for tau in [-0.1, -0.5, -0.9] {
            let got = heavy_ball(&p, &q, tau, false);
            for k in 0..n {
                let (pk, nk, g) = (p.get(k, 0), q.get(k, 0), got.get(k, 0));
                let want = nk * (pk / nk).powf(tau);
                assert!(want.is_normal(), "the sweep stays in range");
                let bound = (8.0 + 2.0 * (tau * (pk / nk).ln()).abs()) * f64::EPSILON;
                assert!(
                    ((g - want) / want).abs() <= bound,
                    "τ {tau}, prev {pk:e}, new {nk:e}: {g:e} vs {want:e}"
                );
            }
            let edge = |pk: f64, nk: f64| {
                let b = Batch::from_vec(1, 1, vec![pk]);
                heavy_ball(&b, &Batch::from_vec(1, 1, vec![nk]), tau, false).get(0, 0)
            };
            assert_eq!(edge(0.5, 0.0), 0.0, "a zero new scaling stays zero");
            assert_eq!(edge(0.0, 0.0), 0.0);
            assert_eq!(edge(0.0, 0.5), f64::INFINITY, "0^τ");
            assert_eq!(edge(f64::INFINITY, 0.5), 0.0, "∞^τ");
            assert_eq!(edge(0.5, f64::INFINITY), f64::INFINITY);
            assert!(edge(f64::NAN, 0.5).is_nan() && edge(0.5, f64::NAN).is_nan());
        }
    }

    /// The fused `geometric_step` of `Eager` gives the bits of the composed default (the
    /// tape's) on shapes that cut the pixel chunks unevenly, with a zero weight, zero and
    /// huge entries and several barycenters, in both precisions.
    #[test]
    fn fused_geometric_step_equals_the_composition() {
        fn check<T: Real>() {
            for (n, s, m) in [(1, 1, 1), (300, 3, 2), (613, 4, 3)] {
                let kta = Batch::<T>::from_fn(n, s * m, |i, j| {
                    let t = ((i * 37 + j * 11) % 101) as f64 / 101.0;
                    match (i + 3 * j) % 17 {
                        0 => T::zero(),
                        1 => T::of(1e30),
                        _ => T::of(1e-3 + 50.0 * t * t),
                    }
                });
                let mut w = Batch::<T>::from_fn(s, m, |k, j| T::of((1 + k + j) as f64));
                if s > 1 {
                    w.set(1, m - 1, T::zero());
                }
                for j in 0..m {
                    let tot: T = w.col(j).iter().copied().sum();
                    for k in 0..s {
                        let v = w.get(k, j) / tot;
                        w.set(k, j, v);
                    }
                }
                let mut e = Eager;
                let (p, bt) = e.geometric_step(&kta, &w, Par::Seq);
                let (p2, bt2) = geometric_step_threads(&kta, &w, 3);
                let lk = e.log(&kta);
                let lp = e.block_dot(&lk, &w);
                let p0 = e.exp(&lp);
                let rep = e.repeat(&p0, s);
                let bt0 = e.div(&rep, &kta);
                let bits = |b: &Batch<T>| -> Vec<u64> {
                    b.as_slice().iter().map(|x| x.to_f64_().to_bits()).collect()
                };
                assert_eq!(bits(&p), bits(&p0), "p, {n}x{s}x{m} {}", T::NAME);
                assert_eq!(bits(&bt), bits(&bt0), "b, {n}x{s}x{m} {}", T::NAME);
                // Split over threads (forced below the threshold): the same bits.
                assert_eq!(bits(&p2), bits(&p0), "p threaded, {n}x{s}x{m}");
                assert_eq!(bits(&bt2), bits(&bt0), "b threaded, {n}x{s}x{m}");
            }
        }
        check::<f64>();
        check::<f32>();
    }

    /// `block_lse` through the crate's weighted logsumexp (vectorized `exp`, f64
    /// accumulation) against the straightforward sum with the standard library: each of
    /// the `S ≤ 6` terms is rounded to within 2 ulp (the `exp` and the product), the sum
    /// adds `S` roundings, and `ln` one, so `|got − want| ≤ 16ε·(1 + |want|)` is a bound
    /// with room; zero weights drop their atom even where `x = +∞`.
    #[test]
    fn block_lse_matches_the_plain_sum() {
        let (n, s, m) = (37, 6, 4);
        let x = Batch::from_fn(n, s * m, |i, j| {
            let t = ((i * 31 + j * 17) % 97) as f64 / 97.0;
            if (i + j) % 13 == 0 {
                f64::NEG_INFINITY
            } else {
                40.0 * t - 20.0
            }
        });
        let mut w = Batch::from_fn(s, m, |k, j| ((k + 2 * j) % 5) as f64 / 4.0);
        w.set(0, 3, 0.0);
        let mut x = x;
        x.set(5, 3 * s, f64::INFINITY); // atom 0 of column 3 has weight 0
        let got = block_lse(&x, &w);
        for j in 0..m {
            for i in 0..n {
                let terms: Vec<(f64, f64)> = (0..s)
                    .filter(|&k| w.get(k, j) > 0.0)
                    .map(|k| (w.get(k, j), x.get(i, j * s + k)))
                    .collect();
                let mx = terms.iter().fold(f64::NEG_INFINITY, |a, t| a.max(t.1));
                let want = if mx == f64::NEG_INFINITY {
                    mx
                } else {
                    mx + terms
                        .iter()
                        .map(|(wk, xk)| wk * (xk - mx).exp())
                        .sum::<f64>()
                        .ln()
                };
                let g = got.get(i, j);
                assert!(
                    g == want || (g - want).abs() <= 16.0 * f64::EPSILON * (1.0 + want.abs()),
                    "({i}, {j}): {g} vs {want}"
                );
            }
        }
    }
}
