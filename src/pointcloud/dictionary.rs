//! Dictionary learning over point clouds (Dataset Dictionary Learning, DaDiL): the API of
//! `000_28317f9bbe079a83.txt` (`EmpiricalDictionary`, `MinibatchDictionary`,
//! `LabeledMinibatchDictionary`).
//!
//! # The model
//!
//! Atoms `P_k = (1/n) Σ_j δ_{(x_j^k, y_j^k)}`, `k = 1..S`, are uniform point clouds of `n`
//! points in `R^dim` ([`LabeledCloud`]), each point optionally carrying a soft label
//! `y_j^k` in the simplex of `C` classes. Dataset `ℓ` (a cloud `Q_ℓ`, labeled or not) is
//! represented by barycentric weights `λ_ℓ ∈ Δ_S` and reconstructed as the Wasserstein
//! barycenter `B(λ_ℓ; P) = argmin_B Σ_k λ_ℓk OT(B, P_k)`. Learning minimizes
//!
//! ```text
//! L(P, Λ) = (1/N) Σ_ℓ OT(Q_ℓ, B(λ_ℓ; P))                                  (seed, fit)
//! ```
//!
//! over the atoms' positions, the atoms' labels and the weights, on minibatches: at each
//! step `batch_size` points are drawn from every atom and from every dataset, and the
//! barycenters are computed between the atom minibatches.
//!
//! # Ground costs (DaDiL)
//!
//! Between labeled points `C_ij = ‖x_i − x'_j‖² + β ‖y_i − y'_j‖²` ([`LabelWeight`]:
//! a fixed `β`, or DaDiL's default `β = max_ij ‖x_i − x'_j‖²`, recomputed for each pair of
//! clouds and treated as a constant). Against an unlabeled dataset the cost is the
//! squared Euclidean distance of the features alone; the barycenter still carries labels.
//!
//! # The barycenter (free-support fixed point)
//!
//! `B` has the support size of the atoms it is computed from and uniform weights
//! `b_i = 1/n_B`; it starts from the atom of largest weight (points and labels) and
//! iterates (Cuturi & Doucet 2014, Algorithm 2, as [`crate::pointcloud::free_support_barycenter`],
//! extended to labels as DaDiL's `wasserstein_barycenter(..., propagate_labels=True,
//! penalize_labels=True)`):
//!
//! ```text
//! π_k = OT plan between (b, X_B, Y_B) and (1/n, X_k, Y_k) for the label-aware cost
//! X_B ← Σ_k λ_k diag(1/b) π_k X_k,     Y_B ← Σ_k λ_k diag(1/b) π_k Y_k        (eq. B)
//! ```
//!
//! until the squared displacement `‖ΔX_B‖² + ‖ΔY_B‖²` is at most `tol` or after
//! `max_iter` iterations. `Y_B` is the barycentric label propagation that labels the
//! reconstruction of an unlabeled dataset. The inner OT is exact (network simplex,
//! [`crate::emd::emd`]) or entropic (log-domain [`crate::sinkhorn()`]), see [`InnerOt`].
//!
//! # Gradients (envelope theorem, no tape)
//!
//! The gradients are written in closed form, as DaDiL obtains them from PyTorch:
//!
//! * the outer loss `OT(Q, B) = ⟨π, C(Q, B)⟩`: by the envelope theorem (Danskin) the
//!   optimal plan `π` is held fixed, `∂/∂x_B,j = Σ_i π_ij 2 (x_B,j − x_Q,i)` and
//!   `∂/∂y_B,j = β Σ_i π_ij 2 (y_B,j − y_Q,i)`;
//! * the barycenter: only its last update (eq. B) is differentiated, with the plans
//!   `π_k` of that update held fixed (DaDiL recomputes the support "at optimality" with
//!   gradients enabled; it calls this the envelope theorem too), giving
//!   `∂/∂x_k,j = λ_k Σ_i π_k,ij / b_i ∂/∂x_B,i` and
//!   `∂/∂λ_k = Σ_ij π_k,ij / b_i (⟨∂/∂x_B,i, x_k,j⟩ + ⟨∂/∂y_B,i, y_k,j⟩)`;
//! * softmax changes of variables for the weights and for the labels:
//!   `∂/∂a = λ ⊙ (g − ⟨λ, g⟩)`.
//!
//! With exact inner OT these are the exact gradients of the computed objective wherever
//! it is differentiable: the optimal plans of the network simplex are locally constant
//! in the positions (a vertex of the transport polytope stays optimal under small
//! perturbations of a generic cost), so every earlier fixed-point iteration contributes
//! nothing, and `tests/pointcloud_dictionary.rs` checks them against finite differences
//! through [`EmpiricalDictionary::objective_and_gradient`]. Two terms are dropped on
//! purpose, as in DaDiL: the dependence of `β = max C` on the positions
//! ([`LabelWeight::MaxFeatureCost`]), and, with entropic inner OT, the dependence of the
//! entropic plans on the positions (the gradient of the outer entropic cost itself is
//! exact: `∂OT_ε/∂C = π`).
//!
//! # Optimizer
//!
//! Adam (Kingma & Ba 2015, Algorithm 1, PyTorch's defaults `β₁ = 0.9`, `β₂ = 0.999`,
//! `ε = 10⁻⁸`), written here in a few lines, with one learning rate per parameter group
//! (`lr`, `lr_labels`, `lr_weights`), as the seed's `torch.optim.Adam`. argmin has no
//! Adam, and its executor and line searches assume one deterministic objective, whereas
//! every step here sees a different minibatch.
//!
//! # Determinism
//!
//! Every random draw (initialization, minibatches of atoms and datasets) comes from one
//! [`StdRng::seed_from_u64`] stream in a fixed order. The per-dataset terms run on
//! several threads but are summed in dataset order, so a seed gives bit-identical results
//! on any number of cores.
//!
//! # Mapping to the Python API of `000_28317f9bbe079a83.txt`
//!
//! | Python | here |
//! | --- | --- |
//! | `EmpiricalDictionary` | [`EmpiricalDictionary`] |
//! | `MinibatchDictionary(...).fit(datasets, num_iter_max, batches_per_it)` | [`MinibatchDictionary::fit`] with [`MinibatchConfig`] |
//! | `LabeledMinibatchDictionary(...).fit(...)`, `fit_without_replacement(...)` | [`LabeledMinibatchDictionary::fit`], [`Sampling`] |
//! | `transform(datasets, num_iter_max, batches_per_it)` | `transform(datasets, &TransformConfig)` |
//! | `reconstruct(weights)` | `reconstruct(&weights)`; `reconstruct_dataset(ℓ)` uses `λ_ℓ` |
//! | `sample_from_atoms(n)` | `sample_from_atoms(n, seed)` |
//! | `get_atoms()`, `get_weights()` | `atoms()`, `weights()` (`S × N`, one column per dataset) |
//! | `n_components`, `n_samples`, `batch_size`, `lr_features/labels/weights`, `ε`, `num_iter_barycenter`, `grad_labels`, `weight_initialization` | [`MinibatchConfig`] fields |
//!
//! Not carried over: `η_A` and `regularizer_fn` (unused in the DaDiL paper), `device`,
//! `track_atoms`, `names`.
//!
//! ```
//! use wassdl::Batch;
//! use wassdl::dictionary::NoObserver;
//! use wassdl::pointcloud::dictionary::{MinibatchConfig, MinibatchDictionary};
//! // two datasets: a cloud around 0 and the same cloud moved to 4
//! let base: Vec<f64> = (0..16).map(|i| i as f64 / 16.0).collect();
//! let d0 = Batch::from_vec(1, 16, base.clone());
//! let d1 = Batch::from_vec(1, 16, base.iter().map(|x| x + 4.0).collect());
//! let cfg = MinibatchConfig {
//!     n_atoms: 2, n_samples: 16, batch_size: 16, lr: 0.1,
//!     num_iter_max: 20, batches_per_it: 2, ..Default::default()
//! };
//! let dict = MinibatchDictionary::fit(&[d0, d1], &cfg, &mut NoObserver).unwrap();
//! assert!(dict.history().last().unwrap() < &dict.history()[0]);
//! assert_eq!(dict.weights().shape(), (2, 2));
//! ```

