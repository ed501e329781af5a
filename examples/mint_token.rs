//! Mints a token signed with the quickstart's DEMO key, for trying stagedoor out.
//!
//!     cargo run --example mint_token -- --sub alice --scope orders:read
//!
//! The key in examples/quickstart/demo-signing-key.pem is public (it is in the
//! repository): tokens it signs are only good against the quickstart config.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Mint a token signed with the quickstart demo key (demo only)")]
struct Args {
    /// Token subject.
    #[arg(long)]
    sub: String,
    /// A granted scope; repeat for more.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// An identity-provider group; repeat for more.
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long, default_value = "https://idp.quickstart.example")]
    iss: String,
    #[arg(long, default_value = "quickstart-api")]
    aud: String,
    /// Lifetime in seconds (negative: already expired).
    #[arg(long, default_value_t = 3600, allow_hyphen_values = true)]
    ttl: i64,
    #[arg(long, default_value = "demo-2026")]
    kid: String,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart/demo-signing-key.pem"))]
    key: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let mut claims = json!({
        "iss": a.iss,
        "sub": a.sub,
        "aud": a.aud,
        "iat": now.min(now + a.ttl),
        "exp": now + a.ttl,
        "scope": a.scopes.join(" "),
        "groups": a.groups,
    });
    if let Some(e) = a.email {
        claims["email"] = e.into();
    }
    if let Some(c) = a.client_id {
        claims["client_id"] = c.into();
    }
    let pem = std::fs::read(&a.key)?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(a.kid);
    println!(
        "{}",
        encode(&header, &claims, &EncodingKey::from_ec_pem(&pem)?)?
    );
    Ok(())
}
