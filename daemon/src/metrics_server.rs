//! The HTTP endpoint Prometheus scrapes (`GET /metrics`): one request per
//! connection, bounded in size, time and connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Scrapes served at once; one more connection is closed at once.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` with what `render` returns, on a bound listener,
/// until the task is dropped. A minimal HTTP/1.1 responder: one request per
/// connection, bounded in size and time; accepted through
/// [`crate::incoming::guarded`], so that a flood of idle connections neither
/// exhausts descriptors nor ends the server.
pub async fn serve_metrics(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    serve_metrics_within(
        listener,
        render,
        crate::incoming::ConnectionLimits {
            max_connections: MAX_METRICS_CONNECTIONS,
            max_per_source: MAX_METRICS_CONNECTIONS,
            handshake_timeout: Duration::from_secs(5),
            first_sign: crate::incoming::FirstSign::Octets,
        },
    )
    .await
}

async fn serve_metrics_within(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    limits: crate::incoming::ConnectionLimits,
) -> std::io::Result<()> {
    use tokio_stream::StreamExt;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    let (mut accepted, _refused) = crate::incoming::guarded(listener, limits);
    while let Some(connection) = accepted.next().await {
        let Ok(mut stream) = connection else { continue };
        let peer = tonic::transport::server::Connected::connect_info(&stream)
            .tcp
            .remote_addr;
        let render = render.clone();
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                tracing::debug!(?peer, "metrics request timed out or failed");
                return;
            }
            let response = if request.starts_with(b"GET /metrics ") {
                let (content_type, body) = if crate::exposition::wants_openmetrics(&request) {
                    (crate::exposition::OPENMETRICS, render())
                } else {
                    (
                        crate::exposition::CLASSIC,
                        crate::exposition::classic(&render()),
                    )
                };
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_survive_idle_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = crate::incoming::ConnectionLimits {
            max_connections: 4,
            max_per_source: 4,
            handshake_timeout: Duration::from_millis(200),
            first_sign: crate::incoming::FirstSign::Octets,
        };
        tokio::spawn(serve_metrics_within(
            listener,
            Arc::new(|| "nemo_up 1\n".to_owned()),
            limits,
        ));
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // The idle ones time out or were refused; a scrape is served.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut scrape = tokio::net::TcpStream::connect(address).await.unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("nemo_up 1\n"), "{answer}");
        drop(idle);
    }
}
