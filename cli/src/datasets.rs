//! Synthetic datasets of the paper's experiments (section 5 of `001_d18f1ae7f262ffd4.txt`).
//!
//! Every dataset is a [`Batch`] of histograms, one per column, each summing to one, on a
//! regular grid flattened row-major (the layout of [`wassdl::Grid`]). The random ones are
//! deterministic for a given seed: they draw from [`StdRng::seed_from_u64`], so a seed
//! gives the same data on every platform for this crate's `rand` version.
//!
//! * [`fig2_gaussians`] / [`gaussians_1d`]: translated discretized Gaussians (Figure 2),
//!   bit-identical to the scikit-learn reference `fig2_gaussians`.
//! * [`chromatic_psfs`]: diffraction-limited PSFs whose width grows with wavelength
//!   (section 5.1, a stand-in for the Euclid-like PSFs of the paper).
//! * [`multimodal_1d`]: the two-Gaussians-in-the-outer-thirds data of section 5.5, with
//!   [`modes_by_third`] to score reconstructions as Figure 15 does by eye.
//! * [`shapes_2d`]: disks, squares and rings under translation and scaling.
//!
//! # Real images
//!
//! The real datasets of `data/` (see its README for sources and licences) load as an
//! [`ImageSet`] of raw pixels ([`digits`], [`faces`], [`fashion_mnist`]), and
//! [`to_histograms`] is the one place that turns nonnegative images into histograms
//! (optional colour inversion, floor, normalization), also used by `wassdl fit
//! --normalize`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wassdl::validate;
use wassdl::Batch;
use wassdl::{Error, Result};

/// `num` evenly spaced points from `start` to `stop` inclusive, computed as numpy's
/// `linspace` does (`start + i * step`, the last point set to `stop` exactly), so grids
/// and centres match data made with numpy to the bit.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// Sum in numpy's order (pairwise above 128 entries, eight interleaved partial sums
/// below), so that normalizing by it reproduces numpy's `v / v.sum()` bit for bit.
fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &x| s + x)
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for chunk in a[8..full].chunks_exact(8) {
            for (ri, &x) in r.iter_mut().zip(chunk) {
                *ri += x;
            }
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            s += x;
        }
        s
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// Divides `v` by its sum; errors if the sum is not positive (an all-zero image).
fn normalize(arg: &'static str, v: &mut [f64]) -> Result<()> {
    let s = numpy_sum(v);
    validate::positive(arg, s)?;
    for x in v.iter_mut() {
        *x /= s;
    }
    Ok(())
}

/// `count >= 1`-style checks on sizes.
fn at_least(arg: &'static str, value: usize, min: usize) -> Result<()> {
    if value >= min {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            arg,
            requirement: match min {
                1 => "at least 1",
                2 => "at least 2",
                _ => "larger",
            },
            value: value as f64,
        })
    }
}

/// Discretized Gaussians on the grid `x = linspace(0, 1, n_bins)`: column `j` is
/// `exp(-(x - centers[j])² / (2 σ²))` divided by its sum (the paper's Figure 2 data).
pub fn gaussians_1d(n_bins: usize, centers: &[f64], sigma: f64) -> Result<Batch<f64>> {
    at_least("n_bins", n_bins, 1)?;
    at_least("centers.len()", centers.len(), 1)?;
    validate::positive("sigma", sigma)?;
    if let Some(j) = centers.iter().position(|c| !c.is_finite()) {
        return Err(Error::NonFinite {
            arg: "centers",
            row: j,
            col: 0,
        });
    }
    let x = linspace(0.0, 1.0, n_bins);
    let two_s2 = 2.0 * (sigma * sigma);
    let mut data = Vec::with_capacity(n_bins * centers.len());
    for &m in centers {
        let mut col: Vec<f64> = x
            .iter()
            .map(|&xi| (-((xi - m) * (xi - m)) / two_s2).exp())
            .collect();
        normalize("sigma (every bin underflowed)", &mut col)?;
        data.extend(col);
    }
    Ok(Batch::from_vec(n_bins, centers.len(), data))
}

