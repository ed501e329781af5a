//! Browser sign-in, beside the SPOP request flow: the agent's own HTTP listener serves
//! `/.stagedoor/{login,callback,logout,whoami}` (OIDC authorization code with PKCE),
//! and the sealed session cookie it sets is opened per request by the agent in place
//! of a bearer token (cookie → [`Sso::session_from_cookie_header`] → `Identity` →
//! policy).
//!
//! - [`seal`]: AES-256-GCM sealed cookie values, key list and rotation.

pub mod seal;
