//! Appendix C as dense matrices, for one datapoint and small `N`: the Jacobians of the
//! barycenter iteration and their assembly into Proposition 1 (eq. 18-21).
//!
//! These are the *reference* forms the fast backward loops of [`crate::analytic`] must
//! agree with; they cost `O((N·S)²)` memory, so sizes are capped ([`MAX_NS`]).
//!
//! # Notation and conventions
//!
//! For one datapoint with weights `λ ∈ ℝ^S`, atoms `D = [d_1 … d_S]` (`N × S`) and
//! scalings `b = [b_1 … b_S]` (`N × S`):
//! * `ϕ(b_s, d) = Kᵀ(d / K b_s)` and `ϕ_NS(b, D) = [ϕ(b_1, d_1); …; ϕ(b_S, d_S)] ∈ ℝ^{NS}`;
//! * `Ψ(b, D, λ) = Π_s ϕ(b_s, d_s)^{λ_s}` (eq. 16), the next barycenter;
//! * `Φ(b, D, λ) = [Ψ/ϕ(b_1, d_1); …; Ψ/ϕ(b_S, d_S)]` (eq. 17), the next scalings.
//!
//! Stacked vectors (`b`, `D`, `ϕ_NS`, `Φ`) are atom-major, index `s·N + i` — exactly the
//! column-major flattening of the `N × S` [`Batch`].
//!
//! **Transposed Jacobians.** As in the paper, `ξ_y := [∂_y ξ]ᵀ`: a matrix of shape
//! `dim(y) × dim(ξ)` that maps an adjoint (cotangent) of `ξ` to the adjoint of `y`. So
//! [`psi_b`] is `NS × N`, [`phi_b`] `NS × NS`, [`psi_lambda`] `S × N`. The exceptions are
//! [`dphi_db`] and [`dphi_db_blocks`], which are the plain (untransposed) Jacobians
//! `∂ϕ/∂b_s`, `∂_b ϕ_NS` of eq. 32, as printed.
//!
//! `Δ(x)` is the diagonal matrix of `x`; `J_λ = [λ_1 I_N; …; λ_S I_N]` (`NS × N`);
//! `I_{N,S} = [I_N … I_N]` (`N × NS`).

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::gemm as matmul;
use crate::kernel::{apply_new, Kernel};
use crate::real::Real;
use crate::validate;
use faer::{Accum, Mat, MatRef, Par};

/// Largest `N·S` the dense forms accept (an `NS × NS` matrix of `f64` is then 128 MiB).
pub const MAX_NS: usize = 4096;

fn mm<T: Real>(a: MatRef<'_, T>, b: MatRef<'_, T>) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, T::one(), Par::Seq);
    out
}

/// `Δ(d) A`.
fn diag_left<T: Real>(d: &[T], a: MatRef<'_, T>) -> Mat<T> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| d[i] * a[(i, j)])
}

/// `A Δ(d)`.
fn diag_right<T: Real>(a: MatRef<'_, T>, d: &[T]) -> Mat<T> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] * d[j])
}

/// The kernel as a dense `N × N` matrix (`K eⱼ` for each `j`).
pub fn dense_kernel<T: Real>(kernel: &dyn Kernel<T>) -> Result<Mat<T>> {
    let n = square(kernel)?;
    if n > MAX_NS {
        return Err(too_big(n));
    }
    let id = Batch::from_fn(n, n, |i, j| if i == j { T::one() } else { T::zero() });
    Ok(apply_new(kernel, &id, false).to_mat())
}

fn square<T: Real>(kernel: &dyn Kernel<T>) -> Result<usize> {
    if kernel.nrows() != kernel.ncols() {
        return Err(Error::ShapeMismatch {
            arg: "kernel",
            expected: "square".into(),
            found: format!("{} x {}", kernel.nrows(), kernel.ncols()),
        });
    }
    Ok(kernel.nrows())
}