/// The data of the paper's Figure 2: five Gaussians of σ = 0.05 centred at
/// `linspace(0.3, 0.7, 5)` on 100 bins of `[0, 1]` (the reference case `fig2_gaussians`).
pub fn fig2_gaussians() -> Batch<f64> {
    gaussians_1d(100, &linspace(0.3, 0.7, 5), 0.05)
        .expect("fixed, valid parameters: 100 bins, five finite centres, sigma 0.05")
}

/// Bessel function of the first kind of order one, `J₁(x)`.
///
/// For `|x| < 12` its power series `Σ (-1)^k (x/2)^{2k+1} / (k! (k+1)!)`; the largest
/// term there is below 4·10³, so cancellation costs at most ~1e-12 absolute. Beyond,
/// Hankel's asymptotic expansion `√(2/(πx)) (P cos ω - Q sin ω)`, `ω = x - 3π/4`, summed
/// until its terms stop decreasing (optimal truncation: the error is about the smallest
/// term, ~1e-10 at `x = 12` and falling like `e^{-2x}`). `J₁` is odd.
pub fn bessel_j1(x: f64) -> f64 {
    if x < 0.0 {
        return -bessel_j1(-x);
    }
    if !x.is_finite() {
        return if x.is_nan() { f64::NAN } else { 0.0 };
    }
    if x < 12.0 {
        let h = 0.5 * x;
        let h2 = h * h;
        let mut term = h;
        let mut sum = h;
        let mut k = 0.0;
        loop {
            k += 1.0;
            term *= -h2 / (k * (k + 1.0));
            sum += term;
            if term.abs() <= f64::EPSILON * 1e-3 * sum.abs().max(f64::MIN_POSITIVE) {
                return sum;
            }
        }
    }
    // a_k(ν = 1) / x^k = Π_{i ≤ k} (4 - (2i-1)²) / (8 i x); P takes the even k, Q the odd.
    let (mut p, mut q) = (1.0, 0.0);
    let mut t: f64 = 1.0;
    for k in 1..200 {
        let kf = k as f64;
        let next = t * (4.0 - (2.0 * kf - 1.0).powi(2)) / (8.0 * kf * x);
        if next.abs() >= t.abs() || next == 0.0 {
            break;
        }
        t = next;
        // sign pattern: P = t0 - t2 + t4 ..., Q = t1 - t3 + t5 ...
        let sign = if (k / 2) % 2 == 0 { 1.0 } else { -1.0 };
        if k % 2 == 0 {
            p += sign * t;
        } else {
            q += sign * t;
        }
    }
    let w = x - 0.75 * std::f64::consts::PI;
    (2.0 / (std::f64::consts::PI * x)).sqrt() * (p * w.cos() - q * w.sin())
}

/// `(2 J₁(x) / x)²`, the Airy intensity profile, equal to 1 at `x = 0`.
pub fn airy_intensity(x: f64) -> f64 {
    let x = x.abs();
    if x < 1e-8 {
        // 2 J₁(x)/x = 1 - x²/8 + ..., already 1 to double precision here.
        return 1.0;
    }
    let a = 2.0 * bessel_j1(x) / x;
    a * a
}

/// `λ/D` in pixels at 700 nm for [`airy_psf`]. Euclid's VIS imager (1.2 m aperture,
/// 0.1″ pixels) has `λ/D ≈ 1.2` px at 700 nm; the PSFs are drawn three times
/// oversampled, as PSF models are, so that the rings are resolved on a 40×40 grid.
pub const PSF_LAMBDA_OVER_D_PX_AT_700NM: f64 = 3.6;

/// Sub-pixel samples per axis used to integrate the Airy pattern over each pixel.
const PSF_SUBSAMPLES: usize = 5;

