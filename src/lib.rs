//! stagedoor: an HAProxy SPOE agent that authorizes every HTTP request.
//!
//! One request reads straight through the modules:
//! bytes in → [`spop`] frame → message → [`token`] verification → [`policy`]
//! decision → [`agent`] actions → [`spop`] frame → bytes out.
//!
//! - [`spop`]: the pure SPOP codec (no I/O).
//! - [`connection`] / [`server`]: the tokio engine around it; [`budget`]: the bytes
//!   its buffers may hold.
//! - [`agent`]: the handler: arguments → token → policy → variables; [`browser`]: the
//!   browser arguments and the sign-in redirect.
//! - [`token`]: JWT verification, JWKS key sets, verified-token cache.
//! - [`catalog`]: Backstage entities from descriptor files or a live Backstage.
//! - [`policy`]: the route table built from the catalog and the pure decision.
//! - [`identity`]: the verified caller handed from token to policy.
//! - [`reason`]: the closed set of decision reasons.
//! - [`config`], [`lifecycle`], [`serve`], [`offline`]: the process around it all
//!   ([`lifecycle`] starts what they share and owns the signals);
//!   [`admin`], [`metrics`], [`decision_log`]: what operators see;
//!   [`clock`], [`http`]: the wall clock and the outbound HTTP client, shared;
//!   [`offload`]: replaced catalogs and policies freed off the async workers.

pub mod admin;
pub mod agent;
pub mod browser;
pub mod budget;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod connection;
pub mod counter;
pub mod decision_log;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod offline;
pub mod offload;
pub mod policy;
pub mod reason;
pub mod serve;
pub mod server;
pub mod spop;
pub mod sso;
pub mod token;