fn too_big(ns: usize) -> Error {
    Error::InvalidParameter {
        arg: "N·S",
        requirement: "at most jacobians::MAX_NS (dense Appendix C forms are for small problems)",
        value: ns as f64,
    }
}

/// Everything the Jacobians of one iteration need, evaluated at `(b, D, λ)`.
struct Point<T: Real> {
    n: usize,
    s: usize,
    k: Mat<T>,
    /// `K b_s`, `N × S`.
    kb: Batch<T>,
    /// `ϕ(b_s, d_s)`, `N × S`.
    phi: Batch<T>,
    /// `Ψ(b, D, λ)`, length `N`.
    psi: Vec<T>,
    lambda: Vec<T>,
    atoms: Batch<T>,
}

impl<T: Real> Point<T> {
    fn new(kernel: &dyn Kernel<T>, b: &Batch<T>, atoms: &Batch<T>, lambda: &[T]) -> Result<Self> {
        let k = dense_kernel(kernel)?;
        let n = k.nrows();
        validate::rows("atoms", atoms, n)?;
        let s = atoms.cols();
        if n * s > MAX_NS {
            return Err(too_big(n * s));
        }
        validate::shape("b", b, n, s)?;
        if lambda.len() != s {
            return Err(Error::ShapeMismatch {
                arg: "lambda",
                expected: format!("{s}"),
                found: format!("{}", lambda.len()),
            });
        }
        validate::nonnegative("atoms", atoms)?;
        let lam = Batch::from_vec(s, 1, lambda.to_vec());
        if let Some((row, col)) = lam.first_non_finite() {
            return Err(Error::NonFinite {
                arg: "lambda",
                row,
                col,
            });
        }
        if let Some((row, col)) = b.first_non_finite() {
            return Err(Error::NonFinite { arg: "b", row, col });
        }
        let kb = apply_new(kernel, b, false);
        let a = Batch::from_fn(n, s, |i, j| atoms.get(i, j) / kb.get(i, j));
        let phi = apply_new(kernel, &a, true);
        let psi = (0..n)
            .map(|i| {
                (0..s)
                    .filter(|&j| lambda[j] != T::zero())
                    .fold(T::zero(), |acc, j| acc + lambda[j] * phi.get(i, j).ln())
                    .exp()
            })
            .collect();
        Ok(Point {
            n,
            s,
            k,
            kb,
            phi,
            psi,
            lambda: lambda.to_vec(),
            atoms: atoms.clone(),
        })
    }

    /// eq. 32 for atom `s`: `∂ϕ/∂b_s = −Kᵀ Δ(d_s / (K b_s)²) K`.
    fn dphi_db_s(&self, s: usize) -> Mat<T> {
        let w: Vec<T> = (0..self.n)
            .map(|i| {
                let kb = self.kb.get(i, s);
                -self.atoms.get(i, s) / (kb * kb)
            })
            .collect();
        mm(self.k.transpose(), diag_left(&w, self.k.as_ref()).as_ref())
    }

    /// Block-diagonal `∂_b ϕ_NS` (C.1).
    fn dphi_db_blocks(&self) -> Mat<T> {
        let (n, s) = (self.n, self.s);
        let mut out = Mat::<T>::zeros(n * s, n * s);
        for j in 0..s {
            let blk = self.dphi_db_s(j);
            out.as_mut()
                .submatrix_mut(j * n, j * n, n, n)
                .copy_from(blk.as_ref());
        }
        out
    }

    /// `ϕ_NS` stacked.
    fn phi_ns(&self) -> Vec<T> {
        self.phi.as_slice().to_vec()
    }

    /// `Φ(b, D, λ)` stacked: `Ψ / ϕ_s`.
    fn big_phi(&self) -> Vec<T> {
        (0..self.n * self.s)
            .map(|q| self.psi[q % self.n] / self.phi.as_slice()[q])
            .collect()
    }

