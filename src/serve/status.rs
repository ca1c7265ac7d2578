//! The status page (`/status`): what `tributary status` prints, as HTML in
//! the river page's look, with a small chart per feed of the last
//! [`CHART_DAYS`] days — polls (fetched, 304, errors) and new entries — as
//! inline SVG, so it needs no JavaScript.
//!
//! The chart geometry is computed here in plain Rust ([`chart`]), so the
//! template only places numbers, and the arithmetic is unit-tested.

use std::collections::HashMap;

use askama::Template;
use chrono::{DateTime, Utc};

use super::ServeSettings;
use crate::config::format_bytes;
use crate::model::{FEED_STATES, Feed};
use crate::store::{FeedDay, StatusSnapshot};

/// Days shown per chart, today included.
pub const CHART_DAYS: i64 = 14;

/// Chart geometry, in SVG user units.
const BAR_STEP: u32 = 10;
const BAR_WIDTH: u32 = 8;
const POLLS_HEIGHT: u32 = 28;
const NEW_TOP: u32 = 31;
const NEW_HEIGHT: u32 = 11;
pub const CHART_WIDTH: u32 = BAR_STEP * CHART_DAYS as u32;
pub const CHART_HEIGHT: u32 = NEW_TOP + NEW_HEIGHT;

/// The outputs an operator can subscribe to or open: the merged feed, the
/// river page, each named output and this page, as (label, URL).
pub fn output_urls(s: &ServeSettings) -> Vec<(String, String)> {
    let mut urls = vec![
        (
            "merged feed; also .rss, .json".to_owned(),
            format!("{}/feed.atom", s.base_url),
        ),
        ("river page".to_owned(), format!("{}/", s.base_url)),
    ];
    for o in &s.outputs {
        urls.push((
            format!("output {}; also .rss, .json", o.name),
            format!("{}/o/{}.atom", s.base_url, o.name),
        ));
    }
    urls.push(("status page".to_owned(), format!("{}/status", s.base_url)));
    urls
}

/// One day's bars: polls stacked (fetched at the bottom, then 304s, then
/// errors on top) above a separate bar of new entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub x: u32,
    /// "2026-05-01: 24 polls (20 not modified, 1 error), 3 new entries".
    pub label: String,
    pub fetched: Span,
    pub not_modified: Span,
    pub errors: Span,
    pub new_entries: Span,
}

/// A vertical extent; `h == 0` draws nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub y: u32,
    pub h: u32,
}

/// `n` of `max` as a height out of `full`, at least 1 when `n > 0` so a
/// single error on a busy day still shows.
fn scale(n: u32, max: u32, full: u32) -> u32 {
    if n == 0 || max == 0 {
        return 0;
    }
    ((u64::from(n) * u64::from(full) + u64::from(max) / 2) / u64::from(max))
        .clamp(1, u64::from(full)) as u32
}

/// The bars for the [`CHART_DAYS`] days ending on `today` (days since
/// 1970-01-01), oldest left. Heights are scaled to the feed's own busiest
/// day, so a quiet feed's chart is as readable as a busy one's.
pub fn chart(days: &[FeedDay], today: i64) -> Vec<Bar> {
    let first = today - CHART_DAYS + 1;
    let by_day: HashMap<i64, &FeedDay> = days
        .iter()
        .filter(|d| (first..=today).contains(&d.day))
        .map(|d| (d.day, d))
        .collect();
    let max_polls = by_day.values().map(|d| d.polls).max().unwrap_or(0);
    let max_new = by_day.values().map(|d| d.new_entries).max().unwrap_or(0);
    (0..CHART_DAYS)
        .map(|i| {
            let day = first + i;
            let d = by_day.get(&day).copied().copied().unwrap_or(FeedDay {
                day,
                ..FeedDay::default()
            });
            let fetched = d.polls.saturating_sub(d.not_modified + d.errors);
            // Stack from the baseline up; the total is scaled once and
            // the parts share it, so rounding never overflows the area.
            let total = scale(d.polls, max_polls, POLLS_HEIGHT);
            let h_err = scale(d.errors, d.polls, total);
            let h_nm = scale(d.not_modified, d.polls, total).min(total - h_err);
            let h_ok = if fetched > 0 { total - h_err - h_nm } else { 0 };
            let base = POLLS_HEIGHT;
            let ok = Span {
                y: base - h_ok,
                h: h_ok,
            };
            let nm = Span {
                y: ok.y - h_nm,
                h: h_nm,
            };
            let err = Span {
                y: nm.y - h_err,
                h: h_err,
            };
            let h_new = scale(d.new_entries, max_new, NEW_HEIGHT);
            let date = DateTime::from_timestamp(day * 86_400, 0)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            Bar {
                x: i as u32 * BAR_STEP + (BAR_STEP - BAR_WIDTH) / 2,
                label: format!(
                    "{date}: {} polls ({} not modified, {} errors), {} new entries",
                    d.polls, d.not_modified, d.errors, d.new_entries
                ),
                fetched: ok,
                not_modified: nm,
                errors: err,
                new_entries: Span {
                    y: NEW_TOP + NEW_HEIGHT - h_new,
                    h: h_new,
                },
            }
        })
        .collect()
}