/// A diffraction-limited PSF at `wavelength_nm` on an `n × n` grid (row-major),
/// summing to one.
///
/// The model: the Fraunhofer pattern of a clear circular aperture (an Airy pattern),
/// `I(r) = (2 J₁(π r / s) / (π r / s))²` with `r` the distance in pixels to the image
/// centre `((n-1)/2, (n-1)/2)` and `s = λ/D` in pixels, proportional to the wavelength:
/// `s = 3.6 · λ / 700 nm` ([`PSF_LAMBDA_OVER_D_PX_AT_700NM`]). The first dark ring is at
/// `r = 1.22 s`, i.e. 3.5 px at 550 nm and 5.6 px at 900 nm. Each pixel value is the mean
/// of `I` over a 5 × 5 sub-pixel grid (pixel integration). No central obscuration,
/// aberration, jitter or noise: the chromatic change is a pure dilation, which is the
/// geometric effect section 5.1 learns as displacement interpolation.
pub fn airy_psf(n: usize, wavelength_nm: f64) -> Result<Vec<f64>> {
    at_least("n", n, 1)?;
    validate::positive("wavelength_nm", wavelength_nm)?;
    let s = PSF_LAMBDA_OVER_D_PX_AT_700NM * wavelength_nm / 700.0;
    let c = (n as f64 - 1.0) / 2.0;
    let ss = PSF_SUBSAMPLES;
    let k = std::f64::consts::PI / s;
    let mut img = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let mut acc = 0.0;
            for a in 0..ss {
                let y = i as f64 - 0.5 + (a as f64 + 0.5) / ss as f64 - c;
                for b in 0..ss {
                    let x = j as f64 - 0.5 + (b as f64 + 0.5) / ss as f64 - c;
                    acc += airy_intensity(k * (x * x + y * y).sqrt());
                }
            }
            img[i * n + j] = acc;
        }
    }
    normalize("wavelength_nm (PSF vanished)", &mut img)?;
    Ok(img)
}

/// Chromatic PSFs and the wavelength of each.
#[derive(Clone, Debug)]
pub struct Psfs {
    /// One `n × n` PSF per column (`n²` rows), each summing to one.
    pub images: Batch<f64>,
    /// Wavelength of each column, in nm.
    pub wavelengths_nm: Vec<f64>,
    /// Side of the images.
    pub n: usize,
}

/// Shortest wavelength of [`chromatic_psfs`], nm (Figure 5).
pub const PSF_MIN_NM: f64 = 550.0;
/// Longest wavelength of [`chromatic_psfs`], nm (Figure 5).
pub const PSF_MAX_NM: f64 = 900.0;

impl Psfs {
    /// `(λ - 550) / (900 - 550)`: the wavelength projected into `[0, 1]`, with which
    /// section 5.1 initializes the weights (atom 0 ↔ 550 nm weighted `1 - t`).
    pub fn wavelength_fraction(&self) -> Vec<f64> {
        self.wavelengths_nm
            .iter()
            .map(|l| (l - PSF_MIN_NM) / (PSF_MAX_NM - PSF_MIN_NM))
            .collect()
    }
}

/// `count` PSFs from [`airy_psf`] at wavelengths `linspace(550, 900, count)` nm on an
/// `n × n` grid: the Euclid-like chromatic dataset of section 5.1 (the paper uses
/// `n = 40`).
pub fn chromatic_psfs(n: usize, count: usize) -> Result<Psfs> {
    at_least("count", count, 1)?;
    let wavelengths_nm = linspace(PSF_MIN_NM, PSF_MAX_NM, count);
    let mut data = Vec::with_capacity(n * n * count);
    for &l in &wavelengths_nm {
        data.extend(airy_psf(n, l)?);
    }
    Ok(Psfs {
        images: Batch::from_vec(n * n, count, data),
        wavelengths_nm,
        n,
    })
}

/// Settings of [`multimodal_1d`]. The paper gives none of these numbers; the defaults
/// make modes a few kernel widths wide at its γ = 7 (pixel units, `√(γ/2) ≈ 1.9` px).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultimodalConfig {
    /// Bins of the grid, a multiple of 3 (default 90).
    pub n_bins: usize,
    /// Standard deviation of both Gaussians, in bins (default 2).
    pub sigma: f64,
    /// Each Gaussian is cut to zero beyond `truncation · σ` from its mean (default 3).
    pub truncation: f64,
}