    /// `J_λ` (`NS × N`).
    fn j_lambda(&self) -> Mat<T> {
        let n = self.n;
        Mat::from_fn(n * self.s, n, |r, c| {
            if r % n == c {
                self.lambda[r / n]
            } else {
                T::zero()
            }
        })
    }

    /// `I_{N,S}` (`N × NS`).
    fn i_ns(&self) -> Mat<T> {
        let n = self.n;
        Mat::from_fn(
            n,
            n * self.s,
            |r, c| {
                if c % n == r {
                    T::one()
                } else {
                    T::zero()
                }
            },
        )
    }

    /// `Kᵀ Δ(1/K b_i)`: the Jacobian `∂ϕ(b_i, d_i)/∂d_i` (C.3).
    fn dphi_dd_i(&self, i: usize) -> Mat<T> {
        let inv: Vec<T> = (0..self.n).map(|q| T::one() / self.kb.get(q, i)).collect();
        diag_right(self.k.transpose(), &inv)
    }
}

/// eq. 32: the Jacobian `∂ϕ/∂b_s (b_s, d_s) = −Kᵀ Δ(d_s/(K b_s)²) K` (`N × N`,
/// untransposed, as printed).
pub fn dphi_db<T: Real>(kernel: &dyn Kernel<T>, b_s: &[T], d_s: &[T]) -> Result<Mat<T>> {
    let n = kernel.nrows();
    let b = Batch::from_vec(b_s.len(), 1, b_s.to_vec());
    let d = Batch::from_vec(d_s.len(), 1, d_s.to_vec());
    validate::shape("b_s", &b, n, 1)?;
    let pt = Point::new(kernel, &b, &d, &[T::one()])?;
    Ok(pt.dphi_db_s(0))
}

/// C.1: the block-diagonal Jacobian `∂_b ϕ_NS(b, D)` (`NS × NS`), block `s` = eq. 32 for
/// atom `s` (untransposed, as printed).
pub fn dphi_db_blocks<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
) -> Result<Mat<T>> {
    let ones = vec![T::one(); atoms.cols()];
    Ok(Point::new(kernel, b, atoms, &ones)?.dphi_db_blocks())
}

/// eq. 33: `Ψ_b = [∂_b Ψ]ᵀ = [∂_b ϕ_NS]ᵀ Δ(1/ϕ_NS) J_λ Δ(Ψ)` (`NS × N`).
pub fn psi_b<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(psi_b_at(&pt))
}

fn psi_b_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    let inv_phi: Vec<T> = pt.phi_ns().iter().map(|&x| T::one() / x).collect();
    let right = diag_right(
        diag_left(&inv_phi, pt.j_lambda().as_ref()).as_ref(),
        &pt.psi,
    );
    mm(pt.dphi_db_blocks().transpose(), right.as_ref())
}

/// eq. 34, corrected: `∂Ψ/∂d_i = λ_i Δ(Ψ/ϕ_i) Kᵀ Δ(1/K b_i)` (the paper prints
/// `Kᵀ(1_N/K b_s)`, a vector with the wrong index). Returns the stacked transpose
/// `Ψ_D = [∂_D Ψ]ᵀ` (`NS × N`), block `i` = `λ_i Δ(1/K b_i) K Δ(Ψ/ϕ_i)`.
pub fn psi_d<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(psi_d_at(&pt))
}

fn psi_d_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    let (n, s) = (pt.n, pt.s);
    let mut out = Mat::<T>::zeros(n * s, n);
    for i in 0..s {
        // ∂Ψ/∂d_i = λ_i Δ(Ψ/ϕ_i) Kᵀ Δ(1/K b_i)
        let scale: Vec<T> = (0..n)
            .map(|q| pt.lambda[i] * pt.psi[q] / pt.phi.get(q, i))
            .collect();
        let jac = diag_left(&scale, pt.dphi_dd_i(i).as_ref());
        out.as_mut()
            .submatrix_mut(i * n, 0, n, n)
            .copy_from(jac.transpose());
    }
    out
}

