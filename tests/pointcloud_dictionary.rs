//! Point-cloud dictionaries (DaDiL, `000_28317f9bbe079a83.txt`): fitting, reconstruction,
//! transform, sampling, labels, determinism and gradients (the
//! `domain_adaptation` example runs in `cli/tests/domain_adaptation.rs`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use wassdl::barycenter::Stop;
use wassdl::dictionary::{FnObserver, NoObserver};
use wassdl::lbfgs::Control;
use wassdl::pointcloud::dictionary::{
    AtomInit, EmpiricalDictionary, FixedPointConfig, LabelWeight, LabeledCloud,
    LabeledMinibatchDictionary, MinibatchConfig, MinibatchDictionary, MinibatchSampler, Sampling,
    TransformConfig,
};
use wassdl::pointcloud::{free_support_barycenter, FreeSupportConfig, InnerOt, PointCloud};
use wassdl::{Batch, Error};

fn gaussian_cloud(rng: &mut StdRng, n: usize, centre: (f64, f64), sd: f64) -> Batch<f64> {
    Batch::from_fn(2, n, |d, _| {
        let z: f64 = rng.sample(StandardNormal);
        (if d == 0 { centre.0 } else { centre.1 }) + sd * z
    })
}

/// Two labeled blobs per dataset, shifted by `shift`.
fn two_class_dataset(rng: &mut StdRng, per_class: usize, shift: f64) -> LabeledCloud<f64> {
    let a = gaussian_cloud(rng, per_class, (shift - 2.0, 0.0), 0.4);
    let b = gaussian_cloud(rng, per_class, (shift + 2.0, 0.0), 0.4);
    let pts = Batch::from_vec(2, 2 * per_class, [a.as_slice(), b.as_slice()].concat());
    let classes: Vec<usize> = (0..2 * per_class).map(|j| j / per_class).collect();
    LabeledCloud::labeled(pts, &classes, 2).unwrap()
}

fn small_config(seed: u64) -> MinibatchConfig {
    MinibatchConfig {
        n_atoms: 2,
        n_samples: 24,
        batch_size: 12,
        lr: 0.1,
        num_iter_max: 15,
        batches_per_it: 4,
        seed,
        ..Default::default()
    }
}

#[test]
fn fit_reduces_the_loss() {
    let mut rng = StdRng::seed_from_u64(1);
    // Three datasets far from the origin: the seed's N(0, I) atoms start far from them.
    let data: Vec<Batch<f64>> = [(5.0, 5.0), (8.0, 5.0), (6.5, 8.0)]
        .iter()
        .map(|&c| gaussian_cloud(&mut rng, 30, c, 0.5))
        .collect();
    let cfg = MinibatchConfig {
        atom_init: AtomInit::Gaussian,
        n_atoms: 3,
        ..small_config(3)
    };
    let mut seen = Vec::new();
    let mut obs = FnObserver::new(|it| {
        seen.push(it.loss);
        Control::Continue
    });
    let dict = MinibatchDictionary::fit(&data, &cfg, &mut obs).unwrap();
    let h = dict.history();
    assert_eq!(h.len(), cfg.num_iter_max);
    assert_eq!(seen, h, "the observer sees every iteration's loss");
    // The atoms start about 7 units from the data (W₂² ≈ 50) and move by at most
    // lr = 0.1 per Adam step, 60 steps: the loss must fall by far more than half.
    assert!(h[h.len() - 1] < 0.5 * h[0], "history {h:?}");

    // The labeled learner reduces its (label-aware) loss as well.
    let ds: Vec<LabeledCloud<f64>> = [0.0, 3.0]
        .iter()
        .map(|&s| two_class_dataset(&mut rng, 12, s))
        .collect();
    let lab = LabeledMinibatchDictionary::fit(&ds, &cfg, &mut NoObserver).unwrap();
    let h = lab.history();
    assert!(h[h.len() - 1] < h[0], "history {h:?}");
}

