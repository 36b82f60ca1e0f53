//! trailwatch-rules: the Sigma engine. Pure: no I/O, no async, no clock.
//!
//! Data flow, one module each:
//! - [`parse`]: YAML rule files → rule documents (detection, correlation),
//!   with file/line for every error;
//! - [`compile`] and [`matcher`]: `field|modifiers: values` → matchers,
//!   field names → ids; [`condition`]: the condition language → [`condition::Cond`];
//! - [`engine`]: the [`RuleSet`] (logsource routing, the rule index, evaluation);
//! - [`json`] and [`doc`]: one pass over an event's JSON reads only the fields
//!   the rules use into [`doc::Values`] (`escape` undoes string escapes
//!   for both);
//! - [`logsource`]: the event classes and their `logsource` names;
//! - [`window`]: correlation rules (event_count, value_count, temporal,
//!   and our `first_seen` new-terms baselines);
//!   [`detect`]: the stateful [`Detector`] — suppressions, event-time windows,
//!   watermark, dedup, snapshots (see `detect_design.md`); [`watermark`]:
//!   per-partition watermarks and the redelivered-event filter; `groups`: the
//!   compact storage of its window state (a slab, an 8-byte-slot index,
//!   packed times and sample ids);
//!   `detect::baseline`: the memory of `first_seen` rules (combination →
//!   last seen);
//! - [`testing`]: rule tests kept in the rule files;
//! - [`meta`]: rule metadata (level, tags, NIST CSF, remediation);
//!   [`template`]: finding title/description templates (`finding:`).
pub mod compile;
pub mod condition;
pub mod detect;
pub mod doc;
pub mod engine;
pub mod error;
mod escape;
pub mod fuzz;
mod groups;
pub mod json;
pub mod logsource;
pub mod matcher;
pub mod meta;
pub mod parse;
pub mod template;
pub mod testing;
pub mod watermark;
pub mod window;

pub use compile::{CompileOptions, DEFAULT_REGEX_SIZE_LIMIT};
pub use detect::{Alert, CorrelationAlert, Detector, DetectorConfig, DetectorStats, Screened, Suppression, TimeMode};
pub use engine::{DetectionRule, RuleFile, RuleSet, Scratch};
pub use error::{RuleError, RuleErrors, RuleWarning};
pub use logsource::EventClass;
pub use meta::{LeftOut, Level, RuleMeta, RuleSelect, STATUSES};
pub use watermark::{PartitionId, PartitionState};
pub use window::CorrelationRule;
