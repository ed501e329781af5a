//! `stagedoor token verify`, tested by calling the library function the binary wires up.

mod token_support;

use clap::Parser;
use serde_json::{Value, json};
use stagedoor::token::cli::{VerifyArgs, run_verify, run_verify_with_stdin};
use token_support::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VerifyArgs,
}

fn args(argv: &[&str]) -> VerifyArgs {
    Cli::try_parse_from(std::iter::once("verify").chain(argv.iter().copied()))
        .expect("argv")
        .args
}

async fn run(a: VerifyArgs) -> (i32, Value) {
    let mut out = Vec::new();
    let code = run_verify(a, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "exactly one JSON object: {text}");
    (code, serde_json::from_str(&text).unwrap())
}

struct Setup {
    _dir: tempfile::TempDir,
    jwks: String,
    key: TestKey,
}

fn setup() -> Setup {
    let key = TestKey::rsa();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[key.jwk("rs-1", Some("RS256"))])).unwrap();
    Setup {
        jwks: path.to_string_lossy().into_owned(),
        _dir: dir,
        key,
    }
}

#[tokio::test]
async fn a_valid_token_prints_its_claims_and_exits_0() {
    let s = setup();
    let t = mint(&s.key, "RS256", "rs-1", &claims(now()));
    let (code, v) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        ISS,
        "--audience",
        AUD,
        &t,
    ]))
    .await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], json!(true));
    assert_eq!(v["reason"], json!("ok"));
    assert_eq!(v["alg"], json!("RS256"));
    assert_eq!(v["kid"], json!("rs-1"));
    assert_eq!(v["iss"], json!(ISS));
    assert_eq!(v["sub"], json!("client-1"));
    assert_eq!(v["aud"], json!([AUD]));
    assert!(v["exp"].as_i64().unwrap() > now());
    assert_eq!(v["scopes"], json!(["read", "write"]));
    assert_eq!(v["groups"], json!(["team-a", "team-b"]));
}

#[tokio::test]
async fn a_rejected_token_says_why_and_exits_1() {
    let s = setup();
    let mut c = claims(now());
    c["exp"] = json!(now() - 3600);
    let t = mint(&s.key, "RS256", "rs-1", &c);
    let (code, v) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        ISS,
        "--audience",
        AUD,
        &t,
    ]))
    .await;
    assert_eq!(code, 1);
    assert_eq!(v["valid"], json!(false));
    assert_eq!(v["reason"], json!("expired"));
    assert_eq!(
        v["kid"],
        json!("rs-1"),
        "the unverified header is shown to help debugging"
    );
    let (code, v) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        "https://other",
        "--audience",
        AUD,
        &t,
    ]))
    .await;
    assert_eq!((code, v["reason"].clone()), (1, json!("bad_issuer")));
    let (code, v) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "garbage",
    ]))
    .await;
    assert_eq!((code, v["reason"].clone()), (1, json!("malformed_token")));
    // --alg narrows the allow-list.
    let good = mint(&s.key, "RS256", "rs-1", &claims(now()));
    let (code, v) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "--alg",
        "ES256",
        &good,
    ]))
    .await;
    assert_eq!(
        (code, v["reason"].clone()),
        (1, json!("keys_unavailable")),
        "no key is allowed to verify: {v}"
    );
    let (code, _) = run(args(&[
        "--jwks",
        &s.jwks,
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "--alg",
        "ES256",
        "--alg",
        "RS256",
        &good,
    ]))
    .await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn signature_only_skips_the_claims() {
    let s = setup();
    let mut c = claims(now());
    c["exp"] = json!(now() - 3600);
    c["aud"] = json!("somewhere-else");
    let t = mint(&s.key, "RS256", "rs-1", &c);
    let (code, v) = run(args(&["--jwks", &s.jwks, "--signature-only", &t])).await;
    assert_eq!((code, v["valid"].clone()), (0, json!(true)));
    let other = mint(&TestKey::rsa(), "RS256", "rs-1", &c);
    let (code, v) = run(args(&["--jwks", &s.jwks, "--signature-only", &other])).await;
    assert_eq!((code, v["reason"].clone()), (1, json!("bad_signature")));
}

#[tokio::test]
async fn token_from_stdin_and_jwks_from_a_url() {
    let s = setup();
    let srv = FaultServer::start().await;
    srv.set(
        "/jwks",
        Reply::json(std::fs::read_to_string(&s.jwks).unwrap()),
    );
    let t = mint(&s.key, "RS256", "rs-1", &claims(now()));
    let a = args(&[
        "--jwks",
        &srv.url("/jwks"),
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "-",
    ]);
    let mut out = Vec::new();
    let mut stdin = std::io::Cursor::new(format!("{t}\n"));
    let code = run_verify_with_stdin(a, &mut stdin, &mut out).await;
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((code, v["valid"].clone()), (0, json!(true)), "{v}");
    assert_eq!(srv.hits("/jwks"), 1);
}

#[tokio::test]
async fn usage_and_key_errors() {
    let s = setup();
    let t = mint(&s.key, "RS256", "rs-1", &claims(now()));
    let (code, v) = run(args(&["--jwks", &s.jwks, &t])).await;
    assert_eq!(code, 2);
    assert!(v["error"].as_str().unwrap().contains("--issuer"));
    let (code, v) = run(args(&[
        "--jwks",
        "/nonexistent/jwks.json",
        "--signature-only",
        &t,
    ]))
    .await;
    assert_eq!((code, v["reason"].clone()), (1, json!("keys_unavailable")));
    assert!(Cli::try_parse_from(["verify", "--jwks", "x", "--alg", "none", "t"]).is_err());
    assert!(Cli::try_parse_from(["verify", "--jwks", "x", "--alg", "rs256", "t"]).is_err());
}
