//! Which S3 endpoints the provider lets a policy name. A tenant writes the endpoint, so without a
//! limit it could make the operator send signed requests anywhere the operator can reach (its
//! cluster's services, a cloud metadata address, a listener of its own). An endpoint is allowed
//! only when an allowlist entry names it: exactly (`scheme://host[:port]`, the provider's word
//! for that host, whatever it resolves to) or by a wildcard (`scheme://*.domain`), in which case
//! every address it resolves to must lie outside the restricted ranges (loopback, link-local,
//! unspecified, multicast, and the configured cluster and private ranges).

use std::net::IpAddr;

use ipnet::IpNet;
use object_store::client::{DnsFuture, DnsResolver};

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("s3 endpoint {0:?} is not an http or https URL with a host")]
    Invalid(String),
    #[error("s3 endpoint {0} is not in the operator's allowlist (--s3-endpoint-allowlist)")]
    NotAllowed(String),
    #[error(
        "s3 endpoint {endpoint} resolves to {address}, a restricted address: the allowlist must name the endpoint exactly"
    )]
    Restricted { endpoint: String, address: IpAddr },
    #[error("s3 endpoint {0} does not resolve")]
    Unresolved(String),
    #[error("allowlist entry {0:?} is not scheme://host[:port] or scheme://*.domain[:port]")]
    BadEntry(String),
    #[error("restricted range {0:?} is not a CIDR")]
    BadRange(String),
}

/// The parts of an endpoint that are compared: scheme, lower-case host, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port][/path]`; only http and https.
    pub fn parse(endpoint: &str) -> Result<Self, EndpointError> {
        let invalid = || EndpointError::Invalid(endpoint.into());
        let url = url::Url::parse(endpoint).map_err(|_| invalid())?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(invalid());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid());
        }
        let host = match url.host().ok_or_else(invalid)? {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = url.port_or_known_default().ok_or_else(invalid)?;
        Ok(Self { scheme, host, port })
    }

    /// The host as an address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "{}://[{ip}]:{}", self.scheme, self.port),
            _ => write!(f, "{}://{}:{}", self.scheme, self.host, self.port),
        }
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Exact(Origin),
    /// `scheme://*.domain[:port]`: any subdomain of `domain` (not `domain` itself).
    Suffix {
        scheme: String,
        domain: String,
        port: u16,
    },
}

/// How an endpoint matched the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Named exactly: allowed wherever it resolves.
    Exact,
    /// Matched by a wildcard: allowed only outside the restricted ranges.
    Wildcard,
}

/// The provider's allowlist and restricted ranges.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    entries: Vec<Entry>,
    restricted: Vec<IpNet>,
}

