//! `[telemetry]`: the trailwatch keys for logs, traces and OTLP metrics.
//!
//! Every key is optional and wins over its `OTEL_*` variable (the
//! OpenTelemetry rule: explicit configuration over the environment). The
//! variables themselves are read by the OpenTelemetry SDK and OTLP exporter
//! (`opentelemetry_sdk`, `opentelemetry-otlp`), not here; this module only
//! decides whether traces are exported at all and over which transport,
//! which the SDK leaves to the application:
//!
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: no export;
//! - no `otlp_endpoint` and neither `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` nor
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`: no export (nothing is sent to a default
//!   localhost collector nobody asked for);
//! - the transport: `otlp_protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
//!   else `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf`.
//!
//! Metrics follow the same rules with `METRICS` for `TRACES`, but are off
//! unless `otlp_metrics = true` or `OTEL_METRICS_EXPORTER=otlp` (Prometheus's
//! /metrics is the default way to read them); asking for them without an
//! endpoint is an error.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration_text_opt;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    /// Protobuf over HTTP (port 4318, `POST <endpoint>/v1/traces`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

/// How the 16 bytes of a new trace id are made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TraceIdFormat {
    /// All random (W3C Trace Context, what OpenTelemetry SDKs do by default).
    #[default]
    Random,
    /// AWS X-Ray's format (`opentelemetry_aws::trace::XrayIdGenerator`): the
    /// first 4 bytes are the Unix time in seconds, the other 12 random; X-Ray
    /// accepts it everywhere (W3C ids need an ADOT collector of v0.34 or
    /// later, in commercial regions).
    Xray,
}

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log lines on stderr: `text`, or `json` (one JSON object a line).
    pub log_format: LogFormat,
    /// OTLP collector for traces, e.g. `http://127.0.0.1:4318`. With
    /// `http/protobuf` spans are POSTed to `<url>/v1/traces` (a URL already
    /// ending in `/v1/traces` is used as is); with `grpc` the URL is the
    /// collector's (e.g. `http://127.0.0.1:4317`). Unset: the
    /// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variables; neither: no export.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc` (unset: OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, else http/protobuf).
    pub otlp_protocol: Option<Protocol>,
    /// Request headers (gRPC metadata), e.g. `authorization = "Bearer ..."`;
    /// OTEL_EXPORTER_OTLP_[TRACES_]HEADERS are added to them by the exporter.
    pub otlp_headers: BTreeMap<String, String>,
    /// `gzip` or `none` request bodies (unset: OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION, else none).
    pub otlp_compression: Option<Compression>,
    /// Time allowed for one export, retries included (unset:
    /// OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, else 10s).
    #[serde(with = "duration_text_opt", skip_serializing_if = "Option::is_none")]
    pub otlp_timeout: Option<Duration>,
    /// `service.name` of the exported traces (unset: OTEL_SERVICE_NAME, else `trailwatch`).
    pub service_name: Option<String>,
    /// More resource attributes (e.g. `"deployment.environment" = "prod"`),
    /// over OTEL_RESOURCE_ATTRIBUTES (these win per key).
    pub resource_attributes: BTreeMap<String, String>,
    /// Share of traces exported, 0 to 1, decided once per trace at its root
    /// span (a source batch); every span of the trace follows that decision.
    /// Unset: OTEL_TRACES_SAMPLER[_ARG], else every trace.
    pub trace_sample_ratio: Option<f64>,
    /// `random` trace ids, or `xray`: the first 4 bytes are the trace's
    /// start in Unix seconds (AWS X-Ray's id format), the rest random.
    pub trace_id_format: TraceIdFormat,
    /// Which spans, and events inside them, are exported (`RUST_LOG`
    /// syntax), independently of the log level.
    pub trace_filter: String,
    /// Finished spans waiting for export. When it is full new spans are
    /// dropped and counted (`trailwatch_otlp_spans_dropped_total`): tracing
    /// never slows the pipeline.
    pub trace_queue_size: NonZeroUsize,
    /// Spans per export request at most (unset: OTEL_BSP_MAX_EXPORT_BATCH_SIZE, else 512).
    pub trace_batch_size: Option<NonZeroUsize>,
    /// Waiting spans are exported at least this often (unset: OTEL_BSP_SCHEDULE_DELAY, else 5s).
    #[serde(with = "duration_text_opt", skip_serializing_if = "Option::is_none")]
    pub trace_export_interval: Option<Duration>,
    /// Also export the metrics of /metrics over OTLP, to the same collector
    /// (http/protobuf: `<otlp_endpoint>/v1/metrics`). Unset: on when
    /// OTEL_METRICS_EXPORTER is `otlp`; off by default.
    pub otlp_metrics: Option<bool>,
    /// How often the metrics are exported (unset: OTEL_METRIC_EXPORT_INTERVAL, else 60s).
    #[serde(with = "duration_text_opt", skip_serializing_if = "Option::is_none")]
    pub metrics_export_interval: Option<Duration>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: BTreeMap::new(),
            otlp_compression: None,
            otlp_timeout: None,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            trace_sample_ratio: None,
            trace_id_format: TraceIdFormat::Random,
            trace_filter: "trailwatch_processor=info".to_string(),
            trace_queue_size: NonZeroUsize::new(2048).expect("non-zero"),
            trace_batch_size: None,
            trace_export_interval: None,
            otlp_metrics: None,
            metrics_export_interval: None,
        }
    }
}

