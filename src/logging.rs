//! Logging set-up: human-readable lines by default, JSON with
//! `[log] format = "json"`, always on stderr.
//!
//! Colours only when stderr is a terminal. Under journald (stderr *is* the
//! journal stream named by `JOURNAL_STREAM`), lines carry no timestamp,
//! since the journal adds its own, and a `<N>` syslog priority prefix that journald turns
//! into the entry's priority (so `journalctl -p warning` works). The level
//! filter can be changed while the daemon runs ([`set_level`], used by a
//! config reload) unless `RUST_LOG` set it.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, prelude::*, reload};

use crate::config::{Config, LogFormat};

/// The daemon's level filter; unset for one-shot verbs and when `RUST_LOG`
/// decides.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` wins over `[log] level`.
/// One-shot verbs log warnings only by default: their summary goes to stdout.
pub fn init(config: &Config, daemon: bool) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let default = if daemon {
        config.log.level.as_str()
    } else {
        "warn"
    };
    let filter = from_env
        .or_else(|| EnvFilter::try_new(default).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal();
    // Colours only for a person at a terminal, never in files or pipes.
    let base = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match (config.log.format, journal) {
        (LogFormat::Json, false) => base.json().boxed(),
        (LogFormat::Json, true) => base
            .with_ansi(false)
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .json()
                    .without_time()
                    .with_target(false),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed(),
        (LogFormat::Text, false) => base.boxed(),
        (LogFormat::Text, true) => base
            .with_ansi(false)
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    if installed && daemon && !overridden {
        let _ = LEVEL.set(handle);
    }
}

/// Replaces the level filter. `Ok(false)` when it is not ours to change
/// (`RUST_LOG` set it, or this is not the daemon).
pub fn set_level(directives: &str) -> Result<bool, String> {
    let Some(handle) = LEVEL.get() else {
        return Ok(false);
    };
    let filter = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?}: {e}"))?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` names the
/// stream's device and inode, and it is inherited by children whose stderr
/// goes elsewhere, so the two are compared rather than trusting the variable.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream
        .to_str()
        .and_then(|s| s.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug),
/// which journald strips and records as the entry's priority.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
