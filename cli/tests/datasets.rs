//! The synthetic datasets: normalized, deterministic per seed, shaped as the paper
//! describes them, and the Figure 2 data identical to the scikit-learn reference.

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use wassdl::Batch;
use wassdl_cli::datasets::*;

/// Every column nonnegative, finite and summing to one. The sums are of at most 1600
/// terms each rounded once, so `|Σ - 1| ≤ n ε` is what correct normalization guarantees.
fn assert_histograms(what: &str, b: &Batch<f64>) {
    let tol = b.rows() as f64 * f64::EPSILON;
    for j in 0..b.cols() {
        let col = b.col(j);
        assert!(
            col.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{what}: column {j} has a negative or non-finite entry"
        );
        let s: f64 = col.iter().sum();
        assert!((s - 1.0).abs() <= tol, "{what}: column {j} sums to {s}");
    }
}

#[test]
fn fig2_matches_the_reference_bit_for_bit() {
    let case = "fig2_gaussians";
    let x_ref = load_vector(case, "x.npy");
    assert_eq!(linspace(0.0, 1.0, 100).as_slice(), x_ref.as_slice());
    // X.npy is 5 × 100 with one Gaussian per row; ours has one per column.
    let x = load_matrix(case, "X.npy");
    let ours = fig2_gaussians();
    assert_eq!(ours.shape(), (100, 5));
    for j in 0..5 {
        let want: Vec<f64> = (0..100).map(|i| x.get(j, i)).collect();
        // Same formula, same operation order and numpy's summation order: exact.
        assert_eq!(
            ours.col(j),
            want.as_slice(),
            "Gaussian {j} differs from the reference"
        );
    }
    assert_histograms("fig2", &ours);
}

#[test]
fn gaussians_reject_bad_parameters() {
    assert!(gaussians_1d(0, &[0.5], 0.1).is_err());
    assert!(gaussians_1d(10, &[], 0.1).is_err());
    assert!(gaussians_1d(10, &[0.5], 0.0).is_err());
    assert!(gaussians_1d(10, &[0.5], f64::NAN).is_err());
    assert!(gaussians_1d(10, &[f64::INFINITY], 0.1).is_err());
    // every bin underflows: exp(-0.25 / 2e-300) = 0
    assert!(gaussians_1d(10, &[0.55], 1e-150).is_err());
}

/// `J₁(x) = (1/2π) ∫₀^{2π} cos(τ - x sin τ) dτ`; the trapezoid rule on a periodic
/// analytic integrand converges geometrically, so 400 nodes are exact to rounding for
/// `x ≤ 60` (the error falls like `(e x / 2M)^M`). An independent computation of J₁.
fn j1_by_quadrature(x: f64) -> f64 {
    let m = 400;
    let h = 2.0 * std::f64::consts::PI / m as f64;
    (0..m)
        .map(|k| {
            let t = k as f64 * h;
            (t - x * t.sin()).cos()
        })
        .sum::<f64>()
        / m as f64
}

#[test]
fn bessel_j1_matches_tables_and_the_integral() {
    // Zeros j₁,ₖ from Abramowitz & Stegun table 9.5; J₁ has slope ~|J₀(j)| ≤ 0.41 there,
    // so a 2e-10 error in J₁ (the asymptotic branch's bound near x = 12) keeps |J₁| < 1e-10.
    for z in [
        3.831_705_970_207_512,
        7.015_586_669_815_619,
        10.173_468_135_062_722,
        13.323_691_936_314_223,
        16.470_630_050_877_633,
        19.615_858_510_468_243,
    ] {
        assert!(bessel_j1(z).abs() < 1e-10, "J1({z}) = {}", bessel_j1(z));
    }
    // A&S table 9.1 values.
    for (x, want) in [
        (1.0, 0.440_050_585_744_933_5),
        (2.0, 0.576_724_807_756_873_4),
        (10.0, 0.043_472_746_168_861_44),
    ] {
        // 1e-13: the series branch (x < 12) loses at most ~1e-12 to cancellation, less at x ≤ 10.
        assert!((bessel_j1(x) - want).abs() < 1e-13, "J1({x})");
    }
    let mut worst: f64 = 0.0;
    for k in 0..=600 {
        let x = k as f64 * 0.1;
        worst = worst.max((bessel_j1(x) - j1_by_quadrature(x)).abs());
        assert_eq!(bessel_j1(-x), -bessel_j1(x), "J1 is odd");
    }
    // 2e-10: the optimal-truncation error of Hankel's expansion at x = 12 (the smallest
    // term, ~1e-10), which is the worst point of either branch.
    assert!(worst < 2e-10, "max |J1 - quadrature| = {worst:e}");
    assert_eq!(airy_intensity(0.0), 1.0);
}

