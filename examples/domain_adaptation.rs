//! Multi-source domain adaptation with a labeled point-cloud dictionary (DaDiL's
//! reconstruction strategy, `000_28317f9bbe079a83.txt`'s `LabeledMinibatchDictionary`).
//!
//! Data: three classes of 2-D Gaussian blobs (centres on a circle of radius 3, standard
//! deviation 0.5). Each domain applies its own rotation and shift to the whole
//! configuration: three labeled source domains and one unlabeled target domain whose
//! rotation and shift lie between those of the sources. The pooled sources overlap with
//! conflicting labels where the target lies, which is what defeats a classifier trained on
//! them.
//!
//! Method: a [`LabeledMinibatchDictionary`] with three atoms is fitted on the three sources
//! (with labels) and the target (without labels, matched on its features only). The target
//! is reconstructed as the barycenter of the atoms with its learned weights; the
//! reconstruction's points carry labels propagated from the atoms. A 1-nearest-neighbour
//! classifier trained on the reconstruction (labels: the most likely class) is evaluated on
//! the target's true labels. Baseline: 1-NN trained on the pooled sources.
//!
//! Run: `cargo run --release --example domain_adaptation [-- --quick]`; the scatter plot
//! goes to `out/domain_adaptation/domain_adaptation.png`. Ends with
//! `RESULT target_accuracy=... baseline_accuracy=...`.

use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use rand_distr::StandardNormal;
use std::path::{Path, PathBuf};
use wassdl::dictionary::NoObserver;
use wassdl::pointcloud::dictionary::{
    FixedPointConfig, LabeledCloud, LabeledMinibatchDictionary, MinibatchConfig,
};
use wassdl::Batch;
use wassdl_cli::figures::palette;

/// Number of classes.
const CLASSES: usize = 3;

/// A domain: rotation (degrees) and shift of the class configuration.
#[derive(Clone, Copy, Debug)]
struct Domain {
    angle_deg: f64,
    shift: (f64, f64),
}

/// The three sources, then the target (its rotation and shift lie inside the sources').
const DOMAINS: [Domain; 4] = [
    Domain {
        angle_deg: 0.0,
        shift: (0.0, 0.0),
    },
    Domain {
        angle_deg: 40.0,
        shift: (4.0, 0.0),
    },
    Domain {
        angle_deg: 80.0,
        shift: (2.0, 4.0),
    },
    Domain {
        angle_deg: 40.0,
        shift: (2.0, 1.3),
    },
];

/// What the example measured.
#[derive(Clone, Debug)]
pub struct DaResult {
    /// Accuracy on the target of 1-NN trained on the labeled reconstruction.
    pub target_accuracy: f64,
    /// Accuracy on the target of 1-NN trained on the pooled sources.
    pub baseline_accuracy: f64,
    /// The target's learned barycentric weights.
    pub target_weights: Vec<f64>,
    /// Mean minibatch loss of the first and of the last iteration.
    pub loss_first_last: (f64, f64),
    /// The figure written.
    pub figure: PathBuf,
}

/// `per_class` points per class of `domain`, as (points `2 × n`, classes).
fn sample_domain(d: Domain, per_class: usize, rng: &mut StdRng) -> (Batch<f64>, Vec<usize>) {
    let (sin, cos) = d.angle_deg.to_radians().sin_cos();
    let mut data = Vec::with_capacity(2 * CLASSES * per_class);
    let mut classes = Vec::with_capacity(CLASSES * per_class);
    for c in 0..CLASSES {
        let t = (90.0 + 120.0 * c as f64).to_radians();
        let (cx, cy) = (3.0 * t.cos(), 3.0 * t.sin());
        for _ in 0..per_class {
            let (nx, ny): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
            let (x, y) = (cx + 0.5 * nx, cy + 0.5 * ny);
            data.push(cos * x - sin * y + d.shift.0);
            data.push(sin * x + cos * y + d.shift.1);
            classes.push(c);
        }
    }
    (Batch::from_vec(2, CLASSES * per_class, data), classes)
}

/// 1-nearest-neighbour predictions of `test` from the labeled `train`.
fn one_nn(train: &Batch<f64>, labels: &[usize], test: &Batch<f64>) -> Vec<usize> {
    (0..test.cols())
        .map(|i| {
            let q = test.col(i);
            let mut best = (f64::INFINITY, 0);
            for (j, &label) in labels.iter().enumerate() {
                let p = train.col(j);
                let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2);
                if d < best.0 {
                    best = (d, label);
                }
            }
            best.1
        })
        .collect()
}

fn accuracy(pred: &[usize], truth: &[usize]) -> f64 {
    let ok = pred.iter().zip(truth).filter(|(a, b)| a == b).count();
    ok as f64 / truth.len().max(1) as f64
}

/// The seed of the data (the dictionary has its own, fixed).
pub const DATA_SEED: u64 = 7;

/// Runs the experiment (`quick`: smaller data and budgets, for the tests) and writes the
/// figure into `out/domain_adaptation/`.
pub fn run(quick: bool) -> Result<DaResult, Box<dyn std::error::Error>> {
    run_with(quick, DATA_SEED, Path::new("out").join("domain_adaptation"))
}

