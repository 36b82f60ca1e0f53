//! A recording HTTP endpoint on 127.0.0.1 for what no emulator serves:
//! Security Hub's BatchUpdateFindings (moto answers it with a 404) and
//! notification webhooks. Every request is kept (method, path, JSON body);
//! BatchUpdateFindings is answered as AWS does, every named finding
//! processed; anything else gets 200 `ok`. Runs on its own thread; stops on drop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request the recorder received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: serde_json::Value,
}

pub struct Recorder {
    pub endpoint: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start() -> anyhow::Result<Recorder> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let reqs = Arc::clone(&requests);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(serve(listener, reqs, stopped));
        });
        Ok(Recorder { endpoint: format!("http://{addr}"), requests, stop: Some(stop), thread: Some(thread) })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests to one path.
    pub fn to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    requests: Arc<Mutex<Vec<Recorded>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let requests = Arc::clone(&requests);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let requests = Arc::clone(&requests);
                async move { handle(req, &requests).await }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    requests: &Mutex<Vec<Recorded>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let answer = if path == "/findings/batchupdate" {
        let processed: Vec<serde_json::Value> =
            body.get("FindingIdentifiers").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        serde_json::json!({"ProcessedFindings": processed, "UnprocessedFindings": []}).to_string()
    } else {
        "ok".to_string()
    };
    requests.lock().unwrap().push(Recorded { method, path, body });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer)))
        .expect("a response"))
}
