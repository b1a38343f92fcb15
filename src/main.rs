//! The `wassdl` command line (see `docs/cli.md`).

fn main() {
    eprintln!("wassdl: the command line is being written; see docs/cli.md");
    std::process::exit(2);
}