#[test]
fn psfs_are_normalized_symmetric_and_widen_with_wavelength() {
    let psfs = chromatic_psfs(40, 8).unwrap();
    assert_eq!(psfs.images.shape(), (1600, 8));
    assert_eq!(psfs.wavelengths_nm.first(), Some(&550.0));
    assert_eq!(psfs.wavelengths_nm.last(), Some(&900.0));
    assert_histograms("psf", &psfs.images);
    let t = psfs.wavelength_fraction();
    assert_eq!((t[0], t[7]), (0.0, 1.0));
    let n = 40;
    let c = (n as f64 - 1.0) / 2.0;
    let mut last_spread = 0.0;
    let mut last_peak = f64::INFINITY;
    for j in 0..8 {
        let im = psfs.images.col(j);
        for i in 0..n {
            for k in 0..n {
                // The pattern is radial about the grid centre, so the image is invariant
                // under transposition and flips up to rounding in the sub-pixel sums.
                let v = im[i * n + k];
                for w in [
                    im[k * n + i],
                    im[(n - 1 - i) * n + k],
                    im[i * n + n - 1 - k],
                ] {
                    assert!((v - w).abs() <= 1e-15, "PSF {j} not symmetric at ({i},{k})");
                }
            }
        }
        // mean |r| grows and the peak drops as the pattern dilates with λ
        let spread: f64 = (0..n * n)
            .map(|q| {
                let (y, x) = ((q / n) as f64 - c, (q % n) as f64 - c);
                im[q] * (x * x + y * y).sqrt()
            })
            .sum();
        let peak = im.iter().copied().fold(0.0, f64::max);
        assert!(
            spread > last_spread && peak < last_peak,
            "PSF {j} not wider"
        );
        last_spread = spread;
        last_peak = peak;
    }
    // first dark ring at 1.22 λ/D: at 900 nm, λ/D = 3.6·900/700 px; the radial profile
    // along the row through the centre has its minimum near there.
    let s = PSF_LAMBDA_OVER_D_PX_AT_700NM * 900.0 / 700.0;
    let single = airy_psf(401, 900.0).unwrap();
    let row = &single[200 * 401..201 * 401];
    let (argmin, _) = row[200..200 + (2.0 * s) as usize].iter().enumerate().fold(
        (0, f64::INFINITY),
        |a, (i, &v)| if v < a.1 { (i, v) } else { a },
    );
    // ±1 px: the minimum sits on the pixel nearest 1.22 λ/D.
    assert!(
        (argmin as f64 - 1.22 * s).abs() <= 1.0,
        "first ring at {argmin}"
    );
    assert!(airy_psf(0, 700.0).is_err());
    assert!(airy_psf(40, -1.0).is_err());
    assert!(chromatic_psfs(40, 0).is_err());
}

