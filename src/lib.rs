//! # wassdl — differentiable entropic optimal transport and Wasserstein dictionary learning
//!
//! An implementation of *Wasserstein Dictionary Learning* (Schmitz et al., SIAM J.
//! Imaging Sciences 2018): entropic OT and Wasserstein barycenters on a fixed support,
//! every Sinkhorn variant of the paper, and their gradients.
//!
//! * [`kernel`]: Gibbs kernels `K = exp(-C/γ)` behind one [`Kernel`] trait: dense
//!   ([`DenseKernel`]) or separable on a 1-D/2-D/3-D [`Grid`] ([`GridKernel`]), in the
//!   scaling and in the log domain (Algorithm 3).
//! * [`sinkhorn()`]: entropic OT between histograms (eq. 3-4).
//! * [`barycenters()`]: barycenters for a batch of weights: plain (eq. 6-8), log-domain
//!   (eq. 22-24), heavy-ball (Algorithm 5), unbalanced (Algorithm 6), warm-started (4.2).
//!
//! Histograms are the columns of a [`Batch`] (a contiguous column-major matrix that
//! lends zero-copy [`faer`] views), so a whole batch goes through one kernel application.
//!
//! ```
//! use wassdl::{Batch, BarycenterConfig, Grid, GridKernel, barycenters};
//! let grid = Grid::new(&[32, 32]).unwrap();
//! let k = GridKernel::<f64>::new(&grid, 4e-3).unwrap();
//! let n = grid.len();
//! // two blobs in opposite corners
//! let blob = |ci: f64, cj: f64| -> Vec<f64> {
//!     let v: Vec<f64> = (0..n).map(|q| {
//!         let (i, j) = ((q / 32) as f64, (q % 32) as f64);
//!         (-((i - ci).powi(2) + (j - cj).powi(2)) / 8.0).exp()
//!     }).collect();
//!     let s: f64 = v.iter().sum();
//!     v.into_iter().map(|x| x / s).collect()
//! };
//! let mut data = blob(6.0, 6.0);
//! data.extend(blob(25.0, 25.0));
//! let atoms = Batch::from_vec(n, 2, data);
//! let w = Batch::from_vec(2, 1, vec![0.5, 0.5]);
//! let out = barycenters(&k, &atoms, &w, &BarycenterConfig::iterations(200), None).unwrap();
//! // the mass concentrates between the corners, around the centre (15.5, 15.5)
//! let p = out.p.col(0);
//! let centre: f64 = (0..n).map(|q| p[q] * (q / 32) as f64).sum();
//! assert!((centre - 15.5).abs() < 0.5);
//! ```
#![deny(missing_docs)]

pub mod analytic;
pub mod barycenter;
pub mod baselines;
mod batch;
pub mod dictionary;
pub mod emd;
mod error;
pub mod gradcheck;
pub mod gradient;
pub mod jacobians;
pub mod kernel;
pub mod lbfgs;
pub mod loss;
pub mod metrics;
mod ops;
pub mod pointcloud;
mod real;
pub mod sinkhorn;
mod solver;
pub mod tape;
pub mod unmixing;
pub mod validate;
mod vexp;

pub use barycenter::{barycenters, BarycenterConfig, Barycenters, Scalings};
pub use batch::Batch;
pub use error::{Error, Result, Source};
pub use gradient::{loss_and_grad, GradConfig, GradientMethod, LossGrad};
pub use kernel::{DenseKernel, Grid, GridKernel, GridUnits, Kernel, PointCloudKernel};
pub use loss::Loss;
pub use ops::{Eager, Ops};
pub use real::Real;
pub use sinkhorn::{sinkhorn, OtSolution, SinkhornConfig};
pub use solver::Stop;
