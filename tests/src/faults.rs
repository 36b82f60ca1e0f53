//! A fault-injecting HTTP/1.1 proxy between the AWS SDK and an emulator.
//!
//! The service under test gets the proxy's URL as its endpoint. For a share
//! of the requests of the chosen services the proxy, instead of forwarding
//! faithfully:
//! - answers a **throttling** error in the service's real shape (Kinesis
//!   `ProvisionedThroughputExceededException`, SQS/DynamoDB
//!   `ThrottlingException`, S3 503 `SlowDown`, Security Hub 429
//!   `TooManyRequestsException`);
//! - answers a **500** (`InternalFailure` / `InternalError` / `InternalException`);
//! - **resets before**: closes the connection without forwarding or answering;
//! - **resets after**: forwards the request (the server acts on it) and then
//!   closes the connection instead of answering — the nasty case, the caller
//!   cannot know whether its call took effect;
//! - **slows down**: waits, then forwards.
//!
//! The service of a request comes from its SigV4 credential scope
//! (`Credential=…/<date>/<region>/<service>/aws4_request`), which every SDK
//! call carries. Choices are seeded; the total is bounded (`max_faults`),
//! after which everything passes through; [`FaultProxy::counts`] says what was
//! injected, so a test can assert that faults really happened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::Rng;

/// The AWS services the proxy tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Kinesis,
    Sqs,
    S3,
    Dynamodb,
    SecurityHub,
    /// Anything else (STS, unsigned requests): never faulted.
    Other,
}

impl Service {
    fn from_signing_name(name: &str) -> Service {
        match name {
            "kinesis" => Service::Kinesis,
            "sqs" => Service::Sqs,
            "s3" => Service::S3,
            "dynamodb" => Service::Dynamodb,
            "securityhub" => Service::SecurityHub,
            _ => Service::Other,
        }
    }

    /// From the SigV4 `Authorization` header's credential scope.
    fn of(req: &Request<Incoming>) -> Service {
        let auth = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        auth.split("Credential=")
            .nth(1)
            .and_then(|c| c.split([',', ' ']).next())
            .and_then(|scope| scope.split('/').nth(3))
            .map(Service::from_signing_name)
            .unwrap_or(Service::Other)
    }
}

/// What the proxy did to one request instead of forwarding it faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    Throttle,
    ServerError,
    ResetBefore,
    ResetAfter,
    Slow,
}

impl Fault {
    pub const ALL: [Fault; 5] =
        [Fault::Throttle, Fault::ServerError, Fault::ResetBefore, Fault::ResetAfter, Fault::Slow];
}

/// How the proxy misbehaves.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Share of the requests of `services` that get a fault (0.0..=1.0).
    pub share: f64,
    /// The services faulted; others pass through.
    pub services: Vec<Service>,
    /// The kinds of fault, chosen uniformly.
    pub faults: Vec<Fault>,
    /// Faults injected at most; then everything passes (bounded tests).
    pub max_faults: u64,
    /// Delay of a slow answer.
    pub slow: Duration,
    /// Inject each kind once into each service in its first requests.
    pub every_kind_early: bool,
}

impl FaultConfig {
    /// Every kind of fault for `share` of the requests of `services`.
    pub fn new(seed: u64, share: f64, services: &[Service]) -> FaultConfig {
        FaultConfig {
            seed,
            share,
            services: services.to_vec(),
            faults: Fault::ALL.to_vec(),
            max_faults: 10_000,
            slow: Duration::from_millis(1500),
            every_kind_early: true,
        }
    }
}

struct State {
    cfg: FaultConfig,
    rng: Rng,
    injected: u64,
    counts: BTreeMap<(Service, Fault), u64>,
    requests: BTreeMap<Service, u64>,
}

impl State {
    fn decide(&mut self, service: Service) -> Option<Fault> {
        *self.requests.entry(service).or_default() += 1;
        if !self.cfg.services.contains(&service) || self.injected >= self.cfg.max_faults || self.cfg.faults.is_empty() {
            return None;
        }
        // Every kind once early on (requests 3, 6, 9, …, spaced so the SDK's
        // retries get through), so a short test sees each; then at random.
        let n = self.requests[&service];
        let kinds = self.cfg.faults.len() as u64;
        let f = if self.cfg.every_kind_early && n % 3 == 0 && n / 3 <= kinds {
            self.cfg.faults[(n / 3 - 1) as usize]
        } else if self.rng.chance(self.cfg.share) {
            self.cfg.faults[(self.rng.next_u64() % kinds) as usize]
        } else {
            return None;
        };
        self.injected += 1;
        *self.counts.entry((service, f)).or_default() += 1;
        Some(f)
    }
}