use super::free_support::{add_projection, inner_plan, Plan};
use crate::batch::Batch;
use crate::dictionary::{IterationInfo, Observer, WeightInit};
use crate::emd::PlanEntry;
use crate::error::{Error, Result};
use crate::lbfgs::Control;
use crate::pointcloud::{cost_matrix_row_major, Cost, InnerOt, PointCloud};
use crate::real::Real;
use crate::tape::softmax_cols;
use crate::validate;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use std::time::{Duration, Instant};

/// A uniform point cloud `(1/n) Σ_j δ_{x_j}` whose points may carry soft labels: an atom,
/// a dataset, or a reconstruction.
///
/// Points are the columns of a `dim × n` [`Batch`] (as [`PointCloud`]); labels, when
/// present, the columns of a `C × n` batch, each in the simplex of `C` classes.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledCloud<T: Real> {
    points: Batch<T>,
    labels: Option<Batch<T>>,
}

impl<T: Real> LabeledCloud<T> {
    /// A cloud without labels (`dim ≥ 1`, `n ≥ 1`, finite).
    pub fn unlabeled(points: Batch<T>) -> Result<Self> {
        let (points, _) = PointCloud::uniform(points)?.into_parts();
        Ok(LabeledCloud {
            points,
            labels: None,
        })
    }

    /// A cloud with soft labels `labels` (`C × n`, `C ≥ 1`, columns in the simplex).
    pub fn soft(points: Batch<T>, labels: Batch<T>) -> Result<Self> {
        let (points, _) = PointCloud::uniform(points)?.into_parts();
        if labels.rows() == 0 {
            return Err(Error::ShapeMismatch {
                arg: "labels",
                expected: format!("(>= 1 class) x {}", points.cols()),
                found: format!("0 x {}", labels.cols()),
            });
        }
        validate::shape("labels", &labels, labels.rows(), points.cols())?;
        validate::simplex_columns("labels", &labels)?;
        Ok(LabeledCloud {
            points,
            labels: Some(labels),
        })
    }

    /// A cloud with hard labels `classes[j] ∈ 0..n_classes`, stored one-hot.
    pub fn labeled(points: Batch<T>, classes: &[usize], n_classes: usize) -> Result<Self> {
        if classes.len() != points.cols() {
            return Err(Error::ShapeMismatch {
                arg: "classes",
                expected: format!("{} labels (one per point)", points.cols()),
                found: format!("{} labels", classes.len()),
            });
        }
        if let Some(&c) = classes.iter().find(|&&c| c >= n_classes) {
            return Err(Error::InvalidParameter {
                arg: "classes",
                requirement: "every class index < n_classes",
                value: c as f64,
            });
        }
        let labels = Batch::from_fn(n_classes, classes.len(), |c, j| {
            if classes[j] == c {
                T::one()
            } else {
                T::zero()
            }
        });
        Self::soft(points, labels)
    }

    /// Positions, `dim × n`.
    pub fn points(&self) -> &Batch<T> {
        &self.points
    }
    /// Soft labels, `C × n`, if any.
    pub fn labels(&self) -> Option<&Batch<T>> {
        self.labels.as_ref()
    }
    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.points.rows()
    }
    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.cols()
    }
    /// Always `false`: a cloud has at least one point.
    pub fn is_empty(&self) -> bool {
        self.points.cols() == 0
    }
    /// Number of classes `C`, if labeled.
    pub fn n_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|l| l.rows())
    }
    /// The most likely class of each point (first one on ties), if labeled.
    pub fn argmax_labels(&self) -> Option<Vec<usize>> {
        self.labels.as_ref().map(|l| {
            (0..l.cols())
                .map(|j| {
                    l.col(j)
                        .iter()
                        .enumerate()
                        .fold((0, T::neg_infinity()), |best, (c, &v)| {
                            if v > best.1 {
                                (c, v)
                            } else {
                                best
                            }
                        })
                        .0
                })
                .collect()
        })
    }
    /// The points as a uniform [`PointCloud`] (labels dropped).
    pub fn cloud(&self) -> Result<PointCloud<T>> {
        PointCloud::uniform(self.points.clone())
    }
    /// Converts the precision.
    pub fn cast<U: Real>(&self) -> LabeledCloud<U> {
        LabeledCloud {
            points: self.points.cast(),
            labels: self.labels.as_ref().map(|l| l.cast()),
        }
    }
    /// The sub-cloud of the points `idx` (repetitions allowed).
    fn select(&self, idx: &[usize]) -> Self {
        LabeledCloud {
            points: gather(&self.points, idx),
            labels: self.labels.as_ref().map(|l| gather(l, idx)),
        }
    }
}

/// Columns `idx` of `x`.
fn gather<T: Real>(x: &Batch<T>, idx: &[usize]) -> Batch<T> {
    let mut data = Vec::with_capacity(x.rows() * idx.len());
    for &j in idx {
        data.extend_from_slice(x.col(j));
    }
    Batch::from_vec(x.rows(), idx.len(), data)
}

/// The weight `β` of the label term of the ground cost `‖x − x'‖² + β ‖y − y'‖²`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LabelWeight {
    /// A fixed `β ≥ 0`.
    Fixed(f64),
    /// DaDiL's default: `β = max_ij ‖x_i − x'_j‖²` for each pair of clouds, so that
    /// transporting mass between different classes always costs more than any
    /// displacement of features. Held constant in the gradients (PyTorch's `detach()`).
    MaxFeatureCost,
}

/// The barycenter solver of a dictionary (the fixed point of the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FixedPointConfig {
    /// Fixed-point iterations, at least one (the seed's `num_iter_barycenter = 5`).
    pub max_iter: usize,
    /// Stop early when `‖ΔX_B‖² + ‖ΔY_B‖² ≤ tol` (POT's `stopThr = 1e-7`; 0 runs all
    /// `max_iter` iterations).
    pub tol: f64,
    /// Inner OT solver, for the barycenter and for the loss (the seed's `ε = 0`: exact).
    pub inner: InnerOt,
    /// The label term of the ground cost.
    pub label_weight: LabelWeight,
}

impl Default for FixedPointConfig {
    fn default() -> Self {
        FixedPointConfig {
            max_iter: 5,
            tol: 1e-7,
            inner: InnerOt::Exact { max_iter: 100_000 },
            label_weight: LabelWeight::MaxFeatureCost,
        }
    }
}

impl FixedPointConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.max_iter == 0 {
            return Err(Error::InvalidParameter {
                arg: "barycenter.max_iter",
                requirement: ">= 1",
                value: 0.0,
            });
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(Error::InvalidParameter {
                arg: "barycenter.tol",
                requirement: "finite and >= 0",
                value: self.tol,
            });
        }
        match self.inner {
            InnerOt::Exact { max_iter: 0 } => {
                return Err(Error::InvalidParameter {
                    arg: "inner.max_iter",
                    requirement: ">= 1 pivot",
                    value: 0.0,
                })
            }
            InnerOt::Entropic { gamma: reg, .. } => validate::positive("inner.reg", reg)?,
            InnerOt::Exact { .. } => {}
        }
        if let LabelWeight::Fixed(b) = self.label_weight {
            if !(b.is_finite() && b >= 0.0) {
                return Err(Error::InvalidParameter {
                    arg: "label_weight",
                    requirement: "finite and >= 0",
                    value: b,
                });
            }
        }
        Ok(())
    }
}

