//! `[telemetry]`, and the OTLP exporter settings resolved from it and the
//! standard OpenTelemetry environment variables.
//!
//! Order, first wins: the trailwatch configuration (file, then
//! `TRAILWATCH__TELEMETRY__*`) → `OTEL_*` variables → defaults. That is the
//! OpenTelemetry SDKs' rule (explicit configuration over the environment),
//! so a sidecar set-up that only exports `OTEL_EXPORTER_OTLP_ENDPOINT`
//! works with a config that says nothing about traces.
//!
//! | variable | used for |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full URL of the traces endpoint, as is |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` | `k=v,k2=v2` (values URL-encoded), merged; config headers win per name |
//! | `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` | milliseconds |
//! | `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`, `OTEL_EXPORTER_OTLP_COMPRESSION` | `gzip` or `none` |
//! | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | only `http/protobuf`; anything else is a start-up error |
//! | `OTEL_SERVICE_NAME` | `service.name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,...` resource attributes; config ones win |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | no export, whatever is configured |

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{duration_text, duration_text_opt};

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

/// How the 16 bytes of a new trace id are made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TraceIdFormat {
    /// All random (W3C Trace Context, what OpenTelemetry SDKs do by default).
    #[default]
    Random,
    /// The first 4 bytes are the Unix time in seconds, the other 12 random:
    /// the AWS X-Ray trace id format, which X-Ray accepts everywhere (W3C
    /// ids need an ADOT collector of v0.34 or later, in commercial regions).
    Xray,
}

/// `[telemetry]`: logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log lines on stderr: `text`, or `json` (one JSON object a line).
    pub log_format: LogFormat,
    /// OTLP/HTTP collector for traces, e.g. `http://127.0.0.1:4318`: spans
    /// are POSTed to `<url>/v1/traces` (a URL already ending in `/v1/traces`
    /// is used as is). Unset: the OTEL_EXPORTER_OTLP_* variables; neither:
    /// no export.
    pub otlp_endpoint: Option<String>,
    /// Request headers, e.g. `authorization = "Bearer ..."`; merged over
    /// OTEL_EXPORTER_OTLP_HEADERS (these win per name).
    pub otlp_headers: BTreeMap<String, String>,
    /// `gzip` or `none` request bodies (unset: OTEL_EXPORTER_OTLP_COMPRESSION, else none).
    pub otlp_compression: Option<Compression>,
    /// Timeout of one export request (unset: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s).
    #[serde(with = "duration_text_opt", skip_serializing_if = "Option::is_none")]
    pub otlp_timeout: Option<Duration>,
    /// `service.name` of the exported traces (unset: OTEL_SERVICE_NAME, else `trailwatch`).
    pub service_name: Option<String>,
    /// More resource attributes (e.g. `"deployment.environment" = "prod"`),
    /// merged over OTEL_RESOURCE_ATTRIBUTES.
    pub resource_attributes: BTreeMap<String, String>,
    /// Share of traces exported, 0 to 1, decided once per trace at its root
    /// span (a source batch); every span of the trace follows that decision.
    pub trace_sample_ratio: f64,
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
    /// Spans per export request at most.
    pub trace_batch_size: NonZeroUsize,
    /// Waiting spans are exported at least this often.
    #[serde(with = "duration_text")]
    pub trace_export_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            otlp_compression: None,
            otlp_timeout: None,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            trace_sample_ratio: 1.0,
            trace_id_format: TraceIdFormat::Random,
            trace_filter: "trailwatch_processor=info".to_string(),
            trace_queue_size: NonZeroUsize::new(2048).expect("non-zero"),
            trace_batch_size: NonZeroUsize::new(512).expect("non-zero"),
            trace_export_interval: Duration::from_secs(5),
        }
    }
}

/// Defaults of the OpenTelemetry specification.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SERVICE_NAME: &str = "trailwatch";
const TRACES_PATH: &str = "/v1/traces";

