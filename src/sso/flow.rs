//! Beside the request flow, under [`crate::sso`]: the sign-in flow itself, without
//! the HTTP server around it ([`super::listener`]). Discovery (cached, fetched by one
//! caller at a time, again when stale or after a refused exchange, within cooldowns),
//! the authorization request (`state`, `nonce`, PKCE
//! S256, all in the sealed state cookie), and the callback: state cookie → code
//! exchange (client_secret_basic) → ID token verified by the strict verifier →
//! groups from the ID token or userinfo → sealed session.
//!
//! Logs name the reason and the subject, never a code, a token or a cookie value.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Sso;
use super::cookie::{self, STATE};
use super::seal::{PURPOSE_STATE, SealError, random_token};
use super::session::{SealSessionError, Session};
use super::wire::safe_word;

mod discovery;
pub use super::wire::{form, parse_endpoints, pct, provider_error, query_param};
use crate::http;
use crate::token::{IdTokenError, Verifier};
use discovery::Discovery;
pub use discovery::{DISCOVERY_FAILURE_COOLDOWN, DISCOVERY_REFETCH_COOLDOWN, DISCOVERY_TTL};

/// Life of the state cookie, seconds.
pub const STATE_MAX_AGE: i64 = 600;
/// Callbacks talking to the provider (code exchange, userinfo) at once. Past it a
/// callback is answered 503 at once: whoever can start sign-ins cannot make the agent
/// hold more than this many requests open at the provider.
pub const MAX_PROVIDER_CALLS: usize = 16;
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why a sign-in step failed. The text is shown on the error page and logged; it
/// never holds a code, a token or a cookie value.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the sign-in state cookie is missing (expired, or this sign-in was already completed)")]
    StateMissing,
    #[error("the sign-in state cookie does not verify")]
    StateInvalid,
    #[error("the sign-in took too long")]
    StateExpired,
    #[error("the sign-in answer does not belong to this browser's sign-in (state mismatch)")]
    StateMismatch,
    #[error("the provider's answer has no code")]
    NoCode,
    #[error("the provider refused the sign-in ({0})")]
    Provider(&'static str),
    #[error("the provider's discovery document is unusable: {0}")]
    Discovery(String),
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("the ID token was refused: {0}")]
    IdToken(IdTokenError),
    #[error("userinfo failed: {0}")]
    Userinfo(String),
    #[error("too many groups for a session ({groups}); ask an administrator")]
    TooManyGroups { groups: usize },
    #[error("the request host is not usable")]
    BadHost,
    #[error("too many sign-ins at once; try again in a moment")]
    Busy,
    #[error("sealing failed: {0}")]
    Seal(SealError),
}

impl FlowError {
    /// A stable word for logs and the page.
    pub fn code(&self) -> &'static str {
        match self {
            FlowError::StateMissing => "state_missing",
            FlowError::StateInvalid => "state_invalid",
            FlowError::StateExpired => "state_expired",
            FlowError::StateMismatch => "state_mismatch",
            FlowError::NoCode => "no_code",
            FlowError::Provider(_) => "provider_error",
            FlowError::Discovery(_) => "discovery_failed",
            FlowError::Exchange(_) => "code_exchange_failed",
            FlowError::IdToken(_) => "id_token_invalid",
            FlowError::Userinfo(_) => "userinfo_failed",
            FlowError::TooManyGroups { .. } => "too_many_groups",
            FlowError::BadHost => "bad_host",
            FlowError::Busy => "busy",
            FlowError::Seal(_) => "seal_failed",
        }
    }

    /// The HTTP status of the error page.
    pub fn status(&self) -> u16 {
        match self {
            FlowError::Discovery(_) | FlowError::Exchange(_) | FlowError::Userinfo(_) => 502,
            FlowError::Busy => 503,
            FlowError::Seal(_) => 500,
            FlowError::TooManyGroups { .. } => 403,
            _ => 400,
        }
    }
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub userinfo: Option<String>,
    pub end_session: Option<String>,
}