/// How dataset minibatches are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Sampling {
    /// Every minibatch draws `batch_size` indices independently and uniformly (a point
    /// can appear twice in a batch and in consecutive batches): the seed's `fit` with
    /// `sample_with_repetition=True`.
    #[default]
    WithReplacement,
    /// Each dataset is shuffled and cut into consecutive minibatches of
    /// `min(batch_size, n_ℓ)` distinct points; when fewer than that remain, it is
    /// reshuffled (the remainder is skipped), so within a pass no point is drawn twice:
    /// the seed's `fit_without_replacement`.
    WithoutReplacement,
}

/// Initial atom positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AtomInit {
    /// Atom `k` starts as `n_samples` points drawn (seeded) from dataset `k mod N`
    /// (without replacement when it has enough points), with their labels smoothed as
    /// `0.9 y + 0.1/C` when that dataset is labeled and random labels otherwise. Distinct
    /// datasets break the symmetry between atoms, and the atoms start at the data's scale.
    #[default]
    FromData,
    /// The seed's `initialize`: positions `~ N(0, I_dim)` (meant for standardized data).
    Gaussian,
}

/// Settings of [`MinibatchDictionary::fit`] and [`LabeledMinibatchDictionary::fit`],
/// defaulted as the seed's `MinibatchDictionary` (except [`AtomInit`], see there).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MinibatchConfig {
    /// Number of atoms `S` (the seed's `n_components`).
    pub n_atoms: usize,
    /// Points per atom `n` (`n_samples`).
    pub n_samples: usize,
    /// Points drawn per atom and per dataset at each step, at most `n_samples`
    /// (`batch_size`); the barycenters have this many points.
    pub batch_size: usize,
    /// Adam learning rate of the atom positions (`lr_features`).
    pub lr: f64,
    /// Adam learning rate of the atom label logits (`lr_labels`; `None`: `lr`).
    pub lr_labels: Option<f64>,
    /// Adam learning rate of the weight logits (`lr_weights`; `None`: `lr`).
    pub lr_weights: Option<f64>,
    /// Iterations (`num_iter_max`).
    pub num_iter_max: usize,
    /// Minibatches, hence Adam steps, per iteration (`batches_per_it`).
    pub batches_per_it: usize,
    /// Dataset minibatches with or without replacement.
    pub sampling: Sampling,
    /// Barycenter and inner OT.
    pub barycenter: FixedPointConfig,
    /// Learn the atom labels (`grad_labels`); otherwise they keep their initial values.
    pub grad_labels: bool,
    /// Initial atoms.
    pub atom_init: AtomInit,
    /// Initial weights (`weight_initialization`; `Random` draws uniform `(0, 1]` entries,
    /// normalized, as [`WeightInit`] documents).
    pub weight_init: WeightInit,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for MinibatchConfig {
    fn default() -> Self {
        MinibatchConfig {
            n_atoms: 2,
            n_samples: 1000,
            batch_size: 128,
            lr: 0.01,
            lr_labels: None,
            lr_weights: None,
            num_iter_max: 100,
            batches_per_it: 100,
            sampling: Sampling::WithReplacement,
            barycenter: FixedPointConfig::default(),
            grad_labels: true,
            atom_init: AtomInit::FromData,
            weight_init: WeightInit::Uniform,
            seed: 0,
        }
    }
}

impl MinibatchConfig {
    /// Checks every setting that does not depend on the data.
    pub fn validate(&self) -> Result<()> {
        for (arg, v) in [
            ("n_atoms", self.n_atoms),
            ("n_samples", self.n_samples),
            ("batch_size", self.batch_size),
            ("num_iter_max", self.num_iter_max),
            ("batches_per_it", self.batches_per_it),
        ] {
            if v == 0 {
                return Err(Error::InvalidParameter {
                    arg,
                    requirement: ">= 1",
                    value: 0.0,
                });
            }
        }
        if self.batch_size > self.n_samples {
            return Err(Error::InvalidParameter {
                arg: "batch_size",
                requirement: "<= n_samples (minibatches of atoms are drawn without replacement)",
                value: self.batch_size as f64,
            });
        }
        validate::positive("lr", self.lr)?;
        if let Some(l) = self.lr_labels {
            validate::positive("lr_labels", l)?;
        }
        if let Some(l) = self.lr_weights {
            validate::positive("lr_weights", l)?;
        }
        self.barycenter.validate()
    }
}

/// Settings of `transform` (barycentric-coordinate regression with the atoms fixed).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TransformConfig {
    /// Iterations (the seed's `num_iter_max`).
    pub num_iter_max: usize,
    /// Adam steps per iteration (`batches_per_it`).
    pub batches_per_it: usize,
    /// Adam learning rate of the weight logits.
    pub lr: f64,
    /// Minibatch size for the atoms and the dataset; `None`: whole clouds (deterministic).
    pub batch_size: Option<usize>,
    /// Dataset minibatches with or without replacement (when `batch_size` is set).
    pub sampling: Sampling,
    /// Seed of the minibatches.
    pub seed: u64,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            num_iter_max: 100,
            batches_per_it: 10,
            lr: 0.01,
            batch_size: None,
            sampling: Sampling::WithReplacement,
            seed: 0,
        }
    }
}

impl TransformConfig {
    fn validate(&self, n_samples: usize) -> Result<()> {
        for (arg, v) in [
            ("num_iter_max", self.num_iter_max),
            ("batches_per_it", self.batches_per_it),
        ] {
            if v == 0 {
                return Err(Error::InvalidParameter {
                    arg,
                    requirement: ">= 1",
                    value: 0.0,
                });
            }
        }
        validate::positive("lr", self.lr)?;
        if let Some(b) = self.batch_size {
            if b == 0 || b > n_samples {
                return Err(Error::InvalidParameter {
                    arg: "batch_size",
                    requirement: ">= 1 and <= the atoms' n_samples",
                    value: b as f64,
                });
            }
        }
        Ok(())
    }
}

/// Gradient of [`EmpiricalDictionary::objective`] with respect to the atoms' positions,
/// the atoms' soft labels (as free variables, before any softmax), and the weights
/// `λ` (as free variables, before any projection on the simplex).
#[derive(Clone, Debug, PartialEq)]
pub struct DictionaryGradient {
    /// `∂L/∂X_k`, `dim × n` per atom.
    pub points: Vec<Batch<f64>>,
    /// `∂L/∂Y_k`, `C × n` per atom (for labeled dictionaries).
    pub labels: Option<Vec<Batch<f64>>>,
    /// `∂L/∂λ`, `S × N`.
    pub weights: Batch<f64>,
}

/// A dictionary of empirical atoms with the weights of `N` datasets (the seed's
/// `EmpiricalDictionary`): reconstruct, transform, sample; no fit (see
/// [`MinibatchDictionary`] and [`LabeledMinibatchDictionary`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EmpiricalDictionary<T: Real> {
    atoms: Vec<LabeledCloud<T>>,
    weights: Batch<T>,
    barycenter: FixedPointConfig,
}

