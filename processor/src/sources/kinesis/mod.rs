//! The Kinesis Data Streams source: one reader per shard, checkpoints per
//! shard, resharding handled (parents finish before children).

mod config;
mod source;

pub use config::{KinesisSourceConfig, StartPosition};
pub use source::KinesisSource;
