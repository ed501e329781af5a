//! A real browser for end-to-end tests, on the client side of HAProxy: Debian's
//! `chromedriver` on a free port (its own process group, killed on drop) driving a
//! headless Chromium with a fresh profile, where every `*.test` name resolves to
//! 127.0.0.1 (the backend it reaches is `common/pages.rs`). Imported with `#[path]` by
//! the tests that use it (`mod common; #[path = "common/browser.rs"] mod browser;`),
//! not through `common`, so the other test binaries do not build the WebDriver client.
//!
//! Chromium facts these tests rely on (checked by tests/browser_smoke.rs):
//! - `a.test` and `b.test` share no cookie: `test` is not a registrable domain, so a
//!   `Domain=test` cookie is refused. Use one more label: `Domain=stagedoor.test`
//!   serves `a.stagedoor.test` and `b.stagedoor.test`.
//! - Chromium drops a `Secure` cookie set over plain http (except on localhost): the
//!   SSO tests run with `cookie_secure = false`.
//! - No `Sec-Fetch-*` header over plain http to a name (only to https, localhost and
//!   127.0.0.1): a navigation there is known by its method and `Accept` alone.
//! - [`Browser::goto`] is browser-initiated, like a typed URL: the redirects after it
//!   count as same-site (SameSite=Strict cookies come along). A step that must be
//!   cross-site (a link from Backstage, the provider's login POST) needs a click or a
//!   submit on the other site's page.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::haproxy::{free_port, require_bin};
use crate::common::peers::capture;

/// How long one navigation, find or wait may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

/// A cookie as the browser holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    /// As Chromium stores it: a host-only cookie has the bare host, a domain cookie a
    /// leading dot (`.stagedoor.test`).
    pub domain: String,
    pub path: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, when the browser reports one.
    pub same_site: Option<String>,
}

impl BrowserCookie {
    fn from_cdp(c: &Value) -> BrowserCookie {
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        BrowserCookie {
            name: text("name"),
            value: text("value"),
            domain: text("domain"),
            path: text("path"),
            http_only: c["httpOnly"].as_bool().unwrap_or(false),
            secure: c["secure"].as_bool().unwrap_or(false),
            same_site: c["sameSite"].as_str().map(str::to_owned),
        }
    }
}

/// A headless Chromium driven over WebDriver. Every helper fails the test (panics, with
/// the page's URL) when the browser does not do what was asked within [`STEP`].
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    /// chromedriver's output (Chromium's own log is off).
    pub driver_log: Arc<Mutex<Vec<String>>>,
    profile: tempfile::TempDir,
}