impl<T: Real> EmpiricalDictionary<T> {
    /// `S ≥ 1` atoms of the same dimension and number of points, all labeled (same `C`)
    /// or none; `weights` is `S × N` with columns in the simplex (`N = 0` is allowed).
    pub fn new(
        atoms: Vec<LabeledCloud<T>>,
        weights: Batch<T>,
        barycenter: FixedPointConfig,
    ) -> Result<Self> {
        let first = atoms.first().ok_or_else(|| Error::ShapeMismatch {
            arg: "atoms",
            expected: "at least one atom".into(),
            found: "none".into(),
        })?;
        let (dim, n, c) = (first.dim(), first.len(), first.n_classes());
        for a in &atoms {
            validate::shape("atoms", a.points(), dim, n)?;
            if a.n_classes() != c {
                return Err(Error::ShapeMismatch {
                    arg: "atoms",
                    expected: format!("labels with {c:?} classes on every atom"),
                    found: format!("{:?}", a.n_classes()),
                });
            }
        }
        validate::shape("weights", &weights, atoms.len(), weights.cols())?;
        validate::simplex_columns("weights", &weights)?;
        barycenter.validate()?;
        Ok(EmpiricalDictionary {
            atoms,
            weights,
            barycenter,
        })
    }

    /// The atoms (the seed's `get_atoms`).
    pub fn atoms(&self) -> &[LabeledCloud<T>] {
        &self.atoms
    }
    /// The weights, `S × N`, one column per dataset (the seed's `get_weights`).
    pub fn weights(&self) -> &Batch<T> {
        &self.weights
    }
    /// The barycenter settings used by `reconstruct`, `transform` and `objective`.
    pub fn barycenter_settings(&self) -> &FixedPointConfig {
        &self.barycenter
    }
    /// The same dictionary with other barycenter settings (validated).
    pub fn with_barycenter(mut self, settings: FixedPointConfig) -> Result<Self> {
        settings.validate()?;
        self.barycenter = settings;
        Ok(self)
    }
    /// Number of atoms `S`.
    pub fn n_atoms(&self) -> usize {
        self.atoms.len()
    }
    /// Points per atom.
    pub fn n_samples(&self) -> usize {
        self.atoms[0].len()
    }
    /// Dimension of the points.
    pub fn dim(&self) -> usize {
        self.atoms[0].dim()
    }
    /// Number of classes, for labeled atoms.
    pub fn n_classes(&self) -> Option<usize> {
        self.atoms[0].n_classes()
    }
    /// Converts the precision.
    pub fn cast<U: Real>(&self) -> EmpiricalDictionary<U> {
        EmpiricalDictionary {
            atoms: self.atoms.iter().map(|a| a.cast()).collect(),
            weights: self.weights.cast(),
            barycenter: self.barycenter,
        }
    }

    fn atoms_f64(&self) -> Vec<LabeledCloud<f64>> {
        self.atoms.iter().map(|a| a.cast()).collect()
    }

    /// The barycenter `B(λ; P)` of the whole atoms for `weights = λ ∈ Δ_S`: `n_samples`
    /// points with uniform weights, and labels propagated from the atoms when they have
    /// some (the seed's `reconstruct`).
    pub fn reconstruct(&self, weights: &[T]) -> Result<LabeledCloud<T>> {
        let lam: Vec<f64> = weights.iter().map(|w| w.to_f64_()).collect();
        let lb = Batch::from_vec(lam.len(), 1, lam.clone());
        validate::shape("weights", &lb, self.n_atoms(), 1)?;
        validate::simplex_columns("weights", &lb)?;
        let bar = joint_barycenter(&self.atoms_f64(), &lam, &self.barycenter)?;
        Ok(LabeledCloud {
            points: bar.x,
            labels: bar.y,
        }
        .cast())
    }

    /// [`Self::reconstruct`] with the weights of dataset `dataset` (column of
    /// [`Self::weights`]).
    pub fn reconstruct_dataset(&self, dataset: usize) -> Result<LabeledCloud<T>> {
        if dataset >= self.weights.cols() {
            return Err(Error::InvalidParameter {
                arg: "dataset",
                requirement: "< the number of weight columns",
                value: dataset as f64,
            });
        }
        self.reconstruct(self.weights.col(dataset))
    }

