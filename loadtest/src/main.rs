//! `trailwatch-loadtest`: parse arguments, run the command.

use clap::Parser;
use trailwatch_loadtest::cli::{self, Cli};

fn main() {
    match cli::run(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
