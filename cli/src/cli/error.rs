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
            let message = message
                .replace("the log-domain variant (`log_domain(true)`)", "--log")
                .replace("use the log domain", "use --log")
                .replace("a larger γ", "a larger --reg");
            let hint = if log_domain || message.contains("--log") {
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
