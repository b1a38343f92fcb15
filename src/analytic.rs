//! Hand-derived gradients of the unrolled barycenter (section 3.2): Algorithm 1
//! (`SinkhornGrads`, scaling domain) and Algorithm 4 (`logSinkhornGrads`, log domain),
//! batched over `M` datapoints.
//!
//! Both run `L` barycenter iterations (eq. 6-8) from `b⁽⁰⁾ = 1`, keep the scalings
//! `b⁽ˡ⁾` and the vectors `φ⁽ˡ⁾ = Kᵀ(d / K b⁽ˡ⁻¹⁾)` of every iteration, then run the two
//! backward recursions of the paper: one for the weights, one for the atoms. The data
//! gradient `∇L(p)` comes from a caller-supplied closure, so any fitting loss works.
//!
//! **Memory.** The forward pass stores `b⁽ˡ⁾` and `φ⁽ˡ⁾` (`log b`, `log φ` in the log
//! domain) for `l = 1..L`: `2·S·N·L` values per datapoint, `2·S·N·L·M` in all
//! ([`memory_bytes`]); `b⁽⁰⁾ = 1` is not stored, and `K b⁽ˡ⁻¹⁾` is recomputed in the
//! backward pass rather than stored.
//!
//! **Weights.** `∇_λ` is the gradient with respect to unconstrained `λ ∈ ℝ^S` (no simplex
//! projection or renormalization, as in JAX's `grad` of the unrolled loop); compose with
//! the softmax Jacobian of section 3.1 when learning on the simplex.
//!
//! **Column layout.** Scalings of all atoms and datapoints form one `N × (S·M)` batch,
//! column `m·S + s` for atom `s` and datapoint `m`, so each kernel application of a loop
//! step is a single call over the whole batch.
//!
//! **Errata.** The printed Algorithm 1 is correct (its two backward loops even compute
//! the same adjoints in two parametrizations: `g = n ⊙ p`, `r_s = z_s ⊙ p`). The printed
//! Algorithm 4 is not: its weights loop mixes two sign conventions for `r` and takes
//! logarithms of signed quantities. What is implemented here, and why, is recorded in
//! `docs/errata.md`.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::real::Real;
use crate::validate;

/// Output of [`sinkhorn_grads`] and [`log_sinkhorn_grads`].
#[derive(Clone, Debug)]
pub struct AnalyticGrads<T: Real> {
    /// The barycenters `P⁽ᴸ⁾(D, λ_m)`, `N × M`.
    pub p: Batch<T>,
    /// `∇_D E_L = Σ_m [∂_D P⁽ᴸ⁾(D, λ_m)]ᵀ ∇L(p_m)`, `N × S` (summed over datapoints, eq. 11).
    pub grad_atoms: Batch<T>,
    /// `∇_λ E_L`, `S × M`, column `m` for datapoint `m` (eq. 12), λ unconstrained.
    pub grad_weights: Batch<T>,
}

/// Bytes stored by the forward pass of [`sinkhorn_grads`] / [`log_sinkhorn_grads`] for
/// `n` bins, `s` atoms, `m` datapoints, `l` iterations and scalars of `size_of_t` bytes:
/// `2·s·n·l·m·size_of_t` (the `b⁽ˡ⁾` and `φ⁽ˡ⁾`, `l = 1..L`). Working buffers add
/// `O(N·S·M)` on top, independent of `L`. Saturates instead of overflowing.
pub fn memory_bytes(n: usize, s: usize, m: usize, l: usize, size_of_t: usize) -> usize {
    [2usize, s, n, l, m, size_of_t]
        .iter()
        .fold(1usize, |acc, &x| acc.saturating_mul(x))
}

/// The data-gradient callback: `p` (`N × M`) ↦ `∇L(p)` (`N × M`).
pub type LossGradFn<'a, T> = dyn FnMut(&Batch<T>) -> Batch<T> + 'a;

