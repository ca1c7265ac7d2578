//! Tributary: many noisy feeds in, one clean feed out.
//!
//! These docs are for the people who work on Tributary (build them with
//! `cargo doc --document-private-items`), so they link private items freely.
//!
//! # Layout
//! - [`config`]: raw TOML → validated [`config::Config`]; every problem
//!   reported with its key and line.
//! - [`model`]: plain data types every stage shares.
//! - [`values`]: what makes a value safe to store and serve (plausible
//!   dates, legal characters, length and size caps), shared by the parse
//!   stage and the renderers.
//! - [`policy`]: when each feed is polled next (interval, hints, jitter,
//!   backoff, Retry-After); pure.
//! - [`dispatch`]: the one dispatch loop (the daemon's schedule and
//!   `tributary poll` alike): per-host queues of feeds and article pages
//!   under the concurrency caps.
//! - [`pipeline`]: one poll — [`pipeline::fetch`] (HTTP),
//!   [`pipeline::parse`] (bytes → entries) or [`pipeline::scrape`] (a page
//!   without a feed, read with CSS selectors → entries),
//!   [`pipeline::sanitize`] (allow-list
//!   HTML, absolute URLs) — recorded in the store in one transaction; and
//!   [`pipeline::extract`] (a web page → its article, via dom_smoothie and
//!   our rules in [`pipeline::clean`]).
//!   [`pipeline::dedup`] decides when two entries are one story (URL keys,
//!   near-duplicate text); pure, for the store's merging to call.
//! - [`store`]: all persistence (SQLite): feeds, entries, schedule.
//! - [`indexer`]: keeps the search index in step with the entries, in
//!   batches that yield to polls.
//! - [`serve`]: the HTTP outputs (Atom, RSS, JSON Feed, the river page,
//!   named outputs, `/opml`, `/healthz`, `/metrics`).
//! - [`opml`]: OPML ⇄ subscriptions.
//! - [`hosts`]: per-host politeness (concurrency, spacing, 429 blocks).
//! - [`netguard`]: which addresses may be connected to (no SSRF).
//! - [`websub`]: tells a WebSub hub when the outputs change.
//! - [`housekeeping`]: retention (purge with tombstones), vacuum, optimize,
//!   checkpoint — daily, in short transactions.
//! - [`app`]: daemon start-up, reload (SIGHUP) and graceful shutdown.
//! - [`systemd`]: sd_notify (READY, RELOADING, STOPPING) and the watchdog.
//! - [`progress`]: a progress line on stderr, only on a terminal.
//! - [`cli`]: the command-line verbs.
//! - [`logging`]: text or JSON logs on stderr, journald-aware, level
//!   reloadable.

#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod cli;
pub mod config;
pub mod database;
pub mod dispatch;
pub mod hosts;
pub mod housekeeping;
pub mod indexer;
pub mod logging;
pub mod model;
pub mod netguard;
pub mod opml;
pub mod pipeline;
pub mod policy;
pub mod progress;
pub mod push;
pub mod serve;
pub mod store;
pub mod systemd;
pub mod values;
pub mod websub;
