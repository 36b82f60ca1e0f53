//! `trailwatch`: parse arguments, set up logging, run the command.

use clap::Parser;
use trailwatch_processor::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One clear message (with its causes), no backtrace.
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