#[test]
fn observer_can_stop_the_fit() {
    let mut rng = StdRng::seed_from_u64(2);
    let data = vec![gaussian_cloud(&mut rng, 20, (0.0, 0.0), 1.0)];
    let mut obs = FnObserver::new(|it| {
        if it.iteration >= 3 {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    let dict = MinibatchDictionary::fit(&data, &small_config(0), &mut obs).unwrap();
    assert_eq!(dict.history().len(), 3);
    assert!(dict.report().stopped_by_observer);
}

/// Random atoms (2-D, `n` points) with soft labels over `c` classes.
fn random_atoms(rng: &mut StdRng, s: usize, n: usize, c: Option<usize>) -> Vec<LabeledCloud<f64>> {
    (0..s)
        .map(|k| {
            let pts = gaussian_cloud(rng, n, (3.0 * k as f64, k as f64), 1.0);
            match c {
                None => LabeledCloud::unlabeled(pts).unwrap(),
                Some(c) => {
                    let raw = Batch::from_fn(c, n, |_, _| 0.05 + rng.random::<f64>());
                    let sums = raw.col_sums();
                    let lab = Batch::from_fn(c, n, |r, j| raw.get(r, j) / sums[j]);
                    LabeledCloud::soft(pts, lab).unwrap()
                }
            }
        })
        .collect()
}

#[test]
fn reconstruct_with_one_hot_weights_returns_that_atom() {
    let mut rng = StdRng::seed_from_u64(3);
    let atoms = random_atoms(&mut rng, 3, 25, Some(3));
    let dict = EmpiricalDictionary::new(
        atoms.clone(),
        Batch::zeros(3, 0),
        FixedPointConfig {
            max_iter: 20,
            ..Default::default()
        },
    )
    .unwrap();
    for k in 0..3 {
        let mut w = vec![0.0; 3];
        w[k] = 1.0;
        let r = dict.reconstruct(&w).unwrap();
        // The fixed point of a single atom is the atom: each barycenter point is moved to
        // its partner under a permutation plan, x ← (1 / (1/n)) · (1/n) · x_σ(i). The
        // product n · (1/n) is 1 up to one rounding, so positions agree to a few ulps of
        // their magnitude (≤ 10 here: 1e-14) and labels to a few ulps of 1 (1e-15).
        let (rp, rl) = (r.points(), r.labels().unwrap());
        let (ap, al) = (atoms[k].points(), atoms[k].labels().unwrap());
        let dist = |a: &[f64], b: &[f64]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2);
        let mut used = vec![false; ap.cols()];
        for i in 0..rp.cols() {
            let j = (0..ap.cols())
                .min_by(|&a, &b| dist(rp.col(i), ap.col(a)).total_cmp(&dist(rp.col(i), ap.col(b))))
                .unwrap();
            assert!(
                !used[j],
                "atom {k}: point {j} reached twice (not a permutation)"
            );
            used[j] = true;
            for (x, y) in rp.col(i).iter().zip(ap.col(j)) {
                assert!((x - y).abs() <= 1e-14, "atom {k}: {x} vs {y}");
            }
            for (x, y) in rl.col(i).iter().zip(al.col(j)) {
                assert!((x - y).abs() <= 1e-15, "atom {k} labels: {x} vs {y}");
            }
        }
    }
}

#[test]
fn unlabeled_fixed_point_matches_free_support_barycenter() {
    // The dictionary's barycenter (features only) is the iteration of
    // `free_support_barycenter` started from the atom of largest weight.
    let mut rng = StdRng::seed_from_u64(4);
    let atoms = random_atoms(&mut rng, 3, 20, None);
    for inner in [
        InnerOt::Exact { max_iter: 100_000 },
        InnerOt::Entropic {
            gamma: 0.5,
            stop: Stop::Tolerance {
                tol: 1e-10,
                max_iter: 5000,
            },
        },
    ] {
        let settings = FixedPointConfig {
            max_iter: 10,
            tol: 1e-9,
            inner,
            label_weight: LabelWeight::MaxFeatureCost,
        };
        let dict = EmpiricalDictionary::new(atoms.clone(), Batch::zeros(3, 0), settings).unwrap();
        let lam = [0.25, 0.45, 0.3];
        let mine = dict.reconstruct(&lam).unwrap();
        let clouds: Vec<PointCloud<f64>> = atoms.iter().map(|a| a.cloud().unwrap()).collect();
        let cfg = FreeSupportConfig {
            max_iter: 10,
            tol: 1e-9,
            inner,
        };
        let pot = free_support_barycenter(&clouds, &lam, &clouds[1], &cfg).unwrap();
        // Same plans, same updates; the products λ·π/b are associated differently
        // (λ·(π·n) here, (λ/b)·π there), a few ulps per update on coordinates of size ~5.
        for (a, b) in mine
            .points()
            .as_slice()
            .iter()
            .zip(pot.cloud.points().as_slice())
        {
            assert!((a - b).abs() < 1e-12, "{inner:?}: {a} vs {b}");
        }
    }
}

/// The dictionary's inner Sinkhorn is checked for convergence, as the free-support
/// barycenter's always was (they now share one inner solve): a cap far below what the
/// tolerance needs is an error naming the cap, not a barycenter built from plans off
/// their marginals. Before the two were merged this reconstruct returned Ok.
#[test]
fn unconverged_inner_sinkhorn_is_an_error() {
    let mut rng = StdRng::seed_from_u64(4);
    let atoms = random_atoms(&mut rng, 3, 20, None);
    let settings = FixedPointConfig {
        max_iter: 3,
        tol: 0.0,
        inner: InnerOt::Entropic {
            // γ = 0.01 against costs of order 10: two iterations are far from 1e-12
            gamma: 0.01,
            stop: Stop::Tolerance {
                tol: 1e-12,
                max_iter: 2,
            },
        },
        label_weight: LabelWeight::MaxFeatureCost,
    };
    let dict = EmpiricalDictionary::new(atoms, Batch::zeros(3, 0), settings).unwrap();
    let err = dict.reconstruct(&[0.25, 0.45, 0.3]).unwrap_err();
    assert!(
        matches!(err, Error::Numerical { .. }) && err.to_string().contains("`max_iter` = 2"),
        "{err}"
    );
}

/// 1-D atoms of distinct shapes (quantile functions `u`, `4 + 2u²`, `4u − 0.5`): the
/// barycenter averages sorted points, so the data `B(λ*)` is exact.
fn one_d_dictionary() -> EmpiricalDictionary<f64> {
    let n = 40;
    let u: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
    let shapes: [fn(f64) -> f64; 3] = [|u| u, |u| 4.0 + 2.0 * u * u, |u| 4.0 * u - 0.5];
    let atoms = shapes
        .iter()
        .map(|f| {
            LabeledCloud::unlabeled(Batch::from_vec(1, n, u.iter().map(|&x| f(x)).collect()))
                .unwrap()
        })
        .collect();
    EmpiricalDictionary::new(atoms, Batch::zeros(3, 0), FixedPointConfig::default()).unwrap()
}

#[test]
fn transform_recovers_the_weights_of_a_known_mixture() {
    let dict = one_d_dictionary();
    let truth = [0.2, 0.5, 0.3];
    let q = dict.reconstruct(&truth).unwrap();
    // In 1-D the barycenter of sorted clouds of equal size is the λ-average of the sorted
    // points: check that the fixed point got there (exactly up to rounding).
    let mut sorted: Vec<Vec<f64>> = dict
        .atoms()
        .iter()
        .map(|a| a.points().as_slice().to_vec())
        .collect();
    sorted
        .iter_mut()
        .for_each(|v| v.sort_by(|a, b| a.partial_cmp(b).unwrap()));
    let mut got = q.points().as_slice().to_vec();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for (i, g) in got.iter().enumerate() {
        let want: f64 = (0..3).map(|k| truth[k] * sorted[k][i]).sum();
        assert!((g - want).abs() < 1e-13, "{g} vs {want}");
    }

    let cfg = TransformConfig {
        num_iter_max: 100,
        batches_per_it: 10,
        lr: 0.01,
        ..Default::default()
    };
    let w = dict.transform(std::slice::from_ref(&q), &cfg).unwrap();
    let err = (0..3)
        .map(|k| (w.get(k, 0) - truth[k]).abs())
        .fold(0.0, f64::max);
    // The loss is the quadratic W₂²(B(λ), B(λ*)) = (1/n) Σ_i (Σ_k (λ − λ*)_k q_k(u_i))²
    // (affinely independent q_k: a unique minimizer). Adam with a constant lr = 0.01 cannot
    // resolve the logits finer than about one step; one step on the logits moves λ by at
    // most lr/2 = 5e-3 (softmax Jacobian norm ≤ 1/2).
    assert!(err < 5e-3, "weights {:?}, error {err}", w.col(0));

    // Minibatch transform (atoms and data subsampled, seeded).
    let mb = TransformConfig {
        batch_size: Some(20),
        seed: 9,
        ..cfg
    };
    let w_mb = dict.transform(&[q], &mb).unwrap();
    let err_mb = (0..3)
        .map(|k| (w_mb.get(k, 0) - truth[k]).abs())
        .fold(0.0, f64::max);
    let err_start = truth
        .iter()
        .map(|t| (t - 1.0 / 3.0).abs())
        .fold(0.0, f64::max);
    // Minibatch OT is a biased estimate of OT, so its minimizer is not λ* exactly: require
    // the regression to close at least half of the distance from its uniform start.
    assert!(
        err_mb < 0.5 * err_start,
        "minibatch weights {:?}",
        w_mb.col(0)
    );
}

#[test]
fn minibatch_sampling_with_and_without_replacement() {
    // Without replacement: consecutive batches partition a pass.
    let mut s = MinibatchSampler::new(12, Sampling::WithoutReplacement, 5).unwrap();
    for _pass in 0..3 {
        let mut all: Vec<usize> = (0..4).flat_map(|_| s.next_batch(3)).collect();
        all.sort();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
    }
    // A batch larger than the dataset is the whole dataset.
    let mut s = MinibatchSampler::new(5, Sampling::WithoutReplacement, 5).unwrap();
    let mut b = s.next_batch(9);
    b.sort();
    assert_eq!(b, vec![0, 1, 2, 3, 4]);
    // With replacement: independent uniform draws, so repeats occur within a pass.
    let mut s = MinibatchSampler::new(12, Sampling::WithReplacement, 5).unwrap();
    let draws: Vec<usize> = (0..4).flat_map(|_| s.next_batch(3)).collect();
    assert!(draws.iter().all(|&i| i < 12));
    let mut d = draws.clone();
    d.sort();
    d.dedup();
    assert!(
        d.len() < draws.len(),
        "12 uniform draws of 12 indices repeat one (p = 1 − 12!/12¹²)"
    );
    assert!(MinibatchSampler::new(0, Sampling::WithReplacement, 0).is_err());

    // Both modes fit and reduce the loss; they draw different batches.
    let mut rng = StdRng::seed_from_u64(6);
    let data: Vec<Batch<f64>> = (0..2)
        .map(|k| gaussian_cloud(&mut rng, 30, (4.0 * k as f64, 0.0), 0.5))
        .collect();
    let mut fits = Vec::new();
    for sampling in [Sampling::WithReplacement, Sampling::WithoutReplacement] {
        let cfg = MinibatchConfig {
            sampling,
            atom_init: AtomInit::Gaussian,
            ..small_config(7)
        };
        let d = MinibatchDictionary::fit(&data, &cfg, &mut NoObserver).unwrap();
        let h = d.history();
        assert!(h[h.len() - 1] < h[0], "{sampling:?}: {h:?}");
        fits.push(d);
    }
    assert_ne!(fits[0].atoms(), fits[1].atoms());
}

#[test]
fn labels_stay_in_the_simplex() {
    let mut rng = StdRng::seed_from_u64(8);
    let mut ds: Vec<LabeledCloud<f64>> = [0.0, 4.0]
        .iter()
        .map(|&s| two_class_dataset(&mut rng, 12, s))
        .collect();
    ds.push(LabeledCloud::unlabeled(gaussian_cloud(&mut rng, 20, (2.0, 0.0), 1.5)).unwrap());
    let cfg = MinibatchConfig {
        lr_labels: Some(0.5), // large steps on the logits: the softmax must still hold
        ..small_config(1)
    };
    let dict = LabeledMinibatchDictionary::fit(&ds, &cfg, &mut NoObserver).unwrap();
    // A softmax column sums to one up to one rounding per entry (2 classes).
    let check = |l: &Batch<f64>| {
        for j in 0..l.cols() {
            let c = l.col(j);
            assert!(c.iter().all(|&v| v >= 0.0));
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        }
    };
    for a in dict.atoms() {
        check(a.labels().unwrap());
    }
    for l in 0..3 {
        // Propagated labels: Σ_k λ_k n Σ_j π_ij y_j with row sums of π equal to 1/n up to
        // the network simplex's rounding (relative 1e-15 per entry over ≤ 2n entries).
        let r = dict.reconstruct_dataset(l).unwrap();
        let lab = r.labels().unwrap();
        for j in 0..lab.cols() {
            let c = lab.col(j);
            assert!(c.iter().all(|&v| v >= 0.0));
            assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
    let samples = dict.sample_from_atoms(5, 3).unwrap();
    assert_eq!(samples.len(), 2);
    for s in &samples {
        assert_eq!(s.len(), 5);
        check(s.labels().unwrap());
    }
    assert!(dict.sample_from_atoms(25, 3).is_err());
    assert!(dict.sample_from_atoms(0, 3).is_err());
}

#[test]
fn a_seed_determines_the_fit() {
    let mut rng = StdRng::seed_from_u64(10);
    let ds: Vec<LabeledCloud<f64>> = [0.0, 3.0]
        .iter()
        .map(|&s| two_class_dataset(&mut rng, 12, s))
        .collect();
    let fit =
        |seed| LabeledMinibatchDictionary::fit(&ds, &small_config(seed), &mut NoObserver).unwrap();
    let (a, b, c) = (fit(11), fit(11), fit(12));
    // Bit-identical: the per-dataset terms run on threads but are summed in order.
    assert_eq!(a.atoms(), b.atoms());
    assert_eq!(a.weights(), b.weights());
    assert_eq!(a.history(), b.history());
    assert_ne!(a.atoms(), c.atoms());
    assert_eq!(
        a.sample_from_atoms(4, 1).unwrap(),
        b.sample_from_atoms(4, 1).unwrap()
    );
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(12);
    let atoms = random_atoms(&mut rng, 3, 8, Some(2));
    let weights = Batch::from_vec(3, 2, vec![0.5, 0.3, 0.2, 0.25, 0.35, 0.4]);
    let settings = FixedPointConfig {
        max_iter: 3,
        tol: 0.0,
        inner: InnerOt::Exact { max_iter: 100_000 },
        label_weight: LabelWeight::Fixed(0.7),
    };
    let ds = vec![
        two_class_dataset(&mut rng, 3, 1.0),
        LabeledCloud::unlabeled(gaussian_cloud(&mut rng, 7, (2.0, 1.0), 1.0)).unwrap(),
    ];
    let dict = EmpiricalDictionary::new(atoms.clone(), weights.clone(), settings).unwrap();
    let (loss, g) = dict.objective_and_gradient(&ds).unwrap();
    assert!((loss - dict.objective(&ds).unwrap()).abs() == 0.0);
    let f = |atoms: Vec<LabeledCloud<f64>>, w: Batch<f64>| {
        EmpiricalDictionary::new(atoms, w, settings)
            .unwrap()
            .objective(&ds)
            .unwrap()
    };
    // With exact OT the plans are locally constant, so the objective is locally a
    // polynomial of degree 2 in any one coordinate and central differences are exact up
    // to rounding: ~1e-16 · |loss| / h ≈ 1e-9 for h = 1e-6.
    let h = 1e-6;
    let tol = 1e-6;
    let mut checked = 0;
    for k in 0..3 {
        for j in [0, 5] {
            for d in 0..2 {
                let shift = |delta: f64| {
                    let mut a = atoms.clone();
                    let mut p = a[k].points().clone();
                    p.set(d, j, p.get(d, j) + delta);
                    a[k] = LabeledCloud::soft(p, a[k].labels().unwrap().clone()).unwrap();
                    f(a, weights.clone())
                };
                let fd = (shift(h) - shift(-h)) / (2.0 * h);
                let an = g.points[k].get(d, j);
                assert!(
                    (fd - an).abs() < tol * (1.0 + an.abs()),
                    "x[{k}][{d},{j}]: fd {fd} vs {an}"
                );
                checked += 1;
            }
            // Labels, along the simplex tangent e_0 − e_1 (the labels must stay valid).
            let shift = |delta: f64| {
                let mut a = atoms.clone();
                let mut l = a[k].labels().unwrap().clone();
                l.set(0, j, l.get(0, j) + delta);
                l.set(1, j, l.get(1, j) - delta);
                a[k] = LabeledCloud::soft(a[k].points().clone(), l).unwrap();
                f(a, weights.clone())
            };
            let fd = (shift(h) - shift(-h)) / (2.0 * h);
            let gl = g.labels.as_ref().unwrap();
            let an = gl[k].get(0, j) - gl[k].get(1, j);
            assert!(
                (fd - an).abs() < tol * (1.0 + an.abs()),
                "y[{k}][{j}]: fd {fd} vs {an}"
            );
            checked += 1;
        }
    }
    // Weights along e_k − e_k' (the largest weight stays the largest: same initialization).
    for l in 0..2 {
        for (k, kp) in [(1, 2), (0, 2)] {
            let shift = |delta: f64| {
                let mut w = weights.clone();
                w.set(k, l, w.get(k, l) + delta);
                w.set(kp, l, w.get(kp, l) - delta);
                f(atoms.clone(), w)
            };
            let fd = (shift(h) - shift(-h)) / (2.0 * h);
            let an = g.weights.get(k, l) - g.weights.get(kp, l);
            assert!(
                (fd - an).abs() < tol * (1.0 + an.abs()),
                "λ[{k}-{kp}, {l}]: fd {fd} vs {an}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 2 * 3 + 4);
}

#[test]
fn entropic_inner_ot_fits_too() {
    let mut rng = StdRng::seed_from_u64(13);
    let data: Vec<Batch<f64>> = (0..2)
        .map(|k| gaussian_cloud(&mut rng, 24, (4.0 * k as f64, 0.0), 0.5))
        .collect();
    let cfg = MinibatchConfig {
        atom_init: AtomInit::Gaussian,
        barycenter: FixedPointConfig {
            // γ = 1 against squared distances of ~16: a blurred but well-defined plan that
            // Sinkhorn reaches in tens of iterations.
            inner: InnerOt::Entropic {
                gamma: 1.0,
                stop: Stop::Tolerance {
                    tol: 1e-6,
                    max_iter: 1000,
                },
            },
            ..Default::default()
        },
        ..small_config(14)
    };
    let d = MinibatchDictionary::fit(&data, &cfg, &mut NoObserver).unwrap();
    let h = d.history();
    assert!(h.iter().all(|v| v.is_finite()));
    assert!(h[h.len() - 1] < h[0], "{h:?}");
    let r = d.reconstruct(&[0.5, 0.5]).unwrap();
    assert_eq!(r.len(), cfg.n_samples);
}

#[test]
fn invalid_inputs_are_errors() {
    let mut rng = StdRng::seed_from_u64(15);
    let data = vec![gaussian_cloud(&mut rng, 10, (0.0, 0.0), 1.0)];
    let bad =
        |cfg: MinibatchConfig| MinibatchDictionary::fit(&data, &cfg, &mut NoObserver).unwrap_err();
    assert!(matches!(
        bad(MinibatchConfig {
            batch_size: 30,
            ..small_config(0)
        }),
        Error::InvalidParameter {
            arg: "batch_size",
            ..
        }
    ));
    assert!(matches!(
        bad(MinibatchConfig {
            lr: -1.0,
            ..small_config(0)
        }),
        Error::InvalidParameter { arg: "lr", .. }
    ));
    assert!(matches!(
        bad(MinibatchConfig {
            barycenter: FixedPointConfig {
                max_iter: 0,
                ..Default::default()
            },
            ..small_config(0)
        }),
        Error::InvalidParameter {
            arg: "barycenter.max_iter",
            ..
        }
    ));
    assert!(MinibatchDictionary::fit(&[], &small_config(0), &mut NoObserver).is_err());
    // Datasets of different dimensions.
    let d3 = Batch::from_fn(3, 5, |i, j| (i + j) as f64);
    assert!(matches!(
        MinibatchDictionary::fit(&[data[0].clone(), d3], &small_config(0), &mut NoObserver),
        Err(Error::ShapeMismatch {
            arg: "datasets",
            ..
        })
    ));
    // A labeled dictionary needs labels somewhere.
    let un = vec![LabeledCloud::unlabeled(data[0].clone()).unwrap()];
    assert!(matches!(
        LabeledMinibatchDictionary::fit(&un, &small_config(0), &mut NoObserver),
        Err(Error::InvalidParameter {
            arg: "datasets",
            ..
        })
    ));
    // Non-finite points, labels outside the simplex, class indices out of range.
    let nan = Batch::from_vec(1, 2, vec![0.0, f64::NAN]);
    assert!(matches!(
        LabeledCloud::unlabeled(nan),
        Err(Error::NonFinite { .. })
    ));
    let p = Batch::from_vec(1, 2, vec![0.0, 1.0]);
    assert!(
        LabeledCloud::soft(p.clone(), Batch::from_vec(2, 2, vec![0.5, 0.6, 1.0, 0.0])).is_err()
    );
    assert!(LabeledCloud::labeled(p.clone(), &[0, 2], 2).is_err());
    assert!(LabeledCloud::labeled(p, &[0], 2).is_err());
    // Reconstruction weights off the simplex or of the wrong length.
    let dict = one_d_dictionary();
    assert!(dict.reconstruct(&[0.5, 0.5]).is_err());
    assert!(dict.reconstruct(&[0.5, 0.6, 0.1]).is_err());
    assert!(dict.reconstruct_dataset(0).is_err());
}
