//! Per-host politeness: how many requests may run against one host at once,
//! how far apart their starts must be, and until when a host asked us (with
//! a 429) to stay away.
//!
//! Shared by every fetch (feeds and articles) so the limits hold across all
//! feeds on a host. In memory only; the store keeps host blocks so a
//! restart does not forget a Retry-After, and start-up feeds them back in
//! with [`HostLimiter::block_until`].
//!
//! On a cluster (several nodes on one PostgreSQL database) the limiter is
//! switched to [`HostLimiter::enable_tenancy`]: a request may start only
//! to a host this node holds a lease on, long enough to cover the whole
//! request ([`HostLimiter::grant`], from the dispatch loop, which takes
//! and renews the leases in the store). One node at a time sends a host
//! requests, so the limits kept here hold for the whole cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Beyond this many tracked hosts, idle entries are swept on insert, so a
/// daemon polling many hosts does not grow without bound.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// Simultaneous requests per host (at least 1).
    pub concurrency: usize,
    /// Minimum time between the starts of two requests to one host.
    pub spacing: Duration,
}

#[derive(Debug, Default)]
struct HostState {
    in_flight: usize,
    /// How long a request to this host holds its permit, smoothed: with
    /// the concurrency, how fast the host's queue can drain.
    hold: Option<Duration>,
    /// The earliest a new request may start (spacing).
    next_start: Option<Instant>,
    /// A 429's Retry-After: no request before then.
    blocked_until: Option<Instant>,
    /// On a cluster: until when this node holds the host (its lease in the
    /// store, measured on this node's clock from before the lease was
    /// asked for, so never later than the store's own end).
    lease: Option<Instant>,
    /// When a lease was last granted or a request last ended: a host used
    /// a moment ago is not handed back yet (its next job may be on its way).
    used: Option<Instant>,
    /// Since when this node has held the host without a break.
    held_since: Option<Instant>,
}

impl HostState {
    fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.lease.is_none()
            && self.next_start.is_none_or(|t| t <= now)
            && self.blocked_until.is_none_or(|t| t <= now)
    }
}

/// A host this node holds on a cluster, as [`HostLimiter::tenancy`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenancy {
    pub host: String,
    /// Until when the lease covers requests.
    pub until: Instant,
    /// Requests in flight, or one ended (or the lease was granted) within
    /// [`USED_GRACE`]: the host is still in use.
    pub busy: bool,
    /// How long after now the next request may start (spacing left, a
    /// 429's block): what the next node to take the host must wait.
    pub wait: Duration,
    /// How long this node has held the host without a break.
    pub held: Duration,
    /// Requests to it in flight from this node.
    pub in_flight: usize,
}

/// A host last used (a request ended, a lease granted) within this long is
/// kept, not handed back: the job a claim took it for may be on its way to
/// the dispatch loop. Longer would keep a host from the other nodes when
/// its feeds fall due again soon after (a short interval).
pub const USED_GRACE: Duration = Duration::from_millis(250);

/// Why a host cannot take a request right now, and when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Its requests in flight are at the limit: try again once one ends
    /// ([`HostLimiter::released`]).
    Full,
    /// Its spacing is used up; try again at this time.
    Throttled(Instant),
    /// It asked us to stay away until this time.
    Blocked(Instant),
    /// On a cluster: this node holds no lease on the host long enough for
    /// a request (another node may be sending it requests).
    Unowned,
}

pub struct HostLimiter {
    limits: HostLimits,
    hosts: Mutex<HashMap<String, HostState>>,
    /// Wakes waiters in [`HostLimiter::acquire`] when a permit is released.
    released: tokio::sync::Notify,
    /// On a cluster: how long a lease must still run for a request to
    /// start under it (the fetch timeout, which bounds every request, and
    /// the spacing after it), so a node that stops renewing (dies, loses
    /// the database) has no request left in flight when its lease ends.
    tenancy: std::sync::OnceLock<Duration>,
    /// Hosts a fetch wanted but this node did not hold (a redirect to
    /// another host); the dispatch loop asks the store for them.
    wanted: Mutex<std::collections::BTreeSet<String>>,
}

/// The right to send one request to a host; released on drop.
pub struct HostPermit {
    limiter: Arc<HostLimiter>,
    host: String,
    taken: Instant,
}