/// What is exported over OTLP: each has its own path and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }

    /// The signal's own protocol and endpoint variables.
    fn vars(self) -> (&'static str, &'static str) {
        match self {
            Signal::Traces => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            Signal::Metrics => ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        }
    }
}

impl TelemetryConfig {
    /// Checks that need no I/O (the environment is read at start-up).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(e) = &self.otlp_endpoint {
            if let Err(why) = check_url(e) {
                problems.push(format!("telemetry.otlp_endpoint `{e}` {why}"));
            }
        }
        for (k, v) in &self.otlp_headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                problems.push(format!("telemetry.otlp_headers.{k}: `{k}` is not a header name"));
            } else if hyper::header::HeaderValue::from_str(v).is_err() {
                problems.push(format!("telemetry.otlp_headers.{k}: the value is not a valid header value"));
            }
        }
        if self.otlp_timeout.is_some_and(|t| t.is_zero()) {
            problems.push("telemetry.otlp_timeout must be above 0".to_string());
        }
        if let Some(r) = self.trace_sample_ratio.filter(|r| !(0.0..=1.0).contains(r)) {
            problems.push(format!("telemetry.trace_sample_ratio {r} is not between 0 and 1"));
        }
        if let Err(e) = super::parse_filter(&self.trace_filter) {
            problems.push(format!("telemetry.trace_filter `{}`: {e}", self.trace_filter));
        }
        if self.trace_export_interval.is_some_and(|d| d.is_zero()) {
            problems.push("telemetry.trace_export_interval must be above 0".to_string());
        }
        if self.metrics_export_interval.is_some_and(|d| d.is_zero()) {
            problems.push("telemetry.metrics_export_interval must be above 0".to_string());
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    pub var: &'static str,
    pub reason: String,
}

/// Whether traces are exported, and how: what the SDK does not decide.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    pub protocol: Protocol,
    /// The endpoint to give the exporter (`/v1/traces` already appended
    /// for http/protobuf); None: the exporter reads the OTEL_* variables.
    pub endpoint: Option<String>,
    /// Where the spans go, for the start-up log and `trailwatch config`.
    pub target: String,
}

