//! SSRF protection for outbound webhook deliveries.
//!
//! Webhook URLs are supplied by tenants, so a delivery is a request that an outsider aims at
//! whatever address they like. Without a guard, a URL such as `http://169.254.169.254/` (cloud
//! instance metadata, i.e. credentials), `http://127.0.0.1:6379/` or `http://10.0.0.5/admin`
//! turns the sender into a proxy into our own network: server-side request forgery (SSRF).
//!
//! Checking the URL once when it is registered is not enough:
//!
//! * A hostname can resolve to an internal address, and checking the name at registration time
//!   says nothing about what it resolves to at delivery time (DNS rebinding: the record flips
//!   from a public address to `127.0.0.1` after validation, or between a "check" lookup and the
//!   "connect" lookup).
//! * Redirects and proxies move the connection somewhere that was never checked.
//!
//! So the guard has two layers:
//!
//! 1. [`SsrfPolicy::check_url`] runs before each send. It enforces the scheme and the port
//!    (443, 80 and the operator's `webhooks.allowed_ports`: any other port of a public address
//!    is more likely a database or an admin console than a webhook receiver), refuses names
//!    reserved for internal use (`localhost`, `*.internal`, …) and classifies IP-literal hosts.
//!    It is *required*: reqwest (hyper-util's connector) connects to an IP-literal host directly
//!    without calling the DNS resolver, so layer 2 never sees literals.
//! 2. [`GuardedResolver`], installed by [`client_builder`], is the DNS resolver reqwest uses for
//!    every connection attempt. It drops every resolved address that [`classify`] blocks, and
//!    reqwest connects only to the addresses the resolver returned, so the connection goes to
//!    exactly the address that was checked, on every attempt, however DNS changes in between.
//!    The same builder disables redirects and proxies, both of which would bypass the check.
//!
//! Error messages never contain the URL, host or address: they end up in logs and in
//! tenant-visible delivery reports, and echoing internal addresses back would help an attacker
//! map the network. [`find_ssrf_error`] digs an [`SsrfError`] out of a failed reqwest request
//! so the caller can record the attempt as "ssrf-blocked" rather than as a network error.
//!
//! # Addresses embedding IPv4
//!
//! Several IPv6 forms carry an IPv4 address; when the embedded address is blocked, the embedded
//! address's range is reported (e.g. `::ffff:127.0.0.1` is `loopback`). Otherwise:
//!
//! * IPv4-mapped `::ffff:a.b.c.d` is allowed when the IPv4 address is: the OS connects to the
//!   IPv4 address itself.
//! * NAT64 well-known prefix `64:ff9b::/96` is allowed when the IPv4 address is: the embedded
//!   address sits at a fixed position (RFC 6052), a translator can only reach that address, and
//!   IPv6-only hosts behind DNS64 need it to reach IPv4-only receivers.
//! * NAT64 local-use `64:ff9b:1::/48` is blocked outright: the operator picks the prefix length
//!   (RFC 8215), so the embedded address cannot be located with certainty, and the translator is
//!   by definition local infrastructure.
//! * IPv4-compatible `::a.b.c.d` (all of `::/96`) is blocked outright: deprecated since RFC 4291,
//!   with no legitimate use, and some stacks still treat it as IPv4.
//! * 6to4 `2002::/16` is blocked outright: deprecated (RFC 7526), and the destination is a host
//!   *behind* the embedded router, so a public embedded address proves nothing (it may even be
//!   our own 6to4 router, keeping the traffic inside).
//! * Teredo `2001::/32` is blocked outright (it lies inside `2001::/23`, which is blocked whole);
//!   the client address is decoded only to report a more precise range.
//!
//! Anything outside global unicast `2000::/3` that is not listed above is also blocked as
//! `reserved`: no public receiver can live there. ISATAP-style interface identifiers are not
//! decoded; the embedding prefix decides.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused as a delivery destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedRange {
    /// `0.0.0.0` or `::`; connecting to it reaches the local host on common stacks.
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`: "this network".
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata endpoints (`169.254.169.254`, `100.100.100.200`,
    /// `fd00:ec2::254`): they hand out credentials, hence their own name.
    CloudMetadata,
    /// Carrier-grade NAT shared space `100.64/10`.
    Cgnat,
    /// IETF protocol assignments (`192.0.0/24`, `2001::/23`), `240/4`, `5f00::/16` and any IPv6
    /// space outside global unicast `2000::/3`.
    Reserved,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// 6to4 relay anycast `192.88.99/24` (deprecated).
    SixToFourRelay,
    /// Benchmarking `198.18/15`.
    Benchmarking,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Unique local addresses `fc00::/7`.
    UniqueLocal,
    /// Discard-only prefix `100::/64`.
    Discard,
    /// Deprecated IPv4-compatible IPv6 `::/96`.
    Ipv4Compatible,
    /// NAT64 local-use prefix `64:ff9b:1::/48`.
    Nat64LocalUse,
    /// 6to4 `2002::/16`.
    SixToFour,
    /// Teredo `2001::/32`.
    Teredo,
}

impl BlockedRange {
    /// Stable kebab-case name, suitable for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "this-network",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::CloudMetadata => "cloud-metadata",
            Self::Cgnat => "cgnat",
            Self::Reserved => "reserved",
            Self::Documentation => "documentation",
            Self::SixToFourRelay => "6to4-relay-anycast",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::UniqueLocal => "unique-local",
            Self::Discard => "discard",
            Self::Ipv4Compatible => "ipv4-compatible",
            Self::Nat64LocalUse => "nat64-local-use",
            Self::SixToFour => "6to4",
            Self::Teredo => "teredo",
        }
    }
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery was refused. Messages deliberately omit the URL, host and address.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    /// The destination address (literal or resolved) is not publicly routable.
    #[error("destination address is in a blocked range ({range})")]
    Blocked { range: BlockedRange },
    /// The URL scheme is not `https` (or `http` when allowed).
    #[error("URL scheme `{0}` is not allowed")]
    SchemeNotAllowed(String),
    /// The URL has no host to deliver to.
    #[error("URL has no host")]
    NoHost,
    /// The hostname is reserved for internal use (e.g. `localhost`, `*.internal`).
    #[error("destination hostname is reserved for internal use")]
    ForbiddenHostname,
    /// The port is neither 443, 80 nor one the operator allowed: a public address's other
    /// ports are databases, caches and admin consoles, not webhook receivers.
    #[error("destination port is not allowed")]
    PortNotAllowed,
}

impl SsrfError {
    /// A short, stable name of the refusal's class for logs and metrics (never the URL, host,
    /// address or port). It is not for tenants: the API answers every class with one generic
    /// refusal so that it cannot be used to learn what internal names resolve to.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Blocked { range } => range.as_str(),
            Self::SchemeNotAllowed(_) => "scheme",
            Self::NoHost => "no-host",
            Self::ForbiddenHostname => "forbidden-hostname",
            Self::PortNotAllowed => "port",
        }
    }
}

/// The ports a webhook may be delivered to without the operator's say-so.
pub const DEFAULT_ALLOWED_PORTS: [u16; 2] = [443, 80];

/// Returns why `ip` must not be delivered to, or `None` for a public, globally routable address.
pub fn classify(ip: IpAddr) -> Option<BlockedRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// IPv4 special-purpose ranges, most specific first: the first match wins, so the metadata
/// hosts must precede the link-local and CGNAT blocks that contain them.
const V4_RANGES: &[(Ipv4Addr, u32, BlockedRange)] = &[
    (
        Ipv4Addr::new(169, 254, 169, 254),
        32,
        BlockedRange::CloudMetadata,
    ),
    (
        Ipv4Addr::new(100, 100, 100, 200),
        32,
        BlockedRange::CloudMetadata,
    ),
    (
        Ipv4Addr::new(255, 255, 255, 255),
        32,
        BlockedRange::Broadcast,
    ),
    (Ipv4Addr::new(0, 0, 0, 0), 32, BlockedRange::Unspecified),
    (Ipv4Addr::new(0, 0, 0, 0), 8, BlockedRange::ThisNetwork),
    (Ipv4Addr::new(10, 0, 0, 0), 8, BlockedRange::Private),
    (Ipv4Addr::new(172, 16, 0, 0), 12, BlockedRange::Private),
    (Ipv4Addr::new(192, 168, 0, 0), 16, BlockedRange::Private),
    (Ipv4Addr::new(127, 0, 0, 0), 8, BlockedRange::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, BlockedRange::LinkLocal),
    (Ipv4Addr::new(100, 64, 0, 0), 10, BlockedRange::Cgnat),
    (Ipv4Addr::new(192, 0, 0, 0), 24, BlockedRange::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, BlockedRange::Documentation),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        BlockedRange::Documentation,
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        BlockedRange::Documentation,
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        BlockedRange::SixToFourRelay,
    ),
    (Ipv4Addr::new(198, 18, 0, 0), 15, BlockedRange::Benchmarking),
    (Ipv4Addr::new(224, 0, 0, 0), 4, BlockedRange::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, BlockedRange::Reserved),
];

/// IPv6 ranges checked after the embedded-IPv4 forms, most specific first.
const V6_RANGES: &[(Ipv6Addr, u32, BlockedRange)] = &[
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
        BlockedRange::CloudMetadata,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        BlockedRange::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        BlockedRange::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        BlockedRange::Multicast,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        BlockedRange::Documentation,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        BlockedRange::Documentation,
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        BlockedRange::Discard,
    ),
    // Covers Teredo 2001::/32 too; Teredo is decoded before this table is consulted.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        BlockedRange::Reserved,
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        BlockedRange::Reserved,
    ),
];

fn v4_in(ip: Ipv4Addr, prefix: Ipv4Addr, len: u32) -> bool {
    // `checked_shl` yields None for len 0 (shift by 32), meaning "match everything".
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    ip.to_bits() & mask == prefix.to_bits() & mask
}

fn v6_in(ip: Ipv6Addr, prefix: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip.to_bits() & mask == prefix.to_bits() & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    V4_RANGES
        .iter()
        .find(|(prefix, len, _)| v4_in(ip, *prefix, *len))
        .map(|(_, _, range)| *range)
}

/// The IPv4 address held in the low 32 bits of an IPv6 address.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    // Truncation to the low 32 bits is exactly the embedding.
    Ipv4Addr::from_bits(ip.to_bits() as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    if ip.is_unspecified() {
        return Some(BlockedRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(BlockedRange::Loopback);
    }
    let seg = ip.segments();

    // IPv4-mapped ::ffff:a.b.c.d: the socket layer talks IPv4 to the embedded address, so it is
    // exactly as safe as that address.
    if v6_in(ip, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
        return classify_v4(low_v4(ip));
    }
    // IPv4-compatible ::a.b.c.d (:: and ::1 were handled above): deprecated, block whole.
    if v6_in(ip, Ipv6Addr::UNSPECIFIED, 96) {
        return Some(classify_v4(low_v4(ip)).unwrap_or(BlockedRange::Ipv4Compatible));
    }
    // NAT64 well-known prefix: the translator forwards to the embedded address, so judge that.
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return classify_v4(low_v4(ip));
    }
    // NAT64 local-use: prefix length is the operator's choice, so the embedded address cannot be
    // located reliably; the translator is local infrastructure. Block whole.
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48) {
        return Some(BlockedRange::Nat64LocalUse);
    }
    // 6to4: the router's IPv4 address is in bits 16..48. Blocked whole (see module docs); the
    // embedded address only refines the reported reason.
    if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        let embedded = Ipv4Addr::from_bits((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return Some(classify_v4(embedded).unwrap_or(BlockedRange::SixToFour));
    }
    // Teredo: the client's IPv4 address is the last 32 bits, bit-inverted. Blocked whole.
    if v6_in(ip, Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32) {
        let client = Ipv4Addr::from_bits(!(ip.to_bits() as u32));
        return Some(classify_v4(client).unwrap_or(BlockedRange::Teredo));
    }

    if let Some((_, _, range)) = V6_RANGES
        .iter()
        .find(|(prefix, len, _)| v6_in(ip, *prefix, *len))
    {
        return Some(*range);
    }
    // Only 2000::/3 is allocated for global unicast; everything else (old site-local fec0::/10,
    // unassigned space, SIIT ::ffff:0:0:0/96, ...) cannot host a public receiver.
    if !v6_in(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Some(BlockedRange::Reserved);
    }
    None
}

/// True for names that by definition resolve to, or only exist on, internal networks.
fn is_forbidden_hostname(host: &str) -> bool {
    // A trailing dot is the same name (fully qualified), so `localhost.` must not slip through.
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let is_or_under = |suffix: &str| {
        host == suffix
            || host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    // localhost (RFC 6761), .internal (ICANN private use; includes metadata.google.internal),
    // .local (mDNS, RFC 6762) and home.arpa (RFC 8375).
    ["localhost", "internal", "local", "home.arpa"]
        .iter()
        .any(|suffix| is_or_under(suffix))
}

/// What deliveries may reach. `Default` is the strict production setting.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    /// Allow internal addresses and hostnames (local development and tests only).
    pub allow_private: bool,
    /// Allow plain `http` in addition to `https`.
    pub allow_http: bool,
    /// Names answered from this table instead of DNS (split-horizon setups, tests). Their
    /// addresses go through the same checks as any DNS answer.
    pub static_hosts: std::collections::HashMap<String, Vec<IpAddr>>,
    /// Ports allowed besides [`DEFAULT_ALLOWED_PORTS`] (`webhooks.allowed_ports`). With
    /// `allow_private`, every port is allowed.
    pub allowed_ports: Vec<u16>,
}

impl SsrfPolicy {
    /// Checks a URL before sending. Does not resolve hostnames: that is [`GuardedResolver`]'s
    /// job at connect time. Must be called before every send, because IP-literal hosts never
    /// reach the resolver.
    pub fn check_url(&self, url: &Url) -> Result<(), SsrfError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(SsrfError::SchemeNotAllowed(other.to_owned())),
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(SsrfError::NoHost),
        };
        if self.allow_private {
            return Ok(());
        }
        // `Url` has already normalised http(s) hosts: IPv4 in odd notations (`0x7f.1`,
        // `2130706433`) is serialised as dotted quad, IPv6 is bracketed and compressed.
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if let Some(range) = classify(ip) {
                return Err(SsrfError::Blocked { range });
            }
        } else if is_forbidden_hostname(host) {
            return Err(SsrfError::ForbiddenHostname);
        }
        // The port comes from the URL alone (the resolver's answers carry none), so checking
        // it here covers names and literals, at creation and before every attempt.
        let port = url.port_or_known_default().unwrap_or(0);
        if !(DEFAULT_ALLOWED_PORTS.contains(&port) || self.allowed_ports.contains(&port)) {
            return Err(SsrfError::PortNotAllowed);
        }
        Ok(())
    }
}

/// DNS resolver for reqwest that only ever hands out addresses [`classify`] allows.
///
/// reqwest connects to exactly the addresses returned here (the port comes from the URL), so
/// the address checked is the address connected to, on every attempt, even when DNS answers
/// change between attempts.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: SsrfPolicy,
}

impl GuardedResolver {
    pub fn new(policy: SsrfPolicy) -> Self {
        Self { policy }
    }

    /// Keeps the allowed addresses; if none remain, reports the first blocked one's range.
    fn filter(&self, addrs: impl Iterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, BoxError> {
        let mut first_blocked = None;
        let allowed: Vec<SocketAddr> = addrs
            .filter(|addr| {
                if self.policy.allow_private {
                    return true;
                }
                match classify(addr.ip()) {
                    Some(range) => {
                        first_blocked.get_or_insert(range);
                        false
                    }
                    None => true,
                }
            })
            .collect();
        match (allowed.is_empty(), first_blocked) {
            (false, _) => Ok(allowed),
            (true, Some(range)) => Err(Box::new(SsrfError::Blocked { range })),
            // Not an SSRF verdict: the name simply had no addresses.
            (true, None) => Err(Box::new(io::Error::new(
                io::ErrorKind::NotFound,
                "name resolved to no addresses",
            ))),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            // Port 0 is replaced by reqwest with the URL's (or the scheme's default) port.
            let allowed = match this.policy.static_hosts.get(name.as_str()) {
                Some(ips) => this.filter(ips.iter().map(|ip| SocketAddr::new(*ip, 0)))?,
                None => this.filter(tokio::net::lookup_host((name.as_str(), 0)).await?)?,
            };
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A reqwest client builder with the SSRF guard installed: guarded DNS, no redirects (the
/// target of a redirect was never checked by [`SsrfPolicy::check_url`]) and no proxy (a proxy
/// resolves and connects on our behalf, bypassing the resolver). Callers may add timeouts, TLS
/// settings, etc., but must not re-enable redirects or proxies.
pub fn client_builder(policy: SsrfPolicy) -> reqwest::ClientBuilder {
    let https_only = !policy.allow_http;
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(policy)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(https_only)
}

/// Finds an [`SsrfError`] anywhere in an error's `source()` chain, e.g. inside a
/// `reqwest::Error` from a request refused by [`GuardedResolver`].
pub fn find_ssrf_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a SsrfError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(ssrf) = e.downcast_ref::<SsrfError>() {
            return Some(ssrf);
        }
        // `io::Error::source()` skips the error it wraps (it returns the wrapped error's
        // source), so an SsrfError boxed in an io::Error is only reachable via `get_ref`.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            && let Some(ssrf) = find_ssrf_error(inner)
        {
            return Some(ssrf);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classify_table() {
        use BlockedRange::*;
        let cases: &[(&str, Option<BlockedRange>)] = &[
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            ("2001:200::1", None),
            // IPv4 ranges.
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(ThisNetwork)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("192.88.99.1", Some(SixToFourRelay)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            // IPv6 ranges.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("3fff:fff::1", Some(Documentation)),
            ("100::1", Some(Discard)),
            ("100:0:0:1::1", Some(Reserved)),
            ("2001:1::1", Some(Reserved)),
            ("2001:1ff::1", Some(Reserved)),
            ("5f00::1", Some(Reserved)),
            ("fec0::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            ("::ffff:0:808:808", Some(Reserved)), // SIIT, outside 2000::/3
            // IPv4-mapped: judged by the embedded address.
            ("::ffff:8.8.8.8", None),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            // IPv4-compatible: blocked whole, inner range reported when blocked.
            ("::8.8.8.8", Some(Ipv4Compatible)),
            ("::10.0.0.1", Some(Private)),
            ("::127.0.0.1", Some(Loopback)),
            // NAT64 well-known prefix: judged by the embedded address.
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::169.254.169.254", Some(CloudMetadata)),
            // NAT64 local-use: blocked whole.
            ("64:ff9b:1::8.8.8.8", Some(Nat64LocalUse)),
            ("64:ff9b:1::10.0.0.1", Some(Nat64LocalUse)),
            // 6to4: blocked whole, inner range reported when blocked.
            ("2002:808:808::1", Some(SixToFour)),
            ("2002:a00:1::1", Some(Private)),
            ("2002:7f00:1::1", Some(Loopback)),
            // Teredo: client 10.0.0.1 inverted is f5ff:fffe; 8.8.8.8 inverted is f7f7:f7f7.
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Some(Teredo)),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some(Private)),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some(Loopback)),
        ];
        for (addr, expected) in cases {
            assert_eq!(classify(ip(addr)), *expected, "{addr}");
        }
    }

    #[test]
    fn as_str_is_kebab_case() {
        let names = [
            BlockedRange::Loopback,
            BlockedRange::CloudMetadata,
            BlockedRange::SixToFourRelay,
            BlockedRange::Nat64LocalUse,
            BlockedRange::Ipv4Compatible,
        ]
        .map(|r| r.as_str());
        assert_eq!(
            names,
            [
                "loopback",
                "cloud-metadata",
                "6to4-relay-anycast",
                "nat64-local-use",
                "ipv4-compatible"
            ]
        );
        for name in names {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
    }

    fn check(policy: &SsrfPolicy, url: &str) -> Result<(), SsrfError> {
        policy.check_url(&Url::parse(url).unwrap())
    }

    fn strict() -> SsrfPolicy {
        SsrfPolicy::default()
    }

    #[test]
    fn check_url_scheme() {
        assert!(check(&strict(), "https://8.8.8.8/hook").is_ok());
        assert!(check(&strict(), "https://example.com/hook").is_ok());
        assert!(matches!(
            check(&strict(), "http://example.com/"),
            Err(SsrfError::SchemeNotAllowed(s)) if s == "http"
        ));
        let http = SsrfPolicy {
            allow_http: true,
            ..strict()
        };
        assert!(check(&http, "http://example.com/").is_ok());
        assert!(matches!(
            check(&http, "ftp://example.com/"),
            Err(SsrfError::SchemeNotAllowed(_))
        ));
        assert!(matches!(
            check(
                &SsrfPolicy {
                    allow_private: true,
                    ..strict()
                },
                "http://example.com/"
            ),
            Err(SsrfError::SchemeNotAllowed(_))
        ));
    }

    #[test]
    fn check_url_blocks_literals() {
        let range = |url: &str| match check(&strict(), url) {
            Err(SsrfError::Blocked { range }) => Some(range),
            _ => None,
        };
        assert_eq!(range("https://127.0.0.1/"), Some(BlockedRange::Loopback));
        assert_eq!(range("https://[::1]/"), Some(BlockedRange::Loopback));
        assert_eq!(
            range("https://[::ffff:10.0.0.1]/"),
            Some(BlockedRange::Private)
        );
        assert_eq!(
            range("https://169.254.169.254/latest"),
            Some(BlockedRange::CloudMetadata)
        );
        assert_eq!(
            range("https://[fd00:ec2::254]/"),
            Some(BlockedRange::CloudMetadata)
        );
        assert_eq!(
            range("https://0.0.0.0:8080/"),
            Some(BlockedRange::Unspecified)
        );
        // Obfuscated IPv4 notations are normalised by the URL parser before classification.
        assert_eq!(range("https://2130706433/"), Some(BlockedRange::Loopback));
        assert_eq!(range("https://0x7f.1/"), Some(BlockedRange::Loopback));
        assert_eq!(range("https://[64:ff9b::8.8.8.8]/"), None);
        assert_eq!(range("https://[2606:4700:4700::1111]/"), None);
    }

    #[test]
    fn check_url_forbidden_hostnames() {
        for url in [
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://printer.local/",
            "https://nas.home.arpa/",
        ] {
            assert!(
                matches!(check(&strict(), url), Err(SsrfError::ForbiddenHostname)),
                "{url}"
            );
        }
        for url in [
            "https://notlocalhost/",
            "https://localhost.example.com/",
            "https://mylocal.example/",
        ] {
            assert!(check(&strict(), url).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_default_and_configured_ports_reach_public_addresses() {
        for url in [
            "https://8.8.8.8/",
            "https://8.8.8.8:443/",
            "https://example.com:80/",
        ] {
            assert!(check(&strict(), url).is_ok(), "{url}");
        }
        for url in [
            "https://8.8.8.8:6379/",
            "https://example.com:8443/",
            "https://example.com:22/",
        ] {
            assert!(
                matches!(check(&strict(), url), Err(SsrfError::PortNotAllowed)),
                "{url}"
            );
        }
        let with_8443 = SsrfPolicy {
            allowed_ports: vec![8443],
            ..strict()
        };
        assert!(check(&with_8443, "https://example.com:8443/").is_ok());
        assert!(check(&with_8443, "https://example.com:6379/").is_err());
        let dev = SsrfPolicy {
            allow_private: true,
            ..strict()
        };
        assert!(check(&dev, "https://8.8.8.8:6379/").is_ok());
    }

    #[test]
    fn allow_private_lets_internal_through() {
        let dev = SsrfPolicy {
            allow_private: true,
            allow_http: false,
            ..Default::default()
        };
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://169.254.169.254/",
            "https://localhost/",
            "https://metadata.google.internal/",
        ] {
            assert!(check(&dev, url).is_ok(), "{url}");
        }
    }

    #[test]
    fn errors_do_not_leak_destination() {
        let messages = [
            check(&strict(), "https://10.1.2.3/")
                .unwrap_err()
                .to_string(),
            check(&strict(), "https://localhost/")
                .unwrap_err()
                .to_string(),
            check(&strict(), "gopher://secret.example/")
                .unwrap_err()
                .to_string(),
        ];
        for msg in messages {
            assert!(
                !msg.contains("10.1.2.3") && !msg.contains("localhost"),
                "{msg}"
            );
            assert!(!msg.contains("secret"), "{msg}");
        }
    }

    #[test]
    fn resolver_filter_keeps_only_public() {
        let sock = |s: &str| SocketAddr::new(ip(s), 0);
        let resolver = GuardedResolver::new(strict());
        let kept = resolver
            .filter([sock("10.0.0.1"), sock("8.8.8.8"), sock("::1")].into_iter())
            .unwrap();
        assert_eq!(kept, vec![sock("8.8.8.8")]);

        let err = resolver
            .filter([sock("127.0.0.1"), sock("::1")].into_iter())
            .unwrap_err();
        assert!(matches!(
            find_ssrf_error(&*err),
            Some(SsrfError::Blocked {
                range: BlockedRange::Loopback
            })
        ));

        let err = resolver.filter(std::iter::empty()).unwrap_err();
        assert!(
            find_ssrf_error(&*err).is_none(),
            "no addresses is not an SSRF verdict"
        );

        let open = GuardedResolver::new(SsrfPolicy {
            allow_private: true,
            allow_http: false,
            ..Default::default()
        });
        assert_eq!(
            open.filter([sock("127.0.0.1")].into_iter()).unwrap().len(),
            1
        );
    }

    #[test]
    fn find_ssrf_error_walks_chain_and_io_errors() {
        let wrapped = io::Error::other(SsrfError::Blocked {
            range: BlockedRange::Private,
        });
        assert!(matches!(
            find_ssrf_error(&wrapped),
            Some(SsrfError::Blocked {
                range: BlockedRange::Private
            })
        ));
        let unrelated = io::Error::other("connection refused");
        assert!(find_ssrf_error(&unrelated).is_none());
    }

    #[tokio::test]
    async fn resolver_blocks_localhost() {
        let resolver = GuardedResolver::new(strict());
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be blocked"),
            Err(err) => err,
        };
        assert!(matches!(
            find_ssrf_error(&*err),
            Some(SsrfError::Blocked {
                range: BlockedRange::Loopback
            })
        ));
    }

    /// Accepts one connection on loopback, reads the request head and answers with `response`.
    async fn serve_once(response: &'static [u8]) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                stream.readable().await.unwrap();
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            let mut sent = 0;
            while sent < response.len() {
                stream.writable().await.unwrap();
                match stream.try_write(&response[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
        });
        (port, task)
    }

    fn client(policy: SsrfPolicy) -> reqwest::Client {
        client_builder(policy)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn client_refuses_name_resolving_to_loopback() {
        let client = client(SsrfPolicy {
            allow_private: false,
            allow_http: true,
            ..Default::default()
        });
        let err = client.get("http://localhost:1/").send().await.unwrap_err();
        assert!(
            matches!(
                find_ssrf_error(&err),
                Some(SsrfError::Blocked {
                    range: BlockedRange::Loopback
                })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn client_refuses_http_when_not_allowed() {
        let client = client(SsrfPolicy {
            allow_private: true,
            allow_http: false,
            ..Default::default()
        });
        assert!(client.get("http://localhost:1/").send().await.is_err());
    }

    #[tokio::test]
    async fn client_with_allow_private_reaches_loopback() {
        let (port, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let client = client(SsrfPolicy {
            allow_private: true,
            allow_http: true,
            ..Default::default()
        });
        let response = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn client_does_not_follow_redirects() {
        let (port, server) = serve_once(
            b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let client = client(SsrfPolicy {
            allow_private: true,
            allow_http: true,
            ..Default::default()
        });
        let response = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        server.await.unwrap();
    }
}