#[test]
fn multimodal_follows_section_5_5() {
    let cfg = MultimodalConfig::default();
    let d = multimodal_1d(7, 40, &cfg).unwrap();
    assert_eq!(d.data.shape(), (90, 40));
    assert_histograms("multimodal", &d.data);
    let third = cfg.n_bins / 3;
    let half = (cfg.truncation * cfg.sigma) as usize;
    let mut seen = [0usize; 3]; // both left, split, both right
    for (j, means) in d.means.iter().enumerate() {
        let col = d.data.col(j);
        // centre third empty, support within truncation of the means
        assert!(col[third..2 * third].iter().all(|&v| v == 0.0));
        for (i, &v) in col.iter().enumerate() {
            let near = means.iter().any(|&m| i.abs_diff(m) <= half);
            assert_eq!(v > 0.0, near, "column {j} bin {i}");
        }
        for &m in means {
            assert_eq!(m % 2, half % 2, "means on every other position");
            assert_ne!(third_of(m, cfg.n_bins), 1);
        }
        let sides = [third_of(means[0], 90), third_of(means[1], 90)];
        let modes = modes_by_third(col, 0.1);
        assert_eq!(modes[1], 0);
        if sides[0] != sides[1] {
            seen[1] += 1;
            assert_eq!(modes, [1, 0, 1], "column {j} means {means:?}");
        } else {
            seen[if sides[0] == 0 { 0 } else { 2 }] += 1;
            let gap = means[0].abs_diff(means[1]) as f64;
            // Two equal Gaussians are bimodal iff their means are more than 2σ apart;
            // at ≥ 3σ the dip is deep enough (prominence > 10% of the peak) to count.
            let want = if gap >= 3.0 * cfg.sigma {
                2
            } else if gap <= 2.0 * cfg.sigma {
                1
            } else {
                continue;
            };
            assert_eq!(modes[sides[0]], want, "column {j} means {means:?}");
        }
    }
    assert!(
        seen.iter().all(|&c| c > 0),
        "40 draws cover every case: {seen:?}"
    );
    // deterministic per seed
    let again = multimodal_1d(7, 40, &cfg).unwrap();
    assert_eq!(again.data, d.data);
    assert_eq!(again.means, d.means);
    assert_ne!(multimodal_1d(8, 40, &cfg).unwrap().means, d.means);
    for bad in [
        MultimodalConfig { n_bins: 91, ..cfg },
        MultimodalConfig { sigma: 0.0, ..cfg },
        MultimodalConfig { sigma: 6.0, ..cfg },
    ] {
        assert!(multimodal_1d(0, 4, &bad).is_err(), "{bad:?}");
    }
}

#[test]
fn modes_are_counted_by_prominence() {
    let mut h = vec![0.0; 30];
    h[3] = 1.0;
    h[15] = 0.05; // below 10% of the peak: not a mode
    h[24] = 0.5;
    h[25] = 0.5; // a plateau counts once
    assert_eq!(modes_by_third(&h, 0.1), [1, 0, 1]);
    h[15] = 0.2;
    assert_eq!(modes_by_third(&h, 0.1), [1, 1, 1]);
    // a shallow dip between two bumps is one mode
    let bumps = [0.0, 1.0, 0.95, 0.97, 0.0];
    assert_eq!(modes_by_third(&bumps, 0.1).iter().sum::<usize>(), 1);
    assert_eq!(modes_by_third(&[], 0.1), [0, 0, 0]);
    assert_eq!(modes_by_third(&[0.0; 9], 0.1), [0, 0, 0]);
}

#[test]
fn shapes_are_normalized_deterministic_and_varied() {
    let s = shapes_2d(3, 32, 30).unwrap();
    assert_eq!(s.images.shape(), (1024, 30));
    assert_histograms("shapes", &s.images);
    for kind in [ShapeKind::Disk, ShapeKind::Square, ShapeKind::Ring] {
        assert!(s.kinds.contains(&kind), "no {kind:?} in 30 draws");
    }
    let n = 32;
    for j in 0..30 {
        let im = s.images.col(j);
        // one pixel of margin all around
        for k in 0..n {
            for q in [k, (n - 1) * n + k, k * n, k * n + n - 1] {
                assert_eq!(im[q], 0.0, "image {j} touches the border");
            }
        }
        // a ring has a hole at its centre of mass, a disk and a square do not
        let (mut cy, mut cx) = (0.0, 0.0);
        for (q, &v) in im.iter().enumerate() {
            cy += v * (q / n) as f64;
            cx += v * (q % n) as f64;
        }
        let centre = im[cy.floor() as usize * n + cx.floor() as usize];
        let top = im.iter().copied().fold(0.0, f64::max);
        assert_eq!(centre == 0.0, s.kinds[j] == ShapeKind::Ring, "image {j}");
        assert!(centre == 0.0 || centre == top);
    }
    assert_eq!(shapes_2d(3, 32, 30).unwrap().images, s.images);
    assert_ne!(shapes_2d(4, 32, 30).unwrap().images, s.images);
    let disks = shapes_2d_of(3, 32, 10, &[ShapeKind::Disk]).unwrap();
    assert!(disks.kinds.iter().all(|&k| k == ShapeKind::Disk));
    assert_histograms("disks", &disks.images);
    assert!(shapes_2d_of(3, 32, 10, &[]).is_err());
    assert!(shapes_2d(3, 4, 1).is_err());
    assert!(shapes_2d(3, 32, 0).is_err());
}