impl EndpointPolicy {
    /// Parses the allowlist entries and the restricted CIDRs (blank entries are ignored).
    pub fn new(allowlist: &[String], restricted: &[String]) -> Result<Self, EndpointError> {
        let mut entries = Vec::new();
        for raw in allowlist.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let bad = || EndpointError::BadEntry(raw.into());
            entries.push(match raw.split_once("://*.") {
                Some((scheme, rest)) => {
                    let origin = Origin::parse(&format!("{scheme}://{rest}")).map_err(|_| bad())?;
                    if origin.ip().is_some() {
                        return Err(bad());
                    }
                    Entry::Suffix {
                        scheme: origin.scheme,
                        domain: origin.host,
                        port: origin.port,
                    }
                }
                None => Entry::Exact(Origin::parse(raw).map_err(|_| bad())?),
            });
        }
        let restricted = restricted
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|_| EndpointError::BadRange(c.into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            entries,
            restricted,
        })
    }

    /// How `origin` matches the allowlist, if it does.
    pub fn matches(&self, origin: &Origin) -> Option<Match> {
        let mut found = None;
        for e in &self.entries {
            match e {
                Entry::Exact(o) if o == origin => return Some(Match::Exact),
                Entry::Suffix {
                    scheme,
                    domain,
                    port,
                } if *scheme == origin.scheme
                    && *port == origin.port
                    && origin.ip().is_none()
                    && origin
                        .host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.')) =>
                {
                    found = Some(Match::Wildcard)
                }
                _ => {}
            }
        }
        found
    }

    /// How a bare host name matches the allowlist (any scheme and port): what a connection's
    /// name resolution can check, for the endpoint and for any host a redirect leads to.
    pub fn host_match(&self, host: &str) -> Option<Match> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut found = None;
        for e in &self.entries {
            match e {
                Entry::Exact(o) if o.host == host => return Some(Match::Exact),
                Entry::Suffix { domain, .. }
                    if host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.')) =>
                {
                    found = Some(Match::Wildcard)
                }
                _ => {}
            }
        }
        found
    }

    /// Whether an address may not be reached through a wildcard entry.
    pub fn is_restricted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let always = match ip {
            IpAddr::V4(v4) => {
                v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unicast_link_local()
            }
        };
        always || self.restricted.iter().any(|n| n.contains(&ip))
    }

    /// Checks an endpoint before any request is made to it: allowed when named exactly, or when
    /// matched by a wildcard and every address in `resolved` is outside the restricted ranges.
    pub fn check(&self, origin: &Origin, resolved: &[IpAddr]) -> Result<(), EndpointError> {
        match self.matches(origin) {
            None => Err(EndpointError::NotAllowed(origin.to_string())),
            Some(Match::Exact) => Ok(()),
            Some(Match::Wildcard) if resolved.is_empty() => {
                Err(EndpointError::Unresolved(origin.to_string()))
            }
            Some(Match::Wildcard) => match resolved.iter().find(|ip| self.is_restricted(**ip)) {
                Some(ip) => Err(EndpointError::Restricted {
                    endpoint: origin.to_string(),
                    address: *ip,
                }),
                None => Ok(()),
            },
        }
    }

    /// [`check`](Self::check) with the endpoint's addresses looked up now (only for a wildcard
    /// match: an exact one needs no look-up, and a refused one gets none). It also gives the
    /// resolver every connection must go through: a host no entry allows (one a redirect
    /// leads to) does not resolve, and one a wildcard allows resolves to no restricted address,
    /// even when its name resolves elsewhere after this check (DNS rebinding).
    pub async fn allow(
        self: &std::sync::Arc<Self>,
        endpoint: &str,
    ) -> Result<std::sync::Arc<dyn DnsResolver>, EndpointError> {
        self.allow_origin(endpoint).await?;
        Ok(std::sync::Arc::new(GuardedResolver {
            policy: self.clone(),
        }))
    }

    async fn allow_origin(&self, endpoint: &str) -> Result<Origin, EndpointError> {
        let origin = Origin::parse(endpoint)?;
        let resolved: Vec<IpAddr> = match self.matches(&origin) {
            Some(Match::Wildcard) => match origin.ip() {
                Some(ip) => vec![ip],
                None => tokio::net::lookup_host((origin.host.as_str(), origin.port))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect())
                    .unwrap_or_default(),
            },
            _ => Vec::new(),
        };
        self.check(&origin, &resolved)?;
        Ok(origin)
    }
}

/// Resolves names for every connection to an allowed endpoint: a host no entry allows does not
/// resolve at all; one a wildcard allows keeps only its addresses outside the restricted ranges
/// (failing when none is left).
#[derive(Debug)]
struct GuardedResolver {
    policy: std::sync::Arc<EndpointPolicy>,
}

impl DnsResolver for GuardedResolver {
    fn resolve(&self, host: &str) -> DnsFuture {
        let policy = self.policy.clone();
        let host = host.to_string();
        Box::pin(async move {
            let matched = policy
                .host_match(&host)
                .ok_or_else(|| format!("{host} is not in the operator's S3 endpoint allowlist"))?;
            let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .filter(|ip| matched == Match::Exact || !policy.is_restricted(*ip))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{host} resolves to no address outside the restricted ranges").into(),
                );
            }
            Ok(addrs)
        })
    }
}

