//! Token stage, for people: `stagedoor token verify`, which runs one token through the
//! same verifier the agent uses and prints one JSON object saying why it passed or not
//! (token → verdict → stdout).

use std::io::{Read, Write};

use base64::Engine;
use serde::Serialize;

use super::alg::Alg;
use super::config::{DEFAULT_ALGORITHMS, DEFAULT_MAX_TOKEN_BYTES, IssuerConfig, KeySource};
use super::fetch;
use super::jose::{B64, RawClaims, Val, parse_header};
use super::jwk::KeySet;
use super::verify::{verify_jws, verify_with_keys};

/// Arguments of `stagedoor token verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// JWKS file, or an https URL (http only for loopback hosts).
    #[arg(long, value_name = "FILE_OR_URL")]
    pub jwks: String,
    /// Expected `iss` (required unless --signature-only).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Accepted audience (repeatable; required unless --signature-only).
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,
    /// Allowed algorithm (repeatable); default RS256, PS256, ES256, EdDSA.
    #[arg(long = "alg", value_name = "ALG", value_parser = parse_alg)]
    pub algs: Vec<Alg>,
    /// Check only the signature, not the claims.
    #[arg(long)]
    pub signature_only: bool,
    /// Groups claim to report.
    #[arg(long, default_value = "groups")]
    pub groups_claim: String,
    /// The token, or `-` to read it from stdin.
    #[arg(value_name = "TOKEN|-")]
    pub token: String,
}

fn parse_alg(s: &str) -> Result<Alg, String> {
    Alg::from_name(s).ok_or_else(|| format!("unknown algorithm {s:?} (names are case-sensitive)"))
}

/// The one JSON object printed. For an invalid token the fields show what the token
/// *claims* (unverified), to help find out why it was rejected.
#[derive(Debug, Default, Serialize)]
struct Report {
    valid: bool,
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    iss: Option<String>,
    sub: Option<String>,
    aud: Vec<String>,
    exp: Option<i64>,
    scopes: Vec<String>,
    groups: Vec<String>,
}

/// Runs the command, reading `-` from the process stdin. Returns the exit code:
/// 0 valid, 1 invalid, 2 usage error.
pub async fn run_verify(args: VerifyArgs, out: &mut impl Write) -> i32 {
    run_verify_with_stdin(args, &mut std::io::stdin(), out).await
}

/// [`run_verify`] with an explicit stdin.
pub async fn run_verify_with_stdin(
    args: VerifyArgs,
    stdin: &mut impl Read,
    out: &mut impl Write,
) -> i32 {
    let (report, code) = evaluate(args, stdin).await;
    let line = serde_json::to_string(&report).unwrap_or_else(|_| "{\"valid\":false}".to_owned());
    if writeln!(out, "{line}").is_err() {
        return 1;
    }
    code
}