impl Default for MultimodalConfig {
    fn default() -> Self {
        MultimodalConfig {
            n_bins: 90,
            sigma: 2.0,
            truncation: 3.0,
        }
    }
}

/// The multimodal dataset and how it was drawn.
#[derive(Clone, Debug)]
pub struct Multimodal {
    /// One histogram per column (`n_bins` rows), each summing to one.
    pub data: Batch<f64>,
    /// The two means drawn for each column, in bins.
    pub means: Vec<[usize; 2]>,
    /// The settings used.
    pub config: MultimodalConfig,
}

/// The data of section 5.5: a 1-D grid split into three equal parts whose centre is left
/// empty; each of the `count` histograms is the normalized sum of two discretized
/// Gaussians of the same σ, truncated at `truncation · σ`, whose means are drawn
/// independently and uniformly from every other position (stride 2) of the outer thirds
/// at which the truncated Gaussian stays inside its third. Drawing the same mean twice
/// gives one mode; two means in one third give one or two modes; one mean in each third
/// gives one mode on each side. Deterministic for a given `seed`.
pub fn multimodal_1d(seed: u64, count: usize, config: &MultimodalConfig) -> Result<Multimodal> {
    at_least("count", count, 1)?;
    let MultimodalConfig {
        n_bins,
        sigma,
        truncation,
    } = *config;
    if n_bins == 0 || n_bins % 3 != 0 {
        return Err(Error::InvalidParameter {
            arg: "n_bins",
            requirement: "a positive multiple of 3",
            value: n_bins as f64,
        });
    }
    validate::positive("sigma", sigma)?;
    validate::positive("truncation", truncation)?;
    let third = n_bins / 3;
    let half = (truncation * sigma).floor() as usize;
    if 2 * half + 1 > third {
        return Err(Error::InvalidParameter {
            arg: "sigma",
            requirement: "small enough that 2 ⌊truncation·σ⌋ + 1 bins fit in a third of the grid",
            value: sigma,
        });
    }
    let left: Vec<usize> = (half..third - half).step_by(2).collect();
    let positions: Vec<usize> = left
        .iter()
        .copied()
        .chain(left.iter().map(|&m| m + 2 * third))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n_bins * count);
    let mut means = Vec::with_capacity(count);
    for _ in 0..count {
        let pair = [
            positions[rng.random_range(0..positions.len())],
            positions[rng.random_range(0..positions.len())],
        ];
        let mut col = vec![0.0; n_bins];
        for &m in &pair {
            for (i, v) in col.iter_mut().enumerate().take(m + half + 1).skip(m - half) {
                let d = i as f64 - m as f64;
                *v += (-d * d / (2.0 * sigma * sigma)).exp();
            }
        }
        normalize("sigma", &mut col)?;
        data.extend(col);
        means.push(pair);
    }
    Ok(Multimodal {
        data: Batch::from_vec(n_bins, count, data),
        means,
        config: *config,
    })
}

/// Which third (0, 1, 2) of a grid of `n` bins bin `i` falls in.
pub fn third_of(i: usize, n: usize) -> usize {
    (3 * i / n.max(1)).min(2)
}

