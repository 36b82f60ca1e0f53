//! What the sources hand to the service's detector stage: decoded batches
//! with their acknowledgements ([`batch`]), the bounded decode pool
//! ([`blocking`]) and the detector's input message ([`Input`]).
//!
//! A leaf under both `sources` (which fill batches) and `service` (which
//! runs the stages), so that neither depends on the other's internals.

pub mod batch;
pub(crate) mod blocking;

use std::sync::Arc;

use trailwatch_rules::RuleSet;

use batch::SourceBatch;

/// Into the detector stage.
pub(crate) enum Input {
    Batch(Box<SourceBatch>),
    /// Once a second: moves processing time, publishes metrics, lets an idle
    /// pipeline commit.
    Tick,
    /// The same rules compiled with a new org context (AWS Organizations
    /// changed): swapped in between batches, windows carried over.
    Rules(Arc<RuleSet>),
}
