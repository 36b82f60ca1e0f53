//! Routing and delivery: one client, rate limiter and concurrency limit per
//! account and region; BatchImportFindings with retries, partial failures
//! split into delivered, retried and rejected.

use super::*;

/// One client, rate limiter and concurrency limit per account and region.
pub(super) struct Route {
    pub(super) client: aws_sdk_securityhub::Client,
    pub(super) limiter: TokenBucket,
    pub(super) permits: Semaphore,
}

/// How a BatchImportFindings call failed.
#[derive(Debug, PartialEq)]
pub(super) enum Failure {
    /// Throttling, 5xx, timeouts, connection errors: try again later.
    Transient,
    /// InvalidInputException: one finding of the batch is bad.
    Invalid,
    /// Access denied, failed AssumeRole, unknown region, …: a set-up problem
    /// that retrying will not fix soon.
    Refused,
}

pub(super) fn failure_of(e: &SdkError<BatchImportFindingsError, HttpResponse>) -> Failure {
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Failure::Transient,
        // Credentials (AssumeRole) are resolved before the request is sent:
        // their errors are dispatch failures that are neither I/O nor timeouts.
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Failure::Transient,
        SdkError::ServiceError(_) if e.code() == Some("InvalidInputException") => Failure::Invalid,
        SdkError::ServiceError(_) if crate::aws::is_retryable(e) => Failure::Transient,
        _ => Failure::Refused,
    }
}

/// What [`Shared::deliver`] could not deliver, and why.
#[derive(Default)]
pub(super) struct Delivery {
    pub(super) left: Vec<Item>,
    /// Set when the route refused the call (not transient): the reason.
    pub(super) refused: Option<String>,
}

pub(super) fn route_key(account: &str, product_arn: &str) -> RouteKey {
    let region = product_arn.split(':').nth(3).filter(|r| !r.is_empty()).map(str::to_string);
    (account.to_string(), region)
}

/// How each finding of a BatchImportFindings answer fared.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Answer {
    /// Indexes into the batch.
    pub(super) delivered: Vec<usize>,
    /// Failed transiently: send again.
    pub(super) retry: Vec<usize>,
    /// Failed for good: index, error code, message.
    pub(super) rejected: Vec<(usize, String, String)>,
}

/// Per-finding error codes worth another try; anything else (invalid
/// input, access denied for that ProductArn/account) is permanent.
pub(super) fn transient_code(code: &str) -> bool {
    crate::aws::is_throttling_code(code)
        || matches!(code, "InternalException" | "InternalServerError" | "ServiceUnavailableException")
}

pub(super) fn classify(ids: &[&str], out: &BatchImportFindingsOutput) -> Answer {
    let mut failed: HashMap<&str, (&str, &str)> = HashMap::new();
    for e in out.failed_findings() {
        if let Some(id) = e.id() {
            failed.insert(id, (e.error_code().unwrap_or("Unknown"), e.error_message().unwrap_or("")));
        }
    }
    let mut a = Answer::default();
    for (i, id) in ids.iter().enumerate() {
        match failed.get(id) {
            None => a.delivered.push(i),
            Some((code, _)) if transient_code(code) => a.retry.push(i),
            Some((code, msg)) => a.rejected.push((i, code.to_string(), msg.to_string())),
        }
    }
    a
}

impl Shared {
    pub(super) async fn route(&self, key: &RouteKey) -> Arc<Route> {
        let mut routes = self.routes.lock().await;
        if let Some(r) = routes.get(key) {
            return r.clone();
        }
        let mut b = aws_sdk_securityhub::config::Builder::from(&self.base);
        if let Some(region) = &key.1 {
            b = b.region(Region::new(region.clone()));
        }
        if self.assume_roles {
            let role = self.cfg.member_role_name.as_deref().unwrap_or_default();
            let arn = format!("arn:aws:iam::{}:role/{role}", key.0);
            let mut p = AssumeRoleProvider::builder(arn).session_name("trailwatch-securityhub").configure(&self.base);
            if let Some(x) = &self.cfg.external_id {
                p = p.external_id(x);
            }
            // The client's identity cache keeps the credentials and refreshes them before they expire.
            b = b.credentials_provider(p.build().await);
        }
        let route = Arc::new(Route {
            client: aws_sdk_securityhub::Client::from_conf(b.build()),
            limiter: TokenBucket::new(self.cfg.requests_per_second, self.cfg.burst),
            permits: Semaphore::new(self.cfg.concurrency.max(1)),
        });
        routes.insert(key.clone(), route.clone());
        route
    }

