//! Dense Gibbs kernel from an arbitrary (possibly rectangular) cost matrix.

use super::lse::{lse, lse_signed};
use super::Kernel;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef, Par};

/// `K = exp(-C/γ)` stored densely, with `C/γ` kept for the log domain.
///
/// Memory: two `nrows × ncols` matrices. `K x` is one GEMM for the whole batch.
#[derive(Clone, Debug)]
pub struct DenseKernel<T: Real> {
    k: Batch<T>,
    cg: Batch<T>,
    gamma: T,
    symmetric: bool,
    par: Par,
}

impl<T: Real> DenseKernel<T> {
    /// Builds `K = exp(-C/γ)` from a cost matrix (any shape, entries finite).
    pub fn new(cost: MatRef<'_, T>, gamma: T) -> Result<Self> {
        crate::validate::positive("gamma", gamma)?;
        let c = Batch::from_mat(cost);
        if let Some((row, col)) = c.first_non_finite() {
            return Err(Error::NonFinite {
                arg: "cost",
                row,
                col,
            });
        }
        let cg = c.map(|x| x / gamma);
        let k = cg.map(|x| (-x).exp());
        let symmetric = c.rows() == c.cols()
            && (0..c.rows()).all(|i| (0..i).all(|j| c.get(i, j) == c.get(j, i)));
        Ok(DenseKernel {
            k,
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

    /// Sets the parallelism of the GEMMs (default sequential).
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The kernel matrix `K`.
    pub fn matrix(&self) -> &Batch<T> {
        &self.k
    }
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
    fn apply(&self, x: &Batch<T>, out: &mut Batch<T>) {
        matmul(
            out.view_mut(),
            Accum::Replace,
            self.k.view(),
            x.view(),
            T::one(),
            self.par,
        );
    }
    fn apply_t(&self, x: &Batch<T>, out: &mut Batch<T>) {
        matmul(
            out.view_mut(),
            Accum::Replace,
            self.k.view().transpose(),
            x.view(),
            T::one(),
            self.par,
        );
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
                let (val, sg) = lse_signed(&tmp, sb);
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
        matmul(
            out.view_mut(),
            Accum::Replace,
            kc.view(),
            x.view(),
            T::one(),
            self.par,
        );
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
