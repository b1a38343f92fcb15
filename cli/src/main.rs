//! The `wassdl` command line: NumPy files in, NumPy files and a JSON summary out.
//! See `docs/cli.md`; the subcommands live in `src/cli/`, one file each.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
