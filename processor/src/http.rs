//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive: no pipeline stage gone or stuck) and `/readyz` (sources
//! connected and polling, sinks healthy, not shutting down); 503 with the
//! reasons otherwise (see `health.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Binds `addr` and serves until `stop` is cancelled; returns the bound
/// address (port 0 picks a free one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        continue;
                    }
                },
            };
            let health = Arc::clone(&health);
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let health = Arc::clone(&health);
                    async move { Ok::<_, Infallible>(respond(&req, &health)) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!("metrics endpoint: connection error: {e}");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok((local, task))
}

fn respond(req: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            // Stall gauges are current at every scrape.
            health.publish();
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", crate::metrics::get().render())
        }
        "/healthz" => {
            let why = health.not_live();
            if why.is_empty() {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not live: {}\n", why.join("; ")))
            }
        }
        "/readyz" => {
            let why = health.not_ready();
            if why.is_empty() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", why.join("; ")))
            }
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz, /readyz\n".into()),
    }
}

/// `trailwatch healthcheck`: GET `url` and succeed on 200. Plain std I/O, so
/// it works in a distroless image without curl.
pub fn check(url: &str, timeout: std::time::Duration) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let status = buf.lines().next().unwrap_or("").to_string();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_follows_health_over_http() {
        let health = Arc::new(Health::new());
        health.add_source("k");
        let stop = CancellationToken::new();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&health), stop.clone()).await.unwrap();
        let get = move |path: &'static str| {
            tokio::task::spawn_blocking(move || check(&format!("http://{addr}{path}"), Duration::from_secs(5)))
        };
        assert_eq!(get("/healthz").await.unwrap(), Ok("ok".to_string()));
        let starting = get("/readyz").await.unwrap().unwrap_err();
        assert!(starting.contains("503") && starting.contains("starting"), "{starting}");
        health.set_started();
        let unconnected = get("/readyz").await.unwrap().unwrap_err();
        assert!(unconnected.contains("source k not connected"), "{unconnected}");
        health.set_source("k", true);
        assert_eq!(get("/readyz").await.unwrap(), Ok("ready".to_string()));
        health.set_shutting_down();
        let stopping = get("/readyz").await.unwrap().unwrap_err();
        assert!(stopping.contains("503") && stopping.contains("shutting down"), "{stopping}");
        // Alive while draining.
        assert_eq!(get("/healthz").await.unwrap(), Ok("ok".to_string()));
        // A stage gone: not live.
        health.set_stage_dead("detector", "panicked");
        let dead = get("/healthz").await.unwrap().unwrap_err();
        assert!(dead.contains("503") && dead.contains("stage detector is gone: panicked"), "{dead}");
        stop.cancel();
        task.await.unwrap();
    }
}
