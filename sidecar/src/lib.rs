//! Tollgate sidecar: makes rate limits global across gateway nodes (sync of counter
//! deltas and fleet totals), meters usage for billing (de-duplicated per-minute
//! rollups), and fans out plan overrides and cache purges. See `docs/sidecar.md`.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod store;
pub mod timefmt;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{App, now_ms};
use crate::config::{Config, StoreConfig};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;

/// How often old data is swept (and once at start).
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Opens the configured store and serves until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    match &config.store {
        StoreConfig::Embedded(dir) => {
            let store = EmbeddedStore::open(dir)
                .with_context(|| format!("embedded store in {}", dir.display()))?;
            serve(config, store).await
        }
        StoreConfig::Redis(url) => {
            let store = RedisStore::connect(url)
                .await
                .with_context(|| format!("redis store at {url}"))?;
            serve(config, store).await
        }
    }
}

async fn serve<S: Store>(config: Config, store: S) -> anyhow::Result<()> {
    let app = Arc::new(App::new(store, config.retention_days));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    let addr = listener.local_addr().context("local address")?;
    // Tests and scripts read this first line to learn the port when --listen has :0.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}").context("write stdout")?;
    out.flush().context("flush stdout")?;
    drop(out);
    tracing::info!(%addr, store = ?config.store, retention_days = config.retention_days, "sidecar started");

    let sweeper = tokio::spawn(expire_loop(Arc::clone(&app)));
    let result = axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serve");
    sweeper.abort();
    result
}

async fn expire_loop<S: Store>(app: Arc<App<S>>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        match app.store.expire(now_ms(), app.retention_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired old records"),
            Err(e) => {
                metrics::Metrics::inc(&app.metrics.store_errors, 1);
                tracing::warn!(error = %e, "expiry sweep failed");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
