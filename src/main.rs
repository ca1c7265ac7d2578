//! The `tributary` binary: parses arguments, loads the config, sets up
//! logging and the runtime, runs the verb, and turns errors into a message
//! and an exit status. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use tributary::cli::{Cli, Command};
use tributary::config::{Config, LogFormat};

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
    init_logging(&config, cli.is_daemon());
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

/// `RUST_LOG` wins over `[log] level`. One-shot verbs log warnings only by
/// default: their summary goes to stdout. Under journald the timestamp is
/// left out, since the journal adds its own.
fn init_logging(config: &Config, daemon: bool) {
    let default = if daemon {
        config.log.level.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match (&config.log.format, journald) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}
