//! Beside the request flow, under [`crate::sso`]: the bytes of the sign-in flow's
//! messages: form and query encoding, the provider's `error` word, and the endpoints
//! of its discovery document.

use serde_json::Value;

use super::flow::{Endpoints, FlowError};
use crate::token::config::check_url;

/// The endpoints of a discovery document for `issuer`.
///
/// # Errors
/// [`FlowError::Discovery`]: not JSON, another issuer, or a missing or refused URL.
pub fn parse_endpoints(
    body: &[u8],
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<Endpoints, FlowError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FlowError::Discovery("not JSON".into()))?;
    if v.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FlowError::Discovery(
            "`issuer` differs from the configured issuer".into(),
        ));
    }
    let url = |name: &str| -> Result<Option<String>, FlowError> {
        match v.get(name).and_then(Value::as_str) {
            None => Ok(None),
            Some(u) => check_url(u, allow_insecure_http)
                .map(|()| Some(u.to_owned()))
                .map_err(|e| FlowError::Discovery(format!("{name}: {e}"))),
        }
    };
    let need = |name: &str| url(name)?.ok_or_else(|| FlowError::Discovery(format!("no `{name}`")));
    Ok(Endpoints {
        authorization: need("authorization_endpoint")?,
        token: need("token_endpoint")?,
        userinfo: url("userinfo_endpoint")?,
        end_session: url("end_session_endpoint")?,
    })
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A provider's error code when it is one word; else `other`.
pub(crate) fn safe_word(s: &str) -> &str {
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s
    } else {
        "other"
    }
}

/// The provider `error` parameter as a word for the page and the log.
pub fn provider_error(s: &str) -> &'static str {
    const KNOWN: [&str; 8] = [
        "access_denied",
        "login_required",
        "consent_required",
        "interaction_required",
        "invalid_request",
        "unauthorized_client",
        "server_error",
        "temporarily_unavailable",
    ];
    KNOWN.into_iter().find(|k| *k == s).unwrap_or("other")
}

/// The value of query parameter `name` in `query` (form-decoded), first occurrence.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k)? == name).then(|| decode(v)).flatten()
    })
}

/// Form-decoding: `+` is a space, `%XX` a byte; `None` for a bad escape or non-UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_encoding() {
        assert_eq!(
            query_param("a=1&rd=%2Fx%3Fy%3D1+2", "rd").as_deref(),
            Some("/x?y=1 2")
        );
        assert_eq!(query_param("rd=%zz", "rd"), None);
        assert_eq!(query_param("rd", "rd").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "rd"), None);
        assert_eq!(query_param("rd=%E9", "rd"), None);
        assert_eq!(form(&[("a b", "c&d=é")]), "a%20b=c%26d%3D%C3%A9");
        assert_eq!(provider_error("access_denied"), "access_denied");
        assert_eq!(provider_error("<script>"), "other");
        assert_eq!(safe_word("invalid_grant"), "invalid_grant");
        assert_eq!(safe_word("Bad Thing"), "other");
    }

    #[test]
    fn discovery_documents() {
        let doc = br#"{"issuer":"https://id.example","authorization_endpoint":"https://id.example/auth",
            "token_endpoint":"https://id.example/token","end_session_endpoint":"https://id.example/logout"}"#;
        let e = parse_endpoints(doc, "https://id.example", false).unwrap();
        assert_eq!(e.token, "https://id.example/token");
        assert_eq!(e.userinfo, None);
        assert_eq!(e.end_session.as_deref(), Some("https://id.example/logout"));
        assert!(parse_endpoints(doc, "https://other.example", false).is_err());
        let insecure = br#"{"issuer":"https://id.example","authorization_endpoint":"http://evil.example/auth","token_endpoint":"https://id.example/token"}"#;
        assert!(parse_endpoints(insecure, "https://id.example", false).is_err());
        assert!(parse_endpoints(b"[]", "https://id.example", false).is_err());
    }
}
