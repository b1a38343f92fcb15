//! Pieces shared by the examples: command-line settings, a progress bar that is a
//! dictionary-learning [`Observer`], and the final `RESULT` line.
//!
//! Each example includes this file with `#[path = "common/mod.rs"] mod common;` (and so
//! does `tests/examples.rs` through the examples), so not every example uses every item.
#![allow(dead_code)]

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wassdl::dictionary::{Fit, IterationInfo, Observer};
use wassdl::lbfgs::Control;
use wassdl::Real;
use wassdl_cli::figures::save_line_plot;

/// Options every example accepts.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// A short run (seconds), as the tests use: same pipeline, smaller budgets.
    #[arg(long)]
    pub quick: bool,
    /// Folder for the figures (default `out/<example>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// How an example runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Short budgets (for tests).
    pub quick: bool,
    /// Where the figures go.
    pub out_dir: PathBuf,
    /// Show progress bars (only drawn when stderr is a terminal).
    pub progress: bool,
}

impl Settings {
    /// From the command line of example `name`.
    pub fn from_args(name: &str) -> Self {
        let a = Args::parse();
        Settings {
            quick: a.quick,
            out_dir: a.out.unwrap_or_else(|| Path::new("out").join(name)),
            progress: !a.quiet,
        }
    }
    /// The quick run writing into `out_dir`, without bars (for tests).
    pub fn quick(out_dir: impl Into<PathBuf>) -> Self {
        Settings {
            quick: true,
            out_dir: out_dir.into(),
            progress: false,
        }
    }
    /// `out_dir/file`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.out_dir.join(file)
    }
}

/// A progress bar over L-BFGS iterations that records every [`IterationInfo`] it sees.
pub struct Progress {
    bar: ProgressBar,
    metrics: bool,
    /// Every iteration seen, the initial point first.
    pub seen: Vec<IterationInfo>,
}

impl Progress {
    /// A bar of `len` iterations labelled `label`; `metrics` asks the learner for
    /// MSE/NMSE/PSNR at each iteration (one more pass over the data).
    pub fn new(settings: &Settings, label: &str, len: u64, metrics: bool) -> Self {
        let target = if settings.progress && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>14} {elapsed_precise} [{wide_bar}] {pos}/{len} it  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar,
            metrics,
            seen: Vec::new(),
        }
    }
    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn observe(&mut self, it: &IterationInfo) -> Control {
        self.bar.set_position(it.iteration);
        let psnr = it
            .metrics
            .as_ref()
            .map_or(String::new(), |m| format!("  PSNR {:.2} dB", m.psnr));
        self.bar.set_message(format!(
            "loss {:.4e}  |grad| {:.2e}{psnr}",
            it.loss, it.grad_norm
        ));
        self.seen.push(it.clone());
        Control::Continue
    }
    fn wants_metrics(&self) -> bool {
        self.metrics
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// `RESULT key=value ...`, values in `{:e}` with 4 significant digits (integers and
/// fractions as they are), the last line every example prints.
pub fn result_line(pairs: &[(&str, f64)]) -> String {
    let mut s = String::from("RESULT");
    for (k, v) in pairs {
        if v.fract() == 0.0 && v.abs() < 1e9 {
            s.push_str(&format!(" {k}={v}"));
        } else {
            s.push_str(&format!(" {k}={v:.4e}"));
        }
    }
    s
}

/// Runs `run` and prints its result line, or the error on stderr with exit code 1.
pub fn main_with<M>(
    name: &str,
    run: impl FnOnce(&Settings) -> wassdl::Result<M>,
    line: impl FnOnce(&M) -> String,
) -> std::process::ExitCode {
    let settings = Settings::from_args(name);
    report(name, &settings, run(&settings), line)
}

/// Prints the output folder and the result line of `result`, or its error on stderr
/// with exit code 1: how every example ends.
pub fn report<M>(
    name: &str,
    settings: &Settings,
    result: wassdl::Result<M>,
    line: impl FnOnce(&M) -> String,
) -> std::process::ExitCode {
    match result {
        Ok(m) => {
            println!("figures in {}", settings.out_dir.display());
            println!("{}", line(&m));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `wdl_loss.png` in the example's folder: the objective of a fit per L-BFGS iteration.
pub fn save_loss_curve<T: Real>(
    settings: &Settings,
    fit: &Fit<T>,
    loss_name: &str,
) -> wassdl::Result<()> {
    let loss: Vec<(f64, f64)> = fit
        .history
        .iter()
        .map(|h| (h.iteration as f64, h.loss))
        .collect();
    save_line_plot(
        settings.path("wdl_loss.png"),
        "WDL objective",
        "L-BFGS iteration",
        loss_name,
        &[("WDL", &loss)],
    )
}