/// Number of modes of a 1-D histogram in each third of its grid, as the paper reads
/// Figure 15.
///
/// A mode is a local maximum whose topographic prominence (its height above the higher
/// of the two minima separating it from a higher point, or from the grid's ends) is at
/// least `rel · max(hist)`. With `rel = 0.1`, the shallow ripple an entropic barycenter
/// leaves between two close bumps is not a mode, and a spurious bump of a tenth of the
/// main peak is. A plateau counts once, at its first bin.
pub fn modes_by_third(hist: &[f64], rel: f64) -> [usize; 3] {
    let n = hist.len();
    let mut counts = [0usize; 3];
    let top = hist.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if n == 0 || top.is_nan() || top <= 0.0 {
        return counts;
    }
    let min_prominence = rel * top;
    let mut i = 0;
    while i < n {
        // extent of the plateau starting at i
        let mut j = i;
        while j + 1 < n && hist[j + 1] == hist[i] {
            j += 1;
        }
        let h = hist[i];
        let rises_left = i > 0 && hist[i - 1] > h;
        let rises_right = j + 1 < n && hist[j + 1] > h;
        if !rises_left && !rises_right && h > 0.0 {
            // walk each way to the first strictly higher point, tracking the lowest bin
            let mut left_min = h;
            let mut k = i;
            let mut left_bounded = false;
            while k > 0 {
                k -= 1;
                if hist[k] > h {
                    left_bounded = true;
                    break;
                }
                left_min = left_min.min(hist[k]);
            }
            let mut right_min = h;
            let mut k = j;
            let mut right_bounded = false;
            while k + 1 < n {
                k += 1;
                if hist[k] > h {
                    right_bounded = true;
                    break;
                }
                right_min = right_min.min(hist[k]);
            }
            // the key col: the higher of the two saddles towards higher ground
            // (an unbounded side reaches the grid end, where the floor is its minimum)
            let base = match (left_bounded, right_bounded) {
                (true, true) => left_min.max(right_min),
                (true, false) => left_min,
                (false, true) => right_min,
                (false, false) => left_min.min(right_min),
            };
            if h - base >= min_prominence {
                counts[third_of(i, n)] += 1;
            }
        }
        i = j + 1;
    }
    counts
}

/// The kind of a shape of [`shapes_2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShapeKind {
    /// A filled disk.
    Disk,
    /// A filled, axis-aligned square.
    Square,
    /// An annulus whose inner radius is 60% of its outer one.
    Ring,
}

/// A dataset of 2-D shapes.
#[derive(Clone, Debug)]
pub struct Shapes {
    /// One `n × n` image per column (`n²` rows, row-major), each summing to one.
    pub images: Batch<f64>,
    /// The kind of each image.
    pub kinds: Vec<ShapeKind>,
    /// Side of the images.
    pub n: usize,
}

/// Sub-pixel samples per axis for the anti-aliased shapes.
const SHAPE_SUBSAMPLES: usize = 4;

/// `count` images of `n × n` (`n >= 8`), each one uniform shape, a disk, a square or a
/// ring picked at random, with a random size (outer radius, or half side, between 12%
/// and 28% of `n`) and a random centre keeping it one pixel inside the image, rendered
/// with 4 × 4 sub-pixel anti-aliasing and normalized to sum one. Deterministic for a
/// given `seed`.
pub fn shapes_2d(seed: u64, n: usize, count: usize) -> Result<Shapes> {
    shapes_2d_of(
        seed,
        n,
        count,
        &[ShapeKind::Disk, ShapeKind::Square, ShapeKind::Ring],
    )
}

