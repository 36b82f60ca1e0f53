use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use async_trait::async_trait;

use super::{ocsf, JsonlFormat, JsonlSinkConfig};
use crate::evaluate::Finding;
use crate::sinks::{observe_delivered, Sink, SinkError};

pub struct JsonlSink {
    name: String,
    format: JsonlFormat,
    out: BufWriter<Box<dyn Write + Send>>,
    file: Option<std::fs::File>,
    target: String,
}

impl JsonlSink {
    pub fn open(name: &str, cfg: &JsonlSinkConfig, format: JsonlFormat) -> Result<Self, SinkError> {
        let target = cfg.path.display().to_string();
        let (out, file): (Box<dyn Write + Send>, _) = if cfg.path.as_os_str() == "-" {
            (Box::new(std::io::stdout()), None)
        } else {
            if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|error| SinkError::Io { context: format!("cannot create {}", dir.display()), error })?;
            }
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .append(!cfg.truncate)
                .truncate(cfg.truncate)
                .open(&cfg.path)
                .map_err(|error| SinkError::Io { context: format!("cannot open {target}"), error })?;
            let sync = f.try_clone().map_err(|error| SinkError::Io { context: target.clone(), error })?;
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
        for f in findings {
            let line = match self.format {
                JsonlFormat::Asff => f.asff.to_json_line(),
                JsonlFormat::Ocsf => ocsf::to_json_line(f),
            };
            self.out.write_all(line.as_bytes()).and_then(|_| self.out.write_all(b"\n")).map_err(|e| self.io(e))?;
        }
        crate::metrics::get().sink_findings.with_label_values(&[&self.name, "sent"]).inc_by(findings.len() as u64);
        observe_delivered(findings);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))?;
        if let Some(f) = &self.file {
            f.sync_data().map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}
