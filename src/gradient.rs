//! Gradients of a loss of the barycenters with respect to the atoms and the weights
//! (eq. 11-12), for every barycenter variant, from the tape (the default) or from the
//! analytic backward loops (Algorithm 1 and 4).
//!
//! Memory is bounded two ways: datapoints go through in chunks of
//! [`GradConfig::chunk`] columns, and [`GradConfig::checkpoint`] stores only every
//! k-th Sinkhorn state and re-records each segment of k iterations during the backward
//! pass, so the tape holds `O(k)` iterations instead of `O(L)` (k ≈ √L gives `O(√L)`).

use crate::barycenter::{check_inputs, iterate, BarycenterConfig, Scalings};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::loss::Loss;
use crate::ops::{Eager, Ops};
use crate::real::Real;
use crate::solver::Stop;
use crate::tape::{Tape, TapeBuffers};
use crate::validate;

/// How gradients are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GradientMethod {
    /// Reverse mode on the recorded iterations (every variant).
    #[default]
    Tape,
    /// The hand-derived backward loops: Algorithm 1 (scaling) or Algorithm 4 (log
    /// domain). Plain balanced barycenters only, cold start.
    Analytic,
}

/// Gradient settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GradConfig {
    /// Tape or analytic.
    pub method: GradientMethod,
    /// Datapoints per chunk (`None`: all at once).
    pub chunk: Option<usize>,
    /// Checkpoint every `k` iterations (`None`: record all `L`).
    pub checkpoint: Option<usize>,
}

/// Loss, barycenters and gradients.
#[derive(Clone, Debug)]
pub struct LossGrad<T: Real> {
    /// `Σ_m L(P(D, λ_m), x_m)` (eq. 10).
    pub loss: T,
    /// The barycenters `P^(L)(D, λ_m)`, `N × M`.
    pub p: Batch<T>,
    /// `∇_D E_L`, `N × S`.
    pub grad_atoms: Batch<T>,
    /// `∇_Λ E_L`, `S × M` (λ treated as unconstrained).
    pub grad_weights: Batch<T>,
    /// Final scalings, for a warm restart (section 4.2).
    pub scalings: Scalings<T>,
    /// Largest tape (or stored-state) footprint of one chunk, in bytes.
    pub peak_bytes: usize,
}

/// Loss of the barycenters of `atoms` (`N × S`) with `weights` (`S × M`) against
/// `targets` (`N × M`), and its gradients.
///
/// ```
/// use wassdl::{Batch, BarycenterConfig, DenseKernel, Loss};
/// use wassdl::gradient::{loss_and_grad, GradConfig};
/// let c = faer::Mat::from_fn(20, 20, |i, j| ((i as f64 - j as f64) / 19.0).powi(2));
/// let k = DenseKernel::new(c.as_ref(), 0.05).unwrap();
/// let atoms = Batch::from_fn(20, 2, |i, s| if i / 10 == s { 0.1 } else { 0.0 });
/// let w = Batch::from_vec(2, 1, vec![0.3, 0.7]);
/// let x = Batch::filled(20, 1, 0.05);
/// let g = loss_and_grad(&k, &atoms, &w, &x, &Loss::Quadratic,
///     &BarycenterConfig::iterations(20), None, &GradConfig::default()).unwrap();
/// assert_eq!(g.grad_atoms.shape(), (20, 2));
/// assert!(g.loss > 0.0);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    targets: &Batch<T>,
    loss: &Loss,
    cfg: &BarycenterConfig,
    warm: Option<&Scalings<T>>,
    opts: &GradConfig,
) -> Result<LossGrad<T>> {
    let mut buffers = TapeBuffers::new();
    loss_and_grad_in(
        kernel,
        atoms,
        weights,
        targets,
        loss,
        cfg,
        warm,
        opts,
        &mut buffers,
    )
}

