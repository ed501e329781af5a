//! Message → decision, for browsers (beside the token stage): the optional SPOE
//! arguments a browser request brings (cookie, `Accept`, `Sec-Fetch-Mode`, query),
//! whether a request without credentials is a navigation that may be sent to
//! sign in, and where to. Pure: no I/O, no clock.
//!
//! Only a top-level navigation is redirected: `GET` or `HEAD`, an `Accept` naming
//! `text/html`, and `Sec-Fetch-Mode: navigate` when the browser sends that header
//! (every current browser does; `fetch()` and XHR send `cors`, `same-origin` or
//! `no-cors`). Everything else without credentials keeps getting 401 with
//! `WWW-Authenticate`: an API client, a script or an image must never be handed an
//! HTML sign-in page it cannot use.

/// Where the sign-in listener lives on every protected host (HAProxy routes this
/// prefix to it, never to a backend).
pub const PREFIX: &str = "/.stagedoor/";

/// The browser-related SPOE arguments; each is optional, so an older SPOE file
/// (bearer only) keeps working.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrowserArgs<'a> {
    /// The whole `Cookie` header (`req.fhdr(cookie)`).
    pub cookie: Option<&'a str>,
    /// How many `Cookie` header lines the request had (`req.fhdr_cnt(cookie)`).
    pub cookie_count: Option<i64>,
    pub accept: Option<&'a str>,
    /// `Sec-Fetch-Mode`.
    pub fetch_mode: Option<&'a str>,
    /// The query string, without `?` (HAProxy's `query`).
    pub query: Option<&'a str>,
}

/// What the agent tells HAProxy for a browser, besides the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserOutcome {
    /// Send the browser here to sign in (`txn.stagedoor.location`, a 302), instead of
    /// answering 401.
    pub location: Option<String>,
    /// The `Cookie` header the backend gets: the request's own minus stagedoor's
    /// session and state cookies (`Some("")`: remove the header). `None`: leave it.
    pub cookie: Option<String>,
}

/// A top-level browser navigation (module docs).
pub fn is_navigation(method: &str, args: &BrowserArgs<'_>) -> bool {
    if method != "GET" && method != "HEAD" {
        return false;
    }
    let html = args.accept.is_some_and(|a| {
        a.split(',').any(|item| {
            let media = item.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html")
        })
    });
    let navigate = args
        .fetch_mode
        .is_none_or(|m| m.trim().eq_ignore_ascii_case("navigate"));
    html && navigate
}

/// The sign-in URL for a navigation to `scheme://host path?query`: relative, so it
/// stays on the host the browser asked for, with the original URL percent-encoded
/// in `rd`. The sign-in listener checks `rd` again before it ever redirects to it.
/// `scheme` is `[sso] external_scheme`, the one browsers use: HAProxy's own view
/// (`ssl_fc`) is wrong behind a load balancer that ends TLS.
pub fn sign_in_location(scheme: &str, args: &BrowserArgs<'_>, host: &str, path: &str) -> String {
    let mut original = format!("{scheme}://{host}{path}");
    if let Some(q) = args.query.filter(|q| !q.is_empty()) {
        original.push('?');
        original.push_str(q);
    }
    let mut location = String::with_capacity(PREFIX.len() + 9 + original.len() * 3);
    location.push_str(PREFIX);
    location.push_str("login?rd=");
    percent_encode(&original, &mut location);
    location
}

/// Every byte but RFC 3986 unreserved ones as `%XX`: the result is plain visible
/// ASCII, safe in a `Location` header and a query parameter.
fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(accept: Option<&'static str>, mode: Option<&'static str>) -> BrowserArgs<'static> {
        BrowserArgs {
            accept,
            fetch_mode: mode,
            ..BrowserArgs::default()
        }
    }

    #[rustfmt::skip]
    const NAVIGATIONS: &[(&str, Option<&str>, Option<&str>, bool)] = &[
        // method, Accept, Sec-Fetch-Mode, navigation?
        ("GET",  Some("text/html,application/xhtml+xml,*/*;q=0.8"), Some("navigate"), true),
        ("GET",  Some("text/html"),                  None,               true),
        ("HEAD", Some("TEXT/HTML; q=0.9"),           Some("Navigate"),   true),
        ("GET",  Some("application/json"),           None,               false),
        ("GET",  Some("*/*"),                        None,               false),
        ("GET",  None,                               None,               false),
        ("GET",  Some("text/html"),                  Some("cors"),       false),
        ("GET",  Some("text/html"),                  Some("no-cors"),    false),
        ("GET",  Some("text/html"),                  Some("same-origin"),false),
        ("GET",  Some("text/htmlx"),                 None,               false),
        ("GET",  Some("application/text/html"),      None,               false),
        ("POST", Some("text/html"),                  Some("navigate"),   false),
        ("get",  Some("text/html"),                  Some("navigate"),   false),
        ("PUT",  Some("text/html"),                  None,               false),
    ];

    #[test]
    fn only_top_level_navigations_are_sent_to_sign_in() {
        for &(method, accept, mode, want) in NAVIGATIONS {
            assert_eq!(
                is_navigation(method, &args(accept, mode)),
                want,
                "{method} {accept:?} {mode:?}"
            );
        }
    }

    #[test]
    fn the_sign_in_location_is_relative_and_carries_the_whole_original_url() {
        let a = BrowserArgs {
            query: Some("q=1&x=a b"),
            ..BrowserArgs::default()
        };
        assert_eq!(
            sign_in_location("https", &a, "svc.example.com", "/docs/a b"),
            "/.stagedoor/login?rd=https%3A%2F%2Fsvc.example.com%2Fdocs%2Fa%20b%3Fq%3D1%26x%3Da%20b"
        );
        // No or empty query: no `?`.
        let a = BrowserArgs::default();
        assert_eq!(
            sign_in_location("https", &a, "h:8443", "/"),
            "/.stagedoor/login?rd=https%3A%2F%2Fh%3A8443%2F"
        );
        let a = BrowserArgs {
            query: Some(""),
            ..BrowserArgs::default()
        };
        assert_eq!(
            sign_in_location("http", &a, "h", "/x"),
            "/.stagedoor/login?rd=http%3A%2F%2Fh%2Fx"
        );
        // Whatever the path holds, the location is visible ASCII without `"` or `\`.
        let loc = sign_in_location("https", &a, "h", "/\r\n\"\\é%");
        assert!(
            loc.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        );
    }
}