#[test]
fn figures_write_pngs_and_name_bad_paths() {
    use wassdl_cli::figures::*;
    let dir = std::env::temp_dir().join(format!("wassdl-figures-{}", std::process::id()));
    let g = fig2_gaussians();
    let cols: Vec<&[f64]> = (0..5).map(|j| g.col(j)).collect();
    let png = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            p.display()
        );
    };
    let p = dir.join("grid.png");
    save_image_grid(&p, &cols, 10, 10, 3, &["a", "b"]).unwrap();
    png(&p);
    let pts: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, g.get(i, 0))).collect();
    let p = dir.join("line.png");
    save_line_plot(&p, "t", "x", "y", &[("first", &pts), ("again", &pts)]).unwrap();
    png(&p);
    let row = HistRow {
        label: "data".into(),
        panels: cols
            .iter()
            .map(|c| HistPanel {
                title: "x".into(),
                curves: vec![c, cols[0]],
            })
            .collect(),
    };
    let p = dir.join("hist.png");
    save_histograms_1d(&p, "title", &["a", "b"], &[row.clone(), row]).unwrap();
    png(&p);
    // a file where a folder must be: an Io error naming the path
    let blocked = dir.join("grid.png").join("x.png");
    match save_image_grid(&blocked, &cols, 10, 10, 3, &[]) {
        Err(wassdl::Error::Io(msg)) => assert!(msg.contains("grid.png"), "{msg}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(save_image_grid(dir.join("bad.png"), &cols, 10, 11, 3, &[]).is_err());
    assert!(save_line_plot(dir.join("empty.png"), "t", "x", "y", &[]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Real images (data/)

#[test]
fn real_datasets_load_with_their_shapes_and_labels() {
    let d = digits().unwrap();
    assert_eq!(
        (d.images.rows(), d.images.cols(), d.height, d.width),
        (64, 1797, 8, 8)
    );
    let labels = d.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 1797);
    assert!(labels.iter().all(|&l| l <= 9));
    let f = faces().unwrap();
    assert_eq!((f.images.rows(), f.images.cols()), (625, 100));
    assert!(f.labels.is_none());
    // uint8 pixels arrive as exact float64 integers 0-255
    let fm = fashion_mnist().unwrap();
    assert_eq!((fm.images.rows(), fm.images.cols()), (784, 2000));
    assert!(fm
        .images
        .as_slice()
        .iter()
        .all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v)));
    assert_eq!(
        fm.images.as_slice().iter().cloned().fold(0.0, f64::max),
        255.0
    );
    let bags = fm.select(Some(8), 200).unwrap();
    assert!(bags.labels.unwrap().iter().all(|&l| l == 8));
    assert!(fm.select(Some(8), 201).is_err());
}

#[test]
fn to_histograms_inverts_floors_and_normalizes() {
    let img = Batch::from_vec(4, 1, vec![0.0, 1.0, 3.0, 4.0]);
    let h = to_histograms(&img, &HistogramOptions::default()).unwrap();
    assert_eq!(h.col(0), &[0.0, 0.125, 0.375, 0.5]);
    let h = to_histograms(
        &img,
        &HistogramOptions {
            floor: 1.0,
            invert: Some(4.0),
        },
    )
    .unwrap();
    // (4 - x) + 1 = 5, 4, 2, 1, sum 12
    assert_eq!(h.col(0), &[5.0 / 12.0, 4.0 / 12.0, 2.0 / 12.0, 1.0 / 12.0]);
    // a pixel above the inversion peak becomes negative: refused
    assert!(to_histograms(
        &img,
        &HistogramOptions {
            floor: 0.0,
            invert: Some(3.0)
        }
    )
    .is_err());
    // an all-zero image has no mass to normalize
    assert!(to_histograms(&Batch::zeros(3, 1), &HistogramOptions::default()).is_err());
    let d = digits().unwrap().select(Some(3), 10).unwrap();
    assert_histograms(
        "digits",
        &d.histograms(&HistogramOptions {
            floor: 1e-3,
            invert: None,
        })
        .unwrap(),
    );
}

/// A dictionary fit on a small real subset reaches a stated loss: the first 20 "3"s of
/// the digits (+10⁻³, normalized), 3 atoms drawn from the data, quadratic loss,
/// γ = 0.5 px², L = 20, 40 L-BFGS iterations. Measured (x86-64, this build): initial
/// loss 0.10819, 0.04947 after 30 iterations, 0.04670 after 40. The bound 0.0485 is the
/// 40-iteration value plus 4% for other platforms' rounding over 40 iterations of a
/// nonconvex problem, and stays below the 30-iteration value: it checks that the last
/// ten iterations still make progress, not only that the fit runs.
#[test]
fn fit_on_real_digits_reaches_stated_loss() {
    use wassdl::dictionary::{fit, AtomInit, NoObserver, WdlConfig};
    use wassdl::{BarycenterConfig, Grid, GridKernel, GridUnits, Loss};
    let data = digits()
        .unwrap()
        .select(Some(3), 20)
        .unwrap()
        .histograms(&HistogramOptions {
            floor: 1e-3,
            invert: None,
        })
        .unwrap();
    let grid = Grid::new(&[8, 8]).unwrap().with_units(GridUnits::Pixel);
    let k = GridKernel::<f64>::new(&grid, 0.5).unwrap();
    let cfg = WdlConfig::new(3)
        .barycenter(BarycenterConfig::iterations(20))
        .loss(Loss::Quadratic)
        .atom_init(AtomInit::FromData)
        .max_iter(40)
        .seed(0);
    let f = fit(&k, &data, &cfg, &mut NoObserver).unwrap();
    eprintln!(
        "initial loss {}, after 30 iterations {}, final {} after {} iterations ({:?})",
        f.history[0].loss, f.history[30].loss, f.loss, f.iterations, f.termination
    );
    assert!(f.loss < 0.0485, "final loss {}", f.loss);
}

/// A `.npy` file of uint8 images `(m, h, w)`, written by hand as NumPy does (format 1.0,
/// header padded with spaces to a multiple of 64 bytes, ending in a newline).
fn uint8_npy(path: &std::path::Path, shape: [usize; 3], pixels: &[u8]) {
    let dict = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        shape[0], shape[1], shape[2]
    );
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(pixels);
    std::fs::write(path, bytes).unwrap();
}