impl TelemetryConfig {
    /// Checks that need no I/O (the environment is read at start-up, by
    /// [`ExportSettings::resolve`]).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if let Some(e) = &self.otlp_endpoint {
            if let Err(why) = traces_url(e, false) {
                problems.push(format!("telemetry.otlp_endpoint `{e}` {why}"));
            }
        }
        for (k, v) in &self.otlp_headers {
            if let Err(why) = header(k, v) {
                problems.push(format!("telemetry.otlp_headers.{k}: {why}"));
            }
        }
        if self.otlp_timeout.is_some_and(|t| t.is_zero()) {
            problems.push("telemetry.otlp_timeout must be above 0".to_string());
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            problems.push(format!("telemetry.trace_sample_ratio {} is not between 0 and 1", self.trace_sample_ratio));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.trace_filter) {
            problems.push(format!("telemetry.trace_filter `{}`: {e}", self.trace_filter));
        }
        if self.trace_export_interval.is_zero() {
            problems.push("telemetry.trace_export_interval must be above 0".to_string());
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{var}: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("telemetry.{key}: {reason}")]
    Config { key: String, reason: String },
}

/// Everything the exporter needs, resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The full traces URL.
    pub url: hyper::Uri,
    /// Lower-case header names.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    pub compression: Compression,
    pub timeout: Duration,
    /// `service.name` first, then the rest, sorted by key.
    pub resource: Vec<(String, String)>,
    pub sample_ratio: f64,
    pub id_format: TraceIdFormat,
    pub filter: String,
    pub queue_size: usize,
    pub batch_size: usize,
    pub export_interval: Duration,
}

impl ExportSettings {
    /// The exporter settings, or None when traces are not exported. `env`
    /// looks a variable up (`std::env::var` in the service; a map in tests).
    pub fn resolve(
        cfg: &TelemetryConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ExportSettings>, SettingsError> {
        let var = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(e) = var("OTEL_TRACES_EXPORTER") {
            if e.eq_ignore_ascii_case("none") {
                return Ok(None);
            }
            if !e.eq_ignore_ascii_case("otlp") {
                return Err(SettingsError::Env {
                    var: "OTEL_TRACES_EXPORTER",
                    reason: format!("`{e}` is not supported (otlp or none)"),
                });
            }
        }
        let url = match &cfg.otlp_endpoint {
            Some(e) => {
                traces_url(e, false).map_err(|reason| SettingsError::Config { key: "otlp_endpoint".into(), reason })?
            }
            None => match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(e), _) => traces_url(&e, true)
                    .map_err(|reason| SettingsError::Env { var: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", reason })?,
                (None, Some(e)) => traces_url(&e, false)
                    .map_err(|reason| SettingsError::Env { var: "OTEL_EXPORTER_OTLP_ENDPOINT", reason })?,
                (None, None) => return Ok(None),
            },
        };
        for v in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = var(v) {
                if p != "http/protobuf" {
                    return Err(SettingsError::Env {
                        var: v,
                        reason: format!(
                            "`{p}` is not supported: trailwatch exports OTLP/HTTP protobuf (http/protobuf, port 4318)"
                        ),
                    });
                }
                break;
            }
        }

        // Headers: generic, then traces-specific, then config (later wins).
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for v in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(text) = var(v) {
                let pairs = parse_pairs(&text).map_err(|reason| SettingsError::Env { var: v, reason })?;
                for (k, val) in pairs {
                    headers.insert(k.to_ascii_lowercase(), val);
                }
            }
        }
        for (k, val) in &cfg.otlp_headers {
            headers.insert(k.to_ascii_lowercase(), val.clone());
        }
        let mut checked = Vec::new();
        for (k, val) in &headers {
            checked.push(
                header(k, val).map_err(|reason| SettingsError::Config { key: format!("otlp_headers.{k}"), reason })?,
            );
        }

