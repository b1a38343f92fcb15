//! Command-line front end: argument parsing, error reporting, the JSON summary.
//!
//! Each subcommand is one module with an `Args` struct (clap derive, its doc comment is
//! the `--help` text) and `run(Args, &Global) -> Result<serde_json::Value, CliError>`;
//! adding one is a new file plus one line in the `subcommands!` list below. Shared
//! pieces: [`input`] (loading `.npy` files and naming them in errors), [`geometry`]
//! (`--grid`/`--cost`, `--reg`, stopping rule, precision), [`progress`] (the progress bar
//! and the warm-started block runner), [`error`] (one-line messages), [`model`] (model
//! files and pictures for the dictionary subcommands).

mod error;
mod geometry;
mod input;
mod model;
mod progress;

use clap::{Parser, Subcommand};
use error::CliError;
use std::io::Write;
use std::process::ExitCode;

/// Declares the subcommand modules, the `Command` enum and its dispatch in one list.
macro_rules! subcommands {
    ($($(#[$doc:meta])* $variant:ident => $module:ident,)*) => {
        $(mod $module;)*

        #[derive(Subcommand)]
        enum Command {
            $($(#[$doc])* $variant($module::Args),)*
        }

        impl Command {
            fn run(self, global: &Global) -> Result<serde_json::Value, CliError> {
                match self {
                    $(Command::$variant(args) => $module::run(args, global),)*
                }
            }
        }
    };
}

// The `--help` text of each subcommand is the doc comment of its `Args`.
subcommands! {
    Sinkhorn => sinkhorn,
    Barycenter => barycenter,
    Emd => emd,
    Fit => fit,
    Transform => transform,
    Reconstruct => reconstruct,
    Unmix => unmix,
    Demo => demo,
}

/// Wasserstein dictionary learning and entropic optimal transport on NumPy files.
///
/// Inputs are `.npy` files (float32 or float64; one histogram per row, images as
/// (M, H, W)). Results are written atomically as `.npy`/`.npz`, and a JSON summary
/// (iterations, final error, timings, kernel) is printed on stdout. Errors are one line
/// on stderr, with exit code 1 (2 for unusable arguments).
#[derive(Parser)]
#[command(name = "wassdl", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// No progress bar and no warnings on stderr (the progress bar is also off when stderr
    /// is not a terminal)
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Compute in float64 even when every input file is float32 (by default the
    /// computation runs in float32 only if all input files are float32)
    #[arg(long = "f64", global = true, help_heading = "Global options")]
    pub force_f64: bool,
}

impl Global {
    /// Prints a warning on stderr unless `--quiet`.
    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("wassdl: warning: {msg}");
        }
    }
}

/// First paragraph of a clap error, on one line ("error: ..." without usage and tips).
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Entry point of the binary: exit code 0 on success, 1 for a failed run, 2 for
/// arguments that cannot be parsed.
pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "wassdl: internal error: {}{at} (this is a bug, please report it)",
            msg.replace('\n', " ")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || !e.use_stderr()
            {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            let line = one_line(&e.render().to_string());
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("wassdl: error: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    match cli.command.run(&cli.global) {
        Ok(summary) => {
            let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
            // A closed stdout (e.g. `| head`) is not a failure: the results are on disk.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wassdl: error: {}", e.0.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
