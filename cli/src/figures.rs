//! PNG figures for the examples: image grids, line plots and rows of 1-D histograms.
//!
//! Everything is drawn with plotters' bitmap backend. Text needs a font, and the
//! `ab_glyph` text backend has none built in, so the DejaVu Sans shipped in
//! `assets/` is embedded in the binary and registered once, on first use.
//!
//! Every function returns [`Error::Io`] naming the path when the file cannot be
//! written, and [`Error::ShapeMismatch`] / [`Error::InvalidParameter`] when its
//! arguments disagree; nothing here panics on user input.

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;
use wassdl::{Error, Result};

/// The font family name the embedded font is registered under (plotters' default).
const FAMILY: &str = "sans-serif";

/// Embedded DejaVu Sans (license in `assets/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font (DejaVu Sans, family `"sans-serif"`) with plotters exactly
/// once per process; every figure function calls it, and a plot drawn with plotters
/// directly must call it first.
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Io(
            "embedded font assets/DejaVuSans.ttf could not be parsed".into(),
        ))
    }
}

/// Wraps any plotters error into [`Error::Io`] with the path it concerns.
fn io<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Io(format!("cannot write figure {}: {e}", path.display()))
}

/// Creates the parent folder of `path` if needed, so callers can name `out/x/y.png`.
fn prepare(path: &Path) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io(path))?;
        }
    }
    Ok(())
}

/// Colours of successive curves (matplotlib's default cycle, so figures read like the paper's).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Colour of the `i`-th curve.
pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Finite `(min, max)` of `values`, or `None` if there is no finite value.
fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Widens a degenerate or tight range so plotters gets a nonempty axis with some headroom.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let d = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        (lo - d, hi + d)
    } else {
        (lo - 0.05 * span, hi + 0.05 * span)
    }
}

/// Saves `images` (each `h × w`, row-major, as the crate's grid flattening) as a grid of
/// `cols` grayscale panels with one title above each (`titles` may be shorter than
/// `images`; missing titles are left blank).
///
/// Each image is scaled to its own range: black is `0` (or the image's minimum if it has
/// negative entries, e.g. a PCA component) and white is its maximum, so atoms and data of
/// very different peak heights are all visible.
pub fn save_image_grid(
    path: impl AsRef<Path>,
    images: &[&[f64]],
    h: usize,
    w: usize,
    cols: usize,
    titles: &[&str],
) -> Result<()> {
    let path = path.as_ref();
    if images.is_empty() {
        return Err(Error::ShapeMismatch {
            arg: "images",
            expected: "at least one image".into(),
            found: "0 images".into(),
        });
    }
    if h == 0 || w == 0 || cols == 0 {
        return Err(Error::InvalidParameter {
            arg: "h, w, cols",
            requirement: "all >= 1",
            value: h.min(w).min(cols) as f64,
        });
    }
    if let Some(bad) = images.iter().find(|im| im.len() != h * w) {
        return Err(Error::ShapeMismatch {
            arg: "images",
            expected: format!("{h} x {w} = {} pixels each", h * w),
            found: format!("an image of {} pixels", bad.len()),
        });
    }
    prepare(path)?;
    // Integer upscaling to about 128 px per panel keeps pixels square and crisp.
    let scale = (128 / h.max(w)).max(1);
    let (pw, ph) = (w * scale, h * scale);
    let (pad, title_h) = (6usize, 20usize);
    let rows = images.len().div_ceil(cols);
    let cols = cols.min(images.len());
    let width = cols * (pw + pad) + pad;
    let height = rows * (ph + title_h + pad) + pad;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(io(path))?;
    let font = (FAMILY, 13).into_font().color(&BLACK);
    for (k, im) in images.iter().enumerate() {
        let (r, c) = (k / cols, k % cols);
        let x0 = (pad + c * (pw + pad)) as i32;
        let y0 = (pad + r * (ph + title_h + pad)) as i32;
        if let Some(t) = titles.get(k) {
            root.draw_text(t, &font, (x0, y0 + 2)).map_err(io(path))?;
        }
        let y0 = y0 + title_h as i32;
        let (lo, hi) = finite_range(im.iter().copied()).unwrap_or((0.0, 1.0));
        let lo = lo.min(0.0);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for i in 0..h {
            for j in 0..w {
                let v = im[i * w + j];
                let g = if v.is_finite() {
                    (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8
                } else {
                    0
                };
                let (x, y) = (x0 + (j * scale) as i32, y0 + (i * scale) as i32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + scale as i32, y + scale as i32)],
                    RGBColor(g, g, g).filled(),
                ))
                .map_err(io(path))?;
            }
        }
    }
    root.present().map_err(io(path))?;
    Ok(())
}

