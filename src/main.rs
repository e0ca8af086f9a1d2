//! The `kiln` binary: parses arguments, sets up logging and Ctrl-C cleanup, and calls the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    cli::install_interrupt_cleanup();
    let result = cli::run(args);
    if kiln::cleanup::interrupted() {
        // The signal thread is cleaning up and exits with 130; let it.
        loop {
            std::thread::park();
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
