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
            if kiln::cleanup::wait_if_interrupted() {
                // The signal thread has reported and cleaned up; this error is its consequence.
                std::process::exit(130);
            }
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, skipping causes the message already quotes.
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}