pub struct FeedRow {
    pub title: String,
    pub url: String,
    pub site_url: Option<String>,
    pub state: &'static str,
    pub entries: u64,
    pub last_poll: String,
    pub error: Option<String>,
    pub totals: String,
    pub bars: Vec<Bar>,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Status · {{ title }}</title>
<style>
:root { color-scheme: light dark; --muted: #6b7280; --line: #e5e7eb; --ok: #2563eb; --nm: #9ca3af; --err: #dc2626; --new: #16a34a; }
body { margin: 0; font: 17px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; }
header, main, footer { max-width: 46rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.5rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 1.2rem 0 .4rem; }
nav { font-size: .9rem; margin-bottom: 1rem; }
nav a { margin-right: .8rem; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 1rem 0; }
dl.summary dt { color: var(--muted); }
dl.summary dd { margin: 0; overflow-wrap: anywhere; }
ul.outputs { padding-left: 1.2rem; overflow-wrap: anywhere; }
article { display: flex; gap: 1rem; align-items: center; padding: .8rem 0; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
article .about { flex: 1; min-width: 0; }
article h3 { font-size: 1.05rem; margin: 0; line-height: 1.3; }
.meta { color: var(--muted); font-size: .85rem; }
.error { color: var(--err); font-size: .85rem; }
.state { font-size: .75rem; padding: 0 .4rem; border-radius: .3rem; border: 1px solid var(--line); }
.state-failing, .state-gone { color: var(--err); border-color: var(--err); }
svg.chart { flex: none; }
.k-ok { fill: var(--ok); } .k-nm { fill: var(--nm); } .k-err { fill: var(--err); } .k-new { fill: var(--new); }
.legend span { margin-right: .8rem; font-size: .85rem; color: var(--muted); }
.legend i { display: inline-block; width: .7rem; height: .7rem; margin-right: .25rem; vertical-align: -.05rem; }
.empty { padding: 3rem 0; color: var(--muted); }
footer { color: var(--muted); font-size: .85rem; padding: 1.5rem 1rem 3rem; }
</style>
</head>
<body>
<header>
<h1>Status · {{ title }}</h1>
<nav><a href="{{ home }}">River</a><a href="{{ home }}feed.atom">Atom</a><a href="{{ home }}opml">OPML</a></nav>
</header>
<main>
<dl class="summary">
<dt>Feeds</dt><dd>{{ feed_count }} ({{ states }})</dd>
<dt>Last poll</dt><dd>{{ last_poll }}</dd>
<dt>Entries</dt><dd>{{ entries }} · {{ tombstones }} tombstones · {{ search_backlog }} waiting for the search index</dd>
<dt>Articles</dt><dd>{{ articles_pending }} pending, {{ articles_failed }} failed</dd>
<dt>Database</dt><dd>{{ db }}</dd>
<dt>Housekeeping</dt><dd>{{ housekept }}</dd>
</dl>
<h2>Outputs</h2>
<ul class="outputs">
{% for o in outputs %}<li><a href="{{ o.1 }}">{{ o.1 }}</a> <span class="meta">{{ o.0 }}</span></li>
{% endfor %}</ul>
<h2>Feeds</h2>
<p class="legend">Last {{ days }} days: <span><i class="k-ok"></i>fetched</span><span><i class="k-nm"></i>not modified (304)</span><span><i class="k-err"></i>errors</span><span><i class="k-new"></i>new entries</span></p>
{% for f in feeds %}<article>
<div class="about">
<h3>{% if let Some(u) = f.site_url %}<a href="{{ u }}">{{ f.title }}</a>{% else %}{{ f.title }}{% endif %} <span class="state state-{{ f.state }}">{{ f.state }}</span></h3>
<div class="meta">{{ f.url }}</div>
<div class="meta">{{ f.entries }} entries · last poll {{ f.last_poll }} · {{ f.totals }}</div>
{% if let Some(e) = f.error %}<div class="error">{{ e }}</div>{% endif %}
</div>
<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" viewBox="0 0 {{ width }} {{ height }}" role="img" aria-label="Polls and new entries, last {{ days }} days: {{ f.totals }}">
{% for b in f.bars %}<g><title>{{ b.label }}</title><rect x="{{ b.x }}" y="0" width="{{ bar_width }}" height="{{ height }}" fill="transparent"/>{% if b.fetched.h > 0 %}<rect class="k-ok" x="{{ b.x }}" y="{{ b.fetched.y }}" width="{{ bar_width }}" height="{{ b.fetched.h }}"/>{% endif %}{% if b.not_modified.h > 0 %}<rect class="k-nm" x="{{ b.x }}" y="{{ b.not_modified.y }}" width="{{ bar_width }}" height="{{ b.not_modified.h }}"/>{% endif %}{% if b.errors.h > 0 %}<rect class="k-err" x="{{ b.x }}" y="{{ b.errors.y }}" width="{{ bar_width }}" height="{{ b.errors.h }}"/>{% endif %}{% if b.new_entries.h > 0 %}<rect class="k-new" x="{{ b.x }}" y="{{ b.new_entries.y }}" width="{{ bar_width }}" height="{{ b.new_entries.h }}"/>{% endif %}</g>
{% endfor %}</svg>
</article>
{% else %}<p class="empty">No feeds yet: add [[feed]] tables to the config or run <code>tributary feeds add URL</code>.</p>
{% endfor %}
</main>
<footer>Tributary {{ version }} · {{ generated }}</footer>
</body>
</html>
"##
)]
pub struct StatusPage {
    pub title: String,
    pub home: String,
    pub feed_count: usize,
    pub states: String,
    pub last_poll: String,
    pub entries: u64,
    pub tombstones: u64,
    pub articles_pending: u64,
    pub articles_failed: u64,
    pub search_backlog: u64,
    pub db: String,
    pub housekept: String,
    pub outputs: Vec<(String, String)>,
    pub feeds: Vec<FeedRow>,
    pub days: i64,
    pub width: u32,
    pub height: u32,
    pub bar_width: u32,
    pub version: &'static str,
    pub generated: String,
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "never".to_owned(),
        |t| t.format("%-d %b %Y, %H:%M UTC").to_string(),
    )
}