    /// `n` points of every atom, drawn without replacement (seeded), with their labels
    /// (the seed's `sample_from_atoms`). Requires `1 ≤ n ≤ n_samples`.
    pub fn sample_from_atoms(&self, n: usize, seed: u64) -> Result<Vec<LabeledCloud<T>>> {
        if n == 0 || n > self.n_samples() {
            return Err(Error::InvalidParameter {
                arg: "n",
                requirement: ">= 1 and <= n_samples",
                value: n as f64,
            });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        Ok(self
            .atoms
            .iter()
            .map(|a| a.select(&rand::seq::index::sample(&mut rng, a.len(), n).into_vec()))
            .collect())
    }

    fn check_datasets(&self, datasets: &[LabeledCloud<T>]) -> Result<Vec<LabeledCloud<f64>>> {
        for d in datasets {
            validate::rows("datasets", d.points(), self.dim())?;
            if let (Some(c), Some(dc)) = (self.n_classes(), d.n_classes()) {
                if c != dc {
                    return Err(Error::ShapeMismatch {
                        arg: "datasets",
                        expected: format!("labels with {c} classes"),
                        found: format!("{dc} classes"),
                    });
                }
            }
        }
        Ok(datasets.iter().map(|d| d.cast()).collect())
    }

    /// The full-batch objective `(1/N) Σ_ℓ OT(Q_ℓ, B(λ_ℓ; P))` of the whole atoms and
    /// datasets with the stored weights (`datasets.len()` must equal the number of weight
    /// columns). A labeled dataset is compared with the label-aware cost, an unlabeled
    /// one with its features.
    pub fn objective(&self, datasets: &[LabeledCloud<T>]) -> Result<f64> {
        self.objective_impl(datasets, false).map(|(l, _)| l)
    }

    /// [`Self::objective`] and its gradient (module docs, "Gradients"), exact for exact
    /// inner OT with [`LabelWeight::Fixed`] wherever the objective is differentiable.
    pub fn objective_and_gradient(
        &self,
        datasets: &[LabeledCloud<T>],
    ) -> Result<(f64, DictionaryGradient)> {
        self.objective_impl(datasets, true)
    }

    fn objective_impl(
        &self,
        datasets: &[LabeledCloud<T>],
        want_grad: bool,
    ) -> Result<(f64, DictionaryGradient)> {
        let m = self.weights.cols();
        if datasets.len() != m || m == 0 {
            return Err(Error::ShapeMismatch {
                arg: "datasets",
                expected: format!("{m} datasets (one per weight column, at least one)"),
                found: format!("{}", datasets.len()),
            });
        }
        let ds = self.check_datasets(datasets)?;
        let atoms = self.atoms_f64();
        let lam: Batch<f64> = self.weights.cast();
        let terms = par_map(&atoms, &ds, &self.barycenter, |l| {
            dataset_term(&atoms, lam.col(l), &ds[l], &self.barycenter, want_grad)
        });
        let inv = 1.0 / m as f64;
        let mut loss = 0.0;
        let s = atoms.len();
        let mut gp: Vec<Batch<f64>> = atoms
            .iter()
            .map(|a| Batch::zeros(a.dim(), a.len()))
            .collect();
        let mut gl: Option<Vec<Batch<f64>>> = atoms[0]
            .labels()
            .map(|l| (0..s).map(|_| Batch::zeros(l.rows(), l.cols())).collect());
        let mut gw = Batch::zeros(s, m);
        for (l, t) in terms.into_iter().enumerate() {
            let t = t?;
            loss += inv * t.loss;
            if let Some(g) = t.grad {
                for k in 0..s {
                    axpy(inv, &g.points[k], &mut gp[k]);
                    if let (Some(gl), Some(gy)) = (gl.as_mut(), g.labels[k].as_ref()) {
                        axpy(inv, gy, &mut gl[k]);
                    }
                    gw.set(k, l, inv * g.lambda[k]);
                }
            }
        }
        Ok((
            loss,
            DictionaryGradient {
                points: gp,
                labels: gl,
                weights: gw,
            },
        ))
    }

    /// Barycentric-coordinate regression (the seed's `transform`): for each dataset, the
    /// weights `λ = softmax(a) ∈ Δ_S` minimizing `OT(Q, B(λ; P))` with the atoms fixed, by
    /// Adam on `a` from `a = 0` (uniform weights). Returns `S × N`, one column per dataset.
    pub fn transform(
        &self,
        datasets: &[LabeledCloud<T>],
        cfg: &TransformConfig,
    ) -> Result<Batch<T>> {
        cfg.validate(self.n_samples())?;
        let ds = self.check_datasets(datasets)?;
        let atoms = self.atoms_f64();
        let s = atoms.len();
        // One seed per dataset, drawn from the configured one, so the result of a dataset
        // does not depend on its position in the list.
        let results = par_map(&atoms, &ds, &self.barycenter, |l| {
            transform_one(
                &atoms,
                &ds[l],
                cfg,
                &self.barycenter,
                cfg.seed.wrapping_add(l as u64),
            )
        });
        let mut out = Batch::zeros(s, ds.len());
        for (l, r) in results.into_iter().enumerate() {
            for (k, w) in r?.into_iter().enumerate() {
                out.set(k, l, T::of(w));
            }
        }
        Ok(out)
    }
}

/// `y += a x`.
fn axpy(a: f64, x: &Batch<f64>, y: &mut Batch<f64>) {
    for (yi, &xi) in y.as_mut_slice().iter_mut().zip(x.as_slice()) {
        *yi += a * xi;
    }
}

/// The per-dataset terms on every core ([`crate::solver::par_map`]; the learners carry no
/// parallelism setting): `work` estimates the cost entries their inner solves touch,
/// `datasets × atoms × n_dataset × n_atom × fixed-point iterations` (a lower bound: each
/// inner solve reads its cost matrix at least once per iteration), so that small problems
/// stay on one thread under the crate's one threshold.
fn par_map<R: Send>(
    atoms: &[LabeledCloud<f64>],
    datasets: &[LabeledCloud<f64>],
    s: &FixedPointConfig,
    f: impl Fn(usize) -> R + Sync,
) -> Vec<R> {
    let na: usize = atoms.iter().map(|a| a.len()).sum();
    let nq: usize = datasets.iter().map(|q| q.len()).sum();
    let work = na.saturating_mul(nq).saturating_mul(s.max_iter.max(1));
    crate::solver::par_map(faer::Par::rayon(0), work, datasets.len(), f)
}

/// [`inner_plan`] between uniform weights `1/n` and `1/m` for the row-major `n × m` cost
/// `c`; `names` name the two sides in errors. Entropic solves are checked for
/// convergence, as in [`crate::pointcloud::free_support_barycenter`].
fn uniform_plan(
    c: &[f64],
    n: usize,
    m: usize,
    inner: &InnerOt,
    names: (&'static str, &'static str),
) -> Result<Plan> {
    let a = vec![1.0 / n as f64; n];
    let b = vec![1.0 / m as f64; m];
    inner_plan(c, &a, &b, inner, names, "pointcloud_dictionary")
}

/// The label-aware cost between `(x, y)` (rows) and `(x', y')` (columns), row-major,
/// and the `β` used (0 without a label term).
fn joint_cost(
    x: &Batch<f64>,
    y: Option<&Batch<f64>>,
    xp: &Batch<f64>,
    yp: Option<&Batch<f64>>,
    w: LabelWeight,
) -> (Vec<f64>, f64) {
    let mut c = cost_matrix_row_major(x, xp, Cost::SqEuclidean);
    let (Some(y), Some(yp)) = (y, yp) else {
        return (c, 0.0);
    };
    let beta = match w {
        LabelWeight::Fixed(b) => b,
        LabelWeight::MaxFeatureCost => c.iter().copied().fold(0.0, f64::max),
    };
    if beta > 0.0 {
        let cl = cost_matrix_row_major(y, yp, Cost::SqEuclidean);
        for (ci, li) in c.iter_mut().zip(cl) {
            *ci += beta * li;
        }
    }
    (c, beta)
}

/// The barycenter and the plans of its last update.
struct JointBarycenter {
    x: Batch<f64>,
    y: Option<Batch<f64>>,
    /// `plans[k]`: rows = barycenter points, columns = points of atom `k` (empty when
    /// `λ_k = 0`).
    plans: Vec<Vec<PlanEntry>>,
}

/// The free-support fixed point of the module docs (eq. B), from the atom of largest
/// weight. Atoms must share dimension and labeling; weights in the simplex.
fn joint_barycenter(
    atoms: &[LabeledCloud<f64>],
    lambda: &[f64],
    s: &FixedPointConfig,
) -> Result<JointBarycenter> {
    let k0 = lambda
        .iter()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (k, &l)| if l > b.1 { (k, l) } else { b },
        )
        .0;
    let nb = atoms[k0].len();
    let mut x = atoms[k0].points.clone();
    let mut y = atoms[k0].labels.clone();
    let mut plans: Vec<Vec<PlanEntry>> = vec![Vec::new(); atoms.len()];
    let nbf = nb as f64;
    for _ in 0..s.max_iter {
        let mut xn = Batch::zeros(x.rows(), nb);
        let mut yn = y.as_ref().map(|y| Batch::zeros(y.rows(), nb));
        for (k, atom) in atoms.iter().enumerate() {
            if lambda[k] <= 0.0 {
                plans[k].clear();
                continue;
            }
            let (c, _) = joint_cost(&x, y.as_ref(), &atom.points, atom.labels(), s.label_weight);
            let p = uniform_plan(&c, nb, atom.len(), &s.inner, ("barycenter", "atoms"))?;
            // λ_k π_ij / b_i with b_i = 1/n_B
            let w = |e: &PlanEntry| lambda[k] * e.mass * nbf;
            add_projection(&p.entries, w, &atom.points, &mut xn);
            if let (Some(yn), Some(al)) = (yn.as_mut(), atom.labels()) {
                add_projection(&p.entries, w, al, yn);
            }
            plans[k] = p.entries;
        }
        let disp = sq_diff(&x, &xn)
            + match (&y, &yn) {
                (Some(a), Some(b)) => sq_diff(a, b),
                _ => 0.0,
            };
        x = xn;
        y = yn;
        if disp <= s.tol {
            break;
        }
    }
    Ok(JointBarycenter { x, y, plans })
}

fn sq_diff(a: &Batch<f64>, b: &Batch<f64>) -> f64 {
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(&u, &v)| (u - v) * (u - v))
        .sum()
}

/// Gradient of one dataset's term with respect to the atoms it was computed from.
struct TermGrad {
    points: Vec<Batch<f64>>,
    labels: Vec<Option<Batch<f64>>>,
    lambda: Vec<f64>,
}

struct Term {
    loss: f64,
    grad: Option<TermGrad>,
}