/// [`run`] with another draw of the data, writing into `out_dir`.
pub fn run_with(
    quick: bool,
    data_seed: u64,
    out_dir: PathBuf,
) -> Result<DaResult, Box<dyn std::error::Error>> {
    let per_class = if quick { 30 } else { 100 };
    let mut rng = StdRng::seed_from_u64(data_seed);
    let domains: Vec<(Batch<f64>, Vec<usize>)> = DOMAINS
        .iter()
        .map(|&d| sample_domain(d, per_class, &mut rng))
        .collect();
    let (sources, target) = domains.split_at(3);
    let (xt, yt) = &target[0];

    // Baseline: 1-NN on the pooled sources.
    let mut pooled = Vec::new();
    let mut pooled_y = Vec::new();
    for (x, y) in sources {
        pooled.extend_from_slice(x.as_slice());
        pooled_y.extend_from_slice(y);
    }
    let pooled = Batch::from_vec(2, pooled_y.len(), pooled);
    let baseline_accuracy = accuracy(&one_nn(&pooled, &pooled_y, xt), yt);

    // The dictionary: sources with labels, the target without.
    let mut datasets = sources
        .iter()
        .map(|(x, y)| LabeledCloud::labeled(x.clone(), y, CLASSES))
        .collect::<wassdl::Result<Vec<_>>>()?;
    datasets.push(LabeledCloud::unlabeled(xt.clone())?);
    let cfg = MinibatchConfig {
        n_atoms: 3,
        n_samples: CLASSES * per_class,
        batch_size: if quick { 45 } else { 100 },
        lr: 0.05,
        num_iter_max: if quick { 20 } else { 60 },
        batches_per_it: 10,
        barycenter: FixedPointConfig {
            max_iter: 5,
            ..Default::default()
        },
        seed: 1,
        ..Default::default()
    };
    let dict = LabeledMinibatchDictionary::fit(&datasets, &cfg, &mut NoObserver)?;
    let t = datasets.len() - 1;
    let recon = dict.reconstruct_dataset(t)?;
    let recon_y = recon
        .argmax_labels()
        .ok_or("the reconstruction of a labeled dictionary carries labels")?;
    let target_accuracy = accuracy(&one_nn(recon.points(), &recon_y, xt), yt);

    let figure = out_dir.join("domain_adaptation.png");
    plot(&figure, sources, (xt, yt), (recon.points(), &recon_y))?;
    let h = dict.history();
    Ok(DaResult {
        target_accuracy,
        baseline_accuracy,
        target_weights: dict.weights().col(t).to_vec(),
        loss_first_last: (h[0], h[h.len() - 1]),
        figure,
    })
}

type Labeled<'a> = (&'a Batch<f64>, &'a [usize]);

/// Three panels: pooled sources, target (true classes), reconstruction (propagated
/// classes) over the target in grey. Colour = class, marker = source domain.
fn plot(
    path: &Path,
    sources: &[(Batch<f64>, Vec<usize>)],
    target: (&Batch<f64>, &Vec<usize>),
    recon: Labeled<'_>,
) -> Result<(), Box<dyn std::error::Error>> {
    wassdl_cli::figures::ensure_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let all = sources
        .iter()
        .map(|(x, _)| x)
        .chain([target.0, recon.0])
        .flat_map(|x| (0..x.cols()).map(move |j| (x.get(0, j), x.get(1, j))));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = 0.5;
    let root = BitMapBackend::new(path, (1500, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 3));
    let titles = [
        "pooled sources (colour: class, marker: domain)",
        "target (true classes)",
        "reconstruction (propagated classes)",
    ];
    for (p, title) in panels.iter().zip(titles) {
        let mut chart = ChartBuilder::on(p)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(32)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        let pts = |x: &Batch<f64>| -> Vec<(f64, f64)> {
            (0..x.cols()).map(|j| (x.get(0, j), x.get(1, j))).collect()
        };
        match title {
            t if t.starts_with("pooled") => {
                for (d, (x, y)) in sources.iter().enumerate() {
                    let it = pts(x).into_iter().zip(y.iter());
                    match d {
                        0 => chart
                            .draw_series(it.map(|(q, &c)| Circle::new(q, 3, palette(c).filled()))),
                        1 => chart.draw_series(
                            it.map(|(q, &c)| TriangleMarker::new(q, 4, palette(c).filled())),
                        ),
                        _ => chart.draw_series(
                            it.map(|(q, &c)| Cross::new(q, 3, palette(c).stroke_width(2))),
                        ),
                    }
                    .map_err(|e| err(&e))?;
                }
            }
            t if t.starts_with("target") => {
                chart
                    .draw_series(
                        pts(target.0)
                            .into_iter()
                            .zip(target.1.iter())
                            .map(|(q, &c)| Circle::new(q, 3, palette(c).filled())),
                    )
                    .map_err(|e| err(&e))?;
            }
            _ => {
                chart
                    .draw_series(
                        pts(target.0)
                            .into_iter()
                            .map(|q| Circle::new(q, 3, RGBColor(200, 200, 200).filled())),
                    )
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(
                        pts(recon.0)
                            .into_iter()
                            .zip(recon.1.iter())
                            .map(|(q, &c)| Cross::new(q, 4, palette(c).stroke_width(2))),
                    )
                    .map_err(|e| err(&e))?;
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Command line.
#[derive(clap::Parser, Debug)]
#[command(about = "Multi-source domain adaptation with a labeled point-cloud dictionary")]
struct Args {
    /// Smaller data and budgets (seconds).
    #[arg(long)]
    quick: bool,
    /// Seed of the data.
    #[arg(long, default_value_t = DATA_SEED)]
    seed: u64,
    /// Folder of the figure.
    #[arg(long, default_value = "out/domain_adaptation")]
    out: PathBuf,
}

#[allow(dead_code)] // unused when the tests include this file as a module
fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run_with(args.quick, args.seed, args.out) {
        Ok(r) => {
            println!(
                "target weights {:?}; loss {:.4} -> {:.4}; figure {}",
                r.target_weights,
                r.loss_first_last.0,
                r.loss_first_last.1,
                r.figure.display()
            );
            println!(
                "RESULT target_accuracy={:.4} baseline_accuracy={:.4}",
                r.target_accuracy, r.baseline_accuracy
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("domain_adaptation: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