/// Saves a line plot of several `(name, points)` series with a legend, in the palette's
/// colours, each point also marked by a dot (L-BFGS iterations, wavelengths, ...).
/// Non-finite points are skipped.
pub fn save_line_plot(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, &[(f64, f64)])],
) -> Result<()> {
    let path = path.as_ref();
    let pts = || {
        series
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let Some((x_lo, x_hi)) = finite_range(pts().map(|p| p.0)) else {
        return Err(Error::ShapeMismatch {
            arg: "series",
            expected: "at least one finite point".into(),
            found: "none".into(),
        });
    };
    let (y_lo, y_hi) = finite_range(pts().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let (x_lo, x_hi) = padded(x_lo, x_hi);
    let (y_lo, y_hi) = padded(y_lo, y_hi);
    prepare(path)?;
    let root = BitMapBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(io(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(io(path))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(BLACK.mix(0.04))
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(io(path))?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = palette(i);
        let good: Vec<(f64, f64)> = s
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(good.iter().copied(), color.stroke_width(2)))
            .map_err(io(path))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(good.iter().map(|&p| Circle::new(p, 2, color.filled())))
            .map_err(io(path))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(io(path))?;
    root.present().map_err(io(path))?;
    Ok(())
}

/// One panel of [`save_histograms_1d`]: a title and one or more histograms on the same
/// bins, drawn on shared axes (the first as bars, the others as lines over it).
#[derive(Clone, Debug)]
pub struct HistPanel<'a> {
    /// Text above the panel.
    pub title: String,
    /// Histograms to overlay (all of the same length).
    pub curves: Vec<&'a [f64]>,
}

/// One row of [`save_histograms_1d`]: a label on its left and its panels.
#[derive(Clone, Debug)]
pub struct HistRow<'a> {
    /// Text at the left of the row (the method, e.g. `"WDL"`).
    pub label: String,
    /// Panels, left to right.
    pub panels: Vec<HistPanel<'a>>,
}

/// Saves rows of 1-D histogram panels, as in the paper's Figures 2 and 15: in each panel
/// the first curve is drawn as bars and the others as lines in the next palette colours,
/// and `legend` (one name per curve position, may be empty) is printed at the top.
/// Each panel has its own y range, including 0 and any negative entry (PCA atoms).
pub fn save_histograms_1d(
    path: impl AsRef<Path>,
    title: &str,
    legend: &[&str],
    rows: &[HistRow<'_>],
) -> Result<()> {
    let path = path.as_ref();
    let ncols = rows.iter().map(|r| r.panels.len()).max().unwrap_or(0);
    if ncols == 0 {
        return Err(Error::ShapeMismatch {
            arg: "rows",
            expected: "at least one panel".into(),
            found: "none".into(),
        });
    }
    for row in rows {
        for p in &row.panels {
            let n = p.curves.first().map_or(0, |c| c.len());
            if n == 0 || p.curves.iter().any(|c| c.len() != n) {
                return Err(Error::ShapeMismatch {
                    arg: "rows",
                    expected: "each panel: curves of one common, nonzero length".into(),
                    found: format!(
                        "panel `{}` with lengths {:?}",
                        p.title,
                        p.curves.iter().map(|c| c.len()).collect::<Vec<_>>()
                    ),
                });
            }
        }
    }
    prepare(path)?;
    let (label_w, header_h, panel_w, panel_h) = (90u32, 46u32, 190u32, 150u32);
    let width = label_w + panel_w * ncols as u32;
    let height = header_h + panel_h * rows.len() as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(io(path))?;
    root.draw_text(title, &(FAMILY, 18).into_font().color(&BLACK), (10, 6))
        .map_err(io(path))?;
    let mut lx = 10;
    for (i, name) in legend.iter().enumerate() {
        let c = palette(i);
        root.draw(&Rectangle::new([(lx, 32), (lx + 14, 42)], c.filled()))
            .map_err(io(path))?;
        root.draw_text(name, &(FAMILY, 13).into_font().color(&BLACK), (lx + 18, 30))
            .map_err(io(path))?;
        lx += 30 + 8 * name.chars().count() as i32;
    }
    let body = root.margin(header_h, 0, 0, 0);
    let lines = body.split_evenly((rows.len(), 1));
    for (row, area) in rows.iter().zip(&lines) {
        let (left, right) = area.split_horizontally(label_w);
        left.draw_text(
            &row.label,
            &(FAMILY, 15).into_font().color(&BLACK),
            (6, panel_h as i32 / 2 - 8),
        )
        .map_err(io(path))?;
        let cells = right.split_evenly((1, ncols));
        for (p, cell) in row.panels.iter().zip(&cells) {
            draw_hist_panel(cell, p).map_err(io(path))?;
        }
    }
    root.present().map_err(io(path))?;
    Ok(())
}

/// Draws one histogram panel; errors are plotters' (the caller names the path).
fn draw_hist_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &HistPanel<'_>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = p.curves[0].len();
    let (lo, hi) =
        finite_range(p.curves.iter().flat_map(|c| c.iter().copied())).unwrap_or((0.0, 1.0));
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let hi = if hi > lo {
        hi + 0.05 * (hi - lo)
    } else {
        lo + 1.0
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FAMILY, 12))
        .margin(8)
        .x_label_area_size(14)
        .y_label_area_size(0)
        .build_cartesian_2d(0.0..n as f64, lo..hi)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_y_axis()
        .x_labels(3)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FAMILY, 9))
        .draw()?;
    let bar = palette(0);
    chart.draw_series(
        p.curves[0]
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| {
                let (a, b) = if v >= 0.0 { (0.0, v) } else { (v, 0.0) };
                Rectangle::new([(i as f64, a), (i as f64 + 1.0, b)], bar.mix(0.7).filled())
            }),
    )?;
    for (k, c) in p.curves.iter().enumerate().skip(1) {
        chart.draw_series(LineSeries::new(
            c.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as f64 + 0.5, v)),
            palette(k).stroke_width(2),
        ))?;
    }
    if lo < 0.0 {
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (n as f64, 0.0)],
            BLACK.mix(0.5),
        ))?;
    }
    Ok(())
}