impl ExportPlan {
    /// The trace plan, or None when traces are not exported. `env` looks a
    /// variable up (`std::env::var` in the service; a map in tests).
    pub fn resolve(
        cfg: &TelemetryConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ExportPlan>, SettingsError> {
        Self::resolve_signal(cfg, Signal::Traces, env)
    }

    /// The metrics plan, or None when metrics are not exported over OTLP
    /// (the default); an error when they are asked for with no endpoint.
    pub fn resolve_metrics(
        cfg: &TelemetryConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ExportPlan>, SettingsError> {
        let var = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let wanted = match cfg.otlp_metrics {
            Some(on) => on,
            // A list in the spec (`otlp,console`): otlp anywhere in it.
            None => var("OTEL_METRICS_EXPORTER").is_some_and(|v| v.split(',').any(|e| e.trim() == "otlp")),
        };
        if !wanted {
            return Ok(None);
        }
        let plan = Self::resolve_signal(cfg, Signal::Metrics, env)?;
        if plan.is_none() && !var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            let var = if cfg.otlp_metrics.is_some() { "telemetry.otlp_metrics" } else { "OTEL_METRICS_EXPORTER" };
            return Err(SettingsError {
                var,
                reason: "OTLP metrics need telemetry.otlp_endpoint or OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT".into(),
            });
        }
        Ok(plan)
    }

    fn resolve_signal(
        cfg: &TelemetryConfig,
        signal: Signal,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ExportPlan>, SettingsError> {
        let var = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || (signal == Signal::Traces && var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")))
        {
            return Ok(None);
        }
        let (protocol_var, endpoint_var) = signal.vars();
        let path = signal.path();
        let mut protocol = cfg.otlp_protocol;
        for v in [protocol_var, "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            match (protocol, var(v)) {
                (None, Some(p)) if p == "grpc" => protocol = Some(Protocol::Grpc),
                (None, Some(p)) if p == "http/protobuf" => protocol = Some(Protocol::HttpProtobuf),
                (None, Some(p)) => {
                    return Err(SettingsError {
                        var: v,
                        reason: format!("`{p}` is not supported: `http/protobuf` or `grpc`"),
                    })
                }
                _ => {}
            }
        }
        let protocol = protocol.unwrap_or(Protocol::HttpProtobuf);
        // A URL already ending in the signal's path is used as is; one
        // ending in the other signal's path is the traces' setting: the
        // path is swapped, so one `otlp_endpoint` serves both.
        let endpoint = cfg.otlp_endpoint.as_deref().map(str::trim).map(|e| match protocol {
            Protocol::HttpProtobuf => {
                let base = e.trim_end_matches('/');
                let base = [Signal::Traces.path(), Signal::Metrics.path()]
                    .into_iter()
                    .find_map(|p| base.strip_suffix(p))
                    .unwrap_or(base);
                format!("{base}{path}")
            }
            Protocol::Grpc => e.to_string(),
        });
        let target = match &endpoint {
            Some(e) => e.clone(),
            None => {
                let Some((v, e)) =
                    [endpoint_var, "OTEL_EXPORTER_OTLP_ENDPOINT"].into_iter().find_map(|v| var(v).map(|e| (v, e)))
                else {
                    return Ok(None);
                };
                // The exporter would only say "invalid configuration" later.
                check_url(&e).map_err(|reason| SettingsError { var: v, reason })?;
                // What the exporter makes of it (the base variable gets the path over HTTP).
                match protocol {
                    Protocol::HttpProtobuf if v == "OTEL_EXPORTER_OTLP_ENDPOINT" => {
                        format!("{}{path}", e.trim_end_matches('/'))
                    }
                    _ => e,
                }
            }
        };
        let name = match protocol {
            Protocol::HttpProtobuf => "OTLP/HTTP",
            Protocol::Grpc => "OTLP/gRPC",
        };
        Ok(Some(ExportPlan { protocol, endpoint, target: format!("{name} to {target}") }))
    }
}

fn check_url(endpoint: &str) -> Result<(), String> {
    let uri: hyper::Uri = endpoint.trim().parse().map_err(|err| format!("is not a URL: {err}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must be an http:// or https:// URL".to_string()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cfg: &TelemetryConfig, pairs: &[(&str, &str)]) -> Result<Option<ExportPlan>, SettingsError> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ExportPlan::resolve(cfg, &|k| m.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_given_and_config_wins() {
        let cfg = TelemetryConfig::default();
        assert_eq!(plan(&cfg, &[]), Ok(None));
        let p = plan(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!((p.protocol, p.endpoint), (Protocol::HttpProtobuf, None), "the exporter reads the variable");
        assert_eq!(p.target, "OTLP/HTTP to http://collector:4318/v1/traces");
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://127.0.0.1:4318/otlp".into()), ..Default::default() };
        let p = plan(&cfg, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:1/x")]).unwrap().unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:4318/otlp/v1/traces"));
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://c:4318/v1/traces".into()), ..Default::default() };
        assert_eq!(plan(&cfg, &[]).unwrap().unwrap().endpoint.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(plan(&cfg, &[("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(plan(&cfg, &[("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
    }

    #[test]
    fn the_protocol_picks_the_transport_and_grpc_endpoints_are_kept_as_given() {
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://c:4317".into()), ..Default::default() };
        let p = plan(&cfg, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap().unwrap();
        assert_eq!((p.protocol, p.endpoint.as_deref()), (Protocol::Grpc, Some("http://c:4317")));
        assert_eq!(p.target, "OTLP/gRPC to http://c:4317");
        let p = plan(
            &cfg,
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.protocol, Protocol::HttpProtobuf, "the traces variable wins over the generic one");
        let cfg: TelemetryConfig =
            toml::from_str("otlp_endpoint = \"http://c:4317\"\notlp_protocol = \"grpc\"").unwrap();
        let p = plan(&cfg, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap().unwrap();
        assert_eq!(p.protocol, Protocol::Grpc, "the config wins");
        let e = plan(&cfg, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert!(e.is_ok(), "an explicit protocol ignores the variables: {e:?}");
        let e = plan(&TelemetryConfig::default(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(e.var, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(e.reason.contains("grpc"), "{e}");
    }

    fn metrics_plan(cfg: &TelemetryConfig, pairs: &[(&str, &str)]) -> Result<Option<ExportPlan>, SettingsError> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ExportPlan::resolve_metrics(cfg, &|k| m.get(k).cloned())
    }

    #[test]
    fn metrics_are_off_by_default_and_share_the_endpoint() {
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://c:4318/v1/traces".into()), ..Default::default() };
        assert_eq!(metrics_plan(&cfg, &[]), Ok(None), "an endpoint alone exports traces only");
        let on = TelemetryConfig { otlp_metrics: Some(true), ..cfg.clone() };
        let p = metrics_plan(&on, &[]).unwrap().unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("http://c:4318/v1/metrics"), "the signal's path replaces the traces'");
        assert_eq!(p.target, "OTLP/HTTP to http://c:4318/v1/metrics");
        let p = metrics_plan(&cfg, &[("OTEL_METRICS_EXPORTER", "console, otlp")]).unwrap().unwrap();
        assert_eq!(p.protocol, Protocol::HttpProtobuf);
        let off = TelemetryConfig { otlp_metrics: Some(false), ..cfg.clone() };
        assert_eq!(metrics_plan(&off, &[("OTEL_METRICS_EXPORTER", "otlp")]), Ok(None), "the config wins");
        assert_eq!(metrics_plan(&on, &[("OTEL_SDK_DISABLED", "true")]), Ok(None));
        // The metrics variables, not the traces' ones.
        let p = metrics_plan(
            &TelemetryConfig { otlp_metrics: Some(true), ..Default::default() },
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.protocol, p.endpoint, p.target.as_str()), (Protocol::Grpc, None, "OTLP/gRPC to http://m:4317"));
        let p = metrics_plan(
            &TelemetryConfig { otlp_metrics: Some(true), ..Default::default() },
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.target, "OTLP/HTTP to http://c:4318/v1/metrics");
        // Asked for with nowhere to go: an error that says where to set it.
        let e = metrics_plan(&TelemetryConfig { otlp_metrics: Some(true), ..Default::default() }, &[]).unwrap_err();
        assert_eq!(e.var, "telemetry.otlp_metrics");
        assert!(e.reason.contains("otlp_endpoint"), "{e}");
        let e = metrics_plan(&TelemetryConfig::default(), &[("OTEL_METRICS_EXPORTER", "otlp")]).unwrap_err();
        assert_eq!(e.var, "OTEL_METRICS_EXPORTER");
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = plan(&TelemetryConfig::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(e.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "), "{e}");
        let e = toml::from_str::<TelemetryConfig>("trace_id_format = \"x-ray\"").unwrap_err().to_string();
        assert!(e.contains("x-ray") && e.contains("xray") && e.contains("random"), "{e}");
        let mut problems = Vec::new();
        let bad = TelemetryConfig {
            otlp_endpoint: Some("ftp://x".into()),
            otlp_headers: [("bad header".to_string(), "v".to_string())].into_iter().collect(),
            trace_sample_ratio: Some(1.5),
            trace_filter: "=[".into(),
            trace_export_interval: Some(Duration::ZERO),
            metrics_export_interval: Some(Duration::ZERO),
            ..Default::default()
        };
        bad.validate(&mut problems);
        // Not ASCII: refused with a reason (the directive parser would panic
        // on some such input: fuzz/regressions/config holds the case found).
        let mut p2 = Vec::new();
        TelemetryConfig { trace_filter: "sd_upstream_re\u{7e6}=info".into(), ..Default::default() }.validate(&mut p2);
        assert!(p2.iter().any(|p| p.contains("trace_filter") && p.contains("ASCII")), "{p2:?}");
        let all = problems.join("\n");
        for want in [
            "otlp_endpoint",
            "otlp_headers.bad header",
            "trace_sample_ratio",
            "trace_filter",
            "trace_export_interval",
            "metrics_export_interval",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        let mut none = Vec::new();
        TelemetryConfig::default().validate(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
