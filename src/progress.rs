//! A one-line progress display on stderr for long one-shot operations
//! (OPML import, backup, a full `poll`).
//!
//! It draws only when stderr is a terminal, and then at most ten times a
//! second and not at all during the first moments, so a quick operation
//! prints nothing extra. Off a terminal (pipes, journald, CI, tests) it is
//! silent: scripts read stdout and logs stay clean. The line is erased when
//! the operation ends, so the verb's own summary follows on a clean line.
//! Hand-rolled rather than `indicatif`: one counter and a `\r` line need no
//! dependency.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Nothing is drawn for operations shorter than this.
const QUIET_START: Duration = Duration::from_millis(200);
/// At most one redraw per this interval.
const REDRAW: Duration = Duration::from_millis(100);

pub struct Progress {
    label: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    /// Where to draw; `None` when stderr is not a terminal.
    out: Option<Box<dyn Write + Send>>,
}

impl Progress {
    /// A progress line on stderr, if stderr is a terminal.
    pub fn stderr(label: &str, unit: &'static str, total: Option<u64>) -> Progress {
        let out: Option<Box<dyn Write + Send>> = if std::io::stderr().is_terminal() {
            Some(Box::new(std::io::stderr()))
        } else {
            None
        };
        Progress::with_output(label, unit, total, out)
    }

    /// A progress line drawn into `out` (tests), or nowhere.
    pub fn with_output(
        label: &str,
        unit: &'static str,
        total: Option<u64>,
        out: Option<Box<dyn Write + Send>>,
    ) -> Progress {
        Progress {
            label: label.to_owned(),
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            out,
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        self.draw(false);
    }

    pub fn inc(&mut self, n: u64) {
        self.set(self.done.saturating_add(n));
    }

    /// The line as drawn (without the carriage return and erase codes).
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        match self.total {
            Some(total) if total > 0 => {
                let pct = (self.done.min(total) * 100) / total;
                format!(
                    "{}: {}/{} {} ({pct}%) {secs:.1} s",
                    self.label, self.done, total, self.unit
                )
            }
            _ => format!("{}: {} {} {secs:.1} s", self.label, self.done, self.unit),
        }
    }

    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && (now.duration_since(self.started) < QUIET_START
                || self
                    .last_draw
                    .is_some_and(|t| now.duration_since(t) < REDRAW))
        {
            return;
        }
        let line = self.line();
        if let Some(out) = self.out.as_mut() {
            let _ = write!(out, "\r\x1b[K{line}");
            let _ = out.flush();
            self.last_draw = Some(now);
        }
    }

    /// Erases the line (if one was drawn).
    pub fn finish(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        if self.last_draw.take().is_some()
            && let Some(out) = self.out.as_mut()
        {
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn draws_after_a_quiet_start_and_erases_at_the_end() {
        let sink = Sink::default();
        let mut p =
            Progress::with_output("import", "feeds", Some(200), Some(Box::new(sink.clone())));
        p.set(1);
        assert!(sink.0.lock().expect("sink").is_empty(), "quiet at first");
        std::thread::sleep(QUIET_START + Duration::from_millis(20));
        p.set(50);
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf8");
        assert!(
            text.starts_with("\r\x1b[Kimport: 50/200 feeds (25%)"),
            "{text:?}"
        );
        p.finish();
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf8");
        assert!(text.ends_with("\r\x1b[K"), "{text:?}");
    }

    #[test]
    fn without_a_terminal_nothing_is_written() {
        let mut p = Progress::with_output("backup", "pages", None, None);
        std::thread::sleep(QUIET_START + Duration::from_millis(20));
        p.inc(3);
        assert_eq!(
            p.line()
                .split(" s")
                .next()
                .map(|s| s.starts_with("backup: 3 pages")),
            Some(true)
        );
        p.finish();
    }
}