async fn evaluate(args: VerifyArgs, stdin: &mut impl Read) -> (Report, i32) {
    let usage = |msg: &str| {
        (
            Report {
                error: Some(msg.to_owned()),
                ..Report::default()
            },
            2,
        )
    };
    let token = if args.token == "-" {
        let mut s = String::new();
        if stdin.take(1 << 20).read_to_string(&mut s).is_err() {
            return usage("could not read the token from stdin");
        }
        s.trim().to_owned()
    } else {
        args.token.trim().to_owned()
    };
    if !args.signature_only && (args.issuer.is_none() || args.audiences.is_empty()) {
        return usage("--issuer and --audience are required unless --signature-only");
    }
    let algs = if args.algs.is_empty() {
        DEFAULT_ALGORITHMS.to_vec()
    } else {
        args.algs.clone()
    };
    let mut report = inspect(&token, &args.groups_claim);
    let keys = match load_jwks(&args.jwks, &algs).await {
        Ok(k) => k,
        Err(e) => {
            report.reason = Some(crate::reason::Reason::KeysUnavailable.as_str());
            report.error = Some(e);
            return (report, 1);
        }
    };
    let result = if args.signature_only {
        verify_jws(&token, &keys, &algs, DEFAULT_MAX_TOKEN_BYTES).map(|_| ())
    } else {
        let issuer = args.issuer.clone().unwrap_or_default();
        let auds: Vec<&str> = args.audiences.iter().map(String::as_str).collect();
        let mut cfg = IssuerConfig::new(&issuer, &auds, KeySource::JwksFile(args.jwks.clone()));
        cfg.algorithms = Some(algs.clone());
        cfg.groups_claim = args.groups_claim.clone();
        verify_with_keys(
            &token,
            crate::clock::unix_now(),
            &keys,
            &cfg,
            DEFAULT_MAX_TOKEN_BYTES,
        )
        .map(|c| {
            // Verified values replace the inspected ones.
            report.iss = Some(c.iss);
            report.sub = c.sub;
            report.aud = c.aud;
            report.exp = Some(c.exp);
            report.scopes = c.scopes;
            report.groups = c.groups;
        })
    };
    match result {
        Ok(()) => {
            report.valid = true;
            report.reason = Some(crate::reason::Reason::Ok.as_str());
            (report, 0)
        }
        Err(reason) => {
            report.reason = Some(reason.as_str());
            (report, 1)
        }
    }
}

async fn load_jwks(src: &str, algs: &[Alg]) -> Result<KeySet, String> {
    let body = if src.starts_with("https://") || src.starts_with("http://") {
        let client = fetch::http_client().map_err(|e| e.to_string())?;
        fetch::get(&client, src, false)
            .await
            .map_err(|e| e.to_string())?
            .body
    } else {
        let meta = std::fs::metadata(src).map_err(|e| format!("{src}: {e}"))?;
        if meta.len() > fetch::MAX_DOCUMENT_BYTES as u64 {
            return Err(format!(
                "{src}: larger than {} bytes",
                fetch::MAX_DOCUMENT_BYTES
            ));
        }
        std::fs::read(src).map_err(|e| format!("{src}: {e}"))?
    };
    let (keys, skipped) = KeySet::from_jwks(&body, algs).map_err(|e| e.to_string())?;
    for s in skipped {
        eprintln!("JWK #{} (kid {:?}) skipped: {}", s.index, s.kid, s.reason);
    }
    Ok(keys)
}

/// What the token says about itself, unverified (display only).
fn inspect(token: &str, groups_claim: &str) -> Report {
    let mut r = Report::default();
    let mut parts = token.split('.');
    let (Some(h), Some(p)) = (parts.next(), parts.next()) else {
        return r;
    };
    if let Some(header) = B64.decode(h).ok().and_then(|j| parse_header(&j).ok()) {
        r.alg = Some(header.alg.as_str().to_owned());
        r.kid = header.kid;
    }
    let Ok(payload) = B64.decode(p) else { return r };
    let wanted = [groups_claim.to_owned()];
    let Ok(c) = RawClaims::parse(&payload, &wanted) else {
        return r;
    };
    let s = |v: &Option<Val<'_>>| match v {
        Some(Val::Str(s)) => Some(s.to_string()),
        _ => None,
    };
    let list = |v: Option<&Val<'_>>| match v {
        Some(Val::Str(s)) => vec![s.to_string()],
        Some(Val::StrList(l)) => l.iter().map(|x| x.to_string()).collect(),
        _ => Vec::new(),
    };
    r.iss = s(&c.iss);
    r.sub = s(&c.sub);
    r.aud = list(c.aud.as_ref());
    r.exp = match c.exp {
        Some(Val::Int(i)) => Some(i),
        Some(Val::Float(f)) if f.is_finite() && f.abs() < 9.0e15 => Some(f.floor() as i64),
        _ => None,
    };
    r.scopes = s(&c.scope)
        .map(|x| {
            x.split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    r.scopes.extend(list(c.scp.as_ref()));
    r.groups = list(c.extra(groups_claim));
    r
}