/// The proxy, serving on 127.0.0.1 in its own thread and runtime until dropped.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for Reset {}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (e.g. `http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, cfg: FaultConfig) -> anyhow::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rng: Rng::new(cfg.seed),
            cfg,
            injected: 0,
            counts: BTreeMap::new(),
            requests: BTreeMap::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.trim_end_matches('/').to_string();
        let st = state.clone();
        let thread = std::thread::Builder::new().name("fault-proxy".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the proxy");
            rt.block_on(serve(listener, upstream, st, stopped));
            rt.shutdown_background();
        })?;
        Ok(FaultProxy { endpoint: format!("http://{addr}"), state, stop: Some(stop), thread: Some(thread) })
    }

    /// Faults injected so far, by service and kind.
    pub fn counts(&self) -> BTreeMap<(Service, Fault), u64> {
        self.state.lock().unwrap().counts.clone()
    }

    /// Requests seen so far, by service.
    pub fn requests(&self) -> BTreeMap<Service, u64> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Faults injected into `service`, of any kind.
    pub fn injected_into(&self, service: Service) -> u64 {
        self.counts().iter().filter(|((s, _), _)| *s == service).map(|(_, n)| n).sum()
    }

    /// Faults of kind `fault`, into any service.
    pub fn injected_of(&self, fault: Fault) -> u64 {
        self.counts().iter().filter(|((_, f), _)| *f == fault).map(|(_, n)| n).sum()
    }

    /// Stops injecting (everything passes from now on).
    pub fn heal(&self) {
        let mut s = self.state.lock().unwrap();
        s.cfg.max_faults = s.injected;
    }

    /// One line for test output.
    pub fn summary(&self) -> String {
        let s = self.state.lock().unwrap();
        format!("requests {:?}; injected {} {:?}", s.requests, s.injected, s.counts)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let upstream = Arc::new(upstream);
    loop {
        let (stream, _): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let (client, upstream, state) = (client.clone(), upstream.clone(), state.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (client, upstream, state) = (client.clone(), upstream.clone(), state.clone());
                async move { handle(req, &client, &upstream, &state).await }
            });
            // An injected reset ends the connection with an error: expected.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
    state: &Mutex<State>,
) -> Result<Response<Full<Bytes>>, Reset> {
    let service = Service::of(&req);
    let (fault, slow) = {
        let mut s = state.lock().unwrap();
        (s.decide(service), s.cfg.slow)
    };
    let json_protocol = req.headers().contains_key("x-amz-target");
    let (parts, body) = req.into_parts();
    // Read the whole request first, as a server would before acting on it.
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match fault {
        Some(Fault::Throttle) => return Ok(throttle(service, json_protocol)),
        Some(Fault::ServerError) => return Ok(server_error(service, json_protocol)),
        Some(Fault::ResetBefore) => return Err(Reset),
        Some(Fault::Slow) => tokio::time::sleep(slow).await,
        Some(Fault::ResetAfter) | None => {}
    }
    let uri = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut fwd = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in parts.headers.iter() {
        // moto routes CloudTrail only by the long target form; the Rust SDK sends
        // the short one (`CloudTrail_20131101.StartLogging`): lengthen it.
        if k == "x-amz-target" && v.as_bytes().starts_with(b"CloudTrail_20131101.") {
            let long = format!("com.amazonaws.cloudtrail.v20131101.{}", v.to_str().unwrap_or_default());
            fwd = fwd.header(k, long);
            continue;
        }
        fwd = fwd.header(k, v);
    }
    let Ok(fwd) = fwd.body(Full::new(body)) else { return Err(Reset) };
    let resp = match client.request(fwd).await {
        Ok(r) => r,
        // The emulator is down (a test's outage): the caller sees a reset too.
        Err(_) => return Err(Reset),
    };
    let (rparts, rbody) = resp.into_parts();
    let bytes = rbody.collect().await.map(|b| b.to_bytes()).map_err(|_| Reset)?;
    if fault == Some(Fault::ResetAfter) {
        // The server acted on the request; its answer is lost.
        return Err(Reset);
    }
    let mut out = Response::builder().status(rparts.status);
    for (k, v) in rparts.headers.iter() {
        if k == hyper::header::TRANSFER_ENCODING || k == hyper::header::CONNECTION || k == hyper::header::CONTENT_LENGTH
        {
            continue;
        }
        out = out.header(k, v);
    }
    Ok(out.body(Full::new(bytes)).unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: String) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status).header("x-amzn-requestid", "fault-proxy");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Full::new(Bytes::from(body))).expect("a valid response")
}

