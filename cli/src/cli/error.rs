//! One-line error messages that name the option, the file and what is wrong.

use wassdl::Error;

/// A message for the user, printed as `wassdl: error: <message>` with exit code 1.
#[derive(Debug)]
pub struct CliError(pub String);

/// The command-line option that sets the library parameter `arg`.
pub fn option_of(arg: &str) -> String {
    match arg {
        "gamma" => "--reg".into(),
        "tol" => "--tol".into(),
        "iterations" => "--iters".into(),
        "max_iter" => "--max-iters".into(),
        "tau" => "--tau".into(),
        "rho" => "--rho".into(),
        "grid" => "--grid".into(),
        "n_atoms" => "--atoms".into(),
        "zeta" => "--zeta".into(),
        "warm_restart" => "--warm-restart".into(),
        "lr" => "--lr".into(),
        other => format!("`{other}`"),
    }
}

/// Message for a library error that is not about an input file: a parameter out of its
/// domain, or a numerical failure (with the option that avoids it).
pub fn from_lib(e: Error, log_domain: bool) -> CliError {
    match e {
        Error::InvalidParameter {
            arg,
            requirement,
            value,
        } => CliError(format!(
            "{} = {value} is invalid: it must be {requirement}",
            option_of(arg)
        )),
        Error::Numerical {
            solver,
            iteration,
            message,
        } => {
            // The library's advice names its API; say it with the command-line options.
            let message = numpy_indices(&cli_names(&message))
                .replace("the log-domain variant (`log_domain(true)`)", "--log")
                .replace("use the log domain", "use --log")
                .replace("a larger γ", "a larger --reg");
            // --log helps only against over- and underflow of the scaling iterations.
            let hint = if log_domain || message.contains("--log") || !message.contains("flow") {
                ""
            } else {
                " (try --log)"
            };
            CliError(format!(
                "{solver} failed at iteration {iteration}: {message}{hint}"
            ))
        }
        other => CliError(other.to_string()),
    }
}

/// The library's backticked parameter names (`` `lr` ``, `` `max_iter` ``, ...) as the
/// options that set them.
pub fn cli_names(message: &str) -> String {
    let mut out = message.to_string();
    for (lib, opt) in [
        ("`max_iter`", "--max-iters"),
        ("`lr`", "--lr"),
        ("`reg`", "--reg"),
        ("`tol`", "--tol"),
    ] {
        out = out.replace(lib, opt);
    }
    out
}

/// The library's batch coordinates `at (bin, histogram)` in a solver message, as NumPy
/// indexes them in a file of one histogram per row: `at [histogram, bin]`, with the
/// words (the bin is the flat row-major index for images).
pub fn numpy_indices(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 32);
    let mut rest = message;
    while let Some(k) = rest.find("at (") {
        out.push_str(&rest[..k]);
        let tail = &rest[k + 4..];
        let parsed = tail.find(')').and_then(|end| {
            let (r, c) = tail[..end].split_once(", ")?;
            Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?, end))
        });
        match parsed {
            Some((row, col, end)) => {
                out.push_str(&format!("at [{col}, {row}] (histogram {col}, bin {row})"));
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str("at (");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Message for a library error raised while using a model (or checkpoint) file `file`
/// (`--model m.json`): every parameter comes from the file, and the advice is about
/// refitting, since these subcommands have no `--log` or `--reg`.
pub fn from_model(e: Error, file: &str) -> CliError {
    match e {
        Error::InvalidParameter {
            arg,
            requirement,
            value,
        } => CliError(format!(
            "{file}: field {} = {value} is invalid: it must be {requirement}",
            super::model::model_field(arg)
        )),
        Error::Numerical {
            solver,
            iteration,
            message,
        } => {
            let message = numpy_indices(&message)
                .replace(
                    "use the log-domain variant (`log_domain(true)`)",
                    "refit the model with --log",
                )
                .replace("use the log domain", "refit the model with --log")
                .replace("or a larger γ", "or a larger --reg");
            CliError(format!(
                "{solver} failed at iteration {iteration} with the model {file}: {message}"
            ))
        }
        other => CliError(format!("{file}: {other}")),
    }
}
