//! The file source: local files, directories (walked recursively, hidden
//! files skipped) and `-` for stdin, plain or gzip, in every format the
//! decoders know. The embedded default of `trailwatch run`, and the input of
//! `trailwatch replay`. Files are read once, in name order; there are no
//! checkpoints (a rerun gives the same finding ids, so sinks upsert).

mod config;
mod source;

pub use config::FileSourceConfig;
pub use source::{expand_inputs, FileSource};
