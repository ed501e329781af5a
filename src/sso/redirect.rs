//! Beside the request flow, under [`crate::sso`]: where `/.stagedoor/login?rd=…` may
//! send the browser back to after sign-in (no open redirect), and the request `Host`
//! the listener trusts to build URLs on.
//!
//! `rd` is either an origin-relative path (a single `/`, not `//` nor `/\`, nor `/`
//! followed by an encoded `/` or `\`) or an absolute URL whose scheme is the external
//! one (or `http` with `cookie_secure = false`), followed by `://`, whose authority has
//! no userinfo, no `%` and no `\`, and whose host is the request's own or one of
//! `return_hosts` (exact, or `*.suffix` for any name under suffix). No control
//! character, space or backslash anywhere. Anything else: `/` on the request host.

/// The default return target.
pub const FALLBACK: &str = "/";
/// Longest `rd` considered (longer: the fallback).
pub const MAX_RD: usize = 2_048;

/// What `rd` may be checked against.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// `https`, or `http` for a local demo.
    pub scheme: &'a str,
    /// Whether `http://` is also allowed (`cookie_secure = false`).
    pub allow_http: bool,
    /// The request's host, lowercase, without port.
    pub request_host: &'a str,
    pub return_hosts: &'a [String],
}

/// `rd` when it is a safe return target under `rules`, else [`FALLBACK`].
pub fn return_target<'r>(rd: &'r str, rules: &Rules<'_>) -> &'r str {
    if is_safe(rd, rules) { rd } else { FALLBACK }
}

fn is_safe(rd: &str, rules: &Rules<'_>) -> bool {
    if rd.is_empty()
        || rd.len() > MAX_RD
        || rd
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'\\' || !b.is_ascii())
    {
        return false;
    }
    if let Some(rest) = rd.strip_prefix('/') {
        let encoded_slash = rest.len() >= 3
            && rest.as_bytes()[0] == b'%'
            && (rest[1..3].eq_ignore_ascii_case("2f") || rest[1..3].eq_ignore_ascii_case("5c"));
        return !rest.starts_with('/') && !encoded_slash;
    }
    let Some((scheme, rest)) = rd.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case(rules.scheme)
        || (rules.allow_http && scheme.eq_ignore_ascii_case("http"));
    if !scheme_ok {
        return false;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(host) = authority_host(&rest[..end]) else {
        return false;
    };
    host_allowed(&host, rules)
}

/// The host of an authority (`host[:port]`), lowercase; `None` for userinfo, any
/// `%`, a bad port or a character outside host names.
fn authority_host(authority: &str) -> Option<String> {
    if authority.contains(['@', '%']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    super::config::is_host_name(&host).then_some(host)
}

fn host_allowed(host: &str, rules: &Rules<'_>) -> bool {
    host == rules.request_host
        || rules
            .return_hosts
            .iter()
            .any(|h| match h.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => host == h,
            })
}

/// A request's `Host` header as the listener trusts it: a host name (lowercased) with
/// an optional port; `None` for anything else. Returns (host, host with port).
pub fn request_host(header: &str) -> Option<(String, String)> {
    let host = authority_host(header)?;
    let full = match header.rsplit_once(':') {
        Some((_, port)) => format!("{host}:{port}"),
        None => host.clone(),
    };
    Some((host, full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'a>(return_hosts: &'a [String]) -> Rules<'a> {
        Rules {
            scheme: "https",
            allow_http: false,
            request_host: "good.example",
            return_hosts,
        }
    }

    #[test]
    fn attacks_fall_back_to_the_request_host() {
        let hosts = vec!["docs.example".to_owned(), "*.apps.example".to_owned()];
        let r = rules(&hosts);
        let attacks = [
            "https://evil.example",
            "https://evil.example/",
            "HTTPS://EVIL.EXAMPLE/x",
            "//evil.example",
            "//evil.example/path",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%2Fevil.example",
            "/%2f%2fevil.example",
            "https:evil.example",
            "https:/evil.example",
            "https:///evil.example",
            "https://good.example@evil.example",
            "https://good.example:443@evil.example/",
            "https://evil.example\\@good.example",
            "https://evil.example%40good.example",
            "https://evil.example%2F@good.example",
            "https://good.example%2Eevil.example",
            "https://%67ood.example/",
            "\t//evil.example",
            "/\t/evil.example",
            "\n/evil",
            " /x",
            "https://good.example.evil.example/",
            "https://evilgood.example/",
            "https://apps.example/",
            "https://x.evilapps.example/",
            "https://evil.example#https://good.example",
            "https://evil.example?https://good.example",
            "http://good.example/",
            "javascript:alert(1)",
            "javascript://good.example/%0aalert(1)",
            "data:text/html,x",
            "ftp://good.example/",
            "https://good.example:/",
            "https://good.example:99999999/",
            "https://[::1]/",
            "https://good.example\u{3002}evil.example/",
            "https://xn--gd-ww.example\u{200b}/",
            "https://",
            "",
            "evil.example",
            "good.example/x",
        ];
        for a in attacks {
            assert_eq!(return_target(a, &r), FALLBACK, "{a:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RD));
        assert_eq!(return_target(&long, &r), FALLBACK);
    }

    #[test]
    fn own_and_configured_hosts_and_paths_pass() {
        let hosts = vec!["docs.example".to_owned(), "*.apps.example".to_owned()];
        let r = rules(&hosts);
        let fine = [
            "/",
            "/x?y=1&z=%2F#frag",
            "/a//b",
            "/%41",
            "https://good.example",
            "https://good.example/",
            "https://GOOD.example:8443/path?q=1",
            "https://good.example./x",
            "HTTPS://good.example/x",
            "https://docs.example/a",
            "https://a.apps.example/b?c=d",
            "https://a.b.apps.example/",
        ];
        for f in fine {
            assert_eq!(return_target(f, &r), f, "{f:?}");
        }
        let demo = Rules {
            scheme: "http",
            allow_http: true,
            ..r
        };
        assert_eq!(
            return_target("http://good.example/x", &demo),
            "http://good.example/x"
        );
    }

    #[test]
    fn host_headers() {
        assert_eq!(
            request_host("Good.Example:8080"),
            Some(("good.example".into(), "good.example:8080".into()))
        );
        assert_eq!(
            request_host("good.example"),
            Some(("good.example".into(), "good.example".into()))
        );
        for bad in [
            "",
            "a b",
            "evil@good",
            "good\\x",
            "good/x",
            "good:",
            "good:x",
            "[::1]",
        ] {
            assert_eq!(request_host(bad), None, "{bad:?}");
        }
    }
}
