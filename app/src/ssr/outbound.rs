//! Fetching a URL that came from outside CREVID (an image URL in a provider's answer, a
//! picture or clip URL a creator pastes): only http(s), only public addresses unless the
//! admin allows private ones, the name resolved once and connected to exactly, redirects
//! followed by hand and each checked again ([`get`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::engine::TaskError;

/// How many redirects a URL may take; each target is checked as the first was.
pub const MAX_REDIRECTS: usize = 3;

/// Whom a fetch is for, and what it may reach.
pub struct Rules<'a> {
    /// What the URL is called in errors ("the provider's image URL", "the URL").
    pub what: &'a str,
    /// An origin as trusted as the admin's own base URL, which may be local.
    pub trusted: Option<url::Origin>,
    /// Non-public ranges the admin lets URLs reach (`allowed_private_addresses`: a LAN
    /// media server); every other non-public address is still refused.
    pub allowed: Vec<ipnet::IpNet>,
}

impl<'a> Rules<'a> {
    /// Public addresses, `trusted`'s origin, and the admin's `allowed_private_addresses`
    /// (checked when saved; an older value that no longer parses allows nothing).
    pub fn new(what: &'a str, trusted: Option<url::Origin>, allowed_private: &str) -> Self {
        Self {
            what,
            trusted,
            allowed: parse_ranges(allowed_private).unwrap_or_default(),
        }
    }
}

/// The admin's `allowed_private_addresses`: CIDR blocks (or single addresses) separated
/// by commas or spaces; Err names the first that is neither.
pub fn parse_ranges(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnet::IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| part.to_owned())
        })
        .collect()
}

/// GETs `url` by the rules and returns its successful answer, its body still unread,
/// within `deadline` (name lookup and redirects; the caller reads the body by then).
///
/// The URL is data from outside, so it may only lead to public addresses: it must be http
/// or https, and its host (as written, or every address its name resolves to) must not be
/// loopback, private, link-local, shared (CGNAT), multicast, unspecified or reserved, in
/// IPv4 or any IPv6 form that carries IPv4. The connection then goes to exactly the
/// addresses checked, never through a proxy and never to a fresh lookup, so a name that
/// changes its answer between check and connect (DNS rebinding) gains nothing. Redirects
/// are followed by hand, at most [`MAX_REDIRECTS`], each target checked again. Errors
/// name the URL as `rules.what`: Permanent for what the URL is, Transient for what may
/// pass (a timeout, a 5xx).
pub async fn get(
    url: &str,
    rules: &Rules<'_>,
    deadline: tokio::time::Instant,
) -> Result<reqwest::Response, TaskError> {
    let what = rules.what;
    let mut url = reqwest::Url::parse(url)
        .map_err(|_| TaskError::Permanent(format!("{what} is not a valid URL; refused")))?;
    for _ in 0..=MAX_REDIRECTS {
        let client = client_for(&url, rules, deadline).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let response = client
            .get(url.clone())
            .timeout(left)
            .send()
            .await
            .map_err(|e| download_failed(what, e))?;
        let status = response.status();
        if status.is_redirection() {
            let next = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok());
            let Some(next) = next else {
                return Err(TaskError::Permanent(format!(
                    "{what} answered {status} without a usable Location; refused"
                )));
            };
            url = next;
            continue;
        }
        if !status.is_success() {
            let message = format!("downloading from {what} failed with status {status}");
            // A missing or forbidden file stays so; a busy server may not.
            return Err(if status.is_client_error() && status.as_u16() != 429 {
                TaskError::Permanent(message)
            } else {
                TaskError::Transient {
                    message,
                    retry_after: None,
                }
            });
        }
        return Ok(response);
    }
    Err(TaskError::Permanent(format!(
        "{what} redirected more than {MAX_REDIRECTS} times; refused"
    )))
}

