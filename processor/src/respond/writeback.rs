//! What responses did, written back to the finding in Security Hub with
//! BatchUpdateFindings: a Note (readable), UserDefinedFields (one key per
//! action: `trailwatch/response/<action>` = `<outcome>: <detail>`) and, when
//! an action ran, Workflow status NOTIFIED. Findings with the same update
//! share one call (at most 100 per call, the API's limit).

use std::collections::BTreeMap;

use aws_sdk_securityhub::types::{AwsSecurityFindingIdentifier, NoteUpdate, WorkflowStatus, WorkflowUpdate};

use crate::aws::error_text;

/// Security Hub's limits on a Note's text and on UserDefinedFields values.
const MAX_NOTE: usize = 512;
const MAX_FIELD_VALUE: usize = 1024;
const MAX_IDS: usize = 100;

/// One finding's update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub id: String,
    pub product_arn: String,
    pub note: String,
    pub fields: BTreeMap<String, String>,
    /// Set Workflow status NOTIFIED (an action ran or was attempted).
    pub notified: bool,
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Note, fields, workflow NOTIFIED: findings with the same share a call.
type GroupKey = (String, BTreeMap<String, String>, bool);

pub struct Writeback {
    client: aws_sdk_securityhub::Client,
}

/// What one round of write-backs did, per finding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub updated: u64,
    /// Refused by Security Hub (UnprocessedFindings) or lost with a failed call.
    pub failed: u64,
}

impl Writeback {
    pub async fn build(cfg: &super::RespondConfig, aws: &crate::aws::AwsConfig) -> Writeback {
        let mut aws = aws.with_overrides(None, cfg.securityhub_endpoint_url.as_ref());
        aws.attempt_timeout = Some(aws.attempt_timeout.unwrap_or(cfg.call_timeout));
        let conf = crate::aws::sdk_config(&aws).await;
        Writeback { client: aws_sdk_securityhub::Client::new(&conf) }
    }

    pub async fn send(&self, updates: Vec<Update>) -> Written {
        let mut groups: BTreeMap<GroupKey, Vec<(String, String)>> = BTreeMap::new();
        for u in updates {
            groups.entry((u.note, u.fields, u.notified)).or_default().push((u.id, u.product_arn));
        }
        let mut w = Written::default();
        for ((note, fields, notified), ids) in groups {
            for chunk in ids.chunks(MAX_IDS) {
                let mut req = self.client.batch_update_findings();
                for (id, arn) in chunk {
                    req = req
                        .finding_identifiers(AwsSecurityFindingIdentifier::builder().id(id).product_arn(arn).build());
                }
                req = req.note(NoteUpdate::builder().text(clip(&note, MAX_NOTE)).updated_by("trailwatch").build());
                for (k, v) in &fields {
                    req = req.user_defined_fields(k, clip(v, MAX_FIELD_VALUE));
                }
                if notified {
                    req = req.workflow(WorkflowUpdate::builder().status(WorkflowStatus::Notified).build());
                }
                match req.send().await {
                    Ok(out) => {
                        let bad = out.unprocessed_findings();
                        for b in bad {
                            tracing::warn!(
                                finding = b.finding_identifier().map(|i| i.id()).unwrap_or_default(),
                                "Security Hub refused the response write-back: {} {}",
                                b.error_code().unwrap_or("-"),
                                b.error_message().unwrap_or("")
                            );
                        }
                        w.failed += bad.len() as u64;
                        w.updated += out.processed_findings().len() as u64;
                    }
                    Err(e) => {
                        tracing::warn!(findings = chunk.len(), "response write-back failed: {}", error_text(&e));
                        w.failed += chunk.len() as u64;
                    }
                }
            }
        }
        w
    }
}