fn row(f: &Feed, days: &[FeedDay], today: i64) -> FeedRow {
    let sum = |pick: fn(&FeedDay) -> u32| days.iter().map(pick).map(u64::from).sum::<u64>();
    FeedRow {
        title: f.display_title().to_owned(),
        url: f.spec.url.clone(),
        site_url: f.site_url.clone(),
        state: f.state(),
        entries: f.entry_count,
        last_poll: when(f.last_checked_at),
        error: f
            .last_error
            .clone()
            .filter(|_| matches!(f.state(), "failing" | "gone")),
        totals: format!(
            "{} polls, {} not modified, {} errors, {} new",
            sum(|d| d.polls),
            sum(|d| d.not_modified),
            sum(|d| d.errors),
            sum(|d| d.new_entries)
        ),
        bars: chart(days, today),
    }
}

/// The page for `snap`, which should hold at least [`CHART_DAYS`] of history.
pub fn render(
    snap: &StatusSnapshot,
    s: &ServeSettings,
    db_cap: Option<u64>,
    now: DateTime<Utc>,
) -> Result<String, askama::Error> {
    let today = now.timestamp().div_euclid(86_400);
    let states: Vec<String> = FEED_STATES
        .iter()
        .map(|st| {
            let n = snap.feeds.iter().filter(|f| f.state() == *st).count();
            format!("{n} {st}")
        })
        .collect();
    let cap = db_cap.map_or_else(
        || "no cap".to_owned(),
        |c| format!("cap {}", format_bytes(c)),
    );
    StatusPage {
        title: s.title.clone(),
        home: format!("{}/", s.base_url),
        feed_count: snap.feeds.len(),
        states: states.join(", "),
        last_poll: when(snap.feeds.iter().filter_map(|f| f.last_checked_at).max()),
        entries: snap.entries,
        tombstones: snap.tombstones,
        articles_pending: snap.articles_pending,
        articles_failed: snap.articles_failed,
        search_backlog: snap.search_backlog,
        db: format!(
            "{} used, {} file, {cap}",
            format_bytes(snap.size.used_bytes),
            format_bytes(snap.size.file_bytes)
        ),
        housekept: when(snap.housekept_at),
        outputs: output_urls(s),
        feeds: snap
            .feeds
            .iter()
            .map(|f| {
                let days = snap.history.get(&f.id).map_or(&[][..], Vec::as_slice);
                row(f, days, today)
            })
            .collect(),
        days: CHART_DAYS,
        width: CHART_WIDTH,
        height: CHART_HEIGHT,
        bar_width: BAR_WIDTH,
        version: env!("CARGO_PKG_VERSION"),
        generated: when(Some(now)),
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: i64, polls: u32, not_modified: u32, errors: u32, new_entries: u32) -> FeedDay {
        FeedDay {
            day,
            polls,
            not_modified,
            errors,
            new_entries,
        }
    }

    #[test]
    fn bars_stack_within_the_chart_and_scale_to_the_busiest_day() {
        let today = 20_000;
        let days = [
            day(today, 24, 20, 1, 3),
            day(today - 1, 12, 0, 12, 0),
            day(today - 13, 6, 6, 0, 0),
            // Outside the window: ignored.
            day(today - 14, 99, 0, 0, 99),
        ];
        let bars = chart(&days, today);
        assert_eq!(bars.len(), CHART_DAYS as usize);
        for b in &bars {
            for s in [b.fetched, b.not_modified, b.errors] {
                assert!(s.y + s.h <= POLLS_HEIGHT, "{b:?}");
            }
            assert!(b.new_entries.y + b.new_entries.h <= CHART_HEIGHT, "{b:?}");
            assert!(b.x + BAR_WIDTH <= CHART_WIDTH);
        }
        let last = &bars[13];
        // 24 polls is not the busiest day (99 is outside, so 24 is): full.
        assert_eq!(
            last.fetched.h + last.not_modified.h + last.errors.h,
            POLLS_HEIGHT
        );
        assert!(last.errors.h >= 1 && last.fetched.h >= 1, "{last:?}");
        assert_eq!(last.new_entries.h, NEW_HEIGHT);
        assert!(
            last.label
                .contains("24 polls (20 not modified, 1 errors), 3 new")
        );
        // All errors: one red bar of half height.
        let errs = &bars[12];
        assert_eq!(
            (errs.errors.h, errs.fetched.h, errs.not_modified.h),
            (14, 0, 0)
        );
        // The oldest day is leftmost; days without polls draw nothing.
        assert_eq!(bars[0].not_modified.h, 7);
        assert_eq!(
            bars[5].fetched.h + bars[5].errors.h + bars[5].new_entries.h,
            0
        );
        assert!(bars[0].x < bars[1].x);
    }

    #[test]
    fn scale_shows_small_counts_and_never_overflows() {
        for (n, max, full, h) in [
            (0, 10, 28, 0),
            (1, 1000, 28, 1),
            (10, 10, 28, 28),
            (5, 10, 28, 14),
            (3, 0, 28, 0),
        ] {
            assert_eq!(scale(n, max, full), h, "{n}/{max}");
        }
    }
}
