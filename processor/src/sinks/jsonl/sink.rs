use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::{ocsf, JsonlFormat, JsonlSinkConfig};
use crate::findings::Finding;
use crate::sinks::{observe_delivered, Sink, SinkError};

/// Writes through tokio's file I/O (a blocking pool), so a slow disk or a
/// full pipe slows the pipeline down without blocking the runtime.
pub struct JsonlSink {
    name: String,
    format: JsonlFormat,
    out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    file: Option<tokio::fs::File>,
    target: String,
}

impl JsonlSink {
    pub async fn open(name: &str, cfg: &JsonlSinkConfig, format: JsonlFormat) -> Result<Self, SinkError> {
        let target = cfg.path.display().to_string();
        let (out, file): (Box<dyn AsyncWrite + Send + Unpin>, _) = if cfg.path.as_os_str() == "-" {
            (Box::new(tokio::io::stdout()), None)
        } else {
            if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|error| SinkError::Io { context: format!("cannot create {}", dir.display()), error })?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(!cfg.truncate)
                .truncate(cfg.truncate)
                .open(&cfg.path)
                .await
                .map_err(|error| SinkError::Io { context: format!("cannot open {target}"), error })?;
            let sync = f.try_clone().await.map_err(|error| SinkError::Io { context: target.clone(), error })?;
            (Box::new(f), Some(sync))
        };
        Ok(JsonlSink { name: name.to_string(), format, out: BufWriter::with_capacity(1 << 16, out), file, target })
    }

    fn io(&self, error: std::io::Error) -> SinkError {
        SinkError::Io { context: format!("cannot write findings to {}", self.target), error }
    }
}

#[async_trait]
impl Sink for JsonlSink {
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let mut buf = Vec::with_capacity(findings.len() * 2048);
        for f in findings {
            match self.format {
                JsonlFormat::Asff => buf.extend_from_slice(f.json.as_bytes()),
                JsonlFormat::Ocsf => buf.extend_from_slice(ocsf::to_json_line(f).as_bytes()),
            }
            buf.push(b'\n');
        }
        if let Err(e) = self.out.write_all(&buf).await {
            return Err(self.io(e));
        }
        let m = crate::metrics::get();
        m.sink_findings.with_label_values(&[&self.name, "sent"]).inc_by(findings.len() as u64);
        // One write of the buffered batch is this sink's "request".
        m.sink_request_duration.with_label_values(&[&self.name]).observe(started.elapsed().as_secs_f64());
        m.sink_batch_size.with_label_values(&[&self.name]).observe(findings.len() as f64);
        observe_delivered(findings);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if let Err(e) = self.out.flush().await {
            return Err(self.io(e));
        }
        if let Some(f) = &self.file {
            // A FIFO or a character device cannot be synced; that is fine.
            if let Err(e) = f.sync_data().await {
                if e.kind() != std::io::ErrorKind::InvalidInput {
                    return Err(self.io(e));
                }
            }
        }
        Ok(())
    }
}
