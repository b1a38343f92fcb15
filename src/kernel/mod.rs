//! Gibbs kernels `K = exp(-C/γ)` behind one trait.
//!
//! A [`Kernel`] applies `K` or `Kᵀ` to a whole batch of columns at once (one GEMM for a
//! dense kernel, one GEMM per axis for a separable grid), and applies it in the log
//! domain, `v ↦ log(K exp(v))`, with a max-shifted logsumexp for the stabilized solvers
//! (eq. 22-24 and Algorithm 3). Solvers never know which kernel they hold.

mod dense;
mod grid;
pub(crate) mod lse;
pub(crate) mod points;

pub use dense::DenseKernel;
pub use grid::{Grid, GridKernel, GridUnits};
pub use points::PointCloudKernel;

use crate::batch::Batch;
use crate::real::Real;
use faer::{Accum, MatMut, MatRef, Par};

pub use crate::vexp::{clear_upper_state, upper_state_clears};

/// `out = alpha · a b` (or `out += ..` with `Accum::Add`) through faer, followed by
/// [`clear_upper_state`]. Every GEMM of the crate goes through here: faer's
/// AVX-512 microkernels leave the upper vector state dirty, which makes every later
/// SSE-encoded instruction slow on Intel CPUs (see `clear_upper_state`).
pub(crate) fn gemm<T: Real>(
    out: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    alpha: T,
    par: Par,
) {
    faer::linalg::matmul::matmul(out, accum, a, b, alpha, par);
    crate::vexp::clear_upper_state();
}

/// A Gibbs kernel `K = exp(-C/γ)` of size `nrows × ncols`, applied to batches of columns.
///
/// All methods take `x` with one vector per column and write `out`, whose shape the
/// caller has already set (`nrows × B` for `K`, `ncols × B` for `Kᵀ`). Implementations
/// must not allocate per column: a batch goes through in one pass.
pub trait Kernel<T: Real>: Send + Sync {
    /// Size of the first support (the one `K x` lives on).
    fn nrows(&self) -> usize;
    /// Size of the second support.
    fn ncols(&self) -> usize;
    /// The regularization γ the kernel was built with.
    fn gamma(&self) -> T;
    /// The parallelism the kernel was given (`Par::Seq` unless set): its applications use
    /// it, and so does the balanced barycenter's fused elementwise step between two
    /// applications (`Ops::geometric_step` of the eager solver).
    fn par(&self) -> Par {
        Par::Seq
    }
    /// `out = K x`.
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>);
    /// `out = Kᵀ x`.
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>);
    /// `out = log(K exp(v))`, stable for any finite or `-∞` entries of `v` (Algorithm 3).
    fn apply_log(&self, v: &Batch<T>, out: &mut Batch<T>);
    /// `out = log(Kᵀ exp(v))`.
    fn apply_log_t(&self, v: &Batch<T>, out: &mut Batch<T>);
    /// Signed log-domain application needed by Algorithm 4's backward loop: with
    /// `x = sign ⊙ exp(v)` (sign ∈ {-1, 0, 1}), writes `K x = out_sign ⊙ exp(out)`
    /// (or `Kᵀ x` when `transpose`).
    fn apply_log_signed(
        &self,
        v: &Batch<T>,
        sign: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    );
    /// `out = (K ⊙ C) x`, so that the transport cost of `diag(u) K diag(v)` is
    /// `uᵀ (K ⊙ C) v` without forming the plan.
    fn apply_cost(&self, x: &Batch<T>, out: &mut Batch<T>);
    /// Log-domain [`Kernel::apply_cost`]: with `x = exp(v)`, writes
    /// `(K ⊙ C) x = out_sign ⊙ exp(out)` (or `(K ⊙ C)ᵀ x` when `transpose`), i.e.
    /// `out_i = log |Σ_j C_ij exp(v_j − C_ij/γ)|`, from the exponents `v_j − C_ij/γ` and
    /// `log |C_ij|` with the max shift, never through `K` itself. Stays exact where `K`
    /// underflows (small γ), which the scaling-domain `apply_cost` cannot. `out_sign` is
    /// 0 where the sum is zero (`out = -∞`), -1 only where negative costs dominate.
    fn apply_cost_log(
        &self,
        v: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    );
    /// The cost matrix `C` as a dense `nrows × ncols` matrix (for plans and small problems).
    fn cost_matrix(&self) -> Batch<T>;
    /// Whether `K = Kᵀ` (lets solvers skip a transposed application path).
    fn is_symmetric(&self) -> bool;
    /// One line saying what the kernel is and how it is applied (band widths etc.).
    fn describe(&self) -> String;
}