/// [`shapes_2d`] with the kind of each image drawn from `kinds` only (e.g. disks alone:
/// a family that Wasserstein barycenters of a few disks describe, since translating and
/// scaling are displacement interpolations).
pub fn shapes_2d_of(seed: u64, n: usize, count: usize, kinds: &[ShapeKind]) -> Result<Shapes> {
    at_least("count", count, 1)?;
    at_least("kinds.len()", kinds.len(), 1)?;
    if n < 8 {
        return Err(Error::InvalidParameter {
            arg: "n",
            requirement: "at least 8 pixels, so that a shape covers several pixels",
            value: n as f64,
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let nf = n as f64;
    let mut data = Vec::with_capacity(n * n * count);
    let mut drawn = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let r = rng.random_range(0.12 * nf..0.28 * nf);
        let cy = rng.random_range(r + 1.0..nf - 1.0 - r);
        let cx = rng.random_range(r + 1.0..nf - 1.0 - r);
        let inside = |x: f64, y: f64| -> bool {
            let (dx, dy) = (x - cx, y - cy);
            match kind {
                ShapeKind::Disk => dx * dx + dy * dy <= r * r,
                ShapeKind::Square => dx.abs() <= r && dy.abs() <= r,
                ShapeKind::Ring => {
                    let d2 = dx * dx + dy * dy;
                    d2 <= r * r && d2 >= (0.6 * r) * (0.6 * r)
                }
            }
        };
        let ss = SHAPE_SUBSAMPLES;
        let mut img = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut hits = 0usize;
                for a in 0..ss {
                    let y = i as f64 + (a as f64 + 0.5) / ss as f64;
                    for b in 0..ss {
                        let x = j as f64 + (b as f64 + 0.5) / ss as f64;
                        hits += usize::from(inside(x, y));
                    }
                }
                img[i * n + j] = hits as f64;
            }
        }
        normalize("n (shape missed every pixel)", &mut img)?;
        data.extend(img);
        drawn.push(kind);
    }
    Ok(Shapes {
        images: Batch::from_vec(n * n, count, data),
        kinds: drawn,
        n,
    })
}

// ---------------------------------------------------------------------------------------
// Real images (data/)

/// The folder holding the real datasets: `$WASSDL_DATA_DIR` if set, else the repository's
/// `data/` (next to this crate, found through `CARGO_MANIFEST_DIR` at build time).
pub fn data_dir() -> std::path::PathBuf {
    match std::env::var_os("WASSDL_DATA_DIR") {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"),
    }
}

/// Images of one size with their labels, as raw pixel values (not histograms).
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// `N × M`, one image per column, flattened row-major (`N = height · width`).
    pub images: Batch<f64>,
    /// Class of each image, if the dataset has classes.
    pub labels: Option<Vec<usize>>,
    /// Image height (rows).
    pub height: usize,
    /// Image width (columns).
    pub width: usize,
    /// Largest value the pixel format allows (16 for digits, 1 for faces, 255 for
    /// Fashion-MNIST): the reference for [`HistogramOptions::invert`].
    pub peak: f64,
}

impl ImageSet {
    /// The first `count` images of class `class` (every class if `None`), in file order.
    /// Errors if fewer exist or the set has no labels while a class is asked for.
    pub fn select(&self, class: Option<usize>, count: usize) -> Result<ImageSet> {
        let idx: Vec<usize> = match (class, &self.labels) {
            (None, _) => (0..self.images.cols()).collect(),
            (Some(c), Some(l)) => (0..l.len()).filter(|&j| l[j] == c).collect(),
            (Some(_), None) => {
                return Err(Error::InvalidParameter {
                    arg: "class",
                    requirement: "None: this dataset has no labels",
                    value: f64::NAN,
                })
            }
        };
        if idx.len() < count || count == 0 {
            return Err(Error::InvalidParameter {
                arg: "count",
                requirement: "between 1 and the number of images of the class",
                value: count as f64,
            });
        }
        let idx = &idx[..count];
        let n = self.images.rows();
        Ok(ImageSet {
            images: Batch::from_fn(n, count, |i, j| self.images.get(i, idx[j])),
            labels: self
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&j| l[j]).collect()),
            height: self.height,
            width: self.width,
            peak: self.peak,
        })
    }
    /// [`to_histograms`] of the images.
    pub fn histograms(&self, opts: &HistogramOptions) -> Result<Batch<f64>> {
        to_histograms(&self.images, opts)
    }
}

/// How [`to_histograms`] turns images into histograms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramOptions {
    /// Added to every pixel (in the images' own units, after inversion) before
    /// normalizing: a floor that makes every bin positive, which the KL loss and a
    /// softmax-parametrized atom need. 0 keeps zeros.
    pub floor: f64,
    /// `Some(peak)`: use `peak − x` instead of `x` (dark objects on a bright background
    /// become mass: "inverted colours" in section 5.3). Every pixel must be `≤ peak`.
    pub invert: Option<f64>,
}

