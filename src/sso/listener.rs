//! Beside the request flow, under [`crate::sso`]: the sign-in HTTP listener HAProxy
//! routes `/.stagedoor/` to. `login`, `callback`, `logout` and `whoami` over
//! [`super::flow::Flow`]; served with the admin listener's connection cap and
//! timeouts ([`crate::admin::serve_router`]). Every answer is `Cache-Control: no-store`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cookie::{self, SESSION, SESSION_HOST};
use super::flow::{Flow, FlowError, provider_error, query_param};

pub fn router(flow: Arc<Flow>) -> Router {
    Router::new()
        .route("/.stagedoor/login", get(login))
        .route("/.stagedoor/callback", get(callback))
        .route("/.stagedoor/logout", get(logout).post(logout))
        .route("/.stagedoor/whoami", get(whoami))
        .with_state(flow)
}

/// Serves the sign-in endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, flow: Arc<Flow>, shutdown: CancellationToken) {
    crate::admin::serve_router(listener, router(flow), shutdown).await;
}

fn text(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The small HTML page of a failed step: the reason's code and text (our own words).
fn error_page(e: &FlowError, cookies: &[String]) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Sign-in failed</title>\
         <h1>Sign-in failed</h1><p>{}</p><p>Reason: <code>{}</code></p>\
         <p><a href=\"/.stagedoor/login?rd=%2F\">Sign in again</a></p>\n",
        html_escape(&e.to_string()),
        e.code()
    );
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn failed(step: &str, e: &FlowError) {
    tracing::warn!(event = "sign_in_failed", step, reason = e.code(), error = %e, "browser sign-in failed");
}

async fn login(State(flow): State<Arc<Flow>>, uri: Uri, headers: HeaderMap) -> Response {
    let rd = query_param(uri.query().unwrap_or(""), "rd");
    let now = crate::clock::unix_now();
    match flow
        .login(text(&headers, header::HOST), rd.as_deref(), now)
        .await
    {
        Ok(r) => redirect(&r.location, &r.set_cookies),
        Err(e) => {
            failed("login", &e);
            error_page(&e, &[])
        }
    }
}

async fn callback(State(flow): State<Arc<Flow>>, uri: Uri, headers: HeaderMap) -> Response {
    let query = uri.query().unwrap_or("");
    let now = crate::clock::unix_now();
    // The state cookie is cleared whatever happens: a callback is good once.
    let clear_state = flow.state_cookie("", 0);
    let result = async {
        let pending = flow.pending(
            text(&headers, header::COOKIE),
            query_param(query, "state").as_deref(),
            now,
        )?;
        if let Some(err) = query_param(query, "error") {
            return Err(FlowError::Provider(provider_error(&err)));
        }
        let code = query_param(query, "code")
            .filter(|c| !c.is_empty())
            .ok_or(FlowError::NoCode)?;
        let (sealed, sub) = flow.complete(&pending, &code, now).await?;
        Ok((pending.rd, sealed, sub))
    }
    .await;
    match result {
        Ok((rd, sealed, sub)) => {
            tracing::info!(event = "sign_in", sub = %sub, "browser signed in");
            let max_age = flow.sso.cfg.max_session_seconds as i64;
            redirect(&rd, &[flow.session_cookie(&sealed, max_age), clear_state])
        }
        Err(e) => {
            failed("callback", &e);
            error_page(&e, &[clear_state])
        }
    }
}

async fn logout(State(flow): State<Arc<Flow>>) -> Response {
    let cfg = &flow.sso.cfg;
    let mut cookies = vec![flow.session_cookie("", 0)];
    // Also a cookie left under the other name (configuration changed since).
    let other = if flow.sso.session_cookie_name() == SESSION {
        SESSION_HOST
    } else {
        SESSION
    };
    cookies.push(cookie::set_cookie(
        other,
        "",
        cookie::Attrs {
            path: "/",
            domain: None,
            secure: true,
            max_age: 0,
        },
    ));
    match flow
        .endpoints()
        .await
        .ok()
        .and_then(|e| e.end_session.clone())
    {
        Some(end) => {
            let mut params = vec![("client_id", cfg.client_id.as_str())];
            if let Some(u) = &cfg.post_logout_redirect_uri {
                params.push(("post_logout_redirect_uri", u.as_str()));
            }
            let sep = if end.contains('?') { '&' } else { '?' };
            redirect(
                &format!("{end}{sep}{}", super::flow::form(&params)),
                &cookies,
            )
        }
        None => {
            let mut r = (
                StatusCode::OK,
                "<!doctype html><meta charset=utf-8><title>Signed out</title><h1>Signed out</h1>\n",
            )
                .into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            for c in &cookies {
                if let Ok(v) = HeaderValue::from_str(c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            r
        }
    }
}

async fn whoami(State(flow): State<Arc<Flow>>, headers: HeaderMap) -> Response {
    let now = crate::clock::unix_now();
    let header = text(&headers, header::COOKIE);
    let session = flow.sso.session_from_header(header, now).ok().flatten();
    let (status, body) = match session {
        Some(s) => (
            StatusCode::OK,
            json!({"iss": s.iss, "sub": s.sub, "email": s.email, "groups": s.groups,
                   "scopes": s.scopes, "expires_at": s.exp, "auth_time": s.auth_time}),
        ),
        None => (StatusCode::UNAUTHORIZED, json!({"error": "no_session"})),
    };
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