/// `out = K x` into a freshly allocated batch (convenience for callers outside hot loops).
pub fn apply_new<T: Real, K: Kernel<T> + ?Sized>(k: &K, x: &Batch<T>, transpose: bool) -> Batch<T> {
    let rows = if transpose { k.ncols() } else { k.nrows() };
    let mut out = Batch::zeros(rows, x.cols());
    if transpose {
        k.apply_t(x, &mut out)
    } else {
        k.apply(x, &mut out)
    }
    out
}

/// `log(K exp(v))` into a freshly allocated batch.
pub fn apply_log_new<T: Real, K: Kernel<T> + ?Sized>(
    k: &K,
    v: &Batch<T>,
    transpose: bool,
) -> Batch<T> {
    let rows = if transpose { k.ncols() } else { k.nrows() };
    let mut out = Batch::zeros(rows, v.cols());
    if transpose {
        k.apply_log_t(v, &mut out)
    } else {
        k.apply_log(v, &mut out)
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GEMM wrapper issues `vzeroupper` on every x86 CPU with AVX (the counter moves)
    /// and changes no bit of the product: it runs after faer has stored the result.
    #[test]
    fn gemm_clears_upper_state_and_is_exact() {
        let a = faer::Mat::<f64>::from_fn(37, 29, |i, j| ((i * 7 + j * 3) % 11) as f64 / 7.0);
        let b = faer::Mat::<f64>::from_fn(29, 5, |i, j| ((i + 2 * j) % 5) as f64 - 1.5);
        let mut want = faer::Mat::<f64>::zeros(37, 5);
        faer::linalg::matmul::matmul(
            want.as_mut(),
            Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            1.0,
            Par::Seq,
        );
        let before = crate::vexp::upper_state_clears();
        let mut got = faer::Mat::<f64>::zeros(37, 5);
        gemm(
            got.as_mut(),
            Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            1.0,
            Par::Seq,
        );
        for j in 0..5 {
            for i in 0..37 {
                assert_eq!(got[(i, j)].to_bits(), want[(i, j)].to_bits());
            }
        }
        // A scalar computation straddling the clear is unaffected (vector registers hold
        // no live value across the call).
        let x = std::hint::black_box(2.5f64).ln();
        crate::vexp::clear_upper_state();
        assert_eq!(x.to_bits(), 2.5f64.ln().to_bits());
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if is_x86_feature_detected!("avx") && std::env::var_os("WASSDL_KEEP_UPPER_STATE").is_none()
        {
            // Other tests run concurrently and may add to the counter: at least our two.
            assert!(crate::vexp::upper_state_clears() >= before + 2);
        }
    }

    /// A grid kernel application (the solvers' GEMMs) goes through the wrapper.
    #[test]
    fn grid_kernel_application_clears_upper_state() {
        let grid = Grid::new(&[12, 9]).unwrap();
        let k = GridKernel::<f64>::new(&grid, 0.05).unwrap();
        let x = Batch::from_fn(108, 3, |i, j| 1.0 + ((i + j) % 4) as f64);
        let before = crate::vexp::upper_state_clears();
        let _ = apply_new(&k, &x, false);
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if is_x86_feature_detected!("avx") && std::env::var_os("WASSDL_KEEP_UPPER_STATE").is_none()
        {
            assert!(crate::vexp::upper_state_clears() > before);
        }
        let _ = before;
    }
}
