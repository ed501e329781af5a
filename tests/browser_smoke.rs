//! The browser harness on real parts, before any sign-in: Debian's headless Chromium,
//! driven over WebDriver by chromedriver, reaches a small backend through Debian's
//! HAProxy under `*.test` names; pages, queries, cookies shared between two hosts and
//! form filling work as the sign-in tests (issue 13) will need them.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/pages.rs"]
mod pages;

use browser::Browser;
use common::haproxy::{Haproxy, free_port, require_bin};
use pages::{Page, Pages};

/// HAProxy in plain http mode in front of `pages`, on a free port.
async fn haproxy_before(pages: &Pages) -> (Haproxy, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        "global\n    log stdout format raw local0 info\n\
         defaults\n    log global\n    mode http\n    option httplog\n\
         \x20   timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend fe\n    bind \"${STAGEDOOR_FRONTEND}\"\n    default_backend pages\n\
         backend pages\n    server pages \"${PAGES}\"\n",
    )
    .unwrap();
    let port = free_port();
    let env = [("PAGES", pages.addr.to_string())];
    let haproxy = Haproxy::start(&require_bin("haproxy"), &cfg, port, &env).await;
    (haproxy, dir, port)
}

#[test]
fn peer_tests_run_under_ci() {
    common::haproxy::assert_peer_tests_run_under_ci();
}

#[tokio::test]
#[ignore = "needs chromium: run tests/run.sh"]
async fn a_page_through_haproxy_keeps_host_path_and_query() {
    let pages = Pages::start().await;
    let (_haproxy, _dir, port) = haproxy_before(&pages).await;
    let browser = Browser::start().await;

    let url = format!("http://a.stagedoor.test:{port}/x?q=1&r=a%20b");
    browser.goto(&url).await;
    assert_eq!(browser.url().await, url);
    assert_eq!(browser.text("#target").await, "/x?q=1&r=a%20b");
    assert_eq!(
        browser.text("#host").await,
        format!("a.stagedoor.test:{port}")
    );
    assert_eq!(browser.text("#method").await, "GET");
    assert!(browser.source().await.contains("<title>backend</title>"));

    // What the sign-in redirect keys on: a navigation says so.
    let seen = pages.seen();
    let nav = seen
        .iter()
        .find(|r| r.target.starts_with("/x?"))
        .expect("the navigation");
    assert!(
        nav.header("accept").unwrap_or("").contains("text/html"),
        "{nav:?}"
    );
    // Chromium sends Sec-Fetch-* to potentially trustworthy origins only (https,
    // localhost, 127.0.0.1): none on plain http to a name, so the sign-in redirect
    // cannot require it (issue 13: "Sec-Fetch-Mode: navigate when present").
    assert_eq!(nav.header("sec-fetch-mode"), None, "{nav:?}");
    assert_eq!(
        nav.header("cookie"),
        None,
        "a fresh profile has no cookie: {nav:?}"
    );
    browser
        .goto(&format!("http://127.0.0.1:{port}/local"))
        .await;
    let seen = pages.seen();
    let local = seen
        .iter()
        .find(|r| r.target == "/local")
        .expect("the navigation");
    assert_eq!(
        local.header("sec-fetch-mode"),
        Some("navigate"),
        "{local:?}"
    );
    assert_eq!(
        local.header("sec-fetch-dest"),
        Some("document"),
        "{local:?}"
    );
    browser.close().await;
}

