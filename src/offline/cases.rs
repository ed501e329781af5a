//! `stagedoor test`: a catalog owner's expected decisions, checked offline with the
//! agent's own decision code ([`Policy::decide`]). A case is a request, a caller (an
//! identity, a token's claims, or a credential that failed) and the expected
//! outcome; the format is in docs/policy-tests.md, examples in examples/policy-tests/.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::identity::Identity;
use crate::policy::{Decision, Policy, Request};
use crate::reason::Reason;
use crate::token::alg::Alg;
use crate::token::config::IssuerConfig;
use crate::token::jwk::KeySet;
use crate::token::verify::verify_with_keys;

/// A case file that cannot be read as cases: the file, and the line where known.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: CaseRequest,
    /// The verified caller, as the policy sees it.
    #[serde(default)]
    identity: Option<CaseIdentity>,
    /// A token's claims, read by the issuer's own rules (`--config` needed).
    #[serde(default)]
    claims: Option<serde_json::Map<String, Value>>,
    /// Without identity or claims: why the credentials gave no caller
    /// (`missing_token` by default, or `expired`, `bad_signature`, ...).
    #[serde(default)]
    credential: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    method: String,
    #[serde(default = "default_host")]
    host: String,
    path: String,
}

fn default_host() -> String {
    "localhost".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIdentity {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// A Backstage user token's User entity ref.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    allow: Option<bool>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    entity: Option<String>,
}

/// What a run found: cases checked, and one line per failing case.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: usize,
    pub failures: Vec<String>,
}

/// One case, ready to decide.
struct Ready {
    line: usize,
    name: String,
    method: String,
    host: String,
    path: String,
    caller: Result<Identity, Reason>,
    expect: Expect,
}

/// Checks every case of `files` against `policy`. `cfg` (from `--config`) gives the
/// issuers whose rules read `claims`; without it, a case with claims is an error.
///
/// # Errors
/// The first file that cannot be read or holds a malformed case.
pub fn run(files: &[PathBuf], policy: &Policy, cfg: Option<&Config>) -> Result<Report, CaseError> {
    let mut report = Report::default();
    for path in files {
        for case in load(path, cfg)? {
            report.cases += 1;
            let got = policy.decide(
                &Request {
                    method: &case.method,
                    host: &case.host,
                    path: &case.path,
                },
                case.caller.as_ref().map_err(|r| *r),
            );
            if let Some(diff) = mismatch(&case.expect, &got) {
                report.failures.push(format!(
                    "{}:{}: {}: {diff}",
                    path.display(),
                    case.line,
                    case.name
                ));
            }
        }
    }
    Ok(report)
}

/// Where `got` differs from `want`, in one line; `None` when every given field matches.
fn mismatch(want: &Expect, got: &Decision) -> Option<String> {
    let reason = got.reason.as_str();
    let ok = want.allow.is_none_or(|a| a == got.allow())
        && want.status.is_none_or(|s| s == got.status())
        && want.reason.as_deref().is_none_or(|r| r == reason)
        && want.route.as_deref().is_none_or(|r| Some(r) == got.route())
        && want
            .entity
            .as_deref()
            .is_none_or(|e| Some(e) == got.entity());
    if ok {
        return None;
    }
    let mut expected = String::new();
    if let Some(a) = want.allow {
        let _ = write!(expected, " allow={a}");
    }
    if let Some(s) = want.status {
        let _ = write!(expected, " status={s}");
    }
    if let Some(r) = &want.reason {
        let _ = write!(expected, " reason={r}");
    }
    if let Some(r) = &want.route {
        let _ = write!(expected, " route={r:?}");
    }
    if let Some(e) = &want.entity {
        let _ = write!(expected, " entity={e}");
    }
    Some(format!(
        "expected{expected}; got allow={} status={} reason={reason} route={:?} entity={}",
        got.allow(),
        got.status(),
        got.route().unwrap_or("-"),
        got.entity().unwrap_or("-"),
    ))
}

/// Reads one case file and turns each case into a caller and a request.
fn load(path: &Path, cfg: Option<&Config>) -> Result<Vec<Ready>, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
        path: path.to_owned(),
        source,
    })?;
    let malformed = |line: usize, message: String| CaseError::Malformed {
        path: path.to_owned(),
        line,
        message,
    };
    let file: CaseFile = serde_norway::from_str(&text).map_err(|e| {
        let line = e.location().map_or(1, |l| l.line());
        malformed(line, e.to_string())
    })?;
    if file.cases.is_empty() {
        return Err(malformed(1, "`cases` lists no case".to_owned()));
    }
    let lines = case_lines(&text);
    let now = crate::clock::unix_now();
    file.cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let line = lines.get(i).copied().unwrap_or(1);
            ready(case, cfg, now)
                .map_err(|m| malformed(line, m))
                .map(|mut r| {
                    r.line = line;
                    r
                })
        })
        .collect()
}