    /// Delivers `items` (at most one batch) with retries; returns what is
    /// still undelivered (to be spooled) and, if the route refused the call,
    /// why. Rejected findings are dead-lettered.
    pub(super) async fn deliver(&self, key: &RouteKey, items: Vec<Item>, max_retries: u32) -> Delivery {
        let route = self.route(key).await;
        let mut work = vec![items];
        let mut out = Delivery::default();
        while let Some(mut batch) = work.pop() {
            let mut attempt = 0;
            loop {
                let findings = batch
                    .iter()
                    .map(|i| convert::to_sdk(&serde_json::from_str(&i.line).unwrap_or_default()))
                    .collect::<Vec<_>>();
                let result = {
                    let _permit = route.permits.acquire().await.expect("never closed");
                    route.limiter.acquire().await;
                    let t = Instant::now();
                    self.m.batch_size.observe(batch.len() as f64);
                    let r = route.client.batch_import_findings().set_findings(Some(findings)).send().await;
                    self.m.duration.observe(t.elapsed().as_secs_f64());
                    r
                };
                match result {
                    Ok(out) => {
                        let ids: Vec<&str> = batch.iter().map(|i| i.id.as_str()).collect();
                        let a = classify(&ids, &out);
                        self.m.sent.inc_by(a.delivered.len() as u64);
                        let done: Vec<Arc<Finding>> =
                            a.delivered.iter().filter_map(|&i| batch[i].finding.clone()).collect();
                        observe_delivered(&done);
                        for (i, code, msg) in &a.rejected {
                            self.reject(&batch[*i].id, code, msg, &batch[*i].line);
                        }
                        if a.retry.is_empty() {
                            break;
                        }
                        self.m.retry_finding.inc_by(a.retry.len() as u64);
                        batch = a.retry.iter().map(|&i| batch[i].clone()).collect();
                    }
                    Err(e) => match failure_of(&e) {
                        Failure::Transient => {
                            let throttled = e.code().is_some_and(crate::aws::is_throttling_code)
                                || e.raw_response().is_some_and(|r| r.status().as_u16() == 429);
                            if throttled {
                                self.m.retry_throttled.inc();
                            } else {
                                self.m.retry_error.inc();
                            }
                            tracing::debug!(sink = %self.name, attempt, "BatchImportFindings failed: {}", crate::aws::error_text(&e));
                        }
                        Failure::Invalid => {
                            // One bad finding fails the whole call: halve until it is found.
                            if batch.len() > 1 {
                                let second = batch.split_off(batch.len() / 2);
                                work.push(second);
                                work.push(batch);
                            } else {
                                let msg = e.message().unwrap_or("invalid input").to_string();
                                self.reject(&batch[0].id, "InvalidInputException", &msg, &batch[0].line);
                            }
                            break;
                        }
                        Failure::Refused => {
                            // Access denied, failed AssumeRole, unknown region, …: a set-up
                            // problem, not the findings' fault. Retrying now will not help:
                            // the route is parked and, if it stays refused, dead-lettered.
                            let reason = crate::aws::error_text(&e);
                            tracing::error!(
                                sink = %self.name, account = %key.0, region = ?key.1,
                                "BatchImportFindings refused: {reason}"
                            );
                            out.left.extend(batch);
                            for rest in work.drain(..) {
                                out.left.extend(rest);
                            }
                            out.refused = Some(reason);
                            break;
                        }
                    },
                }
                attempt += 1;
                if attempt > max_retries {
                    out.left.extend(batch);
                    break;
                }
                tokio::time::sleep(RETRY.full_jitter(attempt - 1)).await;
            }
        }
        out
    }
}
