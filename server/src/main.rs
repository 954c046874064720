//! The `rangersync-server` binary: parse flags, start, print the address, stop on Ctrl-C or
//! SIGTERM (SIGHUP re-reads `--tokens-file`).

use clap::Parser;
use rangersync_server::{start, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = Cli::parse().into_options();
    let auth = if opts.token.is_some()
        || opts.tokens_file.is_some()
        || opts.jwt_hs256_secret_file.is_some()
        || opts.jwt_public_key_file.is_some()
    {
        "bearer token or JWT required"
    } else if opts.insecure_no_auth {
        "NO AUTH (--insecure-no-auth)"
    } else {
        "no auth (loopback only)"
    };
    let test = opts.test_endpoints;
    // Display redacts a password in a postgres:// URL.
    let db = opts.db.to_string();
    let server = match start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rangersync-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("rangersync-server listening on {}", server.url());
    eprintln!(
        "rangersync-server: database {db}; {auth}{}",
        if test { "; TEST ENDPOINTS ENABLED" } else { "" }
    );
    shutdown_signal().await;
    eprintln!("rangersync-server: shutting down");
    server.stop().await;
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
