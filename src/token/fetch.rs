//! Token stage, key transport: bounded HTTP fetches of JWKS and OIDC discovery
//! documents (over the shared [`crate::http`] client: rustls, timeouts, no redirects,
//! size cap) and the clock-skew reading from the provider's `Date` header (key-set
//! refresh → key set → token verification).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::config::check_url;
use crate::http;

/// Largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a key-set fetch failed (the last good set is kept).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("URL refused: {0}")]
    Url(String),
    #[error("request failed: {0}")]
    Request(#[from] http::Error),
    #[error("HTTP status {0} (redirects are not followed)")]
    Status(u16),
    /// A key-set file over [`MAX_DOCUMENT_BYTES`] (a fetched one is a [`Self::Request`]).
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("discovery document: {0}")]
    Discovery(String),
    #[error("file: {0}")]
    File(String),
    #[error(
        "discovery document: jwks_uri {scheme}://{host} is not https, for an https issuer (set allow_insecure_http to allow it)"
    )]
    InsecureJwksUri { scheme: String, host: String },
    #[error("JWKS: {0}")]
    Jwks(#[from] super::jwk::JwksError),
    #[error("key import task failed: {0}")]
    Import(String),
}

/// A fetched document with what its response headers said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age` (0 for `no-cache`/`no-store`).
    pub max_age: Option<u64>,
    /// Provider `Date` minus the local clock, in seconds.
    pub skew: Option<i64>,
}

/// The HTTP client for key sets: the shared one with the key-set timeouts.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn http_client() -> Result<reqwest::Client, FetchError> {
    Ok(http::client(CONNECT_TIMEOUT, TOTAL_TIMEOUT)?)
}

/// GETs `url` with the https rule and the size cap.
///
/// # Errors
/// [`FetchError`] for a refused URL, a transport error, a non-200 status or an oversize body.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    allow_insecure_http: bool,
) -> Result<Fetched, FetchError> {
    check_url(url, allow_insecure_http).map_err(FetchError::Url)?;
    let resp = http::send(
        client
            .get(url)
            .header("accept", "application/json, application/jwk-set+json"),
    )
    .await
    .map_err(http::Error::without_url)?;
    let local_now = crate::clock::unix_now();
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let headers = resp.headers();
    let skew = headers
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .map(|d| d - local_now);
    let max_age = headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let body = http::read_body(resp, MAX_DOCUMENT_BYTES)
        .await
        .map_err(http::Error::without_url)?;
    Ok(Fetched {
        body,
        max_age,
        skew,
    })
}

/// Reads `<issuer>/.well-known/openid-configuration`, checks its `issuer` and returns
/// `jwks_uri` with the response's skew.
///
/// # Errors
/// [`FetchError`] when the document cannot be fetched or [`parse_discovery`] refuses it.
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<(String, Option<i64>), FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = get(client, &url, allow_insecure_http).await?;
    let jwks_uri = parse_discovery(&doc.body, issuer, allow_insecure_http)?;
    Ok((jwks_uri, doc.skew))
}