impl Default for HistogramOptions {
    /// No floor, no inversion: plain normalization.
    fn default() -> Self {
        HistogramOptions {
            floor: 0.0,
            invert: None,
        }
    }
}

/// Turns each column of `images` (nonnegative pixels, `N × M`) into a histogram:
/// `x ← peak − x` if [`HistogramOptions::invert`], then `x ← x + floor`, then
/// `x ← x / Σx`. Errors on a non-finite or negative pixel (after inversion, a pixel
/// above `peak`) or an image whose sum is zero.
pub fn to_histograms(images: &Batch<f64>, opts: &HistogramOptions) -> Result<Batch<f64>> {
    if !(opts.floor.is_finite() && opts.floor >= 0.0) {
        return Err(Error::InvalidParameter {
            arg: "floor",
            requirement: "finite and >= 0",
            value: opts.floor,
        });
    }
    if let Some(p) = opts.invert {
        if !p.is_finite() {
            return Err(Error::InvalidParameter {
                arg: "invert",
                requirement: "a finite peak",
                value: p,
            });
        }
    }
    if let Some((row, col)) = images.first_non_finite() {
        return Err(Error::NonFinite {
            arg: "images",
            row,
            col,
        });
    }
    let (n, m) = images.shape();
    let mut out = Batch::from_fn(n, m, |i, j| {
        let v = images.get(i, j);
        opts.invert.map_or(v, |p| p - v) + opts.floor
    });
    validate::nonnegative("images", &out)?;
    for j in 0..m {
        normalize("images (an image sums to zero)", out.col_mut(j))?;
    }
    Ok(out)
}

/// Reads `data_dir()/images` (`(M, H, W)`, any integer or float dtype) and, if given,
/// `data_dir()/labels` (`(M,)` nonnegative integers).
pub fn load_images(images: &str, labels: Option<&str>, peak: f64) -> Result<ImageSet> {
    let dir = data_dir();
    let arr = crate::npy::read_npy_numeric(dir.join(images))?;
    let [m, h, w] = *arr.shape() else {
        return Err(Error::ShapeMismatch {
            arg: "images",
            expected: "(M, H, W)".into(),
            found: format!("{:?}", arr.shape()),
        });
    };
    let images_b = arr.into_batch::<f64>();
    let labels = match labels {
        None => None,
        Some(f) => {
            let l = crate::npy::read_npy_numeric(dir.join(f))?;
            if l.shape() != [m] {
                return Err(Error::ShapeMismatch {
                    arg: "labels",
                    expected: format!("({m},)"),
                    found: format!("{:?}", l.shape()),
                });
            }
            let v = l.into_vec::<f64>();
            if let Some(k) = v.iter().position(|&x| !(x >= 0.0 && x.fract() == 0.0)) {
                return Err(Error::InvalidParameter {
                    arg: "labels",
                    requirement: "nonnegative integers",
                    value: v[k],
                });
            }
            Some(v.iter().map(|&x| x as usize).collect())
        }
    };
    Ok(ImageSet {
        images: images_b,
        labels,
        height: h,
        width: w,
        peak,
    })
}

/// scikit-learn's digits: 1797 images of 8 × 8, values 0-16, labels 0-9.
pub fn digits() -> Result<ImageSet> {
    load_images("digits_images.npy", Some("digits_labels.npy"), 16.0)
}

/// 100 LFW face crops of 25 × 25, values in [0, 1], no labels.
pub fn faces() -> Result<ImageSet> {
    load_images("lfw_faces.npy", None, 1.0)
}

/// 2000 Fashion-MNIST images of 28 × 28 (uint8, 0-255), 200 per class, labels 0-9
/// (0 T-shirt, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker,
/// 8 bag, 9 ankle boot).
pub fn fashion_mnist() -> Result<ImageSet> {
    load_images(
        "fashion_mnist_2000.npy",
        Some("fashion_mnist_2000_labels.npy"),
        255.0,
    )
}
