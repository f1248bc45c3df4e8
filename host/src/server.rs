//! The router and the serve loop with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use logfleet_filter_runtime::{Runtime, RuntimeConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::error_body;
use crate::api::routes::routes;
use crate::auth::Auth;
use crate::config::Config;
use crate::error::ApiError;
use crate::plugins::Plugins;
use crate::registry::Agents;
use crate::session::Sessions;
use crate::state::{AppState, MAX_CONCURRENT_VALIDATIONS, Stats};

/// How long shutdown waits for WebSocket connections to send their closing messages.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Every route of the host.
pub fn router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn(error_body::json_errors))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then ends every session (clients get
/// `session_ended` with reason `shutdown` and a normal close), closes agent links, and waits up
/// to [`SHUTDOWN_GRACE`] for connections to finish.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let plugins = Plugins::open(&config.data_dir).map_err(std::io::Error::other)?;
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(std::io::Error::other)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (guard_tx, mut all_closed) = mpsc::channel::<()>(1);
    let agents = Agents::default();
    let sessions = Sessions::new(agents.clone(), config.tuning);
    let state = AppState {
        auth: Auth::new(&config.jwt_secret),
        config: Arc::new(config),
        agents: agents.clone(),
        sessions: sessions.clone(),
        stats: Arc::new(Stats::default()),
        plugins,
        runtime,
        validations: Arc::new(Semaphore::new(MAX_CONCURRENT_VALIDATIONS)),
        shutdown: shutdown_rx,
        connection_guard: guard_tx,
    };
    let app = router(state);
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            sessions.shutdown();
            agents.disconnect_all();
            let _ = shutdown_tx.send(true);
        })
        .await?;
    // `app` (and its guard sender) is gone; wait for connection tasks to drop theirs.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv()).await;
    Ok(())
}