/// `Ψ_λ = [∂_λ Ψ]ᵀ` (`S × N`), derived from `∂Ψ/∂λ_s = Ψ ⊙ log ϕ_s`.
pub fn psi_lambda<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(psi_lambda_at(&pt))
}

fn psi_lambda_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    Mat::from_fn(pt.s, pt.n, |s, q| pt.psi[q] * pt.phi.get(q, s).ln())
}

/// C.4, final form: `Φ_b = [∂_b Φ]ᵀ = [∂_b ϕ_NS]ᵀ Δ(Φ) [J_λ I_{N,S} − I_NS] Δ(1_NS/ϕ_NS)`
/// (`NS × NS`; the paper prints `1_N` in the last factor).
pub fn phi_b<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(phi_b_at(&pt))
}

fn phi_b_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    let ns = pt.n * pt.s;
    let mut mid = mm(pt.j_lambda().as_ref(), pt.i_ns().as_ref()); // J_λ I_{N,S}
    for q in 0..ns {
        mid[(q, q)] -= T::one(); // − I_NS
    }
    let inv_phi: Vec<T> = pt.phi_ns().iter().map(|&x| T::one() / x).collect();
    let mid = diag_right(diag_left(&pt.big_phi(), mid.as_ref()).as_ref(), &inv_phi);
    mm(pt.dphi_db_blocks().transpose(), mid.as_ref())
}

/// C.5: `Φ_D = [∂_D Φ]ᵀ` (`NS × NS`), block `(i, s)` = `[∂Φ_s/∂d_i]ᵀ` with
/// `∂Φ_s/∂d_i = (λ_i − δ_is) Δ(Ψ/(ϕ_s ϕ_i)) Kᵀ Δ(1/K b_i)` (the `s ≠ i` and `s = i`
/// cases of C.5 in one formula).
pub fn phi_d<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(phi_d_at(&pt))
}

fn phi_d_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    let (n, s) = (pt.n, pt.s);
    let mut out = Mat::<T>::zeros(n * s, n * s);
    for i in 0..s {
        let base = pt.dphi_dd_i(i);
        for j in 0..s {
            let coef = pt.lambda[i] - if i == j { T::one() } else { T::zero() };
            let scale: Vec<T> = (0..n)
                .map(|q| coef * pt.psi[q] / (pt.phi.get(q, j) * pt.phi.get(q, i)))
                .collect();
            let jac = diag_left(&scale, base.as_ref()); // ∂Φ_j/∂d_i
            out.as_mut()
                .submatrix_mut(i * n, j * n, n, n)
                .copy_from(jac.transpose());
        }
    }
    out
}

/// `Φ_λ = [∂_λ Φ]ᵀ` (`S × NS`), derived from `∂Φ_s/∂λ_i = Φ_s ⊙ log ϕ_i`: entry
/// `(i, s·N + q)` is `Φ_s[q] log ϕ_i[q]`.
pub fn phi_lambda<T: Real>(
    kernel: &dyn Kernel<T>,
    b: &Batch<T>,
    atoms: &Batch<T>,
    lambda: &[T],
) -> Result<Mat<T>> {
    let pt = Point::new(kernel, b, atoms, lambda)?;
    Ok(phi_lambda_at(&pt))
}

fn phi_lambda_at<T: Real>(pt: &Point<T>) -> Mat<T> {
    let n = pt.n;
    let big = pt.big_phi();
    Mat::from_fn(pt.s, n * pt.s, |i, c| big[c] * pt.phi.get(c % n, i).ln())
}

fn apply_mat<T: Real>(a: &Mat<T>, x: &[T]) -> Vec<T> {
    let xm = MatRef::from_column_major_slice(x, x.len(), 1);
    let y = mm(a.as_ref(), xm);
    (0..y.nrows()).map(|i| y[(i, 0)]).collect()
}