impl HostPermit {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The request starts now: the host's next may start no sooner than
    /// one spacing from now. A permit taken by the dispatch loop starts
    /// its request a moment later, on another task; counted from the
    /// permit alone, two requests could start closer than the spacing.
    pub fn starting(&self) {
        let spacing = self.limiter.limits.spacing;
        if spacing.is_zero() {
            return;
        }
        let at = Instant::now() + spacing;
        if let Some(s) = self.limiter.lock().get_mut(&self.host) {
            s.next_start = Some(s.next_start.map_or(at, |t| t.max(at)));
        }
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let held = self.taken.elapsed();
        if let Some(s) = self.limiter.lock().get_mut(&self.host) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.used = Some(Instant::now());
            // An exponential average over about the last eight requests.
            s.hold = Some(s.hold.map_or(held, |h| (h * 7 + held) / 8));
        }
        self.limiter.released.notify_waiters();
    }
}

impl HostLimiter {
    pub fn new(limits: HostLimits) -> Arc<HostLimiter> {
        Arc::new(HostLimiter {
            limits: HostLimits {
                concurrency: limits.concurrency.max(1),
                spacing: limits.spacing,
            },
            hosts: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            tenancy: std::sync::OnceLock::new(),
            wanted: Mutex::new(Default::default()),
        })
    }

    /// Switches this limiter to a cluster's rules: from now on a request
    /// starts only under a lease granted with [`HostLimiter::grant`] that
    /// still runs for `hold_for` (at least the fetch timeout plus the
    /// spacing). Set once; later calls change nothing.
    pub fn enable_tenancy(&self, hold_for: Duration) {
        let _ = self.tenancy.set(hold_for);
    }

    /// Whether requests need a lease ([`HostLimiter::enable_tenancy`]).
    pub fn tenancy_enabled(&self) -> bool {
        self.tenancy.get().is_some()
    }

    /// This node holds `host` until `until`; no request may start before
    /// `free_at` (the spacing left by the node that held it before, or a
    /// 429's block).
    pub fn grant(&self, host: &str, until: Instant, free_at: Instant) {
        let now = Instant::now();
        let mut hosts = self.lock();
        let s = hosts.entry(host.to_owned()).or_default();
        s.lease = Some(until);
        s.used = Some(now);
        s.held_since.get_or_insert(now);
        if free_at > now {
            s.next_start = Some(s.next_start.map_or(free_at, |t| t.max(free_at)));
        }
    }

    /// This node's lease on `host` was renewed until `until` (a renewal
    /// is not a use: an idle host is still handed back).
    pub fn extend(&self, host: &str, until: Instant) {
        if let Some(s) = self.lock().get_mut(host) {
            s.lease = Some(until);
        }
    }

    /// This node no longer holds `host`: no request to it starts until a
    /// new grant. Returns false (and keeps the lease) when `only_if_idle`
    /// and a request to it is in flight.
    pub fn revoke(&self, host: &str, only_if_idle: bool) -> bool {
        let mut hosts = self.lock();
        let Some(s) = hosts.get_mut(host) else {
            return true;
        };
        if only_if_idle && s.in_flight > 0 {
            return false;
        }
        s.lease = None;
        s.held_since = None;
        true
    }

    /// The hosts this node holds a lease on.
    pub fn tenancy(&self, now: Instant) -> Vec<Tenancy> {
        self.lock()
            .iter()
            .filter_map(|(host, s)| {
                let until = s.lease?;
                let free = [s.next_start, s.blocked_until]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(now);
                Some(Tenancy {
                    host: host.clone(),
                    until,
                    busy: s.in_flight > 0 || s.used.is_some_and(|u| u + USED_GRACE > now),
                    wait: free.saturating_duration_since(now),
                    in_flight: s.in_flight,
                    held: s
                        .held_since
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                })
            })
            .collect()
    }

