//! Linear baselines for dictionary learning: PCA and NMF, on the same layout as
//! [`crate::dictionary`] (data `N × M`, one datapoint per column) so that their
//! reconstructions go through the same [`crate::metrics`].
//!
//! * [`pca`]: centre the datapoints, thin SVD (faer), keep `k` components. Signs follow
//!   scikit-learn's `svd_flip(u_based_decision=False)`: the largest-magnitude entry of
//!   each component is positive, so components can be compared with scikit-learn's.
//! * [`nmf`]: `X ≈ W H` with `W ≥ 0` (`N × k`, the components) and `H ≥ 0` (`k × M`, the
//!   coefficients), by Lee and Seung's multiplicative updates for the Frobenius norm or
//!   the (generalized) KL divergence. Each update does not increase its objective
//!   (Lee & Seung 2001, Theorems 1-2), so [`Nmf::objective`] is non-increasing up to
//!   rounding. Initialization: seeded random (scikit-learn's `init="random"` recipe),
//!   NNDSVDa (Boutsidis & Gallopoulos 2008, scikit-learn's `init="nndsvda"`), or given.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::gemm as matmul;
use crate::real::Real;
use crate::validate;
use faer::linalg::solvers::Svd;
use faer::{Accum, Par};
use rand::{Rng, SeedableRng};

/// Result of [`pca`].
#[derive(Clone, Debug)]
pub struct Pca<T: Real> {
    /// Mean datapoint, `N × 1`.
    pub mean: Batch<T>,
    /// Principal directions, `N × k`, orthonormal columns, largest variance first.
    pub components: Batch<T>,
    /// Coordinates of each centred datapoint on the components, `k × M`.
    pub scores: Batch<T>,
    /// The `k` largest singular values of the centred data.
    pub singular_values: Vec<T>,
    /// Fraction of the total variance carried by each kept component.
    pub explained_variance_ratio: Vec<f64>,
    /// `mean + components · scores`, `N × M`.
    pub reconstruction: Batch<T>,
}

/// PCA with `k` components of `data` (`N × M`, datapoints as columns).
///
/// Centres the columns on their mean, takes the thin SVD `X_c = U Σ Vᵀ` and keeps the
/// first `k` triplets: components `U_k`, scores `Σ_k V_kᵀ`. Requires
/// `1 ≤ k ≤ min(N, M)`.
pub fn pca<T: Real>(data: &Batch<T>, k: usize) -> Result<Pca<T>> {
    validate::rows("data", data, data.rows())?;
    if let Some((row, col)) = data.first_non_finite() {
        return Err(Error::NonFinite {
            arg: "data",
            row,
            col,
        });
    }
    let (n, m) = data.shape();
    if k == 0 || k > n.min(m) {
        return Err(Error::InvalidParameter {
            arg: "k",
            requirement: "between 1 and min(N, M)",
            value: k as f64,
        });
    }
    let inv_m = T::of(1.0 / m as f64);
    let mean = Batch::from_fn(n, 1, |i, _| {
        (0..m).fold(T::zero(), |a, j| a + data.get(i, j)) * inv_m
    });
    let centred = Batch::from_fn(n, m, |i, j| data.get(i, j) - mean.get(i, 0));
    let svd = Svd::new_thin(centred.view()).map_err(|e| Error::Numerical {
        solver: "PCA (thin SVD)",
        iteration: 0,
        message: format!("{e:?}"),
    })?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let mut components = Batch::from_fn(n, k, |i, j| u[(i, j)]);
    let mut scores = Batch::from_fn(k, m, |j, c| s[j] * v[(c, j)]);
    for j in 0..k {
        // svd_flip(u_based_decision=False): the largest |entry| of each component is positive
        let col = components.col(j);
        let big = (0..n)
            .max_by(|&a, &b| col[a].abs().partial_cmp(&col[b].abs()).unwrap())
            .unwrap_or(0);
        if col[big] < T::zero() {
            components.col_mut(j).iter_mut().for_each(|x| *x = -*x);
            for c in 0..m {
                scores.set(j, c, -scores.get(j, c));
            }
        }
    }
    let total: f64 = (0..s.nrows()).map(|j| s[j].to_f64_().powi(2)).sum();
    let explained_variance_ratio = (0..k)
        .map(|j| {
            if total > 0.0 {
                s[j].to_f64_().powi(2) / total
            } else {
                0.0
            }
        })
        .collect();
    let mut reconstruction = Batch::zeros(n, m);
    matmul(
        reconstruction.view_mut(),
        Accum::Replace,
        components.view(),
        scores.view(),
        T::one(),
        Par::Seq,
    );
    for j in 0..m {
        for (r, &mu) in reconstruction.col_mut(j).iter_mut().zip(mean.col(0)) {
            *r += mu;
        }
    }
    Ok(Pca {
        mean,
        components,
        scores,
        singular_values: (0..k).map(|j| s[j]).collect(),
        explained_variance_ratio,
        reconstruction,
    })
}