/// POSTs `body` to `url` by the same rules as [`get`] and returns the answer, whatever its
/// status, within `deadline`. Redirects are not followed: a webhook receiver is expected
/// to answer at the URL it was registered with, and a 3xx counts as a failed attempt.
/// Errors: Permanent for what the URL is, Transient for a refused connection or timeout.
pub async fn post(
    url: &str,
    rules: &Rules<'_>,
    deadline: tokio::time::Instant,
    headers: reqwest::header::HeaderMap,
    body: String,
) -> Result<reqwest::Response, TaskError> {
    let what = rules.what;
    let url = reqwest::Url::parse(url)
        .map_err(|_| TaskError::Permanent(format!("{what} is not a valid URL; refused")))?;
    let client = client_for(&url, rules, deadline).await?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    client
        .post(url)
        .headers(headers)
        .body(body)
        .timeout(left)
        .send()
        .await
        .map_err(|e| TaskError::Transient {
            message: if e.is_timeout() {
                format!("{what} did not answer in time")
            } else {
                format!("sending to {what} failed: {}", cause(&e))
            },
            retry_after: None,
        })
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"), which
/// says more than reqwest's own "error sending request".
fn cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Checks now what [`get`] and [`post`] check before connecting: the scheme, and that the
/// host resolves only to addresses the rules allow.
pub async fn check(
    url: &str,
    rules: &Rules<'_>,
    deadline: tokio::time::Instant,
) -> Result<(), TaskError> {
    let url = reqwest::Url::parse(url)
        .map_err(|_| TaskError::Permanent(format!("{} is not a valid URL", rules.what)))?;
    client_for(&url, rules, deadline).await.map(drop)
}

/// A transport failure while downloading (refused connection, timeout, a cut-off body).
pub(crate) fn download_failed(what: &str, e: reqwest::Error) -> TaskError {
    TaskError::Transient {
        message: if e.is_timeout() {
            format!("downloading from {what} timed out")
        } else {
            format!("downloading from {what} failed: {}", e.without_url())
        },
        retry_after: None,
    }
}

/// A client that fetches `url` only if it may be fetched (see [`get`]), pinned to the
/// addresses checked, following no redirects on its own. One per fetch: the pin is per
/// name, and a download is one request anyway.
async fn client_for(
    url: &reqwest::Url,
    rules: &Rules<'_>,
    deadline: tokio::time::Instant,
) -> Result<reqwest::Client, TaskError> {
    let what = rules.what;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TaskError::Permanent(format!(
            "{what} is a {}: URL, not http or https; refused",
            url.scheme()
        )));
    }
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("crevid/", env!("CARGO_PKG_VERSION")));
    let builder = if rules
        .trusted
        .as_ref()
        .is_some_and(|origin| *origin == url.origin())
    {
        builder
    } else {
        // A proxy would look the name up again itself, and reach what it likes.
        let builder = builder.no_proxy();
        match url.host() {
            None => return Err(TaskError::Permanent(format!("{what} has no host; refused"))),
            // An address as written is connected to as written: nothing to resolve.
            Some(url::Host::Ipv4(ip)) => {
                refuse_non_public(rules, IpAddr::V4(ip))?;
                builder
            }
            Some(url::Host::Ipv6(ip)) => {
                refuse_non_public(rules, IpAddr::V6(ip))?;
                builder
            }
            Some(url::Host::Domain(name)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let addrs = resolve(what, name, port, deadline).await?;
                for addr in &addrs {
                    refuse_non_public(rules, addr.ip())?;
                }
                builder.resolve_to_addrs(name, &addrs)
            }
        }
    };
    builder.build().map_err(|e| TaskError::Transient {
        message: format!("preparing the download from {} failed: {e}", rules.what),
        retry_after: None,
    })
}

async fn resolve(
    what: &str,
    name: &str,
    port: u16,
    deadline: tokio::time::Instant,
) -> Result<Vec<SocketAddr>, TaskError> {
    let failed = |why: String| TaskError::Transient {
        message: format!("{what}'s host {name} could not be resolved: {why}"),
        retry_after: None,
    };
    let lookup = tokio::time::timeout_at(deadline, tokio::net::lookup_host((name, port))).await;
    let addrs: Vec<SocketAddr> = match lookup {
        Err(_) => return Err(failed("timed out".into())),
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(addrs)) => addrs.collect(),
    };
    if addrs.is_empty() {
        return Err(failed("no addresses".into()));
    }
    Ok(addrs)
}

fn refuse_non_public(rules: &Rules<'_>, ip: IpAddr) -> Result<(), TaskError> {
    // An IPv4-mapped address is allowed as the IPv4 address it reaches.
    let reached = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match non_public(ip) {
        None => Ok(()),
        Some(_) if rules.allowed.iter().any(|net| net.contains(&reached)) => Ok(()),
        Some(kind) => Err(TaskError::Permanent(format!(
            "{} points at a private address ({ip}, {kind}); refused",
            rules.what
        ))),
    }
}

/// What kind of address `ip` is, if it is not a public unicast address a URL from outside
/// may lead to.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        // 0.0.0.0/8; Linux connects 0.0.0.0 to the local host.
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        // Cloud metadata services live at 169.254.169.254.
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (224..=239, _, _) => "multicast",
        // 240.0.0.0/4 and the broadcast address.
        (240..=255, _, _) => "reserved",
        // IETF protocol assignments, documentation, benchmarking.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "reserved"
        }
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) reach the IPv4 address.
    if let Some(v4) = ip.to_ipv4() {
        return non_public_v4(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) are translated to the IPv4 they carry.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return non_public_v4(v4(s[1], s[2]));
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "private (unique local)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "private (site-local)",
        x if x & 0xff00 == 0xff00 => "multicast",
        // Documentation, and the discard prefix 100::/64.
        0x2001 if s[1] == 0x0db8 => "reserved",
        0x0100 if s[1..4] == [0, 0, 0] => "reserved",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ranges_are_cidr_blocks_or_addresses() {
        let ranges = parse_ranges("192.168.1.0/24, fd00::/8 10.0.0.7").unwrap();
        let shown: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["192.168.1.0/24", "fd00::/8", "10.0.0.7/32"]);
        assert_eq!(
            parse_ranges("192.168.1.9/24").unwrap()[0].to_string(),
            "192.168.1.0/24"
        );
        assert_eq!(parse_ranges(" ").unwrap(), vec![]);
        assert_eq!(parse_ranges("10.0.0.0/8, lan").unwrap_err(), "lan");
        let rules = Rules {
            what: "the URL",
            trusted: None,
            allowed: parse_ranges("192.168.1.0/24").unwrap(),
        };
        assert!(refuse_non_public(&rules, "192.168.1.20".parse().unwrap()).is_ok());
        assert!(refuse_non_public(&rules, "::ffff:192.168.1.20".parse().unwrap()).is_ok());
        assert!(refuse_non_public(&rules, "192.168.2.20".parse().unwrap()).is_err());
        assert!(refuse_non_public(&rules, "127.0.0.1".parse().unwrap()).is_err());
        assert!(refuse_non_public(&rules, "169.254.169.254".parse().unwrap()).is_err());
    }

    fn kind(ip: &str) -> Option<&'static str> {
        non_public(ip.parse().expect("an address"))
    }

    #[test]
    fn only_public_addresses_pass() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "private (unique local)"),
            ("fd12:3456::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "reserved"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }
}
