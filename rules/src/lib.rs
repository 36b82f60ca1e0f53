//! trailwatch-rules: the Sigma engine.
pub mod logsource;
pub mod meta;

pub use logsource::EventClass;
pub use meta::{Level, RuleMeta};