/// `OT(q, B(λ; atoms))` and, if asked, its gradient (module docs, "Gradients").
fn dataset_term(
    atoms: &[LabeledCloud<f64>],
    lambda: &[f64],
    q: &LabeledCloud<f64>,
    s: &FixedPointConfig,
    want_grad: bool,
) -> Result<Term> {
    let bar = joint_barycenter(atoms, lambda, s)?;
    let nb = bar.x.cols();
    let (c, beta) = joint_cost(
        q.points(),
        q.labels(),
        &bar.x,
        bar.y.as_ref(),
        s.label_weight,
    );
    let plan = uniform_plan(&c, q.len(), nb, &s.inner, ("datasets", "barycenter"))?;
    if !want_grad {
        return Ok(Term {
            loss: plan.cost,
            grad: None,
        });
    }
    // Envelope theorem on the outer OT: ∂/∂x_B,j = Σ_i π_ij 2 (x_B,j − x_Q,i).
    let mut gx = Batch::zeros(bar.x.rows(), nb);
    let label_term = q.labels().is_some() && beta > 0.0;
    let mut gy = match (&bar.y, label_term) {
        (Some(y), true) => Some(Batch::zeros(y.rows(), nb)),
        _ => None,
    };
    for e in &plan.entries {
        let two_m = 2.0 * e.mass;
        for ((g, &xb), &xq) in gx
            .col_mut(e.j)
            .iter_mut()
            .zip(bar.x.col(e.j))
            .zip(q.points().col(e.i))
        {
            *g += two_m * (xb - xq);
        }
        if let (Some(gy), Some(yb), Some(yq)) = (gy.as_mut(), bar.y.as_ref(), q.labels()) {
            for ((g, &a), &b) in gy.col_mut(e.j).iter_mut().zip(yb.col(e.j)).zip(yq.col(e.i)) {
                *g += beta * two_m * (a - b);
            }
        }
    }
    // The last fixed-point update (eq. B) with its plans held fixed.
    let nbf = nb as f64;
    let mut gp: Vec<Batch<f64>> = atoms
        .iter()
        .map(|a| Batch::zeros(a.dim(), a.len()))
        .collect();
    let mut gl: Vec<Option<Batch<f64>>> = atoms
        .iter()
        .map(|a| a.labels().map(|l| Batch::zeros(l.rows(), l.cols())))
        .collect();
    let mut glam = vec![0.0; atoms.len()];
    for (k, atom) in atoms.iter().enumerate() {
        for e in &bar.plans[k] {
            let w = e.mass * nbf;
            let gxi = gx.col(e.i);
            let xk = atom.points().col(e.j);
            glam[k] += w * dot(gxi, xk);
            for (o, &g) in gp[k].col_mut(e.j).iter_mut().zip(gxi) {
                *o += lambda[k] * w * g;
            }
            if let (Some(gy), Some(yk), Some(glk)) = (gy.as_ref(), atom.labels(), gl[k].as_mut()) {
                let gyi = gy.col(e.i);
                glam[k] += w * dot(gyi, yk.col(e.j));
                for (o, &g) in glk.col_mut(e.j).iter_mut().zip(gyi) {
                    *o += lambda[k] * w * g;
                }
            }
        }
    }
    Ok(Term {
        loss: plan.cost,
        grad: Some(TermGrad {
            points: gp,
            labels: gl,
            lambda: glam,
        }),
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// Chain rule through a softmax: `∂/∂a = p ⊙ (g − ⟨p, g⟩)` for `p = softmax(a)`.
fn softmax_backward(p: &[f64], g: &[f64], out: &mut [f64]) {
    let m = dot(p, g);
    for ((o, &pi), &gi) in out.iter_mut().zip(p).zip(g) {
        *o = pi * (gi - m);
    }
}

/// Adam (Kingma & Ba 2015, Algorithm 1) with PyTorch's defaults.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: f64,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0.0,
        }
    }

    fn step(&mut self, x: &mut [f64], g: &[f64], lr: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.t += 1.0;
        let c1 = 1.0 - B1.powf(self.t);
        let c2 = 1.0 - B2.powf(self.t);
        for (((xi, &gi), m), v) in x.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = B1 * *m + (1.0 - B1) * gi;
            *v = B2 * *v + (1.0 - B2) * gi * gi;
            *xi -= lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
        }
    }
}

/// Draws the minibatch indices of one dataset (see [`Sampling`]) from its own seeded
/// stream: the fit gives every dataset such a sampler, seeded from [`MinibatchConfig::seed`].
///
/// ```
/// use wassdl::pointcloud::dictionary::{MinibatchSampler, Sampling};
/// let mut s = MinibatchSampler::new(6, Sampling::WithoutReplacement, 0).unwrap();
/// let (a, b, c) = (s.next_batch(2), s.next_batch(2), s.next_batch(2));
/// let mut all = [a, b, c].concat();
/// all.sort();
/// assert_eq!(all, vec![0, 1, 2, 3, 4, 5]); // one pass: every point once
/// ```
#[derive(Clone, Debug)]
pub struct MinibatchSampler {
    n: usize,
    sampling: Sampling,
    perm: Vec<usize>,
    pos: usize,
    rng: StdRng,
}

