//! AWS SDK set-up in one place: region, credentials and endpoint come from the
//! SDK's standard chain (env, profile, web identity, ECS task role, IMDS; and
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`), overridden by
//! `[aws]` in the config. One HTTP stack (hyper + rustls with ring) for every
//! client: the SDK crates are built without their default clients.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

/// `[aws]`: overrides of the SDK's own configuration chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region; default: the SDK chain (AWS_REGION, profile, ECS/IMDS).
    pub region: Option<String>,
    /// Endpoint URL for every service (local emulators); per service the
    /// SDK's `AWS_ENDPOINT_URL_<SERVICE>` variables also work.
    pub endpoint_url: Option<String>,
    /// Named profile from ~/.aws/config.
    pub profile: Option<String>,
    /// Attempts per request in the SDK's standard retry (1 = no retries).
    /// Components that retry themselves (the Security Hub sink) set their own.
    pub max_attempts: Option<u32>,
    /// Per-attempt timeout, e.g. "30s".
    #[serde(with = "crate::timetext::duration_text_opt")]
    pub attempt_timeout: Option<Duration>,
}

impl AwsConfig {
    /// This config with per-component overrides applied on top.
    pub fn with_overrides(&self, region: Option<&String>, endpoint_url: Option<&String>) -> AwsConfig {
        let mut c = self.clone();
        if let Some(r) = region {
            c.region = Some(r.clone());
        }
        if let Some(e) = endpoint_url {
            c.endpoint_url = Some(e.clone());
        }
        c
    }
}

/// Loads the shared SDK configuration (does I/O: profile files, IMDS).
pub async fn sdk_config(cfg: &AwsConfig) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &cfg.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &cfg.endpoint_url {
        loader = loader.endpoint_url(e.clone());
    }
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(n) = cfg.max_attempts {
        loader = loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(n.max(1)));
    }
    if let Some(t) = cfg.attempt_timeout {
        loader =
            loader.timeout_config(aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(t).build());
    }
    loader.load().await
}

/// A short, log-friendly description of an SDK error: the service's error
/// code and message when there is one, else the transport failure with its causes.
pub fn error_text<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let status = s.raw().status().as_u16();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (Some(c), None) => format!("{c} (HTTP {status})"),
                _ => format!("{err} (HTTP {status})"),
            }
        }
        other => {
            let mut s = other.to_string();
            let mut src: Option<&dyn std::error::Error> = std::error::Error::source(other);
            while let Some(x) = src {
                s = format!("{s}: {x}");
                src = x.source();
            }
            s
        }
    }
}

/// Is this SDK error worth retrying (throttling, 5xx, transport, timeout)?
pub fn is_retryable<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429 || s.err().code().is_some_and(is_throttling_code)
        }
        _ => false,
    }
}

/// Error codes AWS services use for throttling and transient overload.
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "SlowDown"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "KMSThrottlingException"
    )
}
