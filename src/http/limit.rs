//! A per-client rate limit on the public routes: at most `per_minute` requests in any
//! one-minute window, then 429 with `Retry-After`. The client is the TCP peer, unless the
//! peer is one of the `trusted_proxies`: then the rightmost `X-Forwarded-For` hop that is
//! not one of them (hops to its left may be made up by the client). IPv4 clients are
//! counted per address, IPv6 clients per /64, the block one subscriber gets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

const WINDOW: Duration = Duration::from_secs(60);

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// The reverse proxies whose `X-Forwarded-For` names the client, as configured.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        Self::parse(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("configuration error: trusted_proxies: {e}"))
    }

    /// A comma-separated list of addresses and CIDRs (`10.0.0.0/8, ::1`); empty: none.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| format!("`{p}` is not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is trusted; then the rightmost
    /// hop of `forwarded` (the `X-Forwarded-For` values in order) that is not trusted, or
    /// the leftmost when all are. A hop that is no address ends the walk at the trusted
    /// proxy that passed it on.
    pub fn client(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = forwarded.iter().flat_map(|v| v.split(',')).map(str::trim);
        for hop in hops.collect::<Vec<_>>().into_iter().rev() {
            let Some(ip) = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()
            else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// What a client is counted under: an IPv4 address, or the /64 of an IPv6 address.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_minute` = 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from `ip`; the seconds to wait when it is over the limit.
    fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished windows now and then, so the map stays small.
        if w.len() > 10_000 {
            w.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = w.entry(limit_key(ip)).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_minute {
            let wait = WINDOW.saturating_sub(now.duration_since(entry.0));
            return Err(wait.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        state.proxies.client(c.0.ip(), &forwarded)
    });
    if let Some(ip) = ip
        && let Err(wait) = state.limiter.check(ip, Instant::now())
    {
        let mut resp = ApiError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this address; try again in {wait} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_window() {
        let l = RateLimiter::new(3);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check(a, t).is_ok());
        }
        assert!(l.check(a, t).is_err());
        assert!(l.check(b, t).is_ok());
        assert!(l.check(a, t + WINDOW).is_ok());
        assert!(RateLimiter::new(0).check(a, t).is_ok());
    }

    #[test]
    fn ipv6_clients_share_a_limit_per_64() {
        let l = RateLimiter::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = Instant::now();
        assert!(l.check(ip("2001:db8:1:2::1"), t).is_ok());
        assert!(l.check(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"), t).is_ok());
        assert!(l.check(ip("2001:db8:1:2:abcd::9"), t).is_err());
        // The next /64 is another subscriber.
        assert!(l.check(ip("2001:db8:1:3::1"), t).is_ok());
        assert_eq!(limit_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.0.2.1, fd00::/8").unwrap();
        let none = TrustedProxies::default();
        // A client talking directly makes up what it likes: ignored.
        let spoofed = ["198.51.100.1"];
        assert_eq!(none.client(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        // Through a trusted proxy: the rightmost hop no proxy of ours added.
        assert_eq!(proxies.client(ip("10.1.2.3"), &spoofed), ip("198.51.100.1"));
        let chain = ["6.6.6.6, 203.0.113.9", "10.0.0.7"];
        assert_eq!(proxies.client(ip("192.0.2.1"), &chain), ip("203.0.113.9"));
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.1"), &chain),
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client(ip("fd00::1"), &["[2001:db8::5]:4711"]),
            ip("2001:db8::5")
        );
        // All hops trusted: the leftmost; garbage: the proxy that passed it on.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &["10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &["203.0.113.9, junk"]),
            ip("10.0.0.1")
        );
        assert_eq!(proxies.client(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
        for bad in ["10.0.0.0/33", "proxy.example.com", "10.0.0.1/8/8"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert!(TrustedProxies::parse(" ").unwrap().0.is_empty());
    }
}
