//! Network guard: which addresses the daemon may connect to.
//!
//! Article links, redirects and (later) images are chosen by third parties,
//! so by default nothing reaches a non-public address (loopback, private,
//! link-local, CGNAT, multicast, documentation, reserved…). Exceptions: the
//! hosts of feeds an operator subscribed to ([`Guard::trust_host`]; a feed
//! on a NAS at home is legitimate, and so is its articles' host) and the
//! `[network] allow` list. The check runs after DNS resolution, inside the
//! HTTP client's resolver, so the address checked is the address used (no
//! DNS-rebinding window); IP-literal URLs skip resolution, so fetch checks
//! them before every hop with [`Guard::check_url`]. The `url` crate has
//! already normalised every IPv4 notation (`0x7f.1`, `2130706433`) to
//! dotted quads by then.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use ip_network::IpNetwork;
use url::{Host, Url};

use crate::config::NetworkConfig;

/// A refused destination; carried through reqwest's error chain from the
/// resolver so fetch can report it precisely.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "refused to connect to {host} ({ip}): {kind} address; list it under [network] allow to permit it"
)]
pub struct Blocked {
    pub host: String,
    pub ip: IpAddr,
    pub kind: &'static str,
}

/// What kind of non-public address `ip` is, or `None` when it is public.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    // IPv4-mapped IPv6 (::ffff:127.0.0.1) is the IPv4 address; ip_network
    // would call it global.
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    let global = IpNetwork::from(ip).is_global();
    if global {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        _ => "non-public",
    })
}

/// The connection policy, shared by the HTTP client's resolver and fetch.
#[derive(Debug, Default)]
pub struct Guard {
    allow: NetworkConfig,
    /// Hosts of operator-configured feeds (lowercase).
    trusted: RwLock<HashSet<String>>,
}

impl Guard {
    pub fn new(allow: NetworkConfig) -> Arc<Guard> {
        Arc::new(Guard {
            allow,
            trusted: RwLock::new(HashSet::new()),
        })
    }

    /// Lets `host` be non-public: an operator subscribed to a feed there.
    pub fn trust_host(&self, host: &str) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(mut t) = self.trusted.write() {
            t.insert(host);
        }
    }

    fn host_exempt(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.allows_host(&host)
            || self
                .trusted
                .read()
                .map(|t| t.contains(&host))
                .unwrap_or(false)
    }

    /// Whether `host` may be reached at `ip`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        match non_public_kind(ip) {
            None => Ok(()),
            Some(_) if self.host_exempt(host) || self.allow.allows_ip(ip) => Ok(()),
            Some(kind) => Err(Blocked {
                host: host.to_owned(),
                ip,
                kind,
            }),
        }
    }

    /// Checks a URL whose host is an IP literal (the resolver never sees
    /// those); names are checked when resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.check(url.host_str().unwrap_or_default(), ip)
    }
}

/// reqwest resolver that drops refused addresses: the system resolver
/// first, then the guard, and the connection uses only what passed.
pub struct GuardedResolver {
    pub guard: Arc<Guard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(b) => {
                        refused.get_or_insert(b);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(b)) => Err(Box::new(b) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowRule;

    #[test]
    fn classifies_non_public_addresses_in_every_notation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1/", Some("loopback")),
            ("http://0x7f000001/", Some("loopback")),
            ("http://2130706433/", Some("loopback")),
            ("http://0177.0.0.1/", Some("loopback")),
            ("http://[::1]/", Some("loopback")),
            ("http://[::ffff:127.0.0.1]/", Some("loopback")),
            ("http://[::ffff:7f00:1]/", Some("loopback")),
            ("http://10.1.2.3/", Some("private")),
            ("http://192.168.0.1/", Some("private")),
            ("http://172.16.5.4/", Some("private")),
            ("http://169.254.169.254/", Some("link-local")),
            ("http://100.64.0.1/", Some("non-public")),
            ("http://0.0.0.0/", Some("unspecified")),
            ("http://224.0.0.1/", Some("multicast")),
            ("http://[fd00::1]/", Some("private")),
            ("http://[fe80::1]/", Some("link-local")),
            ("http://93.184.216.34/", None),
            ("http://[2606:2800:220:1:248:1893:25c8:1946]/", None),
        ];
        let guard = Guard::default();
        for (url, kind) in cases {
            let u = Url::parse(url).expect("url");
            let got = guard.check_url(&u).err().map(|b| b.kind);
            assert_eq!(got, *kind, "{url}");
        }
    }

    #[test]
    fn trusted_hosts_and_the_allow_list_are_exempt() {
        let allow = NetworkConfig {
            allow: vec![
                AllowRule::Net("10.0.0.0/8".parse().expect("net")),
                AllowRule::Host("nas.local".into()),
            ],
        };
        let guard = Guard::new(allow);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(guard.check("x", ip("10.9.9.9")).is_ok());
        assert!(guard.check("nas.local", ip("192.168.1.2")).is_ok());
        assert!(guard.check("other.local", ip("192.168.1.2")).is_err());
        guard.trust_host("Feeds.Home.");
        assert!(guard.check("feeds.home", ip("192.168.1.3")).is_ok());
        assert!(guard.check("127.0.0.1", ip("127.0.0.1")).is_err());
        guard.trust_host("127.0.0.1");
        assert!(guard.check("127.0.0.1", ip("127.0.0.1")).is_ok());
        // Trusting a name does not trust other names for the same address.
        assert!(guard.check("localhost", ip("127.0.0.1")).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_to_loopback() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver {
            guard: Guard::new(NetworkConfig::default()),
        };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<Blocked>().is_some(), "{err}");
    }
}
