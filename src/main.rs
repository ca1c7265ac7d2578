//! The `tributary` binary: parses arguments, loads the config, sets up
//! logging and the runtime, runs the verb, and turns errors into a message
//! and an exit status. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use tributary::cli::{Cli, Command};
use tributary::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config_path();
    // `extract` works on saved files alone: without a config file it runs
    // on the defaults rather than failing.
    let needs_file = !matches!(cli.command, Command::Extract(_));
    let config = match Config::load(&path) {
        Err(_) if !needs_file && !path.exists() => Config::default_for(None),
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tributary::logging::init(&config, cli.is_daemon());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tributary::cli::execute(&cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