impl MinibatchSampler {
    /// A sampler over the indices `0..n` (`n ≥ 1`).
    pub fn new(n: usize, sampling: Sampling, seed: u64) -> Result<Self> {
        if n == 0 {
            return Err(Error::InvalidParameter {
                arg: "n",
                requirement: ">= 1 point to sample from",
                value: 0.0,
            });
        }
        Ok(MinibatchSampler {
            n,
            sampling,
            perm: (0..n).collect(),
            pos: n,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The next minibatch: `batch_size` indices with replacement, or
    /// `min(batch_size, n)` distinct ones without (see [`Sampling`]).
    pub fn next_batch(&mut self, batch_size: usize) -> Vec<usize> {
        match self.sampling {
            Sampling::WithReplacement => (0..batch_size)
                .map(|_| self.rng.random_range(0..self.n))
                .collect(),
            Sampling::WithoutReplacement => {
                let b = batch_size.min(self.n);
                if self.pos + b > self.n {
                    self.perm.shuffle(&mut self.rng);
                    self.pos = 0;
                }
                let out = self.perm[self.pos..self.pos + b].to_vec();
                self.pos += b;
                out
            }
        }
    }
}

/// One barycentric-coordinate regression (see [`EmpiricalDictionary::transform`]).
fn transform_one(
    atoms: &[LabeledCloud<f64>],
    q: &LabeledCloud<f64>,
    cfg: &TransformConfig,
    bs: &FixedPointConfig,
    seed: u64,
) -> Result<Vec<f64>> {
    let s = atoms.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sampler = MinibatchSampler::new(q.len(), cfg.sampling, rng.random())?;
    let mut a = vec![0.0; s];
    let mut adam = Adam::new(s);
    let mut ga = vec![0.0; s];
    for _ in 0..cfg.num_iter_max * cfg.batches_per_it {
        let lam = softmax(&a);
        let term = match cfg.batch_size {
            None => dataset_term(atoms, &lam, q, bs, true)?,
            Some(b) => {
                let mb: Vec<LabeledCloud<f64>> = atoms
                    .iter()
                    .map(|at| {
                        at.select(&rand::seq::index::sample(&mut rng, at.len(), b).into_vec())
                    })
                    .collect();
                let qi = sampler.next_batch(b);
                dataset_term(&mb, &lam, &q.select(&qi), bs, true)?
            }
        };
        let g = term.grad.map(|g| g.lambda).unwrap_or_else(|| vec![0.0; s]);
        softmax_backward(&lam, &g, &mut ga);
        adam.step(&mut a, &ga, cfg.lr);
    }
    Ok(softmax(&a))
}

fn softmax(a: &[f64]) -> Vec<f64> {
    softmax_cols(&Batch::from_vec(a.len(), 1, a.to_vec())).into_vec()
}

/// A record of a minibatch fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// Mean minibatch loss `L` of each iteration (over its `batches_per_it` steps).
    pub history: Vec<f64>,
    /// Iterations done.
    pub iterations: usize,
    /// Whether the observer stopped the fit.
    pub stopped_by_observer: bool,
    /// Wall-clock time of the fit.
    pub elapsed: Duration,
}

/// Checks the datasets of a fit; returns `(dim, n_classes)`.
fn check_fit_datasets(
    datasets: &[LabeledCloud<f64>],
    labeled: bool,
) -> Result<(usize, Option<usize>)> {
    let first = datasets.first().ok_or_else(|| Error::ShapeMismatch {
        arg: "datasets",
        expected: "at least one dataset".into(),
        found: "none".into(),
    })?;
    let dim = first.dim();
    let mut classes = None;
    for d in datasets {
        validate::rows("datasets", d.points(), dim)?;
        if let Some(c) = d.n_classes() {
            if classes.is_some_and(|k| k != c) {
                return Err(Error::ShapeMismatch {
                    arg: "datasets",
                    expected: format!("labels with {} classes", classes.unwrap_or(c)),
                    found: format!("{c} classes"),
                });
            }
            classes = Some(c);
        }
    }
    if labeled && classes.is_none() {
        return Err(Error::InvalidParameter {
            arg: "datasets",
            requirement: "at least one labeled dataset (labels of the atoms are learned from them)",
            value: 0.0,
        });
    }
    Ok((dim, if labeled { classes } else { None }))
}

/// Minibatch DaDiL (the seed's `fit`); `labeled` learns soft labels on the atoms.
fn fit_minibatch(
    datasets: &[LabeledCloud<f64>],
    cfg: &MinibatchConfig,
    labeled: bool,
    observer: &mut dyn Observer,
) -> Result<(EmpiricalDictionary<f64>, FitReport)> {
    cfg.validate()?;
    let start = Instant::now();
    let (dim, classes) = check_fit_datasets(datasets, labeled)?;
    let (s, n, m) = (cfg.n_atoms, cfg.n_samples, datasets.len());
    let mut rng = StdRng::seed_from_u64(cfg.seed);

    // Parameters, flat: atom k's points are xs[k·dim·n ..] (dim × n, column-major), its
    // label logits zs[k·C·n ..] (C × n), the weight logits `a` (S × M).
    let mut xs = vec![0.0; s * dim * n];
    let nc = classes.unwrap_or(0);
    let mut zs = vec![0.0; s * nc * n];
    for k in 0..s {
        let xk = &mut xs[k * dim * n..(k + 1) * dim * n];
        let zk = &mut zs[k * nc * n..(k + 1) * nc * n];
        match cfg.atom_init {
            AtomInit::Gaussian => {
                xk.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
                zk.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            }
            AtomInit::FromData => {
                let d = &datasets[k % m];
                let idx: Vec<usize> = if d.len() >= n {
                    rand::seq::index::sample(&mut rng, d.len(), n).into_vec()
                } else {
                    (0..n).map(|_| rng.random_range(0..d.len())).collect()
                };
                for (j, &i) in idx.iter().enumerate() {
                    xk[j * dim..(j + 1) * dim].copy_from_slice(d.points().col(i));
                    let zj = &mut zk[j * nc..(j + 1) * nc];
                    match d.labels() {
                        Some(l) => {
                            for (z, &y) in zj.iter_mut().zip(l.col(i)) {
                                *z = (0.9 * y + 0.1 / nc as f64).ln();
                            }
                        }
                        None => zj.iter_mut().for_each(|v| *v = rng.sample(StandardNormal)),
                    }
                }
            }
        }
    }
    let mut a = match &cfg.weight_init {
        WeightInit::Uniform => vec![0.0; s * m],
        WeightInit::Random => (0..s * m)
            .map(|_| (1.0 - rng.random::<f64>()).ln())
            .collect(),
        WeightInit::Given(w) => {
            if w.len() != s * m {
                return Err(Error::ShapeMismatch {
                    arg: "weight_init",
                    expected: format!("{s} x {m} = {} values", s * m),
                    found: format!("{} values", w.len()),
                });
            }
            validate::simplex_columns("weight_init", &Batch::from_vec(s, m, w.clone()))?;
            if let Some(&v) = w.iter().find(|&&v| v <= 0.0) {
                return Err(Error::InvalidParameter {
                    arg: "weight_init",
                    requirement: "> 0 (a softmax cannot represent a zero weight)",
                    value: v,
                });
            }
            w.iter().map(|v| v.ln()).collect()
        }
    };

    let lr_labels = cfg.lr_labels.unwrap_or(cfg.lr);
    let lr_weights = cfg.lr_weights.unwrap_or(cfg.lr);
    let (mut adam_x, mut adam_z, mut adam_a) =
        (Adam::new(xs.len()), Adam::new(zs.len()), Adam::new(a.len()));
    let mut samplers = datasets
        .iter()
        .map(|d| MinibatchSampler::new(d.len(), cfg.sampling, rng.random()))
        .collect::<Result<Vec<_>>>()?;
    let mut history = Vec::with_capacity(cfg.num_iter_max);
    let mut evaluations = 0usize;
    let mut stopped = false;
    let nb = cfg.batch_size;
    let (mut gx, mut gz, mut ga) = (vec![0.0; xs.len()], vec![0.0; zs.len()], vec![0.0; a.len()]);
    for it in 1..=cfg.num_iter_max {
        let mut loss_sum = 0.0;
        let mut grad_norm = 0.0;
        for _ in 0..cfg.batches_per_it {
            // Atom minibatches: distinct points of each atom, with their soft labels.
            let idx: Vec<Vec<usize>> = (0..s)
                .map(|_| rand::seq::index::sample(&mut rng, n, nb).into_vec())
                .collect();
            let atoms: Vec<LabeledCloud<f64>> = (0..s)
                .map(|k| {
                    let xk = Batch::from_fn(dim, nb, |d, j| xs[k * dim * n + idx[k][j] * dim + d]);
                    let yk = classes.map(|c| {
                        softmax_cols(&Batch::from_fn(c, nb, |r, j| {
                            zs[k * c * n + idx[k][j] * c + r]
                        }))
                    });
                    LabeledCloud {
                        points: xk,
                        labels: yk,
                    }
                })
                .collect();
            let qs: Vec<LabeledCloud<f64>> = (0..m)
                .map(|l| {
                    let qi = samplers[l].next_batch(nb);
                    datasets[l].select(&qi)
                })
                .collect();
            let lam = softmax_cols(&Batch::from_vec(s, m, a.clone()));
            let terms = par_map(&atoms, &qs, &cfg.barycenter, |l| {
                dataset_term(&atoms, lam.col(l), &qs[l], &cfg.barycenter, true)
            });
            evaluations += m;
            gx.iter_mut().for_each(|v| *v = 0.0);
            gz.iter_mut().for_each(|v| *v = 0.0);
            let inv = 1.0 / m as f64;
            let mut glam = Batch::zeros(s, m);
            let mut gy_mb: Vec<Option<Batch<f64>>> = atoms
                .iter()
                .map(|at| at.labels().map(|l| Batch::zeros(l.rows(), l.cols())))
                .collect();
            let mut loss = 0.0;
            for (l, t) in terms.into_iter().enumerate() {
                let t = t?;
                loss += inv * t.loss;
                let Some(g) = t.grad else { continue };
                for k in 0..s {
                    glam.set(k, l, inv * g.lambda[k]);
                    for (j, &p) in idx[k].iter().enumerate() {
                        let dst = &mut gx[k * dim * n + p * dim..k * dim * n + (p + 1) * dim];
                        for (o, &v) in dst.iter_mut().zip(g.points[k].col(j)) {
                            *o += inv * v;
                        }
                    }
                    if let (Some(acc), Some(gl)) = (gy_mb[k].as_mut(), g.labels[k].as_ref()) {
                        axpy(inv, gl, acc);
                    }
                }
            }
            loss_sum += loss;
            // Labels: through the softmax of each sampled point's logits.
            if let Some(c) = classes {
                for k in 0..s {
                    if let (Some(gy), Some(y)) = (gy_mb[k].as_ref(), atoms[k].labels()) {
                        for (j, &p) in idx[k].iter().enumerate() {
                            let off = k * c * n + p * c;
                            softmax_backward(y.col(j), gy.col(j), &mut gz[off..off + c]);
                        }
                    }
                }
            }
            for l in 0..m {
                softmax_backward(lam.col(l), glam.col(l), &mut ga[l * s..(l + 1) * s]);
            }
            grad_norm = [&gx, &gz, &ga]
                .iter()
                .flat_map(|v| v.iter())
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            if !loss.is_finite() || !grad_norm.is_finite() {
                return Err(Error::Numerical {
                    solver: "pointcloud_dictionary::fit",
                    iteration: it,
                    message: "non-finite loss or gradient; lower the learning rates".into(),
                });
            }
            adam_x.step(&mut xs, &gx, cfg.lr);
            if cfg.grad_labels && labeled {
                adam_z.step(&mut zs, &gz, lr_labels);
            }
            adam_a.step(&mut a, &ga, lr_weights);
        }
        let mean = loss_sum / cfg.batches_per_it as f64;
        history.push(mean);
        let info = IterationInfo {
            iteration: it as u64,
            loss: mean,
            grad_norm,
            elapsed: start.elapsed(),
            restart_index: 0,
            evaluations,
            metrics: None,
        };
        if observer.observe(&info) == Control::Stop {
            stopped = true;
            break;
        }
    }

    let atoms: Vec<LabeledCloud<f64>> = (0..s)
        .map(|k| LabeledCloud {
            points: Batch::from_vec(dim, n, xs[k * dim * n..(k + 1) * dim * n].to_vec()),
            labels: classes.map(|c| {
                softmax_cols(&Batch::from_vec(
                    c,
                    n,
                    zs[k * c * n..(k + 1) * c * n].to_vec(),
                ))
            }),
        })
        .collect();
    let weights = softmax_cols(&Batch::from_vec(s, m, a));
    let dict = EmpiricalDictionary::new(atoms, weights, cfg.barycenter)?;
    Ok((
        dict,
        FitReport {
            iterations: history.len(),
            history,
            stopped_by_observer: stopped,
            elapsed: start.elapsed(),
        },
    ))
}

macro_rules! delegate_dictionary {
    ($t:ty) => {
        impl $t {
            /// The fitted dictionary.
            pub fn dictionary(&self) -> &EmpiricalDictionary<f64> {
                &self.dict
            }
            /// The fitted dictionary, by value.
            pub fn into_dictionary(self) -> EmpiricalDictionary<f64> {
                self.dict
            }
            /// What the fit recorded.
            pub fn report(&self) -> &FitReport {
                &self.report
            }
            /// Mean minibatch loss of each iteration.
            pub fn history(&self) -> &[f64] {
                &self.report.history
            }
            /// The atoms (the seed's `get_atoms`).
            pub fn atoms(&self) -> &[LabeledCloud<f64>] {
                self.dict.atoms()
            }
            /// The learned weights, `S × N` (the seed's `get_weights`).
            pub fn weights(&self) -> &Batch<f64> {
                self.dict.weights()
            }
            /// See [`EmpiricalDictionary::sample_from_atoms`].
            pub fn sample_from_atoms(&self, n: usize, seed: u64) -> Result<Vec<LabeledCloud<f64>>> {
                self.dict.sample_from_atoms(n, seed)
            }
        }
    };
}

/// Minibatch dictionary learning of unlabeled point clouds (the seed's
/// `MinibatchDictionary`).
#[derive(Clone, Debug)]
pub struct MinibatchDictionary {
    dict: EmpiricalDictionary<f64>,
    report: FitReport,
}

delegate_dictionary!(MinibatchDictionary);

impl MinibatchDictionary {
    /// Learns `cfg.n_atoms` atoms and one weight vector per dataset (`dim × n_ℓ` each,
    /// uniform weights) by minibatch DaDiL; `observer` sees every iteration (not the
    /// initial point: the loss is a minibatch average, known only after an iteration).
    pub fn fit(
        datasets: &[Batch<f64>],
        cfg: &MinibatchConfig,
        observer: &mut dyn Observer,
    ) -> Result<Self> {
        let ds = datasets
            .iter()
            .map(|d| LabeledCloud::unlabeled(d.clone()))
            .collect::<Result<Vec<_>>>()?;
        let (dict, report) = fit_minibatch(&ds, cfg, false, observer)?;
        Ok(MinibatchDictionary { dict, report })
    }

    /// See [`EmpiricalDictionary::transform`] (`dim × n` clouds).
    pub fn transform(&self, datasets: &[Batch<f64>], cfg: &TransformConfig) -> Result<Batch<f64>> {
        let ds = datasets
            .iter()
            .map(|d| LabeledCloud::unlabeled(d.clone()))
            .collect::<Result<Vec<_>>>()?;
        self.dict.transform(&ds, cfg)
    }

    /// The barycenter of the atoms for `weights` (see [`EmpiricalDictionary::reconstruct`]).
    pub fn reconstruct(&self, weights: &[f64]) -> Result<PointCloud<f64>> {
        self.dict.reconstruct(weights)?.cloud()
    }

    /// The reconstruction of dataset `dataset` with its learned weights.
    pub fn reconstruct_dataset(&self, dataset: usize) -> Result<PointCloud<f64>> {
        self.dict.reconstruct_dataset(dataset)?.cloud()
    }
}

/// Minibatch dictionary learning of labeled (and unlabeled) point clouds: the atoms carry
/// soft labels (the seed's `LabeledMinibatchDictionary`, DaDiL).
#[derive(Clone, Debug)]
pub struct LabeledMinibatchDictionary {
    dict: EmpiricalDictionary<f64>,
    report: FitReport,
}

delegate_dictionary!(LabeledMinibatchDictionary);

impl LabeledMinibatchDictionary {
    /// Learns labeled atoms and one weight vector per dataset. Labeled datasets are
    /// matched with the label-aware cost, unlabeled ones (a target domain) with their
    /// features; at least one dataset must be labeled, and all labeled ones must share
    /// the number of classes.
    pub fn fit(
        datasets: &[LabeledCloud<f64>],
        cfg: &MinibatchConfig,
        observer: &mut dyn Observer,
    ) -> Result<Self> {
        let (dict, report) = fit_minibatch(datasets, cfg, true, observer)?;
        Ok(LabeledMinibatchDictionary { dict, report })
    }

    /// See [`EmpiricalDictionary::transform`].
    pub fn transform(
        &self,
        datasets: &[LabeledCloud<f64>],
        cfg: &TransformConfig,
    ) -> Result<Batch<f64>> {
        self.dict.transform(datasets, cfg)
    }

    /// The barycenter of the atoms for `weights`, with labels propagated from the atoms
    /// (see [`EmpiricalDictionary::reconstruct`]).
    pub fn reconstruct(&self, weights: &[f64]) -> Result<LabeledCloud<f64>> {
        self.dict.reconstruct(weights)
    }

    /// The reconstruction of dataset `dataset` with its learned weights, labeled by
    /// barycentric label propagation (also for an unlabeled dataset).
    pub fn reconstruct_dataset(&self, dataset: usize) -> Result<LabeledCloud<f64>> {
        self.dict.reconstruct_dataset(dataset)
    }
}