/// The `jwks_uri` of a discovery document for `issuer`.
///
/// The document must name `issuer` exactly. The `jwks_uri` must pass the configured
/// URL rule (https, or http for loopback hosts or with `allow_insecure_http`) and, for
/// an https issuer, must be https itself unless `allow_insecure_http` is set: the
/// loopback exception is for an issuer that is itself on http (a test provider), not a
/// way for a discovery document of an https issuer to send the agent to a plain-http
/// port on the agent's own host, where any local process may serve keys.
///
/// # Errors
/// [`FetchError::Discovery`] for a document that is not JSON, names another issuer or
/// has no usable `jwks_uri`; [`FetchError::InsecureJwksUri`] for an http `jwks_uri` of
/// an https issuer.
pub fn parse_discovery(
    body: &[u8],
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<String, FetchError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FetchError::Discovery("not JSON".into()))?;
    if v.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FetchError::Discovery(
            "`issuer` differs from the configured issuer".into(),
        ));
    }
    let jwks_uri = v
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| FetchError::Discovery("no `jwks_uri`".into()))?;
    check_url(jwks_uri, allow_insecure_http)
        .map_err(|e| FetchError::Discovery(format!("jwks_uri: {e}")))?;
    let https_issuer = reqwest::Url::parse(issuer).is_ok_and(|u| u.scheme() == "https");
    if https_issuer && !allow_insecure_http {
        // check_url parsed it above.
        let u = reqwest::Url::parse(jwks_uri)
            .map_err(|e| FetchError::Discovery(format!("jwks_uri: {e}")))?;
        if u.scheme() != "https" {
            return Err(FetchError::InsecureJwksUri {
                scheme: u.scheme().to_owned(),
                host: u.host_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(jwks_uri.to_owned())
}

/// `max-age=N` from a Cache-Control value; `no-cache`/`no-store` count as 0.
pub fn max_age(v: &str) -> Option<u64> {
    let mut out = None;
    for d in v.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            return Some(0);
        }
        if let Some((k, n)) = d.split_once('=')
            && k.trim().eq_ignore_ascii_case("max-age")
        {
            out = n.trim().trim_matches('"').parse().ok();
        }
    }
    out
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7) to unix
/// seconds. Only that form, the one senders must use: the obsolete RFC 850 and asctime
/// forms (which `httpdate` also reads) are never 29 bytes long. `httpdate` also refuses
/// a weekday that does not match the date, a day the month does not have, a leap
/// second and years before 1970; the skew is then not measured.
pub fn parse_http_date(s: &str) -> Option<i64> {
    if s.len() != 29 {
        return None;
    }
    let t = httpdate::parse_http_date(s).ok()?;
    Some(crate::clock::unix_seconds(t))
}

/// Formats unix seconds as an IMF-fixdate (for tests and test servers); `t` is
/// clamped to 1970 ..= 9999, the range of HTTP dates.
pub fn format_http_date(t: i64) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = u64::try_from(t).unwrap_or(0).min(LAST);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date("Sun, 06 Xyz 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:4a:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:3é GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08é49:37 GMT"), None);
        for t in [0, 784_111_777, 1_795_872_986, 951_782_400] {
            assert_eq!(
                parse_http_date(&format_http_date(t)),
                Some(t),
                "{}",
                format_http_date(t)
            );
        }
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        // What httpdate refuses besides: a weekday that is not the date's, a day the
        // month does not have, a leap second, a year before 1970.
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Thu, 30 Feb 2023 00:00:00 GMT"), None);
        assert_eq!(parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"), None);
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"), None);
        assert_eq!(format_http_date(-1), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn a_discovered_jwks_uri_of_an_https_issuer_must_be_https() {
        let doc = |iss: &str, uri: &str| {
            serde_json::json!({"issuer": iss, "jwks_uri": uri})
                .to_string()
                .into_bytes()
        };
        let iss = "https://id.example.com";
        for uri in [
            "http://localhost:8080/jwks",
            "http://127.0.0.1/jwks",
            "http://[::1]:9/jwks",
        ] {
            let got = parse_discovery(&doc(iss, uri), iss, false);
            assert!(
                matches!(&got, Err(FetchError::InsecureJwksUri { scheme, .. }) if scheme == "http"),
                "{uri}: {got:?}"
            );
            // Only with allow_insecure_http.
            assert_eq!(
                parse_discovery(&doc(iss, uri), iss, true)
                    .map_err(|e| e.to_string())
                    .as_deref(),
                Ok(uri)
            );
        }
        let err = parse_discovery(&doc(iss, "http://localhost:8080/jwks"), iss, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://localhost") && err.contains("allow_insecure_http"),
            "{err}"
        );
        let https = "https://keys.example.com/jwks";
        assert_eq!(
            parse_discovery(&doc(iss, https), iss, false)
                .map_err(|e| e.to_string())
                .as_deref(),
            Ok(https)
        );
        // An http issuer on loopback (a test provider) keeps its loopback jwks_uri.
        let local = "http://127.0.0.1:8080";
        assert_eq!(
            parse_discovery(&doc(local, "http://127.0.0.1:8080/jwks"), local, false)
                .map_err(|e| e.to_string())
                .as_deref(),
            Ok("http://127.0.0.1:8080/jwks")
        );
        // Still refused as before: another issuer, non-loopback http, no jwks_uri.
        assert!(matches!(
            parse_discovery(&doc("https://evil.example", https), iss, false),
            Err(FetchError::Discovery(_))
        ));
        assert!(matches!(
            parse_discovery(&doc(local, "http://keys.example.com/jwks"), local, false),
            Err(FetchError::Discovery(_))
        ));
        assert!(matches!(
            parse_discovery(br#"{"issuer":"https://id.example.com"}"#, iss, false),
            Err(FetchError::Discovery(_))
        ));
        assert!(matches!(
            parse_discovery(b"<html>", iss, false),
            Err(FetchError::Discovery(_))
        ));
    }

    #[test]
    fn cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(300));
        assert_eq!(max_age("max-age=\"60\""), Some(60));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