        let compression = match cfg.otlp_compression {
            Some(c) => c,
            None => match first(&var, &["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"]) {
                None => Compression::None,
                Some((_, c)) if c.eq_ignore_ascii_case("gzip") => Compression::Gzip,
                Some((_, c)) if c.eq_ignore_ascii_case("none") => Compression::None,
                Some((v, c)) => {
                    return Err(SettingsError::Env {
                        var: v,
                        reason: format!("`{c}` is not a compression (gzip or none)"),
                    })
                }
            },
        };
        let timeout = match cfg.otlp_timeout {
            Some(t) => t,
            None => match first(&var, &["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]) {
                None => DEFAULT_TIMEOUT,
                Some((v, ms)) => match ms.parse::<u64>() {
                    Ok(n) if n > 0 => Duration::from_millis(n),
                    _ => {
                        return Err(SettingsError::Env {
                            var: v,
                            reason: format!("`{ms}` is not a number of milliseconds above 0"),
                        })
                    }
                },
            },
        };

        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        if let Some(text) = var("OTEL_RESOURCE_ATTRIBUTES") {
            attrs.extend(
                parse_pairs(&text).map_err(|reason| SettingsError::Env { var: "OTEL_RESOURCE_ATTRIBUTES", reason })?,
            );
        }
        attrs.extend(cfg.resource_attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let service = cfg
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .or_else(|| attrs.get("service.name").cloned())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        attrs.remove("service.name");
        attrs.entry("service.version".into()).or_insert_with(|| env!("CARGO_PKG_VERSION").to_string());
        attrs.entry("service.instance.id".into()).or_insert_with(instance_id);
        attrs.insert("telemetry.sdk.name".into(), "trailwatch".into());
        attrs.insert("telemetry.sdk.language".into(), "rust".into());
        attrs.insert("telemetry.sdk.version".into(), env!("CARGO_PKG_VERSION").into());
        let mut resource = vec![("service.name".to_string(), service)];
        resource.extend(attrs);

        Ok(Some(ExportSettings {
            url,
            headers: checked,
            compression,
            timeout,
            resource,
            sample_ratio: cfg.trace_sample_ratio,
            id_format: cfg.trace_id_format,
            filter: cfg.trace_filter.clone(),
            queue_size: cfg.trace_queue_size.get(),
            batch_size: cfg.trace_batch_size.get(),
            export_interval: cfg.trace_export_interval,
        }))
    }
}

/// The first of `vars` that is set: (its name, its value).
fn first(var: &dyn Fn(&str) -> Option<String>, vars: &[&'static str]) -> Option<(&'static str, String)> {
    vars.iter().find_map(|v| var(v).map(|x| (*v, x)))
}

/// A per-process id, as OpenTelemetry recommends: a random UUID (v4).
fn instance_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The traces URL of an endpoint: `exact` (the TRACES_ENDPOINT variable)
/// is used as given; a base URL gets `/v1/traces`.
fn traces_url(endpoint: &str, exact: bool) -> Result<hyper::Uri, String> {
    let e = endpoint.trim();
    let uri: hyper::Uri = e.parse().map_err(|err| format!("is not a URL: {err}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must be an http:// or https:// URL".to_string()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    if uri.query().is_some() && !exact {
        return Err("is a base URL: it takes no query".to_string());
    }
    if exact || uri.path().trim_end_matches('/').ends_with(TRACES_PATH) {
        return Ok(uri);
    }
    let url = format!("{}{TRACES_PATH}", e.trim_end_matches('/'));
    url.parse().map_err(|err| format!("is not a URL: {err}"))
}

fn header(k: &str, v: &str) -> Result<(hyper::header::HeaderName, hyper::header::HeaderValue), String> {
    let name =
        hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a header name"))?;
    let value =
        hyper::header::HeaderValue::from_str(v).map_err(|_| "the value is not a valid header value".to_string())?;
    Ok((name, value))
}

/// `k=v,k2=v2` with percent-encoded keys and values (the W3C baggage
/// format OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES use).
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("`{item}` is not key=value"));
        };
        let k = percent_decode(k.trim())?;
        if k.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        out.push((k, percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => out.push(v),
                None => return Err(format!("`{s}` has a bad %-escape")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn resolve(cfg: &TelemetryConfig, pairs: &[(&str, &str)]) -> Result<Option<ExportSettings>, SettingsError> {
        ExportSettings::resolve(cfg, &env(pairs))
    }

    fn res<'a>(s: &'a ExportSettings, k: &str) -> Option<&'a str> {
        s.resource.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn off_by_default_and_endpoints_follow_the_specification() {
        let cfg = TelemetryConfig::default();
        assert_eq!(resolve(&cfg, &[]), Ok(None));
        let s = resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(s.url.to_string(), "http://collector:4318/v1/traces");
        let s = resolve(
            &cfg,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b/custom"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "https://b/custom", "the traces endpoint is used as is, and wins");
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://127.0.0.1:4318/otlp".into()), ..Default::default() };
        let s = resolve(&cfg, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:1/x")]).unwrap().unwrap();
        assert_eq!(s.url.to_string(), "http://127.0.0.1:4318/otlp/v1/traces", "config wins over the environment");
        let cfg = TelemetryConfig { otlp_endpoint: Some("http://c:4318/v1/traces".into()), ..Default::default() };
        assert_eq!(resolve(&cfg, &[]).unwrap().unwrap().url.to_string(), "http://c:4318/v1/traces");
        assert_eq!(resolve(&cfg, &[("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(resolve(&cfg, &[("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.id_format, TraceIdFormat::Random);
    }

    #[test]
    fn trace_id_format_is_read_and_typos_are_named() {
        let cfg: TelemetryConfig =
            toml::from_str("otlp_endpoint = \"http://127.0.0.1:4318\"\ntrace_id_format = \"xray\"").unwrap();
        assert_eq!(resolve(&cfg, &[]).unwrap().unwrap().id_format, TraceIdFormat::Xray);
        let e = toml::from_str::<TelemetryConfig>("trace_id_format = \"x-ray\"").unwrap_err().to_string();
        assert!(e.contains("x-ray") && e.contains("xray") && e.contains("random"), "{e}");
    }

    #[test]
    fn headers_resource_and_service_name_merge_with_config_winning() {
        let mut cfg = TelemetryConfig { otlp_endpoint: Some("http://c:4318".into()), ..Default::default() };
        let vars = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20abc, x-tenant = acme"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=traces"),
            ("OTEL_SERVICE_NAME", "tw-env"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=sec%2Cops"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ];
        let s = resolve(&cfg, &vars).unwrap().unwrap();
        let h: Vec<(String, String)> =
            s.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        assert_eq!(h, vec![("authorization".into(), "Basic abc".into()), ("x-tenant".into(), "traces".into())]);
        assert_eq!(s.resource[0], ("service.name".to_string(), "tw-env".to_string()));
        assert_eq!(res(&s, "deployment.environment"), Some("staging"));
        assert_eq!(res(&s, "team"), Some("sec,ops"));
        assert_eq!(res(&s, "service.version"), Some(env!("CARGO_PKG_VERSION")));
        let id = res(&s, "service.instance.id").unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "a UUID v4: {id}");
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.compression, Compression::Gzip);

        cfg.otlp_headers.insert("X-Tenant".into(), "config".into());
        cfg.service_name = Some("tw-config".into());
        cfg.resource_attributes.insert("deployment.environment".into(), "prod".into());
        cfg.otlp_timeout = Some(Duration::from_secs(3));
        cfg.otlp_compression = Some(Compression::None);
        let s = resolve(&cfg, &vars).unwrap().unwrap();
        assert_eq!(s.headers[1].1.to_str().unwrap(), "config");
        assert_eq!(s.resource[0].1, "tw-config");
        assert_eq!(res(&s, "deployment.environment"), Some("prod"));
        assert_eq!((s.timeout, s.compression), (Duration::from_secs(3), Compression::None));
        assert_eq!(
            resolve(&TelemetryConfig { otlp_endpoint: cfg.otlp_endpoint.clone(), ..Default::default() }, &[])
                .unwrap()
                .unwrap()
                .resource[0]
                .1,
            "trailwatch"
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let cfg = TelemetryConfig::default();
        let e = resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(e.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "), "{e}");
        let e =
            resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .unwrap_err();
        assert!(e.to_string().contains("http/protobuf"), "{e}");
        let e =
            resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])
                .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS") && e.to_string().contains("key=value"), "{e}");
        let e = resolve(&cfg, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])
            .unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");

        let mut problems = Vec::new();
        let bad = TelemetryConfig {
            otlp_endpoint: Some("ftp://x".into()),
            otlp_headers: [("bad header".to_string(), "v".to_string())].into_iter().collect(),
            trace_sample_ratio: 1.5,
            trace_filter: "=[".into(),
            trace_export_interval: Duration::ZERO,
            ..Default::default()
        };
        bad.validate(&mut problems);
        let all = problems.join("\n");
        for want in
            ["otlp_endpoint", "otlp_headers.bad header", "trace_sample_ratio", "trace_filter", "trace_export_interval"]
        {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        let mut none = Vec::new();
        TelemetryConfig::default().validate(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
