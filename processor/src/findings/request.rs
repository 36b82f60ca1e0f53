//! On-request responses: a Security Hub custom action sends an EventBridge
//! event (`detail-type` "Security Hub Findings - Custom Action") naming the
//! findings an analyst selected; routed to trailwatch's queue, it arrives like
//! any other event. The detector hands it on as a [`ResponseRequest`]; the
//! responder runs the action mapped to the custom action's id
//! (`respond.custom_actions`) on each finding, with the same safety rules.

use serde_json::Value;

pub const DETAIL_TYPE: &str = "Security Hub Findings - Custom Action";

/// One analyst request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRequest {
    /// The EventBridge event id (logs).
    pub event_id: String,
    /// The custom action's id: the last part of its ARN (`…:action/custom/<Id>`).
    pub action_id: String,
    /// The selected findings, as ASFF.
    pub findings: Vec<Value>,
}

/// The request in an event, if it is a custom-action event.
pub fn parse(json: &str) -> Option<ResponseRequest> {
    // Cheap test first: this runs for every non-CloudTrail event.
    if !json.contains(DETAIL_TYPE) {
        return None;
    }
    let v: Value = serde_json::from_str(json).ok()?;
    if v.get("detail-type")?.as_str()? != DETAIL_TYPE || v.get("source")?.as_str()? != "aws.securityhub" {
        return None;
    }
    let action_id = v
        .get("resources")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|arn| arn.split_once(":action/custom/").map(|(_, id)| id.to_string()))?;
    let findings = v.get("detail")?.get("findings")?.as_array()?.clone();
    Some(ResponseRequest {
        event_id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        action_id,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_action_events_are_read_and_others_ignored() {
        let ev = r#"{"version":"0","id":"e-1","detail-type":"Security Hub Findings - Custom Action","source":"aws.securityhub","account":"111122223333","region":"us-east-1","resources":["arn:aws:securityhub:us-east-1:111122223333:action/custom/TwRevokeSessions"],"detail":{"actionName":"trailwatch revoke","findings":[{"Id":"f1"},{"Id":"f2"}]}}"#;
        let r = parse(ev).unwrap();
        assert_eq!(r.action_id, "TwRevokeSessions");
        assert_eq!(r.event_id, "e-1");
        assert_eq!(r.findings.len(), 2);
        assert_eq!(parse(&ev.replace("aws.securityhub", "aws.ecr")), None);
        assert_eq!(parse(r#"{"detail-type":"ECR Image Scan"}"#), None);
    }
}
