//! The ceiling of the SPOE path, for benches/haproxy-e2e.sh: where stagedoor's agent
//! would sit (HAProxy → SPOP → agent → ACK), a do-nothing agent that answers every
//! NOTIFY with `allow=true` and `status=200` and nothing else.
//!
//!     cargo run --release --example noop_agent -- --listen 127.0.0.1:12345
//!
//! Built from stagedoor's own SPOP codec and engine ([`stagedoor::server::run`], the
//! same accept loop, connection task, HELLO, health checks and ACK encoding as the
//! real agent, on the same tokio runtime), so the distance between this and stagedoor
//! is what stagedoor does per decision: arguments, token, policy, log, variables.
//! Not an authorization agent: it allows everything. Never run it in front of a service.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use stagedoor::connection::{EngineConfig, EngineStats, Handler, HandlerError};
use stagedoor::spop::{Actions, Message, Scope, TypedData};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "A do-nothing SPOE agent (allows everything): the SPOE ceiling, for benchmarks")]
struct Args {
    /// Address to listen on for SPOP.
    #[arg(long)]
    listen: SocketAddr,
    /// Runtime worker threads; 0 = half the CPUs, at least one (stagedoor's `[agent] worker_threads`).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Also set the five variables stagedoor sets for the bench's allowed request
    /// (reason, sub, scopes, entity, owner; canned): HAProxy's own work on them is
    /// then part of this ceiling too (benches/haproxy-e2e.sh, the `noopvars` row).
    #[arg(long)]
    stagedoor_vars: bool,
}

/// ACKs every NOTIFY with the two variables HAProxy's shipped rules need to pass a
/// request, as stagedoor does (the same types: a bool and an int64); with
/// `--stagedoor-vars`, with every variable stagedoor sets for the bench's request.
struct Noop {
    stagedoor_vars: bool,
}

impl Handler for Noop {
    async fn handle(&self, _messages: &[Message<'_>]) -> Result<Actions, HandlerError> {
        if !self.stagedoor_vars {
            let mut actions = Actions::with_capacity(32);
            actions.set(Scope::Txn, "allow", &TypedData::Bool(true));
            actions.set(Scope::Txn, "status", &TypedData::Int64(200));
            return Ok(actions);
        }
        let mut actions = Actions::with_capacity(256);
        actions.set(Scope::Txn, "allow", &TypedData::Bool(true));
        actions.set(Scope::Txn, "status", &TypedData::Int64(200));
        for (name, value) in [
            ("reason", "ok"),
            ("sub", "alice"),
            ("scopes", "orders:read"),
            ("entity", "component:default/orders-api"),
            ("owner", "group:default/payments"),
        ] {
            actions.set(Scope::Txn, name, &TypedData::str(value));
        }
        Ok(actions)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // The same runtime as `stagedoor serve`, with the same default thread count.
    let rt = stagedoor::server::runtime(args.worker_threads)?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        stagedoor::server::run(
            listener,
            Arc::new(Noop {
                stagedoor_vars: args.stagedoor_vars,
            }),
            EngineConfig::default(),
            10_000,
            Arc::new(EngineStats::default()),
            shutdown,
        )
        .await;
        Ok(())
    })
}
