//! Where lethe may send a webhook. Only `https` URLs, plain `http` only to hosts the
//! configuration names; never to loopback, private, link-local, shared (CGNAT),
//! unspecified, multicast, broadcast, reserved or documentation addresses, nor to a cloud
//! metadata service, unless the configuration names that address or network.
//!
//! Names are checked after resolution: [`GuardedResolver`] hands the HTTP client only the
//! addresses that pass, and the client connects to those, with no second resolution.
//! Redirects are never followed and no proxy is used.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::WebhookConfig;

/// Why an address is never a webhook target (unless allowed by configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Metadata,
    Multicast,
    Broadcast,
    Documentation,
    Reserved,
}

impl Forbidden {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::SharedCgnat => "a shared (CGNAT) address",
            Self::Metadata => "a cloud metadata address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// Why `ip` may not be reached, or None for an ordinary public address.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    use Forbidden::*;
    const METADATA: [Ipv4Addr; 2] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    let ranges: [([u8; 4], u8, Forbidden); 15] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Reserved),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    if METADATA.contains(&ip) {
        return Some(Metadata);
    }
    if ip == Ipv4Addr::BROADCAST {
        return Some(Broadcast);
    }
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    use Forbidden::*;
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some(Metadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
    // (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::) are judged by the IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return forbidden_v4(embedded(s[6], s[7])).or(Some(Reserved).filter(|_| s[5] == 0));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some(Private), // fc00::/7 unique local
        x if x & 0xffc0 == 0xfe80 => Some(LinkLocal), // fe80::/10
        x if x & 0xffc0 == 0xfec0 => Some(Private), // fec0::/10 site-local (deprecated)
        x if x & 0xff00 == 0xff00 => Some(Multicast), // ff00::/8
        0x2001 if s[1] == 0x0db8 => Some(Documentation),
        0x2001 if s[1] < 0x0200 => Some(Reserved), // 2001::/23 protocol assignments, Teredo
        0x3fff if s[1] < 0x1000 => Some(Documentation), // 3fff::/20
        0x0100 if s[1..4] == [0, 0, 0] => Some(Reserved), // 100::/64 discard
        x if x & 0xe000 != 0x2000 => Some(Reserved), // outside 2000::/3 global unicast
        _ => None,
    }
}

/// A webhook URL that may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL")]
    NotUrl,
    #[error(
        "only https URLs are accepted (plain http only for hosts listed in [webhooks] allow_http_hosts)"
    )]
    NotHttps,
    #[error("the URL names no host")]
    NoHost,
    #[error("the host is {}, which lethe never calls (unless listed in [webhooks] allow_addresses)", .0.describe())]
    Address(Forbidden),
    #[error("the host resolves to no address lethe may call")]
    NoAllowedAddress,
}

/// The rules every webhook target is held to.
#[derive(Debug, Clone)]
pub struct Rules {
    allow_http_hosts: Vec<String>,
    allow_addresses: Vec<IpNet>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl Default for Rules {
    /// https only, public addresses only, 5 s to connect, 10 s in all.
    fn default() -> Self {
        Self {
            allow_http_hosts: Vec::new(),
            allow_addresses: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Rules {
    /// The rules of the `[webhooks]` configuration section.
    pub fn from_config(c: &WebhookConfig) -> anyhow::Result<Self> {
        let mut allow_addresses = Vec::new();
        for a in &c.allow_addresses {
            let net = a
                .parse::<IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "configuration error: webhooks.allow_addresses: `{a}` is not an IP address or network"
                    )
                })?;
            allow_addresses.push(net);
        }
        if c.connect_timeout_seconds == 0 || c.timeout_seconds == 0 {
            anyhow::bail!("configuration error: webhooks timeouts must be at least one second");
        }
        Ok(Self {
            allow_http_hosts: c.allow_http_hosts.iter().map(|h| normal_host(h)).collect(),
            allow_addresses,
            connect_timeout: Duration::from_secs(c.connect_timeout_seconds),
            timeout: Duration::from_secs(c.timeout_seconds),
        })
    }

    /// Whether `ip` may be called: public, or allowed by configuration.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), TargetError> {
        let ip = ip.to_canonical();
        if self.allow_addresses.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        forbidden(ip).map_or(Ok(()), |f| Err(TargetError::Address(f)))
    }

    /// Checks what can be known of `raw` without resolving it: the scheme, and a host
    /// that is an IP address (or `localhost`).
    pub fn check_url(&self, raw: &str) -> Result<url::Url, TargetError> {
        let u = url::Url::parse(raw).map_err(|_| TargetError::NotUrl)?;
        let host = u.host().ok_or(TargetError::NoHost)?;
        let name = normal_host(&host.to_string());
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http_hosts.contains(&name) => {}
            _ => return Err(TargetError::NotHttps),
        }
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(ip))?,
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(ip))?,
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
            }
        }
        Ok(u)
    }

    /// An HTTP client that resolves through `lookup`, keeps only addresses these rules
    /// allow, follows no redirect, uses no proxy, and gives up after the timeouts.
    pub fn client(self: &Arc<Self>, lookup: Arc<dyn Lookup>) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                rules: self.clone(),
                lookup,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
    }
}