/// The endpoint a policy without one uses: AWS's for its region.
pub fn aws_endpoint(region: &str) -> String {
    format!("https://s3.{region}.amazonaws.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EndpointPolicy {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let restricted: Vec<String> = ["10.0.0.0/8", "192.168.0.0/16", "fc00::/7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        EndpointPolicy::new(&allow, &restricted).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_listed_endpoints_are_allowed() {
        let p = policy(&["http://127.0.0.1:8333", "https://s3.example.net"]);
        let ok = |e: &str| p.check(&Origin::parse(e).unwrap(), &[]);
        assert_eq!(ok("http://127.0.0.1:8333"), Ok(()));
        assert_eq!(ok("http://127.0.0.1:8333/"), Ok(()));
        assert_eq!(ok("https://S3.Example.Net/"), Ok(()));
        assert_eq!(ok("https://s3.example.net:443"), Ok(()));
        for refused in [
            "http://127.0.0.1:8334",
            "https://127.0.0.1:8333",
            "http://localhost:8333",
            "http://s3.example.net",
            "https://s3.example.net:8443",
            "https://evil.s3.example.net",
            "http://169.254.169.254",
            "http://[::1]:8333",
        ] {
            assert!(
                matches!(ok(refused), Err(EndpointError::NotAllowed(_))),
                "{refused} was allowed"
            );
        }
    }

    #[test]
    fn a_wildcard_match_is_refused_in_restricted_ranges() {
        let p = policy(&["https://*.amazonaws.com"]);
        let o = Origin::parse("https://s3.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(p.check(&o, &[ip("52.95.1.1")]), Ok(()));
        for bad in [
            "127.0.0.1",
            "169.254.169.254",
            "10.96.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(
                matches!(
                    p.check(&o, &[ip("52.95.1.1"), ip(bad)]),
                    Err(EndpointError::Restricted { .. })
                ),
                "{bad} was allowed"
            );
        }
        assert!(matches!(
            p.check(&o, &[]),
            Err(EndpointError::Unresolved(_))
        ));
        // The domain itself and look-alikes are not its subdomains; nor is another scheme.
        for other in [
            "https://amazonaws.com",
            "https://evilamazonaws.com",
            "http://s3.amazonaws.com",
            "https://s3.amazonaws.com.evil.net",
            "https://52.95.1.1",
        ] {
            assert!(
                matches!(
                    p.check(&Origin::parse(other).unwrap(), &[ip("52.95.1.1")]),
                    Err(EndpointError::NotAllowed(_))
                ),
                "{other} was allowed"
            );
        }
    }

    #[test]
    fn malformed_endpoints_and_entries_are_refused() {
        for bad in [
            "ftp://s3.example.net",
            "s3.example.net",
            "http://user:pw@s3.example.net",
            "",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} parsed");
        }
        for bad in ["*.example.net", "https://*.10.0.0.1", "nonsense"] {
            assert!(
                EndpointPolicy::new(&[bad.to_string()], &[]).is_err(),
                "{bad} accepted"
            );
        }
        assert!(EndpointPolicy::new(&[], &["10.0.0.0/33".into()]).is_err());
        assert_eq!(
            aws_endpoint("eu-west-1"),
            "https://s3.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn a_redirect_can_lead_only_to_hosts_the_allowlist_names() {
        let p = policy(&["https://s3.example.net", "https://*.amazonaws.com"]);
        assert_eq!(p.host_match("s3.example.net"), Some(Match::Exact));
        assert_eq!(p.host_match("S3.Example.Net."), Some(Match::Exact));
        assert_eq!(
            p.host_match("bucket.s3.eu-west-1.amazonaws.com"),
            Some(Match::Wildcard)
        );
        for other in [
            "evil.example",
            "example.net",
            "amazonaws.com",
            "x.s3.example.net.evil",
        ] {
            assert_eq!(p.host_match(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn an_exact_entry_needs_no_lookup_and_a_refused_endpoint_gets_none() {
        let p = std::sync::Arc::new(policy(&["http://127.0.0.1:9", "https://*.example.net"]));
        assert!(p.allow("http://127.0.0.1:9").await.is_ok());
        assert!(matches!(
            p.allow("http://127.0.0.1:10").await,
            Err(EndpointError::NotAllowed(_))
        ));
        // An address literal matched by no exact entry is refused without a look-up.
        assert!(matches!(
            p.allow("https://10.0.0.1").await,
            Err(EndpointError::NotAllowed(_))
        ));
    }
}