fn json_error(status: StatusCode, ctype: &str, typ: &str, message: &str) -> Response<Full<Bytes>> {
    respond(status, &[("content-type", ctype)], serde_json::json!({"__type": typ, "message": message}).to_string())
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        &[("content-type", "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        ),
    )
}

/// SQS speaks JSON (`X-Amz-Target`) in current SDKs, the query protocol in old ones.
fn sqs_error(status: StatusCode, json_protocol: bool, code: &str, fault: &str, message: &str) -> Response<Full<Bytes>> {
    if json_protocol {
        let query_error = format!("{code};{fault}");
        respond(
            status,
            &[("content-type", "application/x-amz-json-1.0"), ("x-amzn-query-error", &query_error)],
            serde_json::json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message}).to_string(),
        )
    } else {
        respond(
            status,
            &[("content-type", "text/xml")],
            format!(
                "<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
            ),
        )
    }
}

fn securityhub_error(status: StatusCode, typ: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        &[("content-type", "application/json"), ("x-amzn-errortype", typ)],
        serde_json::json!({"Code": typ, "Message": message}).to_string(),
    )
}

fn throttle(service: Service, json_protocol: bool) -> Response<Full<Bytes>> {
    let bad = StatusCode::BAD_REQUEST;
    match service {
        Service::Kinesis => json_error(
            bad,
            "application/x-amz-json-1.1",
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard in stream (injected)",
        ),
        Service::Dynamodb => json_error(
            bad,
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "Rate of requests exceeds the allowed throughput (injected)",
        ),
        Service::Sqs => sqs_error(bad, json_protocol, "ThrottlingException", "Sender", "Rate exceeded (injected)"),
        Service::S3 => {
            s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate (injected)")
        }
        Service::SecurityHub | Service::Other => {
            securityhub_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate exceeded (injected)")
        }
    }
}

fn server_error(service: Service, json_protocol: bool) -> Response<Full<Bytes>> {
    let e500 = StatusCode::INTERNAL_SERVER_ERROR;
    match service {
        Service::Kinesis => json_error(e500, "application/x-amz-json-1.1", "InternalFailure", "injected"),
        Service::Dynamodb => json_error(
            e500,
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "Internal server error (injected)",
        ),
        Service::Sqs => sqs_error(e500, json_protocol, "InternalFailure", "Receiver", "injected"),
        Service::S3 => s3_error(e500, "InternalError", "We encountered an internal error (injected)"),
        Service::SecurityHub | Service::Other => securityhub_error(e500, "InternalException", "injected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_seeded_and_bounded() {
        let cfg =
            FaultConfig { max_faults: 5, every_kind_early: false, ..FaultConfig::new(7, 0.5, &[Service::Kinesis]) };
        let run = |cfg: &FaultConfig| {
            let mut s = State {
                rng: Rng::new(cfg.seed),
                cfg: cfg.clone(),
                injected: 0,
                counts: BTreeMap::new(),
                requests: BTreeMap::new(),
            };
            let picks: Vec<Option<Fault>> = (0..100).map(|_| s.decide(Service::Kinesis)).collect();
            assert!((0..10).all(|_| s.decide(Service::Sqs).is_none()), "other services pass");
            picks
        };
        let a = run(&cfg);
        assert_eq!(a, run(&cfg), "same seed, same faults");
        assert_eq!(a.iter().flatten().count(), 5, "bounded by max_faults");
    }

    #[test]
    fn every_kind_comes_early_when_asked() {
        let cfg = FaultConfig::new(7, 0.0, &[Service::S3]);
        let mut s =
            State { rng: Rng::new(cfg.seed), cfg, injected: 0, counts: BTreeMap::new(), requests: BTreeMap::new() };
        let picks: Vec<Fault> = (0..30).filter_map(|_| s.decide(Service::S3)).collect();
        assert_eq!(picks, Fault::ALL.to_vec());
    }
}
