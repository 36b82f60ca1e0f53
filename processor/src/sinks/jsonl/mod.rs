//! Findings as JSON lines, to a file or stdout: ASFF as BatchImportFindings
//! takes it, or OCSF Detection Finding (for Security Lake and tools that
//! read OCSF).

mod config;
pub use crate::findings::ocsf;
mod sink;

pub use config::{JsonlFormat, JsonlSinkConfig};
pub use sink::JsonlSink;