/// What the state cookie holds between login and callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub verifier: String,
    /// Absolute return URL, checked at login.
    #[serde(rename = "r")]
    pub rd: String,
    /// The redirect_uri sent in the authorization request.
    #[serde(rename = "u")]
    pub redirect_uri: String,
    #[serde(rename = "c")]
    pub created: i64,
}

/// Whether the current policy names an identity-provider group.
pub type GroupFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The flow's shared parts: settings, the verifier, the client, the discovery cache.
pub struct Flow {
    pub sso: Arc<Sso>,
    pub verifier: Verifier,
    pub client: reqwest::Client,
    allow_insecure_http: bool,
    groups_claim: String,
    discovery: Mutex<Discovery>,
    /// Held by the one caller fetching the discovery document; the others wait and
    /// then read what it cached.
    fetching: tokio::sync::Mutex<()>,
    /// Bounds the callbacks at the provider ([`MAX_PROVIDER_CALLS`]).
    provider_calls: tokio::sync::Semaphore,
    /// Groups the current policy names: the too-many-groups rule keeps only these.
    pub group_filter: Option<GroupFilter>,
}

/// Equal strings, in time that depends on their lengths only.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A browser redirect with cookies to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub location: String,
    pub set_cookies: Vec<String>,
}

impl Flow {
    pub fn new(
        sso: Arc<Sso>,
        verifier: Verifier,
        client: reqwest::Client,
        cfg: &crate::config::Config,
    ) -> Flow {
        let issuer = cfg.issuers.iter().find(|i| i.issuer == sso.cfg.issuer);
        Flow {
            allow_insecure_http: issuer.is_some_and(|i| i.allow_insecure_http),
            groups_claim: issuer.map_or_else(|| "groups".to_owned(), |i| i.groups_claim.clone()),
            sso,
            verifier,
            client,
            discovery: Mutex::new(Discovery::default()),
            fetching: tokio::sync::Mutex::new(()),
            provider_calls: tokio::sync::Semaphore::new(MAX_PROVIDER_CALLS),
            group_filter: None,
        }
    }

    /// The callback URL for a request on `host_port`.
    pub fn redirect_uri(&self, host_port: &str) -> String {
        match &self.sso.cfg.redirect_uri {
            Some(u) => u.clone(),
            None => format!(
                "{}://{host_port}/.stagedoor/callback",
                self.sso.cfg.external_scheme
            ),
        }
    }