/// The processors' webhook URLs that these rules refuse, as policy errors (`lethe check`,
/// `lethe serve`): a URL the configuration cannot deliver to is caught before any erasure.
pub fn policy_findings(
    policy: &crate::policy::Policy,
    rules: &Rules,
) -> Vec<crate::policy::Diagnostic> {
    use crate::policy::{Diagnostic, Location, Severity};
    let mut out = Vec::new();
    for p in &policy.processors {
        let Some(url) = p.erasure_notice.as_ref().and_then(|n| n.webhook.as_ref()) else {
            continue;
        };
        let Err(e) = rules.check_url(url) else {
            continue;
        };
        out.push(Diagnostic {
            severity: Severity::Error,
            location: Location::of(&policy.files, p.id.span()),
            key: format!("processors[{}].erasure_notice.webhook", p.id.as_str()),
            message: format!("lethe will not call this webhook: {e}"),
            hint: Some(
                "use an https URL to a public address, or allow the host in lethe.toml [webhooks]"
                    .into(),
            ),
        });
    }
    out
}

/// Hosts compare lowercase, without brackets or a final dot.
fn normal_host(h: &str) -> String {
    h.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// A future resolving a name to addresses.
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Name resolution: the system's, or a stub in tests.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Resolves a name, then hands on only the addresses the rules allow; with none left,
/// fails, so no connection is attempted.
struct GuardedResolver {
    rules: Arc<Rules>,
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        let pending = self.lookup.lookup(name.as_str());
        Box::pin(async move {
            let ips = pending.await?;
            let allowed: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| rules.check_ip(*ip).is_ok())
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(TargetError::NoAllowedAddress) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `e` (from a client of [`Rules::client`]) is a refused target.
pub fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<TargetError>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_kind_of_internal_address_is_refused_and_public_ones_pass() {
        use Forbidden::*;
        let table: &[(&str, Option<Forbidden>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.254", Some(SharedCgnat)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.99", Some(Documentation)),
            ("198.18.0.1", Some(Reserved)),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("2002:c0a8:0101::1", Some(Private)),
            ("2001::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.255.0.1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
        ];
        for (addr, want) in table {
            assert_eq!(forbidden(ip(addr)), *want, "{addr}");
            assert_eq!(
                Rules::default().check_ip(ip(addr)).is_ok(),
                want.is_none(),
                "{addr}"
            );
        }
    }

    fn rules(http: &[&str], addresses: &[&str]) -> Rules {
        Rules::from_config(&WebhookConfig {
            allow_http_hosts: http.iter().map(|s| s.to_string()).collect(),
            allow_addresses: addresses.iter().map(|s| s.to_string()).collect(),
            ..WebhookConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn configuration_allows_named_hosts_and_networks_only() {
        let strict = Rules::default();
        let local = rules(
            &["127.0.0.1", "Hooks.Example.COM"],
            &["127.0.0.1", "10.8.0.0/16"],
        );
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
        assert_eq!(
            strict.check_url("http://hooks.example.com/x"),
            Err(TargetError::NotHttps)
        );
        assert_eq!(
            strict.check_url("ftp://hooks.example.com/x"),
            Err(TargetError::NotHttps)
        );
        assert_eq!(strict.check_url("no url"), Err(TargetError::NotUrl));
        assert!(local.check_url("http://hooks.example.com/x").is_ok());
        for bad in [
            "https://127.0.0.1/cb",
            "https://[::1]/cb",
            "https://[::ffff:7f00:1]/cb",
            "https://169.254.169.254/latest/meta-data",
            "https://[fd00:ec2::254]/",
            "https://localhost:8443/",
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(
                matches!(strict.check_url(bad), Err(TargetError::Address(_))),
                "{bad}"
            );
        }
        assert!(local.check_url("http://127.0.0.1:9/cb").is_ok());
        assert!(local.check_url("https://10.8.3.4/cb").is_ok());
        assert!(local.check_url("https://10.9.3.4/cb").is_err());
        assert!(local.check_url("http://10.8.3.4/cb").is_err(), "http host");
        assert!(
            Rules::from_config(&WebhookConfig {
                allow_addresses: vec!["10.0.0.0/33".into()],
                ..WebhookConfig::default()
            })
            .is_err()
        );
    }

    /// Resolves every name to one address, and counts the look-ups.
    struct Stub(IpAddr, std::sync::atomic::AtomicUsize);

    impl Lookup for Stub {
        fn lookup(&self, _host: &str) -> LookupFuture {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ip = self.0;
            Box::pin(async move { Ok(vec![ip]) })
        }
    }

    #[tokio::test]
    async fn a_public_name_resolving_to_an_internal_address_is_never_connected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://hooks.example.com:{port}/x");
        // The name passes the URL check; the stub resolves it to loopback.
        let strict = Arc::new(rules(&["hooks.example.com"], &[]));
        assert!(strict.check_url(&url).is_ok());
        let stub = Arc::new(Stub(ip("127.0.0.1"), 0.into()));
        let err = strict
            .client(stub.clone())
            .unwrap()
            .post(&url)
            .send()
            .await
            .unwrap_err();
        assert!(is_refused(&err), "{err:?}");
        assert_eq!(stub.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The same with the address allowed: the connection is made to the stub's address.
        let allowed = Arc::new(rules(&["hooks.example.com"], &["127.0.0.1"]));
        let resp = allowed.client(stub).unwrap().post(&url).send().await;
        assert_eq!(resp.unwrap().status(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