/// Proposition 1 (eq. 18-21) assembled from the dense Jacobians above, for one datapoint:
/// runs `iterations` = L barycenter iterations from `b⁽⁰⁾ = 1` (eq. 14-15, storing every
/// `b⁽ˡ⁾`), calls `loss_grad` on `p = P⁽ᴸ⁾` (`N × 1`), and returns
/// `(∇_D E_L` as `N × S`, `∇_λ E_L` of length `S)`:
///
/// `∇_D E_L = Ψ_D⁽ᴸ⁻¹⁾ ∇L + Σ_{l=0}^{L−2} Φ_D⁽ˡ⁾ v⁽ˡ⁺¹⁾` (eq. 18),
/// `∇_λ E_L = Ψ_λ⁽ᴸ⁻¹⁾ ∇L + Σ_{l=0}^{L−2} Φ_λ⁽ˡ⁾ v⁽ˡ⁺¹⁾` (eq. 19),
/// `v⁽ᴸ⁻¹⁾ = Ψ_b⁽ᴸ⁻¹⁾ ∇L` (eq. 20), `v⁽ˡ⁻¹⁾ = Φ_b⁽ˡ⁻¹⁾ v⁽ˡ⁾` for `1 ≤ l ≤ L−1` (eq. 21; the
/// paper prints `l < L−1`, which leaves `v⁽ᴸ⁻²⁾` undefined),
///
/// where `ξ⁽ˡ⁾` is evaluated at `(b⁽ˡ⁾, D, λ)`. Costs `O(L (NS)³)`: a reference for tests,
/// not a solver.
pub fn proposition1<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    lambda: &[T],
    iterations: usize,
    loss_grad: &mut dyn FnMut(&Batch<T>) -> Batch<T>,
) -> Result<(Batch<T>, Vec<T>)> {
    if iterations == 0 {
        return Err(Error::InvalidParameter {
            arg: "iterations",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    let n = square(kernel)?;
    validate::rows("atoms", atoms, n)?;
    let s = atoms.cols();
    // forward: b⁽ˡ⁾ = Φ(b⁽ˡ⁻¹⁾), P⁽ᴸ⁾ = Ψ(b⁽ᴸ⁻¹⁾) (eq. 14-15)
    let mut bs = vec![Batch::filled(n, s, T::one())];
    let mut points = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let pt = Point::new(kernel, bs.last().expect("b⁽⁰⁾ pushed"), atoms, lambda)?;
        let next = Batch::from_vec(n, s, pt.big_phi());
        if let Some((row, col)) = next.first_non_finite() {
            return Err(Error::Numerical {
                solver: "proposition1",
                iteration: points.len() + 1,
                message: format!("non-finite scaling at ({row}, {col})"),
            });
        }
        bs.push(next);
        points.push(pt);
    }
    let last = &points[iterations - 1];
    let p = Batch::from_vec(n, 1, last.psi.clone());
    let gl = loss_grad(&p);
    validate::shape("loss_grad(p)", &gl, n, 1)?;
    let gl = gl.into_vec();
    // eq. 18-20 at l = L−1
    let mut grad_d = apply_mat(&psi_d_at(last), &gl);
    let mut grad_l = apply_mat(&psi_lambda_at(last), &gl);
    let mut v = apply_mat(&psi_b_at(last), &gl); // v⁽ᴸ⁻¹⁾
                                                 // eq. 18-19 sums and eq. 21, l = L−2 down to 0
    for l in (0..iterations.saturating_sub(1)).rev() {
        let pt = &points[l];
        for (g, x) in grad_d.iter_mut().zip(apply_mat(&phi_d_at(pt), &v)) {
            *g += x;
        }
        for (g, x) in grad_l.iter_mut().zip(apply_mat(&phi_lambda_at(pt), &v)) {
            *g += x;
        }
        if l > 0 {
            v = apply_mat(&phi_b_at(pt), &v); // v⁽ˡ⁾ = Φ_b⁽ˡ⁾ v⁽ˡ⁺¹⁾
        }
    }
    Ok((Batch::from_vec(n, s, grad_d), grad_l))
}