    /// `/.stagedoor/login`: the redirect to the provider, with the state cookie.
    ///
    /// # Errors
    /// [`FlowError`].
    pub async fn login(
        &self,
        host_header: &str,
        rd: Option<&str>,
        now: i64,
    ) -> Result<Redirect, FlowError> {
        let (host, host_port) =
            super::redirect::request_host(host_header).ok_or(FlowError::BadHost)?;
        let cfg = &self.sso.cfg;
        let rules = super::redirect::Rules {
            scheme: &cfg.external_scheme,
            allow_http: !cfg.cookie_secure,
            request_host: &host,
            return_hosts: &cfg.return_hosts,
        };
        let rd = super::redirect::return_target(rd.unwrap_or("/"), &rules);
        let rd = if rd.starts_with('/') {
            format!("{}://{host_port}{rd}", cfg.external_scheme)
        } else {
            rd.to_owned()
        };
        let pending = PendingSignIn {
            state: random_token().map_err(FlowError::Seal)?,
            nonce: random_token().map_err(FlowError::Seal)?,
            verifier: random_token().map_err(FlowError::Seal)?,
            rd,
            redirect_uri: self.redirect_uri(&host_port),
            created: now,
        };
        let endpoints = self.endpoints().await?;
        let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            pending.verifier.as_bytes(),
        ));
        let scope = cfg.scopes.join(" ");
        let params = [
            ("response_type", "code"),
            ("client_id", cfg.client_id.as_str()),
            ("redirect_uri", pending.redirect_uri.as_str()),
            ("scope", scope.as_str()),
            ("state", pending.state.as_str()),
            ("nonce", pending.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let sep = if endpoints.authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{}", endpoints.authorization, form(&params));
        let sealed = self.seal_pending(&pending)?;
        Ok(Redirect {
            location,
            set_cookies: vec![self.state_cookie(&sealed, STATE_MAX_AGE)],
        })
    }

    /// The state cookie's value for `pending`.
    ///
    /// # Errors
    /// [`FlowError::Seal`].
    pub fn seal_pending(&self, pending: &PendingSignIn) -> Result<String, FlowError> {
        // A struct of strings and integers always serializes.
        let json =
            serde_json::to_vec(pending).map_err(|_| FlowError::Seal(SealError::Malformed))?;
        self.sso
            .sealer
            .seal(PURPOSE_STATE, &json)
            .map_err(FlowError::Seal)
    }

    /// The state cookie's `Set-Cookie` (empty value and 0 clear it).
    pub fn state_cookie(&self, value: &str, max_age: i64) -> String {
        let cfg = &self.sso.cfg;
        cookie::set_cookie(
            STATE,
            value,
            cookie::Attrs {
                path: "/.stagedoor/",
                domain: cfg.cookie_domain.as_deref(),
                secure: cfg.cookie_secure,
                max_age,
            },
        )
    }

    /// The session cookie's `Set-Cookie` (empty value and 0 clear it).
    pub fn session_cookie(&self, value: &str, max_age: i64) -> String {
        let cfg = &self.sso.cfg;
        cookie::set_cookie(
            self.sso.session_cookie_name(),
            value,
            cookie::Attrs {
                path: "/",
                domain: cfg.cookie_domain.as_deref(),
                secure: cfg.cookie_secure,
                max_age,
            },
        )
    }

    /// The sign-in this browser started, from its state cookie, checked against the
    /// `state` the provider sent back.
    ///
    /// # Errors
    /// `StateMissing`, `StateInvalid`, `StateExpired` or `StateMismatch`.
    pub fn pending(
        &self,
        cookie_header: &str,
        state: Option<&str>,
        now: i64,
    ) -> Result<PendingSignIn, FlowError> {
        // Every state cookie is tried: one tossed in by a sibling subdomain (or left
        // under another Domain) must not hide the one this sign-in set. The result is
        // the first that opens, is fresh and holds the `state` sent back; else the
        // most telling failure seen (missing < invalid < expired < mismatch).
        let sent = state.unwrap_or("");
        let mut failure = FlowError::StateMissing;
        let rank = |e: &FlowError| match e {
            FlowError::StateMissing => 0,
            FlowError::StateInvalid => 1,
            FlowError::StateExpired => 2,
            _ => 3,
        };
        for value in cookie::values(cookie_header, STATE) {
            let err = match self.sso.sealer.open(PURPOSE_STATE, value) {
                Ok(plain) => match serde_json::from_slice::<PendingSignIn>(&plain) {
                    Ok(p)
                        if now >= p.created.saturating_add(STATE_MAX_AGE)
                            || p.created > now + 60 =>
                    {
                        FlowError::StateExpired
                    }
                    Ok(p) if constant_time_eq(sent, &p.state) => return Ok(p),
                    Ok(_) => FlowError::StateMismatch,
                    Err(_) => FlowError::StateInvalid,
                },
                Err(_) => FlowError::StateInvalid,
            };
            if rank(&err) > rank(&failure) {
                failure = err;
            }
        }
        Err(failure)
    }

    /// `/.stagedoor/callback` once the state checked out: code → tokens → session.
    /// Returns the sealed session and its subject (for the log).
    ///
    /// # Errors
    /// [`FlowError`].
    pub async fn complete(
        &self,
        p: &PendingSignIn,
        code: &str,
        now: i64,
    ) -> Result<(String, String), FlowError> {
        let cfg = &self.sso.cfg;
        // Held until the session is sealed: the exchange and userinfo both count.
        let _call = self
            .provider_calls
            .try_acquire()
            .map_err(|_| FlowError::Busy)?;
        let endpoints = self.endpoints().await?;
        let tokens = match self.exchange(&endpoints, p, code).await {
            Ok(t) => t,
            Err(e) => {
                self.forget_endpoints();
                return Err(e);
            }
        };
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| FlowError::Exchange("no id_token in the token response".into()))?;
        let verified = self
            .verifier
            .verify_id_token(id_token, &cfg.issuer, &cfg.client_id, &p.nonce, now)
            .await
            .map_err(FlowError::IdToken)?;
        let claims = verified.claims;
        let sub = claims
            .sub
            .clone()
            .ok_or(FlowError::IdToken(IdTokenError::Token(
                crate::reason::Reason::MalformedToken,
            )))?;
        let mut groups = claims.groups;
        if groups.is_empty()
            && let (Some(url), Some(at)) = (
                &endpoints.userinfo,
                tokens.get("access_token").and_then(Value::as_str),
            )
        {
            groups = self.userinfo_groups(url, at, &sub).await?;
        }
        let scopes = match tokens.get("scope").and_then(Value::as_str) {
            Some(s) => s
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect(),
            None => cfg.scopes.clone(),
        };
        let sid = random_token().map_err(FlowError::Seal)?[..22].to_owned();
        let mut session = Session {
            iss: cfg.issuer.clone(),
            sub: sub.clone(),
            email: claims.email,
            groups,
            scopes,
            sid,
            auth_time: verified.auth_time,
            iat: now,
            exp: now + cfg.max_session_seconds as i64,
        };
        let keep = self.group_filter.as_deref();
        match self.sso.seal_session(&mut session, keep) {
            Ok(v) => Ok((v, sub)),
            Err(SealSessionError::TooManyGroups { groups }) => {
                tracing::warn!(event = "sign_in_too_many_groups", sub = %sub, groups, "session cookie would be too large even with only the groups the policy names");
                Err(FlowError::TooManyGroups { groups })
            }
            Err(SealSessionError::Seal(e)) => Err(FlowError::Seal(e)),
        }
    }

    async fn exchange(
        &self,
        endpoints: &Endpoints,
        p: &PendingSignIn,
        code: &str,
    ) -> Result<Value, FlowError> {
        let cfg = &self.sso.cfg;
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", p.redirect_uri.as_str()),
            ("code_verifier", p.verifier.as_str()),
        ]);
        // RFC 6749 2.3.1: id and secret form-encoded before Basic.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            pct(&cfg.client_id),
            pct(self.sso.client_secret.expose())
        ));
        let resp = http::send(
            self.client
                .post(&endpoints.token)
                .header("authorization", format!("Basic {basic}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(body),
        )
        .await
        .map_err(|e| FlowError::Exchange(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let prefix = http::read_prefix(resp, 512).await;
            // Only the OAuth error code, which is a word, never a description.
            let code = serde_json::from_slice::<Value>(&prefix)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .and_then(Value::as_str)
                        .map(|e| safe_word(e).to_owned())
                })
                .unwrap_or_default();
            return Err(FlowError::Exchange(format!("status {status} {code}")));
        }
        let body = http::read_body(resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| FlowError::Exchange(e.without_url().to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|_| FlowError::Exchange("token response is not JSON".into()))
    }

    async fn userinfo_groups(
        &self,
        url: &str,
        access_token: &str,
        sub: &str,
    ) -> Result<Vec<String>, FlowError> {
        let resp = http::send(
            self.client
                .get(url)
                .bearer_auth(access_token)
                .header("accept", "application/json"),
        )
        .await
        .map_err(|e| FlowError::Userinfo(e.without_url().to_string()))?;
        if resp.status().as_u16() != 200 {
            return Err(FlowError::Userinfo(format!(
                "status {}",
                resp.status().as_u16()
            )));
        }
        let body = http::read_body(resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| FlowError::Userinfo(e.without_url().to_string()))?;
        let v: Value =
            serde_json::from_slice(&body).map_err(|_| FlowError::Userinfo("not JSON".into()))?;
        // OIDC Core 5.3.2: the userinfo `sub` must be the ID token's.
        if v.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(FlowError::Userinfo(
                "sub differs from the ID token's".into(),
            ));
        }
        Ok(match v.get(&self.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        })
    }
}