fn ready(case: Case, cfg: Option<&Config>, now: i64) -> Result<Ready, String> {
    let name = case.name;
    let e = &case.expect;
    if e.allow.is_none()
        && e.status.is_none()
        && e.reason.is_none()
        && e.route.is_none()
        && e.entity.is_none()
    {
        return Err(format!("{name}: `expect` names nothing to check"));
    }
    if let Some(r) = &e.reason
        && Reason::from_str_exact(r).is_none()
    {
        return Err(format!(
            "{name}: `expect.reason` {r:?} is not a reason stagedoor gives"
        ));
    }
    let caller = match (case.identity, case.claims, case.credential) {
        (Some(id), None, None) => Ok(identity(id, cfg)),
        (None, Some(claims), None) => {
            let cfg = cfg.ok_or_else(|| {
                format!("{name}: `claims` are read by an issuer's rules: run with --config")
            })?;
            // Claims the issuer's rules refuse are a caller like an expired token.
            from_claims(claims, cfg, now).map_err(|e| format!("{name}: {e}"))?
        }
        (None, None, credential) => {
            let word = credential.unwrap_or_else(|| "missing_token".to_owned());
            match Reason::from_str_exact(&word) {
                Some(r) if r.status() == 401 => Err(r),
                _ => {
                    return Err(format!(
                        "{name}: `credential` {word:?} is not a reason a credential fails with"
                    ));
                }
            }
        }
        _ => {
            return Err(format!(
                "{name}: give one of `identity`, `claims` and `credential`"
            ));
        }
    };
    Ok(Ready {
        line: 0,
        name,
        method: case.request.method,
        host: case.request.host,
        path: case.request.path,
        caller,
        expect: case.expect,
    })
}

fn identity(id: CaseIdentity, cfg: Option<&Config>) -> Identity {
    // One configured issuer is the default issuer of a case.
    let issuer = id
        .issuer
        .or_else(|| match cfg.map(|c| c.issuers.as_slice()) {
            Some([only]) => Some(only.issuer.clone()),
            _ => None,
        });
    Identity {
        issuer: issuer.unwrap_or_default(),
        sub: id.sub,
        client_id: id.client_id,
        email: id.email,
        scopes: id.scopes,
        groups: id.groups,
        backstage_user: id.user,
        exp: i64::MAX,
    }
}

/// Reads `claims` as the agent reads a token's: the token is signed here with a
/// throw-away HS256 key and verified with the issuer's own rules (audience, type,
/// times, groups claim, scopes, verified email, a Backstage issuer's subject).
/// `iss`, `aud`, `iat` and `exp` default to the issuer, its first audience, now and
/// five minutes from now. `Err` only when the claims cannot be tried at all.
fn from_claims(
    mut claims: serde_json::Map<String, Value>,
    cfg: &Config,
    now: i64,
) -> Result<Result<Identity, Reason>, String> {
    let issuer: &IssuerConfig = match claims.get("iss").and_then(Value::as_str) {
        Some(iss) => cfg
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| format!("no [[issuers]] table for iss {iss:?}"))?,
        None => match cfg.issuers.as_slice() {
            [only] => only,
            _ => return Err("`iss` is needed: the config has several issuers".to_owned()),
        },
    };
    claims
        .entry("iss")
        .or_insert_with(|| issuer.issuer.clone().into());
    if let Some(aud) = issuer.audiences.first() {
        claims.entry("aud").or_insert_with(|| aud.clone().into());
    }
    claims.entry("iat").or_insert_with(|| now.into());
    claims.entry("exp").or_insert_with(|| (now + 300).into());
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "no randomness".to_owned())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some(
        issuer
            .allowed_types()
            .and_then(<[String]>::first)
            .cloned()
            .unwrap_or_else(|| "JWT".to_owned()),
    );
    let key = jsonwebtoken::EncodingKey::from_secret(&secret).map_err(|e| e.to_string())?;
    let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())?;
    let mut rules = issuer.clone();
    rules.algorithms = Some(vec![Alg::HS256]);
    let keys = KeySet::from_secret(None, &secret, &[Alg::HS256]);
    Ok(verify_with_keys(&token, now, &keys, &rules, usize::MAX).map(|c| c.to_identity()))
}

/// The 1-based line where each item of the top-level `cases:` list starts (block
/// style); a flow-style list gets none, and its cases are reported at line 1.
fn case_lines(text: &str) -> Vec<usize> {
    let mut lines = text.lines().enumerate();
    if !lines.any(|(_, l)| l.starts_with("cases:")) {
        return Vec::new();
    }
    let mut indent = None;
    let mut out = Vec::new();
    for (i, l) in lines {
        let trimmed = l.trim_start();
        let depth = l.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if depth == 0 && !trimmed.starts_with('-') {
            break; // the next top-level key
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            match indent {
                None => {
                    indent = Some(depth);
                    out.push(i + 1);
                }
                Some(d) if d == depth => out.push(i + 1),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::case_lines;

    #[test]
    fn case_lines_finds_each_item_of_the_cases_list() {
        let text = "# tests\ncases:\n  - name: a\n    identity:\n      groups:\n        - x\n  - name: b\n\n  - name: c\nother: 1\n  - not: ours\n";
        assert_eq!(case_lines(text), vec![3, 7, 9]);
        assert_eq!(case_lines("cases: [{name: a}]\n"), Vec::<usize>::new());
    }
}
