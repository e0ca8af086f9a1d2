//! The `kiln` binary: parses arguments, sets up logging and Ctrl-C cleanup, and calls the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    cli::install_interrupt_cleanup();
    let result = cli::run(args);
    park_if_interrupted();
    match result {
        Ok(code) => code,
        Err(e) => {
            // An error may be the interruption's consequence (its files vanished): check again.
            park_if_interrupted();
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// While the signal thread cleans up it owns the exit (code 130); the main thread must not
/// race it with an exit code or an error of its own.
fn park_if_interrupted() {
    if kiln::cleanup::interrupted() {
        loop {
            std::thread::park();
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
