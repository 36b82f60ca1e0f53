//! The pipeline's finding: a validated ASFF finding, its JSON line, and what
//! sinks and metrics need to route and measure it.

use super::{build_finding_line, validate_serialized, AsffFinding, AsffViolation, FindingContext, FindingInput};

/// A validated finding and what the pipeline needs to route and measure it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub asff: AsffFinding,
    /// `asff` as one JSON line, serialised once when the finding was built
    /// (sinks write it as it is).
    pub json: String,
    /// Event time of the triggering event (window end for correlations).
    pub event_time_ms: Option<i64>,
    /// Processing time the triggering input reached trailwatch.
    pub ingest_ms: Option<i64>,
    /// A repeat of a correlation within its dedup period (same Id, higher count).
    pub is_update: bool,
}

/// A finding that failed validation: never emitted, dead-lettered instead.
#[derive(Debug)]
pub struct InvalidFinding {
    /// The finding's Id.
    pub id: String,
    /// The finding as one JSON line.
    pub json: String,
    pub violations: Vec<AsffViolation>,
}

impl Finding {
    /// Builds the finding of `input` and checks it as Security Hub would.
    pub fn build(
        input: &FindingInput<'_>,
        ctx: &FindingContext,
        event_time_ms: Option<i64>,
        ingest_ms: Option<i64>,
        is_update: bool,
    ) -> Result<Finding, InvalidFinding> {
        let (asff, json) = build_finding_line(input, ctx);
        match validate_serialized(&asff, json.len()) {
            Ok(()) => Ok(Finding { asff, json, event_time_ms, ingest_ms, is_update }),
            Err(violations) => Err(InvalidFinding { id: asff.id, json, violations }),
        }
    }
}
