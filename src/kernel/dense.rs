//! Dense Gibbs kernel from an arbitrary (possibly rectangular) cost matrix.

use super::gemm as matmul;
use super::lse::{lse, lse_signed};
use super::Kernel;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use crate::solver::{part_len, run_parts, threads};
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatRef, Par};

/// `K = exp(-C/γ)` stored densely, with `C/γ` kept for the log domain.
///
/// Memory: two `nrows × ncols` matrices, three when `C` is not symmetric (`Kᵀ` is then
/// stored too). `K x` is one GEMM for the whole batch, except for a symmetric `K` of more
/// than 64 MiB applied to at most 8 columns: that product is bound by reading `K` from
/// memory, and it runs as block GEMMs over the lower triangle, which read every entry
/// once (1.34× faster at N = 4096 on one thread, see docs/benchmarks.md).
///
/// **Parallelism.** Sequential by default. With [`DenseKernel::with_par`]`(Par::rayon(k))`
/// a product of more than 2²⁴ multiply-adds is split over `k` threads by blocks
/// of rows of `K` (each thread reads its share of `K` once, what a memory-bound product
/// with few columns needs), or into two runs of blocks for the lower-triangle product;
/// the result does not depend on the number of threads. On
/// the 2-core machine of `docs/benchmarks.md` threads did not pay: see there.
#[derive(Clone, Debug)]
pub struct DenseKernel<T: Real> {
    k: Batch<T>,
    /// `Kᵀ` in column-major order when `K` is not symmetric. A GEMM with a few right-hand
    /// columns streams the columns of its left factor; through a transposed view it reads
    /// rows instead and runs 2-5× slower (measured in `docs/benchmarks.md`).
    kt: Option<Batch<T>>,
    cg: Batch<T>,
    gamma: T,
    symmetric: bool,
    par: Par,
}

impl<T: Real> DenseKernel<T> {
    /// Builds `K = exp(-C/γ)` from a cost matrix (any shape, entries finite).
    pub fn new(cost: MatRef<'_, T>, gamma: T) -> Result<Self> {
        crate::validate::positive("gamma", gamma)?;
        if let Some((row, col)) = first_non_finite(cost) {
            return Err(Error::NonFinite {
                arg: "cost",
                row,
                col,
            });
        }
        // Built straight from the view: an intermediate copy of `C` costs as much as the
        // exponentials (page faults on a fresh N² buffer).
        let cg = Batch::from_fn(cost.nrows(), cost.ncols(), |i, j| cost[(i, j)] / gamma);
        let mut k = cg.map(|x| -x);
        T::exp_slice(k.as_mut_slice());
        // K = exp(-C/γ) must be finite in `T`: a cost with `-C/γ` above `ln(T::MAX)`
        // (709.78 in f64, 88.72 in f32) gives `K = ∞`, and `K x` is then NaN as soon as
        // `x` has a zero (∞ · 0). Negative costs are fine as long as `K` stays finite;
        // entries underflowing to 0 (large positive costs, small γ) are legitimate and
        // handled by the log domain, so only overflow is rejected.
        if let Some(p) = k.as_slice().iter().position(|v| !v.is_finite()) {
            let rows = k.rows().max(1);
            return Err(Error::InvalidParameter {
                arg: "cost",
                requirement: "such that exp(-cost/gamma) is finite in the working precision \
                              (cost/gamma >= -709.78 in f64, >= -88.72 in f32)",
                value: cost[(p % rows, p / rows)].to_f64_(),
            });
        }
        let symmetric = is_symmetric(cost);
        let kt = (!symmetric).then(|| Batch::from_mat(k.view().transpose()));
        Ok(DenseKernel {
            k,
            kt,
            cg,
            gamma,
            symmetric,
            par: Par::Seq,
        })
    }

    /// Builds the kernel of the squared Euclidean cost between two sets of points
    /// (`x`: `n1 × dim`, `y`: `n2 × dim`, one point per row).
    pub fn sq_euclidean(x: MatRef<'_, T>, y: MatRef<'_, T>, gamma: T) -> Result<Self> {
        if x.ncols() != y.ncols() {
            return Err(Error::ShapeMismatch {
                arg: "y",
                expected: format!("_ x {}", x.ncols()),
                found: format!("{} x {}", y.nrows(), y.ncols()),
            });
        }
        let c = faer::Mat::from_fn(x.nrows(), y.nrows(), |i, j| {
            (0..x.ncols()).fold(T::zero(), |acc, d| {
                let t = x[(i, d)] - y[(j, d)];
                acc + t * t
            })
        });
        Self::new(c.as_ref(), gamma)
    }

