//! The fitting losses of Table 1, with values and gradients, on the tape or off it.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::ops::Ops;
use crate::real::{wide_sum, Real};
use crate::sinkhorn::{sinkhorn_masses, SinkhornConfig};
use crate::solver::Stop;
use crate::tape::{Tape, Var};

/// A fitting loss `L(p, x)` between a reconstruction `p` and a datapoint `x` (Table 1).
/// Every loss is summed over the columns (datapoints), as in eq. 9.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Loss {
    /// `‖p − x‖₁`, gradient `sign(p − x)` (0 at 0).
    TotalVariation,
    /// `‖p − x‖₂²`, gradient `2(p − x)`.
    Quadratic,
    /// `KL(p|x) = Σ p log(p/x) − p + x`, gradient `log(p/x)`.
    KullbackLeibler,
    /// `W_γ^(L)(p, x)`: the entropic OT cost after `iterations` Sinkhorn iterations
    /// (eq. 4) with the barycenter's own kernel; gradient the dual potential on `p`'s
    /// side, `γ log b^(L)` (Table 1; see `docs/errata.md` on which scaling it is).
    Wasserstein {
        /// Sinkhorn iterations `L`.
        iterations: usize,
    },
}

impl Loss {
    /// Parses `quadratic`, `kl`, `tv` or `wasserstein[:L]`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "quadratic" | "quad" | "l2" => Ok(Loss::Quadratic),
            "kl" | "kullback-leibler" => Ok(Loss::KullbackLeibler),
            "tv" | "total-variation" | "l1" => Ok(Loss::TotalVariation),
            _ if s.starts_with("wasserstein") => {
                let l = s
                    .strip_prefix("wasserstein")
                    .and_then(|r| r.strip_prefix(':'))
                    .map_or(Ok(100), str::parse);
                l.map(|iterations| Loss::Wasserstein { iterations })
                    .map_err(|_| Error::InvalidParameter {
                        arg: "loss",
                        requirement: "quadratic, kl, tv or wasserstein[:L]",
                        value: f64::NAN,
                    })
            }
            _ => Err(Error::InvalidParameter {
                arg: "loss",
                requirement: "quadratic, kl, tv or wasserstein[:L]",
                value: f64::NAN,
            }),
        }
    }

    /// Value (summed over columns) and gradient with respect to `p`.
    pub fn value_and_grad<T: Real>(
        &self,
        p: &Batch<T>,
        x: &Batch<T>,
        kernel: &dyn Kernel<T>,
    ) -> Result<(T, Batch<T>)> {
        crate::validate::shape("targets", x, p.rows(), p.cols())?;
        use crate::ops::zip_map as zip;
        Ok(match self {
            Loss::TotalVariation => {
                let v = wide_sum(
                    p.as_slice()
                        .iter()
                        .zip(x.as_slice())
                        .map(|(&a, &b)| (a - b).abs()),
                );
                (v, zip(p, x, |a, b| sign(a - b)))
            }
            Loss::Quadratic => {
                let v = wide_sum(
                    p.as_slice()
                        .iter()
                        .zip(x.as_slice())
                        .map(|(&a, &b)| (a - b) * (a - b)),
                );
                (v, zip(p, x, |a, b| T::of(2.0) * (a - b)))
            }
            Loss::KullbackLeibler => {
                let v = wide_sum(
                    p.as_slice()
                        .iter()
                        .zip(x.as_slice())
                        .map(|(&a, &b)| kl_term(a, b)),
                );
                (v, zip(p, x, |a, b| (a / b).ln()))
            }
            Loss::Wasserstein { iterations } => {
                let cfg = SinkhornConfig {
                    log_domain: false,
                    stop: Stop::Iterations(*iterations),
                    plan: false,
                };
                // `p` is a barycenter after finitely many iterations: its mass is 1 only
                // up to its convergence error, which a fixed-L Sinkhorn does not need.
                let ot = sinkhorn_masses(kernel, p, x, &cfg, None, false)?;
                (wide_sum(ot.cost.iter().copied()), ot.f)
            }
        })
    }

    /// Records `L(p, x)` (summed over columns) on a tape; returns the `1 × 1` node.
    pub fn record<'k, T: Real>(
        &self,
        tape: &mut Tape<'k, T>,
        p: &Var,
        x: &Batch<T>,
        kernel: &'k dyn Kernel<T>,
    ) -> Result<Var> {
        crate::validate::shape("targets", x, tape.value(p).rows(), tape.value(p).cols())?;
        let xv = tape.constant(x.clone());
        Ok(match self {
            Loss::TotalVariation => {
                let d = tape.sub(p, &xv);
                let a = tape.abs(&d);
                tape.sum(&a)
            }
            Loss::Quadratic => {
                let d = tape.sub(p, &xv);
                tape.sum_sq(&d)
            }
            Loss::KullbackLeibler => {
                // Σ p log p − p log x − p + x, written with recorded ops only.
                let lp = tape.log(p);
                let lx = tape.log(&xv);
                let r = tape.sub(&lp, &lx);
                let plr = tape.mul(p, &r);
                let t = tape.sub(&plr, p);
                let t = tape.add(&t, &xv);
                tape.sum(&t)
            }
            Loss::Wasserstein { .. } => {
                let pv = tape.value(p).clone();
                let (v, g) = self.value_and_grad(&pv, x, kernel)?;
                tape.given(p, v, g)
            }
        })
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

fn kl_term<T: Real>(p: T, x: T) -> T {
    if p == T::zero() {
        x
    } else {
        p * (p / x).ln() - p + x
    }
}
