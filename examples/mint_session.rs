//! Seals a browser session cookie with the given key, as stagedoor's sign-in would,
//! for benchmarks and trying the browser path without a provider (demo only).
//!
//!     cargo run --example mint_session -- --key-hex $(openssl rand -hex 32) --sub alice --scope orders:read
//!
//! Prints `name=value` for a `Cookie` header (`stagedoor_session`, the name used with
//! `cookie_secure = false`).

use clap::Parser;
use stagedoor::sso::{Secret, Session, Sso, SsoConfig};

#[derive(Parser)]
#[command(about = "Seal a stagedoor session cookie (demo and benchmarks only)")]
struct Args {
    /// The sealing key: 64 hex digits (what `[sso] keys_env` holds).
    #[arg(long)]
    key_hex: String,
    #[arg(long)]
    sub: String,
    /// A granted scope; repeat for more.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// An identity-provider group; repeat for more.
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long, default_value = "https://idp.quickstart.example")]
    iss: String,
    /// Seconds until the session expires.
    #[arg(long, default_value_t = 28_800)]
    ttl: i64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let keys = stagedoor::sso::seal::parse_keys(&a.key_hex)?;
    let cfg: SsoConfig = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nissuer = {:?}\nclient_id = \"stagedoor\"\ncookie_secure = false\nexternal_scheme = \"http\"\nmax_session_seconds = {}",
        a.iss,
        a.ttl.clamp(60, 604_800)
    ))?;
    let sso = Sso::from_parts(cfg, &keys, Secret::new(String::new()))?;
    let now = stagedoor::clock::unix_now();
    let mut session = Session {
        iss: a.iss,
        sub: a.sub,
        email: None,
        groups: a.groups,
        scopes: a.scopes,
        sid: stagedoor::sso::seal::random_token()?,
        auth_time: Some(now),
        iat: now,
        exp: now + a.ttl,
    };
    let value = sso.seal_session(&mut session, None)?;
    println!("{}={value}", sso.session_cookie_name());
    Ok(())
}