/// [`loss_and_grad`] recording its tapes into `buffers` and leaving them there for the
/// next call: called again with the same shapes (an optimizer's loop), it allocates no
/// tape memory, so nothing is page-faulted or zeroed anew (see [`TapeBuffers`]). The
/// results are bitwise those of [`loss_and_grad`]. `buffers` holds about one tape (the
/// largest chunk's) plus the backward pass's live gradients between calls.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grad_in<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    targets: &Batch<T>,
    loss: &Loss,
    cfg: &BarycenterConfig,
    warm: Option<&Scalings<T>>,
    opts: &GradConfig,
    buffers: &mut TapeBuffers<T>,
) -> Result<LossGrad<T>> {
    let (n, s, m) = check_inputs(kernel, atoms, weights, cfg)?;
    validate::shape("targets", targets, n, m)?;
    if let Some(w) = warm {
        w.validate(n, s * m)?;
    }
    if opts.chunk == Some(0) {
        return Err(Error::InvalidParameter {
            arg: "chunk",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    if opts.checkpoint == Some(0) {
        return Err(Error::InvalidParameter {
            arg: "checkpoint",
            requirement: ">= 1",
            value: 0.0,
        });
    }
    if opts.checkpoint.is_some() && !matches!(cfg.stop, Stop::Iterations(_)) {
        return Err(Error::InvalidParameter {
            arg: "checkpoint",
            requirement: "used with a fixed iteration count (Stop::Iterations)",
            value: f64::NAN,
        });
    }
    if opts.method == GradientMethod::Analytic {
        return analytic(kernel, atoms, weights, targets, loss, cfg, warm, opts);
    }
    let chunk = opts.chunk.unwrap_or(m).min(m);
    let run = |wc: &Batch<T>, xc: &Batch<T>, init, buffers: &mut TapeBuffers<T>| match (
        opts.checkpoint,
        cfg.stop,
    ) {
        (Some(k), Stop::Iterations(l)) if k < l => {
            checkpointed(kernel, atoms, wc, xc, loss, cfg, init, k, l, buffers)
        }
        _ => taped(kernel, atoms, wc, xc, loss, cfg, init, buffers),
    };
    if chunk == m {
        // One chunk: its results are the results, without copies.
        let init = match warm {
            Some(w) => {
                let w = w.to_domain(cfg.log_domain);
                (w.a, w.b)
            }
            None => {
                let o = Scalings::<T>::ones(n, m * s, cfg.log_domain);
                (o.a, o.b)
            }
        };
        return run(weights, targets, init, buffers);
    }
    let mut total = T::zero();
    let mut p = Batch::zeros(n, m);
    let mut ga = Batch::zeros(n, s);
    let mut gw = Batch::zeros(s, m);
    let mut sa = Batch::zeros(n, s * m);
    let mut sb = Batch::zeros(n, s * m);
    let mut peak = 0;
    let mut m0 = 0;
    while m0 < m {
        let m1 = (m0 + chunk).min(m);
        let cols = |b: &Batch<T>, lo: usize, hi: usize| {
            Batch::from_vec(
                b.rows(),
                hi - lo,
                b.as_slice()[lo * b.rows()..hi * b.rows()].to_vec(),
            )
        };
        let wc = cols(weights, m0, m1);
        let xc = cols(targets, m0, m1);
        let init = match warm {
            Some(w) => {
                let w = w.to_domain(cfg.log_domain);
                (cols(&w.a, m0 * s, m1 * s), cols(&w.b, m0 * s, m1 * s))
            }
            None => {
                let o = Scalings::<T>::ones(n, (m1 - m0) * s, cfg.log_domain);
                (o.a, o.b)
            }
        };
        let r = run(&wc, &xc, init, buffers)?;
        total += r.loss;
        for (o, &v) in ga.as_mut_slice().iter_mut().zip(r.grad_atoms.as_slice()) {
            *o += v;
        }
        gw.as_mut_slice()[m0 * s..m1 * s].copy_from_slice(r.grad_weights.as_slice());
        p.as_mut_slice()[m0 * n..m1 * n].copy_from_slice(r.p.as_slice());
        sa.as_mut_slice()[m0 * s * n..m1 * s * n].copy_from_slice(r.scalings.a.as_slice());
        sb.as_mut_slice()[m0 * s * n..m1 * s * n].copy_from_slice(r.scalings.b.as_slice());
        peak = peak.max(r.peak_bytes);
        m0 = m1;
    }
    Ok(LossGrad {
        loss: total,
        p,
        grad_atoms: ga,
        grad_weights: gw,
        scalings: Scalings {
            a: sa,
            b: sb,
            log: cfg.log_domain,
        },
        peak_bytes: peak,
    })
}

/// Records all iterations of one chunk and runs one backward pass.
#[allow(clippy::too_many_arguments)]
fn taped<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    targets: &Batch<T>,
    loss: &Loss,
    cfg: &BarycenterConfig,
    init: (Batch<T>, Batch<T>),
    buffers: &mut TapeBuffers<T>,
) -> Result<LossGrad<T>> {
    let mut tape = Tape::with_buffers(std::mem::take(buffers));
    let d = tape.var(atoms.clone());
    let w = tape.var(weights.clone());
    // Warm-start scalings are constants (section 4.2).
    let a0 = tape.constant(init.0);
    let b0 = tape.constant(init.1);
    let out = iterate(&mut tape, kernel, &d, &w, (a0, b0), cfg)?;
    let lv = loss.record(&mut tape, &out.p, targets, kernel)?;
    let peak = tape.memory_bytes();
    let g = tape.backward(lv);
    let r = LossGrad {
        loss: tape.value(&lv).get(0, 0),
        p: tape.value(&out.p).clone(),
        grad_atoms: g.wrt(d),
        grad_weights: g.wrt(w),
        scalings: Scalings {
            a: tape.value(&out.a).clone(),
            b: tape.value(&out.b).clone(),
            log: cfg.log_domain,
        },
        peak_bytes: peak,
    };
    *buffers = tape.into_buffers();
    Ok(r)
}

/// Checkpointed reverse mode: forward eagerly keeping the state every `k` iterations,
/// then re-record each segment (last first) with its start state as a leaf and chain the
/// adjoints of the states between segments.
#[allow(clippy::too_many_arguments)]
fn checkpointed<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    targets: &Batch<T>,
    loss: &Loss,
    cfg: &BarycenterConfig,
    init: (Batch<T>, Batch<T>),
    k: usize,
    l: usize,
    buffers: &mut TapeBuffers<T>,
) -> Result<LossGrad<T>> {
    let seg_len = |i: usize| k.min(l - i * k);
    let nseg = l.div_ceil(k);
    let mut states = Vec::with_capacity(nseg);
    let mut state = init;
    let mut ops = Eager;
    for i in 0..nseg {
        states.push(state.clone());
        if i + 1 < nseg {
            let c = BarycenterConfig {
                stop: Stop::Iterations(seg_len(i)),
                ..*cfg
            };
            let out = iterate(&mut ops, kernel, atoms, weights, state, &c)?;
            state = (out.a, out.b);
        }
    }
    let state_bytes =
        states.len() * 2 * atoms.rows() * weights.cols() * atoms.cols() * std::mem::size_of::<T>();
    let mut ga = Batch::zeros(atoms.rows(), atoms.cols());
    let mut gw = Batch::zeros(weights.rows(), weights.cols());
    let mut adj: Option<(Batch<T>, Batch<T>)> = None;
    let mut result = None;
    let mut peak = 0;
    for i in (0..nseg).rev() {
        let mut tape = Tape::with_buffers(std::mem::take(buffers));
        let d = tape.var(atoms.clone());
        let w = tape.var(weights.clone());
        let st = std::mem::replace(&mut states[i], (Batch::zeros(0, 0), Batch::zeros(0, 0)));
        let (a0, b0) = if i == 0 {
            (tape.constant(st.0), tape.constant(st.1))
        } else {
            (tape.var(st.0), tape.var(st.1))
        };
        let c = BarycenterConfig {
            stop: Stop::Iterations(seg_len(i)),
            ..*cfg
        };
        let out = iterate(&mut tape, kernel, &d, &w, (a0, b0), &c)?;
        let g = match adj.take() {
            None => {
                let lv = loss.record(&mut tape, &out.p, targets, kernel)?;
                result = Some((
                    tape.value(&lv).get(0, 0),
                    tape.value(&out.p).clone(),
                    Scalings {
                        a: tape.value(&out.a).clone(),
                        b: tape.value(&out.b).clone(),
                        log: cfg.log_domain,
                    },
                ));
                peak = peak.max(tape.memory_bytes());
                tape.backward(lv)
            }
            Some((aa, ab)) => {
                peak = peak.max(tape.memory_bytes());
                tape.backward_with(&[(out.a, aa), (out.b, ab)])
            }
        };
        for (o, &v) in ga.as_mut_slice().iter_mut().zip(g.wrt(d).as_slice()) {
            *o += v;
        }
        for (o, &v) in gw.as_mut_slice().iter_mut().zip(g.wrt(w).as_slice()) {
            *o += v;
        }
        if i > 0 {
            adj = Some((g.wrt(a0), g.wrt(b0)));
        }
        *buffers = tape.into_buffers();
    }
    let (lossv, p, scalings) = result.expect("at least one segment");
    Ok(LossGrad {
        loss: lossv,
        p,
        grad_atoms: ga,
        grad_weights: gw,
        scalings,
        peak_bytes: peak + state_bytes,
    })
}

/// Algorithm 1 / Algorithm 4 through [`crate::analytic`]: plain balanced iterations
/// (τ = 0, no ρ) from a cold start, with the loss's gradient `∇L(p)` from Table 1.
#[allow(clippy::too_many_arguments)]
fn analytic<T: Real>(
    kernel: &dyn Kernel<T>,
    atoms: &Batch<T>,
    weights: &Batch<T>,
    targets: &Batch<T>,
    loss: &Loss,
    cfg: &BarycenterConfig,
    warm: Option<&Scalings<T>>,
    opts: &GradConfig,
) -> Result<LossGrad<T>> {
    let supported =
        cfg.tau == 0.0 && cfg.rho.is_none() && warm.is_none() && opts.checkpoint.is_none();
    let Stop::Iterations(l) = cfg.stop else {
        return Err(Error::InvalidParameter {
            arg: "method",
            requirement:
                "GradientMethod::Tape unless the iteration count is fixed (Stop::Iterations)",
            value: f64::NAN,
        });
    };
    if !supported {
        return Err(Error::InvalidParameter {
            arg: "method",
            requirement:
                "GradientMethod::Tape for heavy-ball, unbalanced, warm-started or checkpointed \
                          gradients (Algorithms 1 and 4 cover the plain iteration only)",
            value: f64::NAN,
        });
    }
    let mut value = T::zero();
    let mut err = None;
    let mut grad_fn = |p: &Batch<T>| match loss.value_and_grad(p, targets, kernel) {
        Ok((v, g)) => {
            value = v;
            g
        }
        Err(e) => {
            err = Some(e);
            Batch::zeros(p.rows(), p.cols())
        }
    };
    let out = if cfg.log_domain {
        crate::analytic::log_sinkhorn_grads(kernel, atoms, weights, l, &mut grad_fn)?
    } else {
        crate::analytic::sinkhorn_grads(kernel, atoms, weights, l, &mut grad_fn)?
    };
    if let Some(e) = err {
        return Err(e);
    }
    let (n, s, m) = (atoms.rows(), atoms.cols(), weights.cols());
    let peak = crate::analytic::memory_bytes(n, s, m, l, std::mem::size_of::<T>());
    Ok(LossGrad {
        loss: value,
        p: out.p,
        grad_atoms: out.grad_atoms,
        grad_weights: out.grad_weights,
        // Algorithms 1 and 4 do not return their scalings; a warm restart needs the tape.
        scalings: Scalings::ones(n, s * m, cfg.log_domain),
        peak_bytes: peak,
    })
}
