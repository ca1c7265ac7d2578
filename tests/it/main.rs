//! Integration tests: one binary, real servers on 127.0.0.1, real SQLite
//! files in temp directories, the real `tributary` binary.

mod browser;
mod cli;
mod cluster;
mod cluster_hosts;
mod daemon;
mod dedup;
mod discover;
mod faults;
mod feeds;
mod fulltext;
mod lenient;
mod migrate;
mod ops;
mod outputs;
mod pages;
mod polite;
mod poll;
mod postgres;
mod push;
mod request;
mod retention;
mod rules;
mod support;
mod systemd;
mod validators;