/// Cookies as the sign-in tests need them, and what Chromium refuses.
#[tokio::test]
#[ignore = "needs chromium: run tests/run.sh"]
async fn cookies_shared_under_a_domain_and_refused_where_chromium_refuses_them() {
    let pages = Pages::start().await;
    let (_haproxy, _dir, port) = haproxy_before(&pages).await;
    let set_cookie = [
        "host_only=1; Path=/",
        "tld=1; Domain=test; Path=/",
        "dot_tld=1; Domain=.test; Path=/",
        "site=1; Domain=stagedoor.test; Path=/; HttpOnly; SameSite=Lax",
        "secure_on_http=1; Domain=stagedoor.test; Path=/; Secure",
    ];
    let headers = set_cookie
        .iter()
        .map(|c| ("Set-Cookie".to_owned(), (*c).to_owned()));
    pages.set(
        "/set",
        Page {
            status: 200,
            headers: headers.collect(),
            html: String::new(),
        },
    );
    let browser = Browser::start().await;
    let at = |host: &str, path: &str| format!("http://{host}:{port}{path}");

    browser.goto(&at("a.stagedoor.test", "/set")).await;
    browser.goto(&at("a.stagedoor.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "host_only=1; site=1");
    // Another host under the cookie domain gets the domain cookie only.
    browser.goto(&at("b.stagedoor.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "site=1");
    // `test` alone is no registrable domain: Domain=test and Domain=.test are refused,
    // so two bare `*.test` hosts can share nothing.
    browser.goto(&at("a.test", "/set")).await;
    browser.goto(&at("b.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "-");

    let mut jar: Vec<_> = browser.all_cookies().await;
    jar.sort_by(|a, b| (&a.domain, &a.name).cmp(&(&b.domain, &b.name)));
    let names: Vec<_> = jar
        .iter()
        .map(|c| format!("{}@{}", c.name, c.domain))
        .collect();
    assert_eq!(
        names,
        [
            "site@.stagedoor.test",
            "host_only@a.stagedoor.test",
            "host_only@a.test"
        ]
    );
    let site = &jar[0];
    assert!(site.http_only && !site.secure, "{site:?}");
    assert_eq!(site.same_site.as_deref(), Some("Lax"));
    // WebDriver's view: the current page's cookies, HttpOnly ones included.
    browser.goto(&at("b.stagedoor.test", "/show")).await;
    let here: Vec<_> = browser
        .cookies()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(here, ["site"]);

    // Tampering: the jar takes any value for any host, the backend sees it.
    let b = at("b.stagedoor.test", "/");
    browser
        .set_cookie(&b, "site", "tampered", Some("stagedoor.test"))
        .await;
    browser.goto(&at("a.stagedoor.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "host_only=1; site=tampered");
    browser.delete_cookie("site").await;
    browser.goto(&at("a.stagedoor.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "host_only=1");
    browser.clear_cookies().await;
    browser.goto(&at("a.stagedoor.test", "/show")).await;
    assert_eq!(browser.text("#cookie").await, "-");
    assert!(browser.all_cookies().await.is_empty());
    browser.close().await;
}

#[tokio::test]
#[ignore = "needs chromium: run tests/run.sh"]
async fn a_form_filled_and_submitted() {
    let pages = Pages::start().await;
    let (_haproxy, _dir, port) = haproxy_before(&pages).await;
    let form = "<!doctype html><html><head><title>sign in</title></head><body>\
                <form id=\"login\" method=\"post\" action=\"/done?from=form\">\
                <input id=\"user\" name=\"user\"><input id=\"pass\" name=\"pass\" type=\"password\">\
                <button id=\"go\" type=\"submit\">Sign in</button></form></body></html>";
    pages.set(
        "/form",
        Page {
            status: 200,
            headers: Vec::new(),
            html: form.to_owned(),
        },
    );
    let browser = Browser::start().await;
    let form_url = format!("http://a.stagedoor.test:{port}/form");

    // By the button.
    browser.goto(&form_url).await;
    browser.fill("#user", "alice").await;
    browser.fill("#pass", "s3cr!t &x").await;
    browser.click("#go").await;
    browser
        .wait_for_url("the form's action", |u| u.contains("/done"))
        .await;
    assert_eq!(browser.text("#method").await, "POST");
    assert_eq!(browser.text("#target").await, "/done?from=form");
    assert_eq!(browser.text("#body").await, "user=alice&pass=s3cr%21t+%26x");

    // By the form itself; fill replaces what the field held.
    browser.goto(&form_url).await;
    browser.fill("#user", "first").await;
    browser.fill("#user", "bob").await;
    browser.submit("#login").await;
    browser
        .wait_for_url("the form's action", |u| u.contains("/done"))
        .await;
    assert_eq!(browser.text("#body").await, "user=bob&pass=");
    browser.close().await;
}

/// The sign-in's state cookie (SameSite=Lax) must come back at the callback, reached
/// by a redirect from the provider, another site: after a link followed there and
/// answered with 302, and after a form POST answered with 303 (as oidc-provider's
/// login does). A Strict cookie does not (so the hop counts as cross-site:
/// `provider.test` and `stagedoor.test` are two sites).
#[tokio::test]
#[ignore = "needs chromium: run tests/run.sh"]
async fn a_lax_cookie_comes_back_through_a_cross_site_redirect() {
    let pages = Pages::start().await;
    let (_haproxy, _dir, port) = haproxy_before(&pages).await;
    let page = |status, headers: Vec<(&str, String)>, html: &str| Page {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        html: html.to_owned(),
    };
    let set = vec![
        (
            "Set-Cookie",
            "lax=1; Path=/; HttpOnly; SameSite=Lax".to_owned(),
        ),
        (
            "Set-Cookie",
            "strict=1; Path=/; HttpOnly; SameSite=Strict".to_owned(),
        ),
    ];
    pages.set("/set", page(200, set, ""));
    let back = format!("http://a.stagedoor.test:{port}/callback?code=c&state=s");
    pages.set(
        "/authorize",
        page(302, vec![("Location", back.clone())], ""),
    );
    pages.set("/login", page(303, vec![("Location", back.clone())], ""));
    let form = "<form id=\"f\" method=\"post\" action=\"/login\">\
                <input id=\"user\" name=\"user\"></form>";
    pages.set("/form", page(200, Vec::new(), form));
    let link = format!("<a id=\"go\" href=\"http://provider.test:{port}/authorize\">go</a>");
    pages.set("/link", page(200, Vec::new(), &link));
    let browser = Browser::start().await;

    browser
        .goto(&format!("http://a.stagedoor.test:{port}/set"))
        .await;
    // A link on another site (Backstage's link to the service, the service's to the
    // provider) answered with a redirect.
    browser
        .goto(&format!("http://provider.test:{port}/link"))
        .await;
    browser.click("#go").await;
    browser
        .wait_for_url("the callback", |u| u.contains("/callback"))
        .await;
    assert_eq!(browser.url().await, back);
    assert_eq!(browser.text("#cookie").await, "lax=1");
    // WebDriver's goto is browser-initiated, like a typed URL: its redirects are
    // same-site, Strict cookies included. Cross-site steps in a test need a click.
    browser
        .goto(&format!("http://provider.test:{port}/authorize"))
        .await;
    assert_eq!(browser.text("#cookie").await, "lax=1; strict=1");

    browser
        .goto(&format!("http://provider.test:{port}/form"))
        .await;
    browser.fill("#user", "alice").await;
    browser.submit("#f").await;
    browser
        .wait_for_url("the callback", |u| u.contains("/callback"))
        .await;
    assert_eq!(browser.text("#cookie").await, "lax=1");
    assert_eq!(browser.text("#method").await, "GET");
    browser.close().await;
}

/// The live processes (zombies aside) in process group `pgid`, by name.
fn group_members(pgid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            out.push(name.to_owned());
        }
    }
    out
}

/// A test that fails midway drops its browser without closing it: chromedriver and
/// every Chromium process it started must end all the same.
#[tokio::test]
#[ignore = "needs chromium: run tests/run.sh"]
async fn dropping_the_browser_ends_chromedriver_and_chromium() {
    let browser = Browser::start().await;
    browser.goto("about:blank").await;
    let pgid = browser.driver_pid().expect("chromedriver runs");
    let before = group_members(pgid);
    assert!(before.iter().any(|n| n == "chromedriver"), "{before:?}");
    assert!(
        before
            .iter()
            .any(|n| n.starts_with("chrom") && n != "chromedriver"),
        "{before:?}"
    );
    drop(browser);
    for _ in 0..100 {
        if group_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("still running after drop: {:?}", group_members(pgid));
}