impl<T: Real> Pca<T> {
    /// Scores of new datapoints (`N × M'`): `U_kᵀ (x − mean)`.
    pub fn transform(&self, data: &Batch<T>) -> Result<Batch<T>> {
        validate::rows("data", data, self.mean.rows())?;
        let centred = Batch::from_fn(data.rows(), data.cols(), |i, j| {
            data.get(i, j) - self.mean.get(i, 0)
        });
        let mut out = Batch::zeros(self.components.cols(), data.cols());
        matmul(
            out.view_mut(),
            Accum::Replace,
            self.components.view().transpose(),
            centred.view(),
            T::one(),
            Par::Seq,
        );
        Ok(out)
    }
}

/// Objective minimized by [`nmf`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NmfLoss {
    /// `‖X − WH‖²_F` (Lee-Seung Euclidean updates).
    #[default]
    Frobenius,
    /// Generalized KL divergence `Σ x log(x / y) − x + y`, `y = WH` (Lee-Seung divergence
    /// updates).
    KullbackLeibler,
}

/// How [`nmf`] initializes `W` and `H`.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NmfInit {
    /// Entries `sqrt(mean(X)/k) · |z|`, `z` standard normal (scikit-learn's `"random"`),
    /// seeded by [`NmfConfig::seed`].
    #[default]
    Random,
    /// NNDSVD with zeros replaced by `mean(X)` (scikit-learn's `"nndsvda"`); deterministic.
    Nndsvda,
    /// Given factors, column-major: `w` is `N × k`, `h` is `k × M`, both nonnegative.
    Given {
        /// `W`, `N × k`, column-major.
        w: Vec<f64>,
        /// `H`, `k × M`, column-major.
        h: Vec<f64>,
    },
}

/// NMF settings.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NmfConfig {
    /// Number of components `k ≥ 1`.
    pub k: usize,
    /// Objective.
    pub loss: NmfLoss,
    /// Initialization.
    pub init: NmfInit,
    /// Maximum number of (W, H) update pairs.
    pub max_iter: usize,
    /// Stop when the relative decrease of the objective over one iteration falls below
    /// `tol` (`None`: run `max_iter` iterations).
    pub tol: Option<f64>,
    /// Seed of [`NmfInit::Random`].
    pub seed: u64,
}

impl NmfConfig {
    /// `k` components, Frobenius loss, random init with seed 0, 1000 iterations, no tolerance.
    pub fn new(k: usize) -> Self {
        NmfConfig {
            k,
            loss: NmfLoss::Frobenius,
            init: NmfInit::Random,
            max_iter: 1000,
            tol: None,
            seed: 0,
        }
    }
    /// Sets the loss.
    pub fn loss(mut self, loss: NmfLoss) -> Self {
        self.loss = loss;
        self
    }
    /// Sets the initialization.
    pub fn init(mut self, init: NmfInit) -> Self {
        self.init = init;
        self
    }
    /// Sets the iteration cap.
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }
    /// Sets the relative tolerance.
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = Some(tol);
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Result of [`nmf`].
#[derive(Clone, Debug)]
pub struct Nmf<T: Real> {
    /// `W`, `N × k`: the components (nonnegative columns, not normalized).
    pub components: Batch<T>,
    /// `H`, `k × M`: the coefficients of each datapoint.
    pub coefficients: Batch<T>,
    /// `W H`, `N × M`.
    pub reconstruction: Batch<T>,
    /// The objective at the initialization and after each iteration.
    pub objective: Vec<f64>,
    /// Iterations done.
    pub iterations: usize,
}

