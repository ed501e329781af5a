//! The `stagedoor` command: `serve`, `check-config`, `token verify`, `policy show`,
//! `decide`, `test` and `replay`. Exit codes: 0 ok/allow, 1 deny/invalid/failure,
//! 64 bad config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use stagedoor::config::{Config, LogFormat};

/// sysexits EX_CONFIG-ish: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "stagedoor",
    version,
    about = "HAProxy SPOE agent: JWT verification and Backstage-catalog policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Serve {
        #[arg(long, default_value = "stagedoor.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file (keys, key sources, catalog files); exit 0 or 64.
    CheckConfig {
        #[arg(long, default_value = "stagedoor.toml")]
        config: PathBuf,
    },
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Probe an admin endpoint (for container health checks): exit 0 on a 2xx answer.
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Decide one request offline and print the decision as JSON (exit 0 allow, 1 deny).
    Decide {
        #[arg(long, default_value = "stagedoor.toml")]
        config: PathBuf,
        #[arg(long)]
        method: String,
        #[arg(long)]
        path: String,
        /// The Host header. `localhost` by default, so that any-host routes decide as
        /// for a request through HAProxy; `--host ""` is a request without Host, which
        /// is `bad_request` when some route is host-scoped.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// A bearer token (verified against the configured issuers); `-` reads it
        /// from standard input, which keeps it out of `ps` and shell history.
        #[arg(long)]
        token: Option<String>,
    },
    /// Check expected decisions from YAML case files (docs/policy-tests.md) against a
    /// config's catalog or catalog files; one line per failing case, exit 0 or 1.
    Test {
        /// Case files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The agent's configuration (its catalog, and its issuers for `claims`).
        #[arg(long, conflicts_with = "catalog")]
        config: Option<PathBuf>,
        /// Catalog files (globs, repeatable) instead of a config's catalog.
        #[arg(long)]
        catalog: Vec<String>,
    },
    /// Decide logged decisions again under a candidate policy and print what changes,
    /// newly allowed first (docs/policy-tests.md).
    Replay {
        /// A decision log (JSON lines, as the agent writes them); `-` reads stdin.
        #[arg(long)]
        log: PathBuf,
        /// The candidate configuration (its catalog).
        #[arg(long, conflicts_with = "catalog")]
        against: Option<PathBuf>,
        /// Catalog files (globs, repeatable) instead of a config's catalog.
        #[arg(long)]
        catalog: Vec<String>,
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReplayFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Verify a token and print why it is valid or not.
    Verify(stagedoor::token::cli::VerifyArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the route table, annotation errors, conflicts, unknown principals and
    /// the catalog documents or entities left out (one line each, with the reason).
    Show {
        #[arg(long, default_value = "stagedoor.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Exit 1 when the catalog has annotation errors, conflicts, unknown principals
        /// or documents left out (for a catalog repository's CI).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("config error: {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAGEDOOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(0)
}

/// Runs a one-shot command to its end, then drops the runtime without waiting for
/// blocking tasks: a catalog parse abandoned at its deadline must not hold the exit.
fn run_once<F: std::future::Future>(future: F) -> F::Output {
    let rt = runtime();
    let out = rt.block_on(future);
    rt.shutdown_background();
    out
}

/// The agent's runtime (`stagedoor::server::runtime`); `threads` 0 means half the CPUs, at least one.
/// A runtime that cannot start (a bad `TOKIO_WORKER_THREADS`, no threads) ends the
/// process with the reason and the exit code of a bad configuration.
fn runtime_with(threads: usize) -> tokio::runtime::Runtime {
    stagedoor::server::runtime(threads).unwrap_or_else(|e| {
        eprintln!("stagedoor: cannot start the runtime: {e}");
        std::process::exit(i32::from(EXIT_CONFIG))
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => serve(&config),
        Command::Probe { url } => probe(&url),
        Command::CheckConfig { config } => match load_config(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Token {
            command: TokenCommand::Verify(args),
        } => {
            let code = run_once(stagedoor::token::cli::run_verify(
                args,
                &mut std::io::stdout(),
            ));
            ExitCode::from(code as u8)
        }
        Command::Policy {
            command:
                PolicyCommand::Show {
                    config,
                    format,
                    strict,
                },
        } => policy_show(&config, format, strict),
        Command::Decide {
            config,
            method,
            path,
            host,
            token,
        } => decide(&config, method, path, host, token),
        Command::Test {
            files,
            config,
            catalog,
        } => policy_test(&files, config, catalog),
        Command::Replay {
            log,
            against,
            catalog,
            format,
        } => replay(&log, against, catalog, format),
    }
}

fn replay(
    log: &Path,
    against: Option<PathBuf>,
    catalog: Vec<String>,
    format: ReplayFormat,
) -> ExitCode {
    let cfg = match policy_config(against, catalog) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let loaded = match load_policy(&cfg) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let input: Box<dyn std::io::BufRead> = if log.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(log) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("stagedoor: {}: {e}", log.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let report = match stagedoor::offline::replay::replay(input, &loaded.policy) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stagedoor: {}: {e}", log.display());
            return ExitCode::FAILURE;
        }
    };
    match format {
        ReplayFormat::Text => print!("{}", stagedoor::offline::replay::render_text(&report)),
        ReplayFormat::Markdown => {
            print!("{}", stagedoor::offline::replay::render_markdown(&report));
        }
        ReplayFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    ExitCode::SUCCESS
}

/// The catalog loaded once and its policy built, within 30 s (exit 1 otherwise).
fn load_policy(cfg: &Config) -> Result<stagedoor::offline::LoadedPolicy, ExitCode> {
    run_once(stagedoor::offline::load_policy(
        cfg,
        Duration::from_secs(30),
    ))
    .map_err(|e| {
        eprintln!("stagedoor: {e}");
        ExitCode::FAILURE
    })
}

/// The configuration a `test` or `replay` decides under: `--config`, or one that
/// only reads `--catalog` files.
fn policy_config(config: Option<PathBuf>, catalog: Vec<String>) -> Result<Config, ExitCode> {
    match config {
        Some(path) => load_config(&path),
        None if catalog.is_empty() => load_config(Path::new("stagedoor.toml")),
        None => Ok(stagedoor::offline::catalog_config(catalog)),
    }
}

fn policy_test(files: &[PathBuf], config: Option<PathBuf>, catalog: Vec<String>) -> ExitCode {
    let with_issuers = config.is_some() || catalog.is_empty();
    let cfg = match policy_config(config, catalog) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let loaded = match load_policy(&cfg) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let issuers = with_issuers.then_some(&cfg);
    match stagedoor::offline::cases::run(files, &loaded.policy, issuers) {
        Ok(report) => {
            for line in &report.failures {
                println!("FAIL {line}");
            }
            println!("{} cases, {} failed", report.cases, report.failures.len());
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stagedoor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: &Path) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    let rt = runtime_with(cfg.agent.worker_threads);
    let result = rt.block_on(stagedoor::serve::run(cfg));
    // In-flight writes get a moment; an abandoned catalog parse does not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("stagedoor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str) -> ExitCode {
    let ok = run_once(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let r = client.get(url).send().await.ok()?;
        Some(r.status().is_success())
    });
    if ok == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn policy_show(config: &Path, format: Format, strict: bool) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let loaded = match load_policy(&cfg) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match format {
        Format::Table => {
            print!("{}", loaded.policy.render_table());
            for line in &loaded.skipped {
                println!("skipped: {line}");
            }
        }
        Format::Json => {
            let mut json = loaded.policy.to_json();
            json["skipped"] = serde_json::Value::from(loaded.skipped.clone());
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
        }
    }
    let json = loaded.policy.to_json();
    let count = |key: &str| json[key].as_array().map_or(0, Vec::len);
    let problems = [
        ("annotation errors", count("errors")),
        ("conflicts", count("conflicts")),
        ("unknown principals", count("unknown_principals")),
        ("documents left out", loaded.skipped.len()),
    ];
    let found: Vec<String> = problems
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    if strict && !found.is_empty() {
        eprintln!("stagedoor: policy show --strict: {}", found.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn decide(
    config: &Path,
    method: String,
    path: String,
    host: String,
    token: Option<String>,
) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let token = match token.as_deref() {
        Some("-") => {
            let mut t = String::new();
            if std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).is_err() {
                eprintln!("stagedoor: cannot read the token from standard input");
                return ExitCode::FAILURE;
            }
            Some(t.trim().to_owned())
        }
        _ => token,
    };
    let req = stagedoor::offline::DecideRequest {
        method,
        path,
        host,
        token,
    };
    match run_once(stagedoor::offline::decide(
        &cfg,
        &req,
        Duration::from_secs(30),
    )) {
        Ok(json) => {
            let allow = json["allow"].as_bool().unwrap_or(false);
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            if allow {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stagedoor: {e}");
            ExitCode::FAILURE
        }
    }
}
