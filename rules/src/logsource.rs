//! Which events a rule sees: the event classes trailwatch decodes and how a
//! rule's `logsource` selects among them.

use serde::{Deserialize, Serialize};

/// The class of a decoded event. Every class has `product: aws`; the
/// `service` names below are what a rule's `logsource.service` must say.
///
/// | class        | service      | what the rule's document is                                  |
/// |--------------|--------------|--------------------------------------------------------------|
/// | `CloudTrail` | `cloudtrail` | the CloudTrail record (also the `detail` of an EventBridge "AWS API Call via CloudTrail" / "AWS Console Sign In via CloudTrail" event) |
/// | `Ecr`        | `ecr`        | the whole EventBridge event with `source: aws.ecr` (e.g. detail-type "ECR Image Scan", "ECR Image Action") |
/// | `Inspector2` | `inspector2` | the whole EventBridge event with `source: aws.inspector2` ("Inspector2 Finding", "Inspector2 Scan") |
/// | `EventBridge`| `eventbridge`| any other EventBridge event, whole                            |
///
/// A rule with `service: eventbridge` sees the `Ecr`, `Inspector2` and
/// `EventBridge` classes (every event that arrived as a whole EventBridge event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventClass {
    CloudTrail,
    Ecr,
    Inspector2,
    EventBridge,
}

impl EventClass {
    pub const ALL: [EventClass; 4] =
        [EventClass::CloudTrail, EventClass::Ecr, EventClass::Inspector2, EventClass::EventBridge];

    /// The `logsource.service` name of this class.
    pub fn service(self) -> &'static str {
        match self {
            EventClass::CloudTrail => "cloudtrail",
            EventClass::Ecr => "ecr",
            EventClass::Inspector2 => "inspector2",
            EventClass::EventBridge => "eventbridge",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The class of an EventBridge event from its `source` field, when it is
    /// not a CloudTrail API call wrapped in EventBridge.
    pub fn from_eventbridge_source(source: &str) -> EventClass {
        match source {
            "aws.ecr" => EventClass::Ecr,
            "aws.inspector2" | "aws.inspector" => EventClass::Inspector2,
            _ => EventClass::EventBridge,
        }
    }
}