/// Nonnegative matrix factorization of `data` (`N × M`, nonnegative) by multiplicative
/// updates (Lee & Seung 2001), `H` first then `W` in each iteration:
///
/// * Frobenius: `H ← H ⊙ (WᵀX) ⊘ (WᵀW H)`, `W ← W ⊙ (X Hᵀ) ⊘ (W H Hᵀ)`;
/// * KL: `H ← H ⊙ Wᵀ(X ⊘ WH) ⊘ (Wᵀ1)`, `W ← W ⊙ (X ⊘ WH) Hᵀ ⊘ (1 Hᵀ)`.
///
/// A zero denominator (its numerator is then zero too) leaves the entry at zero.
pub fn nmf<T: Real>(data: &Batch<T>, cfg: &NmfConfig) -> Result<Nmf<T>> {
    validate::rows("data", data, data.rows())?;
    validate::nonnegative("data", data)?;
    let (n, m) = data.shape();
    let k = cfg.k;
    if k == 0 {
        return Err(Error::InvalidParameter {
            arg: "k",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    if let Some(tol) = cfg.tol {
        if !(tol.is_finite() && tol >= 0.0) {
            return Err(Error::InvalidParameter {
                arg: "tol",
                requirement: "finite and >= 0",
                value: tol,
            });
        }
    }
    let (mut w, mut h) = nmf_init(data, cfg)?;
    let mut wh = Batch::zeros(n, m);
    let mul = |out: &mut Batch<T>, a: faer::MatRef<'_, T>, b: faer::MatRef<'_, T>| {
        matmul(out.view_mut(), Accum::Replace, a, b, T::one(), Par::Seq)
    };
    mul(&mut wh, w.view(), h.view());
    let mut objective = vec![nmf_objective(data, &wh, cfg.loss)];
    let (mut num_h, mut den_h) = (Batch::zeros(k, m), Batch::zeros(k, m));
    let (mut num_w, mut den_w) = (Batch::zeros(n, k), Batch::zeros(n, k));
    let mut gram = Batch::zeros(k, k);
    let mut ratio = Batch::zeros(n, m);
    let mut iterations = 0;
    for _ in 0..cfg.max_iter {
        match cfg.loss {
            NmfLoss::Frobenius => {
                mul(&mut num_h, w.view().transpose(), data.view());
                mul(&mut gram, w.view().transpose(), w.view());
                mul(&mut den_h, gram.view(), h.view());
                scale_update(&mut h, &num_h, &den_h);
                mul(&mut num_w, data.view(), h.view().transpose());
                mul(&mut gram, h.view(), h.view().transpose());
                mul(&mut den_w, w.view(), gram.view());
                scale_update(&mut w, &num_w, &den_w);
            }
            NmfLoss::KullbackLeibler => {
                kl_ratio(data, &wh, &mut ratio);
                mul(&mut num_h, w.view().transpose(), ratio.view());
                let wsum: Vec<T> = w.col_sums();
                for j in 0..m {
                    den_h.col_mut(j).copy_from_slice(&wsum);
                }
                scale_update(&mut h, &num_h, &den_h);
                mul(&mut wh, w.view(), h.view());
                kl_ratio(data, &wh, &mut ratio);
                mul(&mut num_w, ratio.view(), h.view().transpose());
                for s in 0..k {
                    let hs = (0..m).fold(T::zero(), |a, j| a + h.get(s, j));
                    den_w.col_mut(s).fill(hs);
                }
                scale_update(&mut w, &num_w, &den_w);
            }
        }
        mul(&mut wh, w.view(), h.view());
        let obj = nmf_objective(data, &wh, cfg.loss);
        let prev = *objective.last().unwrap();
        objective.push(obj);
        iterations += 1;
        if let Some(tol) = cfg.tol {
            if (prev - obj) <= tol * prev.abs().max(f64::MIN_POSITIVE) {
                break;
            }
        }
    }
    Ok(Nmf {
        components: w,
        coefficients: h,
        reconstruction: wh,
        objective,
        iterations,
    })
}

/// `x ← x ⊙ num ⊘ den`, leaving `x` at zero where `den = 0`.
fn scale_update<T: Real>(x: &mut Batch<T>, num: &Batch<T>, den: &Batch<T>) {
    for ((v, &a), &b) in x
        .as_mut_slice()
        .iter_mut()
        .zip(num.as_slice())
        .zip(den.as_slice())
    {
        *v = if b > T::zero() { *v * a / b } else { T::zero() };
    }
}

/// `X ⊘ WH`, with `0/0 = 0` (a zero datapoint entry contributes nothing).
fn kl_ratio<T: Real>(x: &Batch<T>, wh: &Batch<T>, out: &mut Batch<T>) {
    for ((o, &a), &b) in out
        .as_mut_slice()
        .iter_mut()
        .zip(x.as_slice())
        .zip(wh.as_slice())
    {
        *o = if a == T::zero() { T::zero() } else { a / b };
    }
}

/// `‖X − WH‖²_F` or `Σ x log(x/y) − x + y`, accumulated in `f64`.
pub fn nmf_objective<T: Real>(x: &Batch<T>, wh: &Batch<T>, loss: NmfLoss) -> f64 {
    x.as_slice()
        .iter()
        .zip(wh.as_slice())
        .map(|(&a, &b)| {
            let (a, b) = (a.to_f64_(), b.to_f64_());
            match loss {
                NmfLoss::Frobenius => (a - b) * (a - b),
                NmfLoss::KullbackLeibler if a == 0.0 => b,
                NmfLoss::KullbackLeibler => a * (a / b).ln() - a + b,
            }
        })
        .sum()
}

fn nmf_init<T: Real>(data: &Batch<T>, cfg: &NmfConfig) -> Result<(Batch<T>, Batch<T>)> {
    let (n, m) = data.shape();
    let k = cfg.k;
    let mean = data.as_slice().iter().map(|x| x.to_f64_()).sum::<f64>() / (n * m) as f64;
    match &cfg.init {
        NmfInit::Random => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
            let avg = (mean / k as f64).sqrt();
            let mut draw = |r: usize, c: usize| {
                Batch::from_fn(r, c, |_, _| {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    T::of(avg * z.abs())
                })
            };
            let h = draw(k, m);
            let w = draw(n, k);
            Ok((w, h))
        }
        NmfInit::Given { w, h } => {
            if w.len() != n * k {
                return Err(Error::ShapeMismatch {
                    arg: "init.w",
                    expected: format!("{n} x {k} ({} entries)", n * k),
                    found: format!("{} entries", w.len()),
                });
            }
            if h.len() != k * m {
                return Err(Error::ShapeMismatch {
                    arg: "init.h",
                    expected: format!("{k} x {m} ({} entries)", k * m),
                    found: format!("{} entries", h.len()),
                });
            }
            let w = Batch::from_vec(n, k, w.clone());
            let h = Batch::from_vec(k, m, h.clone());
            validate::nonnegative("init.w", &w)?;
            validate::nonnegative("init.h", &h)?;
            Ok((w.cast(), h.cast()))
        }
        NmfInit::Nndsvda => nndsvda(data, k, mean),
    }
}

/// NNDSVD (Boutsidis & Gallopoulos 2008) with zeros filled by the data mean (variant "a").
///
/// For each singular triplet `(σ, u, v)` past the first, keep the positive or the
/// negative parts of `u` and `v`, whichever has the larger product of norms; the result
/// does not depend on the signs the SVD chose.
fn nndsvda<T: Real>(data: &Batch<T>, k: usize, mean: f64) -> Result<(Batch<T>, Batch<T>)> {
    let (n, m) = data.shape();
    if k > n.min(m) {
        return Err(Error::InvalidParameter {
            arg: "k",
            requirement: "<= min(N, M) for NNDSVDa initialization",
            value: k as f64,
        });
    }
    let x = data.cast::<f64>();
    let svd = Svd::new_thin(x.view()).map_err(|e| Error::Numerical {
        solver: "NMF NNDSVDa (thin SVD)",
        iteration: 0,
        message: format!("{e:?}"),
    })?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let mut w = Batch::<f64>::zeros(n, k);
    let mut h = Batch::<f64>::zeros(k, m);
    for j in 0..k {
        let uj: Vec<f64> = (0..n).map(|i| u[(i, j)]).collect();
        let vj: Vec<f64> = (0..m).map(|c| v[(c, j)]).collect();
        let (uu, vv, sigma) = if j == 0 {
            let a: Vec<f64> = uj.iter().map(|x| x.abs()).collect();
            let b: Vec<f64> = vj.iter().map(|x| x.abs()).collect();
            (a, b, 1.0)
        } else {
            let pos = |x: &[f64]| x.iter().map(|&t| t.max(0.0)).collect::<Vec<_>>();
            let neg = |x: &[f64]| x.iter().map(|&t| (-t).max(0.0)).collect::<Vec<_>>();
            let norm = |x: &[f64]| x.iter().map(|t| t * t).sum::<f64>().sqrt();
            let (up, vp, un, vn) = (pos(&uj), pos(&vj), neg(&uj), neg(&vj));
            let (mp, mn) = (norm(&up) * norm(&vp), norm(&un) * norm(&vn));
            let (a, b, mm) = if mp > mn { (up, vp, mp) } else { (un, vn, mn) };
            let (na, nb) = (norm(&a), norm(&b));
            if mm == 0.0 {
                (vec![0.0; n], vec![0.0; m], 0.0)
            } else {
                (
                    a.iter().map(|t| t / na).collect(),
                    b.iter().map(|t| t / nb).collect(),
                    mm,
                )
            }
        };
        let l = (s[j] * sigma).sqrt();
        for (wi, &ui) in w.col_mut(j).iter_mut().zip(&uu) {
            *wi = l * ui;
        }
        for (c, &vc) in vv.iter().enumerate() {
            h.set(j, c, l * vc);
        }
    }
    // scikit-learn zeroes entries below 1e-6 and then fills zeros with the mean.
    let fill = |b: &mut Batch<f64>| {
        for t in b.as_mut_slice() {
            if *t < 1e-6 {
                *t = mean;
            }
        }
    };
    fill(&mut w);
    fill(&mut h);
    Ok((w.cast(), h.cast()))
}

// ---------------------------------------------------------------------------------------
// Comparing reconstructions in a transport metric

/// A reconstruction made a histogram: negative entries set to 0, then each column divided
/// by its sum (the standard way to compare PCA/NMF outputs with histograms). A column
/// with no positive entry becomes the uniform histogram (it carries no mass to place).
pub fn clip_renormalize<T: Real>(recon: &Batch<T>) -> Batch<f64> {
    let (n, m) = recon.shape();
    let mut out = Batch::from_fn(n, m, |i, j| recon.get(i, j).to_f64_().max(0.0));
    for j in 0..m {
        let c = out.col_mut(j);
        let s: f64 = c.iter().sum();
        if s > 0.0 && s.is_finite() {
            c.iter_mut().for_each(|v| *v /= s);
        } else {
            c.iter_mut().for_each(|v| *v = 1.0 / n as f64);
        }
    }
    out
}

/// Squared Euclidean distances between the cells of a grid of `shape` (slowest axis
/// first), in cells: `C[p, q] = Σ_axes (p_k − q_k)²`, `N × N` row-major.
pub fn grid_cost_pixels(shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let coords = |mut p: usize| {
        let mut c = vec![0usize; shape.len()];
        for (k, &s) in shape.iter().enumerate().rev() {
            c[k] = p % s;
            p /= s;
        }
        c
    };
    let all: Vec<Vec<usize>> = (0..n).map(coords).collect();
    let mut cost = Vec::with_capacity(n * n);
    for p in &all {
        for q in &all {
            cost.push(
                p.iter()
                    .zip(q)
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum(),
            );
        }
    }
    cost
}

/// Exact optimal transport cost `W₂²(a, b) = min_T ⟨T, C⟩` (network simplex,
/// [`crate::emd::emd`]) between histograms `a` and `b` on the grid whose cost matrix is
/// `cost` ([`grid_cost_pixels`]: squared distances in cells, so the result is in px²).
/// Both are renormalized to sum 1 first (their sums differ by rounding only). The
/// transport metric of the real-data examples: the same function scores WDL, PCA and NMF
/// (the latter two through [`clip_renormalize`]).
pub fn ot_cost(a: &[f64], b: &[f64], cost: &[f64]) -> Result<f64> {
    let norm = |v: &[f64]| -> Result<Vec<f64>> {
        let s: f64 = v.iter().sum();
        validate::positive("histogram mass", s)?;
        Ok(v.iter().map(|x| x / s).collect())
    };
    let (a, b) = (norm(a)?, norm(b)?);
    // network simplex pivots grow roughly like N²; 10⁷ is far above what 28 × 28 needs
    Ok(crate::emd::emd(&a, &b, cost, 10_000_000)?.cost)
}
