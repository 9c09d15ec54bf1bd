//! The `snapshot` command-line tool; see `snapshot --help` and [`snapshot::cli`].

fn main() -> std::process::ExitCode {
    snapshot::cli::main()
}
