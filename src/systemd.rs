//! The service manager's side channel: `sd_notify` state changes (READY,
//! RELOADING, STOPPING, STATUS) and the watchdog.
//!
//! Every function here is a no-op outside systemd (no `NOTIFY_SOCKET`), and a
//! failed send is logged at debug and otherwise ignored: the daemon's work
//! never depends on the notification socket. The watchdog loop is spawned by
//! `app` like every other long-lived task.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The database is open and migrated and the listener is bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has begun. `MONOTONIC_USEC` lets `Type=notify-reload` (systemd
/// ≥ 253) match this message to the SIGHUP it sent; older versions ignore it.
/// [`ready`] ends the reload, whether the new config was applied or not.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Pings the watchdog every `interval / 2`, but only while the store answers
/// a cheap query on both of its connections within that half interval. A
/// wedged database thread therefore stops the pings and systemd restarts the
/// service; a slow poll or a full disk does not (reads still answer).
pub async fn watchdog(store: Store, interval: Duration, shutdown: CancellationToken) {
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(period, store.ping()).await {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("database answers again; watchdog pings resume");
                    failing = false;
                }
                send(&[NotifyState::Watchdog]);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "database check failed; skipping the watchdog ping");
                failing = true;
            }
            Err(_) => {
                tracing::error!(
                    timeout = ?period,
                    "database did not answer in time; skipping the watchdog ping"
                );
                failing = true;
            }
        }
    }
}
