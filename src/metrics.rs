//! Reconstruction metrics shared by dictionary learning and the linear baselines.
//!
//! Every function compares data `x` with a reconstruction `x̂` of the same shape,
//! `N × M`, one datapoint per column, and accumulates in `f64` whatever `T` is.
//!
//! | metric | definition |
//! | --- | --- |
//! | [`mse`] | `(1 / NM) Σ_{i,m} (x_im − x̂_im)²`: the mean over **all** entries (scikit-learn's `mean_squared_error` on the flattened arrays) |
//! | [`nmse`] | `(1 / M) Σ_m ‖x_m − x̂_m‖² / ‖x_m‖²`: normalized **per datapoint**, then averaged (the "average normalized mean square error" of the paper's PSF experiment, section 5.1) |
//! | [`psnr`] | `(1 / M) Σ_m 10 log₁₀(peak_m² / mse_m)` with `peak_m = max_i |x_im|` (the peak of **that datapoint**) and `mse_m = (1/N) Σ_i (x_im − x̂_im)²`: PSNR per datapoint, then averaged (the "mean PSNR" of Figure 4) |
//!
//! A datapoint reconstructed exactly has an infinite PSNR, so the mean is `+∞` too; a
//! datapoint that is all zeros has an NMSE of 0 if its reconstruction is zero and `+∞`
//! otherwise.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::real::Real;
use crate::validate;

/// The three metrics at once (see the module docs for the exact definitions).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Metrics {
    /// Mean squared error over all entries.
    pub mse: f64,
    /// Per-datapoint normalized squared error, averaged over datapoints.
    pub nmse: f64,
    /// Per-datapoint PSNR in dB (peak = the datapoint's max), averaged over datapoints.
    pub psnr: f64,
}

impl Metrics {
    /// MSE, NMSE and PSNR of `recon` against `data` in one pass over the columns.
    pub fn compute<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<Self> {
        check(data, recon)?;
        let (n, m) = data.shape();
        let (mut sq, mut nm, mut ps) = (0.0, 0.0, 0.0);
        for j in 0..m {
            let c = column_stats(data.col(j), recon.col(j));
            sq += c.err;
            nm += c.nmse();
            ps += c.psnr(n);
        }
        Ok(Metrics {
            mse: sq / (n * m) as f64,
            nmse: nm / m as f64,
            psnr: ps / m as f64,
        })
    }
}

struct ColumnStats {
    /// `‖x − x̂‖²`
    err: f64,
    /// `‖x‖²`
    norm: f64,
    /// `max |x|`
    peak: f64,
}

impl ColumnStats {
    fn nmse(&self) -> f64 {
        if self.err == 0.0 {
            0.0
        } else {
            self.err / self.norm
        }
    }
    fn psnr(&self, n: usize) -> f64 {
        let mse = self.err / n as f64;
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.peak * self.peak / mse).log10()
        }
    }
}

fn column_stats<T: Real>(x: &[T], y: &[T]) -> ColumnStats {
    let mut s = ColumnStats {
        err: 0.0,
        norm: 0.0,
        peak: 0.0,
    };
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (a.to_f64_(), b.to_f64_());
        s.err += (a - b) * (a - b);
        s.norm += a * a;
        s.peak = s.peak.max(a.abs());
    }
    s
}

/// Both non-empty and of the same shape.
fn check<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<()> {
    if data.rows() == 0 {
        return Err(Error::ShapeMismatch {
            arg: "data",
            expected: "(>= 1) x (>= 1)".into(),
            found: format!("{} x {}", data.rows(), data.cols()),
        });
    }
    validate::rows("data", data, data.rows())?;
    validate::shape("reconstruction", recon, data.rows(), data.cols())
}

/// Mean squared error over all `N·M` entries.
pub fn mse<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<f64> {
    Metrics::compute(data, recon).map(|m| m.mse)
}

/// `‖x_m − x̂_m‖² / ‖x_m‖²` averaged over the datapoints `m`.
pub fn nmse<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<f64> {
    Metrics::compute(data, recon).map(|m| m.nmse)
}

/// PSNR of each datapoint (peak = its own max `|x|`), averaged over the datapoints.
pub fn psnr<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<f64> {
    Metrics::compute(data, recon).map(|m| m.psnr)
}

/// `‖x_m − x̂_m‖² / ‖x_m‖²` for each datapoint (to plot the error against a parameter,
/// as the PSF experiment does against wavelength).
pub fn nmse_per_column<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<Vec<f64>> {
    check(data, recon)?;
    Ok((0..data.cols())
        .map(|j| column_stats(data.col(j), recon.col(j)).nmse())
        .collect())
}

/// PSNR of each datapoint, in dB.
pub fn psnr_per_column<T: Real>(data: &Batch<T>, recon: &Batch<T>) -> Result<Vec<f64>> {
    check(data, recon)?;
    Ok((0..data.cols())
        .map(|j| column_stats(data.col(j), recon.col(j)).psnr(data.rows()))
        .collect())
}