    /// Sets the parallelism of the products (default `Par::Seq`, see [`DenseKernel`]):
    /// `Par::rayon(k)` allows `k` threads (`0`: every core).
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// `out = m x`, split by rows of `m` over the threads of the parallelism setting; for a
    /// symmetric `m` too large for any cache, from its lower triangle only
    /// ([`symmetric_product`]).
    fn product(&self, m: MatRef<'_, T>, x: &Batch<T>, out: &mut Batch<T>) {
        let work = m.nrows() * m.ncols() * x.cols();
        let threads = threads(self.par, work);
        let bytes = m.nrows() * m.ncols() * std::mem::size_of::<T>();
        if self.symmetric && bytes >= SYMMETRIC_MIN_BYTES && x.cols() <= SYMMETRIC_MAX_COLS {
            symmetric_product(m, x, out, threads);
            return;
        }
        let per = part_len(m.nrows(), 1, threads);
        let (x, mut out) = (x.view(), out.view_mut());
        // Blocks of rows of `K` and of `out`, one per thread.
        let mut parts = Vec::with_capacity(m.nrows().div_ceil(per));
        let mut r0 = 0;
        while r0 < m.nrows() {
            let len = per.min(m.nrows() - r0);
            let (part, tail) = out.split_at_row_mut(len);
            out = tail;
            parts.push((m.subrows(r0, len), part));
            r0 += len;
        }
        run_parts(parts, |(rows, part)| {
            matmul(part, Accum::Replace, rows, x, T::one(), Par::Seq)
        });
    }

    /// The kernel matrix `K`.
    pub fn matrix(&self) -> &Batch<T> {
        &self.k
    }
}

/// Size of a symmetric matrix from which [`symmetric_product`] pays: above every cache, where
/// a product with a few columns is bound by reading the matrix from memory. On the Zen 4
/// machine of docs/benchmarks.md, N = 4096 `f64` (134 MB) × 4 columns runs in 15.0 ms
/// from the lower triangle against 20.1 ms for faer's GEMM of the whole matrix
/// (`cargo bench --bench barycenter -- "kernel_gemm/.*4096x4$"`); at N = 1024 (8 MB, in
/// cache) the blocks were 1.3× slower than one GEMM (a throwaway program, under load).
const SYMMETRIC_MIN_BYTES: usize = 64 << 20;

/// Most columns of `x` for [`symmetric_product`]: with few columns a product is bound by
/// reading the matrix; with many it is bound by arithmetic, where one large GEMM does
/// better than twice as many block GEMMs (only 4 columns, the barycenter batch of P1, was
/// measured).
const SYMMETRIC_MAX_COLS: usize = 8;

/// Side of the square blocks of [`symmetric_product`]: a 128 × 128 `f64` block (128 KB)
/// stays in L2 between its two products (128 was the fastest of 64-512 at N = 4096 in
/// the same throwaway program).
const SYMMETRIC_BLOCK: usize = 128;

/// `out = m x` for a symmetric `m`, reading each entry once: for every block `B = m[I, J]`
/// with `I ≥ J`, `out_I += B x_J` and, off the diagonal, `out_J += Bᵀ x_I` (as
/// `out_Jᵀ += x_Iᵀ B`, which reads `B` in its own column-major order), while `B` is in
/// cache. The matrix streams from memory once instead of twice at the price of twice as
/// many (smaller) GEMMs. The blocks are cut into two runs with their own accumulators
/// (`out` and one extra buffer), one per thread when `threads > 1`.
fn symmetric_product<T: Real>(m: MatRef<'_, T>, x: &Batch<T>, out: &mut Batch<T>, threads: usize) {
    let (n, b) = (m.nrows(), SYMMETRIC_BLOCK);
    let nb = n.div_ceil(b);
    let blocks: Vec<(usize, usize)> = (0..nb)
        .flat_map(|j| (j..nb).map(move |i| (i * b, j * b)))
        .collect();
    // Two parts, fixed so that the result does not depend on the number of threads: the
    // first accumulates into `out` itself, the second into the one extra buffer.
    let per = blocks.len().div_ceil(2);
    let mut extra = Batch::<T>::zeros(n, x.cols());
    out.as_mut_slice().fill(T::zero());
    let run = |(part, acc): (&[(usize, usize)], &mut Batch<T>)| {
        let (xv, mut av) = (x.view(), acc.view_mut());
        for &(i0, j0) in part {
            let (bi, bj) = (b.min(n - i0), b.min(n - j0));
            let blk = m.submatrix(i0, j0, bi, bj);
            matmul(
                av.rb_mut().subrows_mut(i0, bi),
                Accum::Add,
                blk,
                xv.subrows(j0, bj),
                T::one(),
                Par::Seq,
            );
            if i0 != j0 {
                matmul(
                    av.rb_mut().subrows_mut(j0, bj).transpose_mut(),
                    Accum::Add,
                    xv.subrows(i0, bi).transpose(),
                    blk,
                    T::one(),
                    Par::Seq,
                );
            }
        }
    };
    let parts = blocks.chunks(per).zip([&mut *out, &mut extra]);
    if threads > 1 {
        run_parts(parts, run);
    } else {
        parts.for_each(run);
    }
    for (ov, &ev) in out.as_mut_slice().iter_mut().zip(extra.as_slice()) {
        *ov += ev;
    }
}

