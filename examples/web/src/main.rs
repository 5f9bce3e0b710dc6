//! The web example's server: `cargo run -p web-example` (see its README).

use std::process::ExitCode;

use web_example::{connect, serve, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("web-example: configuration: {e}");
            return ExitCode::from(3);
        }
    };
    eprintln!("web-example: {} with {}", config.database, config.keys);
    let state = match connect(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("web-example: start-up failed: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("web-example: cannot listen on {}: {e}", config.addr);
            return ExitCode::from(1);
        }
    };
    eprintln!("web-example: listening on http://{}", config.addr);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-example: server failed: {e}");
            ExitCode::from(1)
        }
    }
}