/// Checks the inputs and returns `(N, S, M)`.
///
/// Atoms: `N × S`, finite, nonnegative, each column of positive mass (they need not sum
/// to one: the gradient is taken with respect to unconstrained entries). Weights:
/// `S × M`, finite, nonnegative (need not sum to one, see the module docs).
fn check<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    iterations: usize,
) -> Result<(usize, usize, usize)> {
    if iterations == 0 {
        return Err(Error::InvalidParameter {
            arg: "iterations",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    let n = kernel.nrows();
    if kernel.ncols() != n {
        return Err(Error::ShapeMismatch {
            arg: "kernel",
            expected: "square (barycenters live on one support)".into(),
            found: format!("{} x {}", kernel.nrows(), kernel.ncols()),
        });
    }
    validate::rows("atoms", atoms, n)?;
    let s = atoms.cols();
    validate::rows("weights", weights, s)?;
    validate::nonnegative("atoms", atoms)?;
    validate::nonnegative("weights", weights)?;
    for (col, mass) in atoms.col_sums().into_iter().enumerate() {
        if mass <= T::zero() {
            return Err(Error::NotNormalized {
                arg: "atoms",
                col,
                sum: mass.to_f64_(),
                tol: f64::INFINITY,
            });
        }
    }
    Ok((n, s, weights.cols()))
}

/// Calls the loss-gradient closure and checks its output.
fn call_loss_grad<T: Real>(loss_grad: &mut LossGradFn<'_, T>, p: &Batch<T>) -> Result<Batch<T>> {
    let g = loss_grad(p);
    validate::shape("loss_grad(p)", &g, p.rows(), p.cols())?;
    if let Some((row, col)) = g.first_non_finite() {
        return Err(Error::NonFinite {
            arg: "loss_grad(p)",
            row,
            col,
        });
    }
    Ok(g)
}

fn numerical(solver: &'static str, iteration: usize, what: String) -> Error {
    Error::Numerical {
        solver,
        iteration,
        message: what,
    }
}

/// `N × S` atoms tiled to `N × (S·M)` (column `m·S + s` = atom `s`).
fn tile<T: Real>(d: &Batch<T>, reps: usize) -> Batch<T> {
    let mut data = Vec::with_capacity(d.rows() * d.cols() * reps);
    for _ in 0..reps {
        data.extend_from_slice(d.as_slice());
    }
    Batch::from_vec(d.rows(), d.cols() * reps, data)
}

/// Algorithm 1 (`SinkhornGrads`), batched: the barycenters of `atoms` (`N × S`) for each
/// column of `weights` (`S × M`) after exactly `iterations` = L plain iterations from
/// `b⁽⁰⁾ = 1` (eq. 6-8), and the gradients of `Σ_m L(p_m)` with respect to the atoms and
/// the weights, where `loss_grad` maps `p` (`N × M`) to `∇L(p)` (`N × M`).
///
/// Forward (eq. 6-8): `φ_s⁽ˡ⁾ = Kᵀ(d_s / K b_s⁽ˡ⁻¹⁾)`, `p⁽ˡ⁾ = Π_s (φ_s⁽ˡ⁾)^{λ_s}`,
/// `b_s⁽ˡ⁾ = p⁽ˡ⁾ / φ_s⁽ˡ⁾`. Backward, for `l = L..1`:
/// * weights: `w_s += ⟨log φ_s⁽ˡ⁾, g⟩`,
///   `r_s = −b_s⁽ˡ⁻¹⁾ ⊙ Kᵀ( K((λ_s g − r_s)/φ_s⁽ˡ⁾) ⊙ d_s/(K b_s⁽ˡ⁻¹⁾)² )`, `g = Σ_s r_s`,
///   from `g = ∇L(p) ⊙ p`, `r = 0`;
/// * atoms: `c_s = K((λ_s n − z_s) ⊙ b_s⁽ˡ⁾)`, `y_s += c_s / K b_s⁽ˡ⁻¹⁾`,
///   `z_s = −(1/φ_s⁽ˡ⁻¹⁾) ⊙ Kᵀ(d_s ⊙ c_s/(K b_s⁽ˡ⁻¹⁾)²)`, `n = Σ_s z_s`, from `n = ∇L(p)`,
///   `z = 0`.
///
/// The `r`, `g`, `z`, `n` updates are skipped at `l = 1` (they are adjoints of the
/// constant `b⁽⁰⁾`; the printed algorithm computes them, and even refers to the
/// undefined `φ⁽⁰⁾`). The two recursions run in lockstep so each `K b⁽ˡ⁻¹⁾` is computed
/// once: five batched kernel applications per backward step.
///
/// Stores `2·S·N·L·M` values ([`memory_bytes`]). Errors on invalid inputs (see the module
/// docs) and with [`Error::Numerical`] when the scalings over- or underflow — use
/// [`log_sinkhorn_grads`] then.
///
/// ```
/// use wassdl::{Batch, DenseKernel, analytic::sinkhorn_grads};
/// let c = faer::Mat::from_fn(5, 5, |i, j| ((i as f64 - j as f64) / 4.0).powi(2));
/// let k = DenseKernel::new(c.as_ref(), 0.1).unwrap();
/// let atoms = Batch::from_fn(5, 2, |i, s| if (i < 2) == (s == 0) { 0.4 } else { 0.2 / 3.0 });
/// let w = Batch::from_vec(2, 1, vec![0.3, 0.7]);
/// let x = Batch::filled(5, 1, 0.2);
/// // quadratic loss Σ (p − x)²
/// let out = sinkhorn_grads(&k, &atoms, &w, 20, &mut |p: &Batch<f64>| {
///     Batch::from_fn(5, 1, |i, j| 2.0 * (p.get(i, j) - x.get(i, j)))
/// }).unwrap();
/// assert_eq!(out.grad_atoms.shape(), (5, 2));
/// assert_eq!(out.grad_weights.shape(), (2, 1));
/// ```
pub fn sinkhorn_grads<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    iterations: usize,
    loss_grad: &mut LossGradFn<'_, T>,
) -> Result<AnalyticGrads<T>> {
    const SOLVER: &str = "SinkhornGrads (Algorithm 1)";
    let (n, s, m) = check(kernel, atoms, weights, iterations)?;
    let l_max = iterations;
    let sm = s * m;
    let dt = tile(atoms, m);
    let lam = |col: usize| weights.get(col % s, col / s);

    // ---- forward loop, eq. 6-8 (Algorithm 1, "Sinkhorn loop") ----
    let ones = Batch::filled(n, sm, T::one());
    let mut kb = Batch::zeros(n, sm);
    let mut a = Batch::zeros(n, sm);
    let mut bs: Vec<Batch<T>> = Vec::with_capacity(l_max); // b⁽ˡ⁾, l = 1..L
    let mut phis: Vec<Batch<T>> = Vec::with_capacity(l_max); // φ⁽ˡ⁾, l = 1..L
    let mut p = Batch::zeros(n, m);
    for l in 1..=l_max {
        let b_prev = bs.last().unwrap_or(&ones);
        kernel.apply(b_prev, &mut kb); // K b⁽ˡ⁻¹⁾
        for ((ai, &di), &ki) in a
            .as_mut_slice()
            .iter_mut()
            .zip(dt.as_slice())
            .zip(kb.as_slice())
        {
            // eq. 6: a = d / K b (a zero atom entry stays zero even where K b underflowed)
            *ai = if di == T::zero() { T::zero() } else { di / ki };
        }
        let mut phi = Batch::zeros(n, sm);
        kernel.apply_t(&a, &mut phi); // φ = Kᵀ a
                                      // eq. 7: p = Π_s φ_s^{λ_s}, as exp Σ_s λ_s log φ_s (zero weights dropped)
        p.as_mut_slice().fill(T::zero());
        for col in 0..sm {
            let lw = lam(col);
            if lw == T::zero() {
                continue;
            }
            let mm = col / s;
            for (pi, &f) in p.col_mut(mm).iter_mut().zip(phi.col(col)) {
                *pi += lw * f.ln();
            }
        }
        p = p.map(|x| x.exp());
        // eq. 8: b_s = p / φ_s
        let mut b = Batch::zeros(n, sm);
        for col in 0..sm {
            let mm = col / s;
            for ((bi, &pi), &f) in b.col_mut(col).iter_mut().zip(p.col(mm)).zip(phi.col(col)) {
                *bi = pi / f;
            }
        }
        if let Some((row, col)) = b.first_non_finite() {
            return Err(numerical(
                SOLVER,
                l,
                format!(
                    "non-finite scaling b at ({row}, {col}): K b over- or underflowed at γ = {}; \
                     use log_sinkhorn_grads (Algorithm 4) or a larger γ",
                    kernel.gamma()
                ),
            ));
        }
        bs.push(b);
        phis.push(phi);
    }
    if let Some((row, col)) = p.first_non_finite() {
        return Err(numerical(
            SOLVER,
            l_max,
            format!("non-finite barycenter at ({row}, {col})"),
        ));
    }

    // ---- backward loops (Algorithm 1), run in lockstep ----
    let grad_p = call_loss_grad(loss_grad, &p)?;
    // weights loop state: g = ∇L(p) ⊙ p (adjoint of log p), r = 0 (adjoints of log b_s)
    let mut g = Batch::from_fn(n, m, |i, j| grad_p.get(i, j) * p.get(i, j));
    let mut r = Batch::zeros(n, sm);
    // dictionary loop state: n = ∇L(p) (adjoint of p), z = 0 (z_s = adjoint of b_s / φ_s)
    let mut nn = grad_p;
    let mut z = Batch::zeros(n, sm);
    let mut w = Batch::zeros(s, m);
    let mut y = Batch::zeros(n, s);
    let mut x = Batch::zeros(n, sm);
    let mut kx = Batch::zeros(n, sm);
    let mut tmp = Batch::zeros(n, sm);
    for l in (1..=l_max).rev() {
        let phi_l = &phis[l - 1];
        let b_l = &bs[l - 1];
        let b_prev = if l > 1 { &bs[l - 2] } else { &ones };
        kernel.apply(b_prev, &mut kb); // K b⁽ˡ⁻¹⁾, shared by both loops

        // -- weights loop --
        // w_s += ⟨log φ_s⁽ˡ⁾, g⟩
        for col in 0..sm {
            let mm = col / s;
            let dot = phi_l
                .col(col)
                .iter()
                .zip(g.col(mm))
                .fold(T::zero(), |acc, (&f, &gi)| acc + f.ln() * gi);
            let cur = w.get(col % s, mm);
            w.set(col % s, mm, cur + dot);
        }
        if l > 1 {
            // r_s := −Kᵀ( K((λ_s g − r_s)/φ_s) ⊙ d_s/(K b_s⁽ˡ⁻¹⁾)² ) ⊙ b_s⁽ˡ⁻¹⁾
            for col in 0..sm {
                let (lw, mm) = (lam(col), col / s);
                for ((xi, &gi), (&ri, &f)) in x
                    .col_mut(col)
                    .iter_mut()
                    .zip(g.col(mm))
                    .zip(r.col(col).iter().zip(phi_l.col(col)))
                {
                    *xi = (lw * gi - ri) / f;
                }
            }
            kernel.apply(&x, &mut kx);
            for ((t, &di), &ki) in kx
                .as_mut_slice()
                .iter_mut()
                .zip(dt.as_slice())
                .zip(kb.as_slice())
            {
                *t = *t * di / (ki * ki);
            }
            kernel.apply_t(&kx, &mut r);
            for (ri, &bi) in r.as_mut_slice().iter_mut().zip(b_prev.as_slice()) {
                *ri = -*ri * bi;
            }
            // g := Σ_s r_s
            sum_blocks(&r, s, &mut g);
        }

        // -- dictionary loop --
        // c_s := K((λ_s n − z_s) ⊙ b_s⁽ˡ⁾)
        for col in 0..sm {
            let (lw, mm) = (lam(col), col / s);
            for ((xi, &ni), (&zi, &bi)) in x
                .col_mut(col)
                .iter_mut()
                .zip(nn.col(mm))
                .zip(z.col(col).iter().zip(b_l.col(col)))
            {
                *xi = (lw * ni - zi) * bi;
            }
        }
        kernel.apply(&x, &mut kx); // kx = c
                                   // y_s += c_s / K b_s⁽ˡ⁻¹⁾ (summed over datapoints)
        for col in 0..sm {
            let yc = y.col_mut(col % s);
            for ((yi, &ci), &ki) in yc.iter_mut().zip(kx.col(col)).zip(kb.col(col)) {
                *yi += ci / ki;
            }
        }
        if l > 1 {
            // z_s := −(1/φ_s⁽ˡ⁻¹⁾) ⊙ Kᵀ(d_s ⊙ c_s/(K b_s⁽ˡ⁻¹⁾)²)
            for ((t, &di), &ki) in kx
                .as_mut_slice()
                .iter_mut()
                .zip(dt.as_slice())
                .zip(kb.as_slice())
            {
                *t = *t * di / (ki * ki);
            }
            kernel.apply_t(&kx, &mut tmp);
            for ((zi, &ti), &f) in z
                .as_mut_slice()
                .iter_mut()
                .zip(tmp.as_slice())
                .zip(phis[l - 2].as_slice())
            {
                *zi = -ti / f;
            }
            // n := Σ_s z_s
            sum_blocks(&z, s, &mut nn);
        }
    }
    finish(SOLVER, l_max, p, y, w, None)
}

/// `out[:, m] = Σ_s x[:, m·S + s]`.
fn sum_blocks<T: Real>(x: &Batch<T>, s: usize, out: &mut Batch<T>) {
    out.as_mut_slice().fill(T::zero());
    for col in 0..x.cols() {
        for (o, &v) in out.col_mut(col / s).iter_mut().zip(x.col(col)) {
            *o += v;
        }
    }
}

/// Checks the gradients. With `empty_bins_may_overflow`, an infinite (not NaN) atom
/// gradient is accepted where the atom entry is exactly zero: at small γ the true
/// derivative with respect to an empty bin far from the atom's support can exceed the
/// f64 range (it grows like `exp(C/γ)`), and `±∞` is then its correctly rounded value.
fn finish<T: Real>(
    solver: &'static str,
    l_max: usize,
    p: Batch<T>,
    grad_atoms: Batch<T>,
    grad_weights: Batch<T>,
    empty_bins_may_overflow: Option<&Batch<T>>,
) -> Result<AnalyticGrads<T>> {
    let n = grad_atoms.rows().max(1);
    let overflow_ok =
        |q: usize| empty_bins_may_overflow.is_some_and(|d| d.as_slice()[q] == T::zero());
    let bad_atom = grad_atoms
        .as_slice()
        .iter()
        .enumerate()
        .position(|(q, &v)| v.is_nan() || (v.is_infinite() && !overflow_ok(q)));
    let bad = bad_atom.map(|q| ("atoms", q % n, q / n)).or_else(|| {
        grad_weights
            .first_non_finite()
            .map(|(r, c)| ("weights", r, c))
    });
    if let Some((name, row, col)) = bad {
        return Err(numerical(
            solver,
            l_max,
            format!(
                "non-finite gradient w.r.t. the {name} at ({row}, {col}): the backward \
                 recursion over- or underflowed"
            ),
        ));
    }
    Ok(AnalyticGrads {
        p,
        grad_atoms,
        grad_weights,
    })
}

// ---------------------------------------------------------------------------------
// Signed log-domain numbers: x = sign · exp(lv), sign ∈ {-1, 0, 1}, lv = -∞ iff x = 0.
// ---------------------------------------------------------------------------------

/// A batch of signed numbers stored as `log|x|` and `sign(x)`.
#[derive(Clone, Debug)]
struct Signed<T: Real> {
    lv: Batch<T>,
    sg: Batch<T>,
}

impl<T: Real> Signed<T> {
    fn zeros(rows: usize, cols: usize) -> Self {
        Signed {
            lv: Batch::filled(rows, cols, T::neg_infinity()),
            sg: Batch::zeros(rows, cols),
        }
    }
    fn from_linear(x: &Batch<T>) -> Self {
        Signed {
            lv: x.map(|v| v.abs().ln()),
            sg: x.map(sign),
        }
    }
}

fn sign<T: Real>(v: T) -> T {
    if v > T::zero() {
        T::one()
    } else if v < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

/// `(la, sa) + (lb, sb)` in signed log form.
#[inline]
fn signed_add<T: Real>(la: T, sa: T, lb: T, sb: T) -> (T, T) {
    if sa == T::zero() {
        return if sb == T::zero() {
            (T::neg_infinity(), T::zero())
        } else {
            (lb, sb)
        };
    }
    if sb == T::zero() {
        return (la, sa);
    }
    let mx = la.max(lb);
    let v = sa * (la - mx).exp() + sb * (lb - mx).exp();
    if v == T::zero() {
        (T::neg_infinity(), T::zero())
    } else {
        (mx + v.abs().ln(), sign(v))
    }
}

/// `out[:, m] = Σ_s x[:, m·S + s]` in signed log form, then multiplied by `factor` (±1).
fn signed_sum_blocks<T: Real>(x: &Signed<T>, s: usize, factor: T, out: &mut Signed<T>) {
    out.lv.as_mut_slice().fill(T::neg_infinity());
    out.sg.as_mut_slice().fill(T::zero());
    let n = x.lv.rows();
    for col in 0..x.lv.cols() {
        let mm = col / s;
        for i in 0..n {
            let (l, sg) = signed_add(
                out.lv.get(i, mm),
                out.sg.get(i, mm),
                x.lv.get(i, col),
                x.sg.get(i, col),
            );
            out.lv.set(i, mm, l);
            out.sg.set(i, mm, sg);
        }
    }
    if factor < T::zero() {
        for v in out.sg.as_mut_slice() {
            *v = -*v;
        }
    }
}

/// `X[:, m·S+s] = λ_s A[:, m] + B[:, m·S+s]` in signed log form (λ ≥ 0).
fn lambda_combine<T: Real>(
    a: &Signed<T>,
    b: &Signed<T>,
    lam: &dyn Fn(usize) -> T,
    s: usize,
    out: &mut Signed<T>,
) {
    let n = b.lv.rows();
    for col in 0..b.lv.cols() {
        let (lw, mm) = (lam(col), col / s);
        let llw = lw.ln(); // -∞ for a zero weight
        for i in 0..n {
            let (la, sa) = if lw == T::zero() {
                (T::neg_infinity(), T::zero())
            } else {
                (llw + a.lv.get(i, mm), a.sg.get(i, mm))
            };
            let (l, sg) = signed_add(la, sa, b.lv.get(i, col), b.sg.get(i, col));
            out.lv.set(i, col, l);
            out.sg.set(i, col, sg);
        }
    }
}

/// Algorithm 4 (`logSinkhornGrads`), batched, as corrected in `docs/errata.md`: the same
/// outputs as [`sinkhorn_grads`], computed from log-domain quantities only, so it works at
/// any γ (where [`sinkhorn_grads`] over- or underflows).
///
/// Forward (eq. 22-24 with `v = log b`): `φ̃_s = log Kᵀ exp(log d_s − log K exp(v_s))`,
/// `p̃ = Σ_s λ_s φ̃_s`, `v_s = p̃ − φ̃_s`, with [`Kernel::apply_log`] and
/// [`Kernel::apply_log_t`]. The backward quantities `g, r, n, z, c, t`, which change sign,
/// are kept as `(log|x|, sign x)` and pushed through the kernel with
/// [`Kernel::apply_log_signed`]; they never leave the log domain, so neither the huge
/// scalings nor `1/p` in the atoms loop can overflow. With `ρ_s = −r_s`, `ζ_s = −z_s`
/// (the printed algorithm's convention), for `l = L..1`:
/// * weights: `w_s += ⟨φ̃_s⁽ˡ⁾, g⟩`,
///   `t̃_s = log K exp(log(λ_s g + ρ_s) − φ̃_s⁽ˡ⁾) + log d_s − 2 log K exp(v_s⁽ˡ⁻¹⁾)`,
///   `ρ_s = exp(log Kᵀ exp(t̃_s) + v_s⁽ˡ⁻¹⁾)`, `g = −Σ_s ρ_s`;
/// * atoms: `c̃_s = log K exp(log(λ_s n + ζ_s) + v_s⁽ˡ⁾)`,
///   `y_s += exp(c̃_s − log K exp(v_s⁽ˡ⁻¹⁾))`,
///   `ζ_s = exp(−φ̃_s⁽ˡ⁻¹⁾ + log Kᵀ exp(log d_s + c̃_s − 2 log K exp(v_s⁽ˡ⁻¹⁾)))`,
///   `n = −Σ_s ζ_s`;
///
/// where every `log`/`exp` of a signed quantity carries its sign separately. Only the
/// accumulated gradients `y`, `w` (and `p = exp(p̃)`) are formed in linear scale.
///
/// Stores `2·S·N·L·M` values (`v⁽ˡ⁾`, `φ̃⁽ˡ⁾`, [`memory_bytes`]).
///
/// At small γ the derivative with respect to an *empty* atom bin (`d_s[i] = 0`) far
/// from the atom's support can exceed the f64 range; such entries of `grad_atoms` are
/// returned as `±∞` (every other entry stays exact). Any other non-finite value is an
/// [`Error::Numerical`].
pub fn log_sinkhorn_grads<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    iterations: usize,
    loss_grad: &mut LossGradFn<'_, T>,
) -> Result<AnalyticGrads<T>> {
    const SOLVER: &str = "logSinkhornGrads (Algorithm 4)";
    let (n, s, m) = check(kernel, atoms, weights, iterations)?;
    let l_max = iterations;
    let sm = s * m;
    let logd = tile(atoms, m).map(|x| x.ln()); // -∞ on empty bins
    let lam = |col: usize| weights.get(col % s, col / s);

    // ---- forward loop: eq. 23-24 / Algorithm 4's Sinkhorn loop ----
    let zeros = Batch::zeros(n, sm); // v⁽⁰⁾ = log 1
    let mut lkb = Batch::zeros(n, sm);
    let mut arg = Batch::zeros(n, sm);
    let mut vs: Vec<Batch<T>> = Vec::with_capacity(l_max); // v⁽ˡ⁾ = log b⁽ˡ⁾
    let mut phits: Vec<Batch<T>> = Vec::with_capacity(l_max); // φ̃⁽ˡ⁾ = log φ⁽ˡ⁾
    let mut logp = Batch::zeros(n, m);
    for l in 1..=l_max {
        let v_prev = vs.last().unwrap_or(&zeros);
        kernel.apply_log(v_prev, &mut lkb); // log K b⁽ˡ⁻¹⁾
        for ((t, &ld), &lk) in arg
            .as_mut_slice()
            .iter_mut()
            .zip(logd.as_slice())
            .zip(lkb.as_slice())
        {
            *t = ld - lk; // log a = log d − log K b (eq. 23 divided by γ)
        }
        let mut phit = Batch::zeros(n, sm);
        kernel.apply_log_t(&arg, &mut phit); // φ̃ = log Kᵀ a
                                             // p̃ = Σ_s λ_s φ̃_s
        logp.as_mut_slice().fill(T::zero());
        for col in 0..sm {
            let lw = lam(col);
            if lw == T::zero() {
                continue;
            }
            for (pi, &f) in logp.col_mut(col / s).iter_mut().zip(phit.col(col)) {
                *pi += lw * f;
            }
        }
        // v_s = p̃ − φ̃_s (eq. 24 divided by γ)
        let v = Batch::from_fn(n, sm, |i, col| logp.get(i, col / s) - phit.get(i, col));
        if let Some((row, col)) = v.first_non_finite() {
            return Err(numerical(
                SOLVER,
                l,
                format!("non-finite log-scaling at ({row}, {col})"),
            ));
        }
        vs.push(v);
        phits.push(phit);
    }
    let p = logp.map(|x| x.exp());

    // ---- backward loops (Algorithm 4, corrected), in lockstep ----
    let grad_p = call_loss_grad(loss_grad, &p)?;
    let gl = Signed::from_linear(&grad_p);
    // g = ∇L(p) ⊙ p: log|g| = log|∇L| + p̃ (no underflow of p involved)
    let mut g = Signed {
        lv: Batch::from_fn(n, m, |i, j| gl.lv.get(i, j) + logp.get(i, j)),
        sg: gl.sg.clone(),
    };
    let mut rho = Signed::zeros(n, sm); // ρ_s = −r_s
    let mut nn = gl; // n = ∇L(p)
    let mut zeta = Signed::zeros(n, sm); // ζ_s = −z_s
    let mut w = Batch::zeros(s, m);
    let mut y = Batch::zeros(n, s);
    let mut x = Signed::zeros(n, sm);
    let mut t = Signed::zeros(n, sm);
    let mut u = Signed::zeros(n, sm);
    for l in (1..=l_max).rev() {
        let phit_l = &phits[l - 1];
        let v_l = &vs[l - 1];
        let v_prev = if l > 1 { &vs[l - 2] } else { &zeros };
        kernel.apply_log(v_prev, &mut lkb); // log K b⁽ˡ⁻¹⁾, shared by both loops

        // -- weights loop --
        // w_s += ⟨φ̃_s⁽ˡ⁾, g⟩
        for col in 0..sm {
            let mm = col / s;
            let mut dot = T::zero();
            for i in 0..n {
                let sg = g.sg.get(i, mm);
                if sg != T::zero() {
                    dot += phit_l.get(i, col) * sg * g.lv.get(i, mm).exp();
                }
            }
            let cur = w.get(col % s, mm);
            w.set(col % s, mm, cur + dot);
        }
        if l > 1 {
            // x = λ_s g + ρ_s (the printed algorithm has λ_s g − r_s: sign erratum)
            lambda_combine(&g, &rho, &lam, s, &mut x);
            for (xv, &f) in x.lv.as_mut_slice().iter_mut().zip(phit_l.as_slice()) {
                *xv -= f; // log|x| − φ̃
            }
            // t̃ = log K (x / φ) + log d − 2 log K b⁽ˡ⁻¹⁾
            kernel.apply_log_signed(&x.lv, &x.sg, &mut t.lv, &mut t.sg, false);
            for ((tv, &ld), &lk) in
                t.lv.as_mut_slice()
                    .iter_mut()
                    .zip(logd.as_slice())
                    .zip(lkb.as_slice())
            {
                *tv = *tv + ld - (lk + lk);
            }
            // ρ = exp(log Kᵀ exp(t̃) + v⁽ˡ⁻¹⁾)
            kernel.apply_log_signed(&t.lv, &t.sg, &mut rho.lv, &mut rho.sg, true);
            for (rv, &vp) in rho.lv.as_mut_slice().iter_mut().zip(v_prev.as_slice()) {
                *rv += vp;
            }
            fix_zero_signs(&mut rho);
            // g = −Σ_s ρ_s
            signed_sum_blocks(&rho, s, -T::one(), &mut g);
        }

        // -- dictionary loop --
        // c̃ = log K exp(log(λ_s n + ζ_s) + v⁽ˡ⁾)
        lambda_combine(&nn, &zeta, &lam, s, &mut x);
        for (xv, &vl) in x.lv.as_mut_slice().iter_mut().zip(v_l.as_slice()) {
            *xv += vl;
        }
        kernel.apply_log_signed(&x.lv, &x.sg, &mut t.lv, &mut t.sg, false);
        // y_s += exp(c̃_s − log K b⁽ˡ⁻¹⁾)
        for col in 0..sm {
            let yc = y.col_mut(col % s);
            for (i, yi) in yc.iter_mut().enumerate() {
                let sg = t.sg.get(i, col);
                if sg != T::zero() {
                    *yi += sg * (t.lv.get(i, col) - lkb.get(i, col)).exp();
                }
            }
        }
        if l > 1 {
            // ζ = exp(−φ̃⁽ˡ⁻¹⁾ + log Kᵀ exp(log d + c̃ − 2 log K b⁽ˡ⁻¹⁾))
            for ((tv, &ld), &lk) in
                t.lv.as_mut_slice()
                    .iter_mut()
                    .zip(logd.as_slice())
                    .zip(lkb.as_slice())
            {
                *tv = *tv + ld - (lk + lk);
            }
            kernel.apply_log_signed(&t.lv, &t.sg, &mut u.lv, &mut u.sg, true);
            for ((zv, &uv), &f) in zeta
                .lv
                .as_mut_slice()
                .iter_mut()
                .zip(u.lv.as_slice())
                .zip(phits[l - 2].as_slice())
            {
                *zv = uv - f;
            }
            zeta.sg.as_mut_slice().copy_from_slice(u.sg.as_slice());
            fix_zero_signs(&mut zeta);
            // n = −Σ_s ζ_s
            signed_sum_blocks(&zeta, s, -T::one(), &mut nn);
        }
    }
    finish(SOLVER, l_max, p, y, w, Some(atoms))
}

/// Enforces `sign = 0 ⇔ log|x| = −∞` after arithmetic on the logs.
fn fix_zero_signs<T: Real>(x: &mut Signed<T>) {
    for (l, s) in x.lv.as_mut_slice().iter_mut().zip(x.sg.as_mut_slice()) {
        if *s == T::zero() || *l == T::neg_infinity() {
            *s = T::zero();
            *l = T::neg_infinity();
        }
    }
}