    /// Hosts fetches wanted and this node did not hold, taken out.
    pub fn take_wanted(&self) -> Vec<String> {
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *wanted).into_iter().collect()
    }

    /// Asks for `host` at the dispatch loop's next look at the leases.
    pub fn want(&self, host: &str) {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned());
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HostState>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single field write), so poisoning is ignored.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a permit for `host` if it can start a request now.
    pub fn try_acquire(self: &Arc<Self>, host: &str, now: Instant) -> Result<HostPermit, Busy> {
        let mut hosts = self.lock();
        if hosts.len() > SWEEP_ABOVE {
            hosts.retain(|_, s| !s.idle(now));
        }
        let state = hosts.entry(host.to_owned()).or_default();
        if let Some(until) = state.blocked_until.filter(|&t| t > now) {
            return Err(Busy::Blocked(until));
        }
        if let Some(at) = state.next_start.filter(|&t| t > now) {
            return Err(Busy::Throttled(at));
        }
        if let Some(hold_for) = self.tenancy.get()
            && state.lease.is_none_or(|until| until < now + *hold_for)
        {
            return Err(Busy::Unowned);
        }
        if state.in_flight >= self.limits.concurrency {
            return Err(Busy::Full);
        }
        state.in_flight += 1;
        state.next_start = (!self.limits.spacing.is_zero()).then(|| now + self.limits.spacing);
        Ok(HostPermit {
            limiter: Arc::clone(self),
            host: host.to_owned(),
            taken: now,
        })
    }

    /// Waits until `host` can take a request. A host blocked by a 429 is
    /// reported instead of waited for: callers reschedule rather than hold
    /// a slot for minutes. So is a host this node does not hold on a
    /// cluster ([`Busy::Unowned`]); it is asked for at the dispatch loop's
    /// next look at the leases.
    pub async fn acquire(self: &Arc<Self>, host: &str) -> Result<HostPermit, Busy> {
        loop {
            let released = self.released.notified();
            match self.try_acquire(host, Instant::now()) {
                Ok(p) => return Ok(p),
                Err(b @ Busy::Blocked(_)) => return Err(b),
                Err(Busy::Unowned) => {
                    self.want(host);
                    return Err(Busy::Unowned);
                }
                Err(Busy::Throttled(at)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = released => {}
                    }
                }
                Err(Busy::Full) => released.await,
            }
        }
    }

    pub fn spacing(&self) -> Duration {
        self.limits.spacing
    }

    /// Resolves once a permit (to any host) is released after this call;
    /// `enable` it before looking at the hosts so no release is missed.
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// How far apart one host's requests start when it has a queue: its
    /// spacing, or the time a request holds its permit shared by the
    /// requests it may have in flight, whichever is longer. Before a
    /// request to it has ended, the spacing alone.
    pub fn pace(&self, host: &str) -> Duration {
        let hold = self.lock().get(host).and_then(|s| s.hold);
        let per_slot = hold.map_or(Duration::ZERO, |h| {
            h / u32::try_from(self.limits.concurrency).unwrap_or(u32::MAX)
        });
        self.limits.spacing.max(per_slot)
    }

    /// Simultaneous requests allowed per host.
    pub fn concurrency(&self) -> usize {
        self.limits.concurrency.max(1)
    }

    /// Records that `host` asked us to stay away until `until`.
    pub fn block_until(&self, host: &str, until: Instant) {
        let mut hosts = self.lock();
        let state = hosts.entry(host.to_owned()).or_default();
        state.blocked_until = Some(state.blocked_until.map_or(until, |t| t.max(until)));
    }

    /// Until when `host` is blocked, if it is.
    pub fn blocked_until(&self, host: &str, now: Instant) -> Option<Instant> {
        self.lock()
            .get(host)
            .and_then(|s| s.blocked_until)
            .filter(|&t| t > now)
    }
}

