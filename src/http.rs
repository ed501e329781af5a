//! Beside the request flow: the one outbound HTTP client, shared by the key-set and
//! OIDC discovery fetches (token stage) and the Backstage catalog client (the policy's
//! input). rustls only, connect and total timeouts, redirects refused (a 3xx comes
//! back to the caller, never followed), no proxy from the environment, and bodies read
//! up to a cap, so a large or endless answer cannot grow memory.

use std::fmt;
use std::time::Duration;

/// Why a request or the read of its body failed.
///
/// The text carries the whole chain of causes ("error sending request for url (…):
/// client error (Connect): tcp connect error: Connection refused"), since the callers
/// log errors by their `Display`; hence no `source()`, which would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS backend could not be initialised.
    #[error("cannot build the HTTP client: {}", Chain(.0))]
    Client(reqwest::Error),
    /// Connecting, sending or reading failed, timeouts included.
    #[error("{}", Chain(.0))]
    Transport(reqwest::Error),
    /// The body is over the cap (announced by `content-length`, or counted).
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl Error {
    /// The same error without the request URL in its text, for a caller that does
    /// not log URLs (a key-set URL may carry a key in its query).
    pub fn without_url(self) -> Error {
        match self {
            Error::Transport(e) => Error::Transport(e.without_url()),
            other => other,
        }
    }
}

/// The client: `connect` and `total` (whole request, body included) timeouts,
/// redirects not followed, no proxy from the environment.
///
/// # Errors
/// [`Error::Client`] when the TLS backend cannot be initialised.
pub fn client(connect: Duration, total: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(total)
        .no_proxy()
        .user_agent(concat!("stagedoor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::Client)
}

/// Sends `request`. Any status comes back: what a 3xx or 4xx means is the caller's.
///
/// # Errors
/// [`Error::Transport`] when no response arrives (refused, reset, TLS, timeout).
pub async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    request.send().await.map_err(Error::Transport)
}

/// The whole body, refused over `limit` bytes: before reading when `content-length`
/// announces more, else as soon as the bytes read pass it.
///
/// # Errors
/// [`Error::TooLarge`] over the cap, [`Error::Transport`] when the body breaks off.
pub async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(Error::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most `max` bytes of the body, fewer if it breaks off: for an error answer, of
/// which only a message is kept.
pub async fn read_prefix(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(max);
    body
}

/// An error with its sources, `: `-separated.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_carry_their_causes_and_can_drop_the_url() {
        let c = client(Duration::from_secs(2), Duration::from_secs(5)).unwrap();
        // Nothing listens on port 1: refused at once.
        let err = send(c.get("http://127.0.0.1:1/jwks?key=s3cret"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:1/jwks") && text.matches(": ").count() >= 2,
            "{text}"
        );
        let bare = err.without_url().to_string();
        assert!(
            bare.starts_with("error sending request: ") && !bare.contains("s3cret"),
            "{bare}"
        );
    }
}
