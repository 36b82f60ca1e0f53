//! Logging set-up (metrics and tracing export come with the service).

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` wins over the `--log-level` default.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