/// The host part of a URL, lowercased, as the limiter keys it.
pub fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(concurrency: usize, spacing_ms: u64) -> Arc<HostLimiter> {
        HostLimiter::new(HostLimits {
            concurrency,
            spacing: Duration::from_millis(spacing_ms),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped_per_host_not_globally() {
        let l = limiter(1, 0);
        let now = Instant::now();
        let a = l.try_acquire("a.example", now).expect("first");
        assert_eq!(l.try_acquire("a.example", now).err(), Some(Busy::Full));
        let _b = l
            .try_acquire("b.example", now)
            .expect("another host is free");
        drop(a);
        assert!(l.try_acquire("a.example", now).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn spacing_separates_request_starts() {
        let l = limiter(4, 1000);
        let t0 = Instant::now();
        drop(l.try_acquire("a.example", t0).expect("first"));
        assert_eq!(
            l.try_acquire("a.example", t0 + Duration::from_millis(500))
                .err(),
            Some(Busy::Throttled(t0 + Duration::from_secs(1)))
        );
        assert!(
            l.try_acquire("a.example", t0 + Duration::from_secs(1))
                .is_ok()
        );
    }

    /// The dispatch loop takes a permit, and the request starts a moment
    /// later on another task: the spacing counts from that start.
    #[tokio::test(start_paused = true)]
    async fn spacing_counts_from_when_the_request_starts() {
        let l = limiter(1, 1000);
        let t0 = Instant::now();
        let p = l.try_acquire("a.example", t0).expect("first");
        tokio::time::advance(Duration::from_millis(300)).await;
        p.starting();
        drop(p);
        assert_eq!(
            l.try_acquire("a.example", t0 + Duration::from_secs(1))
                .err(),
            Some(Busy::Throttled(t0 + Duration::from_millis(1300)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_spacing_in_paused_time() {
        let l = limiter(1, 2000);
        let t0 = Instant::now();
        drop(l.acquire("a.example").await.expect("first"));
        drop(l.acquire("a.example").await.expect("second"));
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_host_reports_until_when() {
        let l = limiter(1, 0);
        let now = Instant::now();
        let until = now + Duration::from_secs(3600);
        l.block_until("a.example", until);
        assert_eq!(
            l.try_acquire("a.example", now).err(),
            Some(Busy::Blocked(until))
        );
        assert_eq!(
            l.acquire("a.example").await.err(),
            Some(Busy::Blocked(until))
        );
        assert!(l.try_acquire("a.example", until).is_ok());
    }

    /// A host's pace is its spacing, or how long its requests take shared
    /// among its concurrent slots when that is longer.
    #[tokio::test(start_paused = true)]
    async fn pace_follows_spacing_and_request_time() {
        let l = limiter(2, 1000);
        assert_eq!(l.pace("a.example"), Duration::from_secs(1));
        let p = l.try_acquire("a.example", Instant::now()).expect("first");
        tokio::time::advance(Duration::from_secs(6)).await;
        drop(p);
        assert_eq!(l.pace("a.example"), Duration::from_secs(3));
        let fast = limiter(4, 0);
        assert_eq!(fast.pace("a.example"), Duration::ZERO);
    }

    /// A waiter for a full host wakes when a request to it ends, not a
    /// second later.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_for_a_full_host_wakes_on_release() {
        let l = limiter(1, 0);
        let first = l.try_acquire("a.example", Instant::now()).expect("first");
        let t0 = Instant::now();
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.acquire("a.example").await.map(|_| Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(first);
        let got = waiter.await.expect("join").expect("permit");
        assert_eq!(got - t0, Duration::from_millis(30));
    }

    /// On a cluster a request starts only under a lease that covers it
    /// whole; a host handed back (or never granted) is asked for.
    #[tokio::test(start_paused = true)]
    async fn on_a_cluster_requests_start_only_under_a_long_enough_lease() {
        let l = limiter(1, 0);
        let hold_for = Duration::from_secs(10);
        l.enable_tenancy(hold_for);
        let now = Instant::now();
        assert_eq!(l.try_acquire("a.example", now).err(), Some(Busy::Unowned));
        assert_eq!(l.acquire("a.example").await.err(), Some(Busy::Unowned));
        assert_eq!(l.take_wanted(), ["a.example"]);
        assert!(l.take_wanted().is_empty());
        // The spacing left by the node before waits too.
        l.grant(
            "a.example",
            now + Duration::from_secs(30),
            now + Duration::from_secs(2),
        );
        assert_eq!(
            l.try_acquire("a.example", now).err(),
            Some(Busy::Throttled(now + Duration::from_secs(2)))
        );
        let later = now + Duration::from_secs(2);
        let p = l.try_acquire("a.example", later).expect("held");
        // In use: not handed back while a request runs.
        assert!(!l.revoke("a.example", true));
        let t = l.tenancy(later);
        assert_eq!(t.len(), 1);
        assert!(t[0].busy);
        drop(p);
        // Too little lease left for a whole request: no start.
        assert_eq!(
            l.try_acquire("a.example", now + Duration::from_secs(25))
                .err(),
            Some(Busy::Unowned)
        );
        l.extend("a.example", now + Duration::from_secs(60));
        assert!(
            l.try_acquire("a.example", now + Duration::from_secs(25))
                .is_ok()
        );
        assert!(l.revoke("a.example", true));
        assert_eq!(
            l.try_acquire("a.example", now + Duration::from_secs(26))
                .err(),
            Some(Busy::Unowned)
        );
        assert!(l.tenancy(now).is_empty());
    }

    #[test]
    fn hosts_are_lowercased() {
        assert_eq!(
            host_of("https://WWW.Example.com:8443/x").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(host_of("not a url"), None);
    }
}