/// `wassdl fit --normalize` takes uint8 images (each becomes a histogram); without the
/// flag the same file is refused, as any unnormalized input is.
#[test]
fn fit_normalize_accepts_uint8_images() {
    let dir = std::env::temp_dir().join(format!("wassdl-normalize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = dir.join("x.npy");
    // four 5 x 5 images: a bright 2 x 2 block in a different corner of each
    let mut px = vec![0u8; 4 * 25];
    for (m, (r0, c0)) in [(0, 0), (0, 3), (3, 0), (3, 3)].into_iter().enumerate() {
        for r in r0..r0 + 2 {
            for c in c0..c0 + 2 {
                px[m * 25 + r * 5 + c] = 200 + m as u8;
            }
        }
    }
    uint8_npy(&x, [4, 5, 5], &px);
    let arr = wassdl_cli::npy::read_npy_numeric(&x).unwrap();
    assert_eq!(arr.shape(), &[4, 5, 5]);
    assert!(
        wassdl_cli::npy::read_npy(&x).is_err(),
        "read_npy still refuses integers"
    );
    let model = dir.join("model.json");
    let fit = |normalize: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wassdl"));
        c.args(["fit", "--data"])
            .arg(&x)
            .args(["--atoms", "2", "--reg", "1", "--units", "pixel"])
            .args(["--sinkhorn-iters", "10", "--max-iters", "5", "--out"])
            .arg(&model);
        if normalize {
            c.arg("--normalize");
        }
        c.output().unwrap()
    };
    let refused = fit(false);
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("uint8"), "{msg}");
    let ok = fit(true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(saved["dims"]["m"], 4);
    std::fs::remove_dir_all(&dir).unwrap();
}
