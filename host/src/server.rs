//! The router and the serve loop with graceful shutdown.
//!
//! Connections are accepted by [`crate::accept`] (TLS, header read timeout, connection cap);
//! request bodies are held to [`crate::read_timeout`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use logfleet_filter_runtime::{Runtime, RuntimeConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::accept::{self, Bounds};

use crate::api::error_body;
use crate::api::routes::routes;
use crate::audit::Audit;
use crate::auth::Auth;
use crate::config::Config;
use crate::enrollment::Enrollments;
use crate::error::ApiError;
use crate::identity::AgentKey;
use crate::plugins::Plugins;
use crate::read_timeout;
use crate::registry::Agents;
use crate::session::Sessions;
use crate::state::{AppState, MAX_CONCURRENT_VALIDATIONS, Stats};
use crate::tls;

/// Subdirectory of the data directory holding compiled plugin components (`.cwasm`, private
/// to the host): a restarted host checks session plugin configs without recompiling.
pub const COMPILED_SUBDIR: &str = "compiled";

/// How long shutdown waits for WebSocket connections to send their closing messages.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Every route of the host.
pub fn router(state: AppState) -> Router {
    let cors = crate::cors::layer(&state.config.cors_origins);
    let router = routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn(error_body::json_errors));
    // Outermost, so preflights are answered before routing and every answer (errors from the
    // fallbacks included) carries the headers.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
    .with_state(state)
}

/// Serves on `listener` (HTTPS and WSS when `config.tls` is set) until `shutdown` resolves,
/// then ends every session (clients get `session_ended` with reason `shutdown` and a normal
/// close), closes agent links, and waits up to [`SHUTDOWN_GRACE`] for connections to finish.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match &config.tls {
        Some(files) => Some(TlsAcceptor::from(
            tls::server_config(files).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let tuning = config.tuning;
    let plugins = Plugins::open(&config.data_dir).map_err(std::io::Error::other)?;
    let enrollments = Enrollments::open(&config.data_dir).map_err(std::io::Error::other)?;
    let audit = Audit::open(&config.data_dir)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join(COMPILED_SUBDIR)),
        ..RuntimeConfig::default()
    })
    .map_err(std::io::Error::other)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (guard_tx, mut all_closed) = mpsc::channel::<()>(1);
    let agents = Agents::default();
    for agent in enrollments.enrolled() {
        agents.enroll(
            &AgentKey::new(agent.org, agent.id),
            &agent.name,
            agent.labels,
        );
    }
    let sessions = Sessions::new(agents.clone(), config.tuning, audit.clone());
    let state = AppState {
        auth: Auth::from_config(Some(&config.jwt_secret), &config.jwt),
        config: Arc::new(config),
        agents: agents.clone(),
        sessions: sessions.clone(),
        enrollments,
        audit: audit.clone(),
        stats: Arc::new(Stats::default()),
        usage: crate::usage::Usage::new(),
        plugins,
        runtime,
        validations: Arc::new(Semaphore::new(MAX_CONCURRENT_VALIDATIONS)),
        shutdown: shutdown_rx,
        connection_guard: guard_tx,
    };
    let app = router(state).layer(from_fn_with_state(
        tuning.body_read_timeout,
        read_timeout::limit_body,
    ));
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening");
    let bounds = Bounds {
        header_read_timeout: tuning.header_read_timeout,
        tls_handshake_timeout: tuning.tls_handshake_timeout,
        max_connections: tuning.max_connections,
    };
    accept::run(listener, app, tls, bounds, async move {
        shutdown.await;
        tracing::info!("shutting down");
        sessions.shutdown();
        agents.disconnect_all();
        let _ = shutdown_tx.send(true);
    })
    .await;
    // `app` (and its guard sender) is gone; wait for connection tasks to drop theirs.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv()).await;
    tokio::task::spawn_blocking(move || audit.close())
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}