/// Whether this process runs as root (Chromium's sandbox refuses root).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// Chromium's command line: headless, a fresh profile, no first-run, sync, component
/// or update traffic, no proxy from the environment, `*.test` on 127.0.0.1 (the port
/// stays the one in the URL), and plain http left alone (no HTTPS upgrade of typed
/// navigations).
fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--password-store=basic",
        "--no-proxy-server",
        "--host-resolver-rules=MAP *.test 127.0.0.1",
        "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate,MediaRouter",
        "--window-size=1280,900",
    ]
    .map(str::to_owned)
    .into();
    args.push(format!("--user-data-dir={}", profile.display()));
    if is_root() {
        args.push("--no-sandbox".to_owned());
    }
    args
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. A missing `chromium` or
    /// `chromedriver` fails the test with the install hint (never a silent skip).
    pub async fn start() -> Browser {
        let chromium = require_bin("chromium");
        let chromedriver = require_bin("chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so drop can end chromedriver and the Chromium it
            // started (and Chromium's helpers) by that one id.
            .process_group(0)
            .kill_on_drop(true);
        let mut driver = cmd.spawn().expect("spawn chromedriver");
        let driver_log = capture(&mut driver);
        let url = format!("http://127.0.0.1:{port}");
        wait_listening(&mut driver, &driver_log, port).await;

        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("pageLoadStrategy".into(), json!("normal"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_binary(chromium), "args": chromium_args(profile.path()) }),
        );
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        let connect = builder.connect(&url);
        // chromedriver gives Chromium 60 s to start; a little more here.
        let client = match tokio::time::timeout(Duration::from_secs(75), connect).await {
            Ok(Ok(client)) => client,
            other => panic!(
                "no Chromium session from chromedriver ({:?}):\n{:#?}",
                other.map(|r| r.err()),
                driver_log.lock().unwrap()
            ),
        };
        let mut browser = Browser {
            client: Some(client),
            driver,
            driver_log,
            profile,
        };
        let mut timeouts = browser.client().get_timeouts().await.unwrap();
        timeouts.set_page_load(Some(STEP));
        timeouts.set_script(Some(STEP));
        browser.client().update_timeouts(timeouts).await.unwrap();
        browser.driver_alive();
        browser
    }

    /// chromedriver's PID, also the id of the process group it and Chromium run in.
    pub fn driver_pid(&self) -> Option<u32> {
        self.driver.id()
    }

    /// The WebDriver client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser closed")
    }

    fn driver_alive(&mut self) {
        if let Ok(Some(status)) = self.driver.try_wait() {
            panic!(
                "chromedriver exited with {status}: {:#?}",
                self.driver_log.lock().unwrap()
            );
        }
    }

    /// Opens `url` and waits for the page (after any redirects) to load.
    pub async fn goto(&self, url: &str) {
        step(self.client().goto(url), &format!("goto {url}")).await;
    }

    /// The URL the browser shows now (after redirects).
    pub async fn url(&self) -> String {
        step(self.client().current_url(), "current URL")
            .await
            .to_string()
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        step(self.client().source(), "page source").await
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        step(el.text(), &format!("text of {css}")).await
    }

    /// The rendered text of the whole page.
    pub async fn body_text(&self) -> String {
        self.text("body").await
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match tokio::time::timeout(STEP, self.client().wait().for_element(Locator::Css(css))).await
        {
            Ok(Ok(el)) => el,
            other => panic!(
                "no element {css:?} on {} ({other:?}): {}",
                self.url().await,
                self.source().await
            ),
        }
    }

    /// Types `value` into the field matching `css`, after clearing it.
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        step(el.clear(), &format!("clear {css}")).await;
        step(el.send_keys(value), &format!("type into {css}")).await;
    }

    /// Clicks the element matching `css` (a submit button, a link).
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        step(el.click(), &format!("click {css}")).await;
    }

    /// Submits the form matching `css` as its own submit button would (the form's
    /// `submit` event handlers run; a form without a button submits too).
    pub async fn submit(&self, css: &str) {
        let script = "const f = document.querySelector(arguments[0]); \
                      if (!f) { return false; } f.requestSubmit(); return true;";
        let done = step(
            self.client().execute(script, vec![json!(css)]),
            &format!("submit {css}"),
        )
        .await;
        assert_eq!(done, json!(true), "no form {css:?} on {}", self.url().await);
    }

    /// Waits until the URL satisfies `ok` (after a submit or a script redirect), and
    /// returns it.
    pub async fn wait_for_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let url = self.url().await;
            if ok(&url) {
                return url;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "URL never became {what}: still {url}: {}",
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The cookies the current page's URL would send (WebDriver's view: HttpOnly ones
    /// included, other hosts' not).
    pub async fn cookies(&self) -> Vec<BrowserCookie> {
        let all = step(self.client().get_all_cookies(), "cookies").await;
        all.into_iter()
            .map(|c| BrowserCookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                domain: c.domain().unwrap_or_default().to_owned(),
                path: c.path().unwrap_or_default().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| format!("{s:?}")),
            })
            .collect()
    }

    /// Every cookie in the browser, for every host (Chrome DevTools `Network.getAllCookies`).
    pub async fn all_cookies(&self) -> Vec<BrowserCookie> {
        let got = self.cdp("Network.getAllCookies", json!({})).await;
        got["cookies"]
            .as_array()
            .map(|cs| cs.iter().map(BrowserCookie::from_cdp).collect())
            .unwrap_or_default()
    }

    /// Sets a cookie (path `/`) in the browser's jar as if `url` had set it, with any
    /// value (for tampering tests): Chrome DevTools `Network.setCookie`, so no page
    /// needs to be open on that host. `domain` None makes it host-only; Some("x.test")
    /// a domain cookie, as `Domain=x.test` would (CDP itself takes a domain without
    /// its leading dot as a host-only cookie for that exact name). It replaces the
    /// cookie of the same name, domain and path, HttpOnly or not.
    pub async fn set_cookie(&self, url: &str, name: &str, value: &str, domain: Option<&str>) {
        let mut params = json!({ "url": url, "name": name, "value": value, "path": "/" });
        if let Some(d) = domain {
            params["domain"] = json!(format!(".{}", d.trim_start_matches('.')));
        }
        let got = self.cdp("Network.setCookie", params).await;
        // Chromium 1xx answers `{}` on success and an error on refusal; older ones
        // answered `{"success": bool}`.
        assert_ne!(
            got["success"],
            json!(false),
            "cookie {name} refused for {url}"
        );
    }

    /// Deletes the cookie `name` wherever it is set, on every host.
    pub async fn delete_cookie(&self, name: &str) {
        for c in self
            .all_cookies()
            .await
            .into_iter()
            .filter(|c| c.name == name)
        {
            let params = json!({ "name": c.name, "domain": c.domain, "path": c.path });
            self.cdp("Network.deleteCookies", params).await;
        }
    }

    /// Deletes every cookie of every host.
    pub async fn clear_cookies(&self) {
        self.cdp("Network.clearBrowserCookies", json!({})).await;
    }

    /// Runs a Chrome DevTools command through chromedriver (`goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        step(
            self.client().issue_cmd(Cdp { cmd, params }),
            &format!("CDP {cmd}"),
        )
        .await
    }

    /// Ends the session (Chromium quits) and chromedriver. Dropping does the same,
    /// more abruptly (SIGKILL to the process group).
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(STEP, client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group this test started (chromedriver is its leader), by that id: ends
        // chromedriver, Chromium and Chromium's helper processes together. Chromium's
        // crash handler (chrome_crashpad) makes a group of its own and exits when
        // Chromium is gone.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
        let _ = &self.profile;
    }
}

/// Debian's `/usr/bin/chromium` is a shell wrapper; the browser itself is beside the
/// libraries. The wrapper is used when the layout differs.
fn chromium_binary(wrapper: PathBuf) -> PathBuf {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() { real } else { wrapper }
}

async fn wait_listening(driver: &mut Child, log: &Arc<Mutex<Vec<String>>>, port: u16) {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = driver.try_wait() {
            panic!(
                "chromedriver exited with {status}: {:#?}",
                log.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "chromedriver did not listen on {port}: {:#?}",
        log.lock().unwrap()
    );
}

/// Awaits one WebDriver call, failing the test on an error or after [`STEP`].
async fn step<T, E: std::fmt::Debug>(
    fut: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("browser: {what}: {e:?}"),
        Err(_) => panic!("browser: {what}: no answer in {STEP:?}"),
    }
}

/// chromedriver's vendor endpoint for Chrome DevTools commands.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params }).to_string();
        (http::Method::POST, Some(body))
    }
}