/// Position of the first non-finite entry, column by column.
fn first_non_finite<T: Real>(c: MatRef<'_, T>) -> Option<(usize, usize)> {
    (0..c.ncols()).find_map(|j| {
        (0..c.nrows())
            .find(|&i| !c[(i, j)].is_finite())
            .map(|i| (i, j))
    })
}

/// Whether `c = cᵀ` exactly. Compares tile against mirrored tile so that both sides
/// stay in cache (a plain row-against-column scan misses on every strided read).
fn is_symmetric<T: Real>(c: MatRef<'_, T>) -> bool {
    const TILE: usize = 64;
    let n = c.nrows();
    if n != c.ncols() {
        return false;
    }
    (0..n).step_by(TILE).all(|j0| {
        (j0..n).step_by(TILE).all(|i0| {
            (j0..(j0 + TILE).min(n))
                .all(|j| (i0.max(j + 1)..(i0 + TILE).min(n)).all(|i| c[(i, j)] == c[(j, i)]))
        })
    })
}

impl<T: Real> Kernel<T> for DenseKernel<T> {
    fn nrows(&self) -> usize {
        self.k.rows()
    }
    fn ncols(&self) -> usize {
        self.k.cols()
    }
    fn gamma(&self) -> T {
        self.gamma
    }
    fn par(&self) -> Par {
        self.par
    }
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.product(self.k.view(), x, out);
    }
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>) {
        self.product(self.kt.as_ref().unwrap_or(&self.k).view(), x, out);
    }
    fn apply_log(&self, v: &Batch<T>, out: &mut Batch<T>) {
        // out_i = log Σ_j exp(v_j - C_ij/γ). C is column-major, so stream its columns
        // (contiguous) twice: once for the row maxima, once for the shifted sums.
        let n = self.nrows();
        let mut m = vec![T::zero(); n];
        let mut s = vec![T::zero(); n];
        let mut tmp = vec![T::zero(); n];
        for b in 0..v.cols() {
            let vb = v.col(b);
            m.fill(T::neg_infinity());
            for (j, &vj) in vb.iter().enumerate() {
                if vj == T::neg_infinity() {
                    continue;
                }
                for (mi, &c) in m.iter_mut().zip(self.cg.col(j)) {
                    *mi = mi.max(vj - c);
                }
            }
            s.fill(T::zero());
            for (j, &vj) in vb.iter().enumerate() {
                if vj == T::neg_infinity() {
                    continue;
                }
                for ((t, &c), &mi) in tmp.iter_mut().zip(self.cg.col(j)).zip(&m) {
                    // A row whose max is -∞ gets -∞ - (-∞) = NaN here; it is masked below.
                    *t = vj - c - mi;
                }
                T::exp_slice(&mut tmp);
                for (si, &t) in s.iter_mut().zip(&tmp) {
                    *si += t;
                }
            }
            for ((o, &mi), &si) in out.col_mut(b).iter_mut().zip(&m).zip(&s) {
                *o = if mi == T::neg_infinity() {
                    mi
                } else {
                    mi + si.ln()
                };
            }
        }
    }
    fn apply_log_t(&self, v: &Batch<T>, out: &mut Batch<T>) {
        // out_j = log Σ_i exp(v_i - C_ij/γ): column j of C is contiguous.
        let mut tmp = vec![T::zero(); self.nrows()];
        for b in 0..v.cols() {
            let vb = v.col(b);
            for j in 0..self.ncols() {
                for ((t, &vi), &c) in tmp.iter_mut().zip(vb).zip(self.cg.col(j)) {
                    *t = vi - c;
                }
                out.col_mut(b)[j] = lse(&tmp);
            }
        }
    }
    fn apply_log_signed(
        &self,
        v: &Batch<T>,
        sign: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    ) {
        let (n_in, n_out) = if transpose {
            (self.nrows(), self.ncols())
        } else {
            (self.ncols(), self.nrows())
        };
        let mut tmp = vec![T::zero(); n_in];
        for b in 0..v.cols() {
            let (vb, sb) = (v.col(b), sign.col(b));
            for o in 0..n_out {
                for (i, t) in tmp.iter_mut().enumerate() {
                    let c = if transpose {
                        self.cg.get(i, o)
                    } else {
                        self.cg.get(o, i)
                    };
                    *t = vb[i] - c;
                }
                let (val, sg) = lse_signed(&mut tmp, sb);
                out.col_mut(b)[o] = val;
                out_sign.col_mut(b)[o] = sg;
            }
        }
    }
    fn apply_cost(&self, x: &Batch<T>, out: &mut Batch<T>) {
        let mut kc = self.k.clone();
        for (kv, &c) in kc.as_mut_slice().iter_mut().zip(self.cg.as_slice()) {
            *kv = *kv * c * self.gamma;
        }
        self.product(kc.view(), x, out);
    }
    fn apply_cost_log(
        &self,
        v: &Batch<T>,
        out: &mut Batch<T>,
        out_sign: &mut Batch<T>,
        transpose: bool,
    ) {
        // out_o = log |Σ_i C_io exp(v_i − C_io/γ)| (Kᵀ; C_oi for K): a signed logsumexp
        // of `v_i − C/γ + log|C|` with the sign of `C` (a cost may be negative; a zero
        // cost or a zero input is a sign-0 term). Column `o` of `C/γ` is contiguous, so
        // the transposed product (the one `sinkhorn` needs) streams it.
        let (n_in, n_out) = if transpose {
            (self.nrows(), self.ncols())
        } else {
            (self.ncols(), self.nrows())
        };
        let mut tmp = vec![T::zero(); n_in];
        let mut sg = vec![T::zero(); n_in];
        for b in 0..v.cols() {
            let vb = v.col(b);
            for o in 0..n_out {
                for (i, (t, s)) in tmp.iter_mut().zip(sg.iter_mut()).enumerate() {
                    let cg = if transpose {
                        self.cg.get(i, o)
                    } else {
                        self.cg.get(o, i)
                    };
                    let c = cg * self.gamma;
                    let zero = c == T::zero() || !cg.is_finite() || vb[i] == T::neg_infinity();
                    *s = if zero { T::zero() } else { c.signum() };
                    *t = if zero {
                        T::neg_infinity()
                    } else {
                        vb[i] - cg + c.abs().ln()
                    };
                }
                let (val, s) = lse_signed(&mut tmp, &sg);
                out.col_mut(b)[o] = val;
                out_sign.col_mut(b)[o] = s;
            }
        }
    }
    fn cost_matrix(&self) -> Batch<T> {
        self.cg.map(|x| x * self.gamma)
    }
    fn is_symmetric(&self) -> bool {
        self.symmetric
    }
    fn describe(&self) -> String {
        format!(
            "dense {}x{} Gibbs kernel, γ = {}, {}",
            self.nrows(),
            self.ncols(),
            self.gamma,
            T::NAME
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lower-triangle product against one GEMM of the whole matrix, on a size that is
    /// not a multiple of the block: both sum the same `n` products per output in another
    /// order, so they differ by at most `2 n ε Σ_j |m_ij x_j|` (twice the classical bound
    /// of one dot product). One and two threads must give the same bits (fixed parts).
    #[test]
    fn symmetric_product_matches_the_full_product() {
        let (n, cols) = (300, 3);
        let m = Batch::<f64>::from_fn(n, n, |i, j| {
            let d = i as f64 - j as f64;
            (-(d * d) / 5000.0).exp() * (1.0 + ((i + j) % 7) as f64 / 7.0)
        });
        let x = Batch::<f64>::from_fn(n, cols, |i, c| ((i * 13 + c * 5) % 11) as f64 - 5.0);
        let mut full = Batch::zeros(n, cols);
        matmul(
            full.view_mut(),
            Accum::Replace,
            m.view(),
            x.view(),
            1.0,
            Par::Seq,
        );
        let (mut one, mut two) = (Batch::zeros(n, cols), Batch::zeros(n, cols));
        symmetric_product(m.view(), &x, &mut one, 1);
        symmetric_product(m.view(), &x, &mut two, 2);
        assert_eq!(one.as_slice(), two.as_slice());
        for c in 0..cols {
            for i in 0..n {
                let scale: f64 = (0..n).map(|j| (m.get(i, j) * x.get(j, c)).abs()).sum();
                let bound = 2.0 * n as f64 * f64::EPSILON * scale;
                assert!(
                    (one.get(i, c) - full.get(i, c)).abs() <= bound,
                    "({i}, {c}): {} vs {}",
                    one.get(i, c),
                    full.get(i, c)
                );
            }
        }
    }
}
