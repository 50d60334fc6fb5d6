//! One port, two protocols: a connection that starts with the cluster handshake's magic
//! (`MLRC`) is a cluster connection (worker control, later data); anything else is handed to
//! the HTTP server (REST, `/healthz`, `/metrics`). The first bytes are peeked, not read, so
//! each side sees the whole stream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A server process's runtime: two threads (a server is I/O, not computation).
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Listens on `address`, or says why not in one line.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, crate::ClusterError> {
    TcpListener::bind(address)
        .await
        .map_err(|e| crate::ClusterError::Usage(format!("cannot listen on {address}: {e}")))
}

/// Connections served at once (HTTP and cluster connections alike); more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// How long an HTTP client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` forever: cluster connections go to `cluster`, the others to `http`
/// (HTTP/1.1; headers within [`HEADER_TIMEOUT`]; at most [`MAX_CONNECTIONS`] at once).
pub fn serve<F>(listener: TcpListener, http: axum::Router, cluster: F)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let cluster = std::sync::Arc::new(cluster);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections; closed one");
                continue;
            };
            let (cluster, http) = (cluster.clone(), http.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if is_cluster(&stream).await {
                    return cluster(stream, peer);
                }
                let service = hyper_util::service::TowerToHyperService::new(http);
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "an HTTP connection ended");
                }
            });
        }
    });
}

/// Whether the stream starts with the handshake's magic (waits at most 5 s for 4 bytes).
async fn is_cluster(stream: &TcpStream) -> bool {
    let mut first = [0u8; 4];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n >= 4 => return &first == b"MLRC",
            // Fewer bytes so far: an HTTP request cannot start with "MLR".
            Ok(Ok(n)) if n > 0 && first[..n] != b"MLRC"[..n] => return false,
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The REST side's guard: every request it wraps carries `Authorization: Bearer <token>`
/// (the scheme in any case), compared in constant time before the body is read; else 401.
pub async fn require_token(
    axum::extract::State(token): axum::extract::State<std::sync::Arc<Vec<u8>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let given = (request.headers().get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let error = match given {
        Some(t) if crate::home::constant_time_eq(t.as_bytes(), &token) => {
            return next.run(request).await
        }
        Some(_) => "wrong bearer token",
        None => "missing bearer token: send `Authorization: Bearer <token>` (`millrace cluster token` prints it)",
    };
    let body = axum::Json(crate::api::ErrorBody {
        error: error.into(),
    });
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        body,
    )
        .into_response()
}
