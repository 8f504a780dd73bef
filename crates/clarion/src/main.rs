//! The `clarion` command line: one binary for every role.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = clarion::cli::Cli::parse();
    match clarion::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
