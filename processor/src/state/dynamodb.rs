//! The DynamoDB store (deployments): checkpoints in a DynamoDB table, the
//! window snapshot in S3.
//!
//! # Table
//! Partition key `pk` (S), no sort key. Items, `<p>` = `checkpoints.key_prefix`:
//! - `<p>#head`: `commit` (N, the commit generation), `keys` (L of S: every
//!   position key ever committed), `owner` (S, the writing instance's random
//!   id), `snapshot` (S, the S3 key of the window snapshot; absent when there
//!   are no windows), `updated_at` (S, RFC 3339).
//! - `<p>#pos#<source>/<partition>`: `position` (S), `commit` (N, the
//!   generation that wrote it), `owner`.
//!
//! The head item is limited to 400 KB like any item: room for a few thousand
//! partition keys.
//!
//! # Commit
//! 1. The window snapshot goes to S3 first, to one of two slots of this
//!    instance, `<snapshot_prefix><p>/windows-<instance>-<slot>.json`, the one
//!    the head does not point at (so the referenced object is never
//!    overwritten, and steady state needs no deletes). The random instance id
//!    keeps two instances from overwriting each other's objects. An unchanged
//!    snapshot is not uploaded again.
//! 2. One `TransactWriteItems` puts the changed position items and the head
//!    item, each with `attribute_not_exists(pk) OR commit < :commit` (or the
//!    same generation by the same owner: a retry after a lost reply). Either
//!    all of them move forward or none does, so the head never points at a
//!    snapshot that is missing (it was written before) and a checkpoint never
//!    moves backwards: an instance whose generation is not newer than the
//!    table's gets [`StateError::Conflict`] (not retried: it must stop, another
//!    instance owns the checkpoints) instead of overwriting.
//!    A transaction holds at most 100 items: with more than 99 changed keys the
//!    positions go in chunks of 99, the head last. A crash between chunks
//!    leaves some positions ahead of the head; a restart resumes from those
//!    positions (their findings were delivered before the commit started) with
//!    the older window snapshot, so a correlation spanning them may miss counts.
//! 3. After the first commit, the previous instance's two slots (the
//!    snapshot loaded at start and its sibling) are deleted, best effort:
//!    without `s3:DeleteObject` (the CloudFormation stack does not grant it)
//!    two small objects per restart stay until a lifecycle rule on the prefix
//!    removes them.
//!
//! Throttling, 5xx and transport errors come back as retryable
//! [`StateError::Aws`]; the sink stage retries them with backoff.
//!
//! # Load
//! A consistent `GetItem` of the head, then of each listed position item, then
//! `GetObject` of the snapshot.
//!
//! # IAM
//! `dynamodb:GetItem`, `dynamodb:PutItem` (TransactWriteItems needs the
//! per-item actions) on the table; `s3:GetObject`, `s3:PutObject`,
//! `s3:DeleteObject` (optional, see above) on `arn:aws:s3:::<snapshot_bucket>/<snapshot_prefix>*`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Committed, StateError, StateStore};
use crate::aws;

/// Items per TransactWriteItems call (the service limit is 100).
const TRANSACT_MAX: usize = 100;
/// A newer generation, or this instance re-writing its own generation (a
/// retry after a reply was lost must not look like a conflict).
const NEWER: &str = "attribute_not_exists(pk) OR #c < :c OR (#c = :c AND #o = :o)";

pub struct DynamoStore {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: String,
    bucket: String,
    snapshot_prefix: String,
    key_prefix: String,
    instance: String,
    /// The snapshot this instance last wrote or loaded: (S3 key, bytes).
    last_snapshot: Mutex<Option<(String, Vec<u8>)>>,
}

fn aws_error<E>(operation: &'static str, e: SdkError<E, HttpResponse>) -> StateError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    StateError::Aws { operation, message: aws::error_text(&e), retryable: aws::is_retryable(&e) }
}

impl DynamoStore {
    pub async fn build(cfg: &super::CheckpointsConfig, aws_cfg: &aws::AwsConfig) -> Result<Self, StateError> {
        let table =
            cfg.table.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                StateError::Invalid("checkpoints.store = \"dynamodb\" needs checkpoints.table".into())
            })?;
        let bucket = cfg.snapshot_bucket.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            StateError::Invalid("checkpoints.store = \"dynamodb\" needs checkpoints.snapshot_bucket".into())
        })?;
        let merged = aws_cfg.with_overrides(cfg.region.as_ref(), cfg.endpoint_url.as_ref());
        let sdk = aws::sdk_config(&merged).await;
        // Emulators and custom endpoints rarely serve virtual-hosted buckets.
        let s3_conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(merged.endpoint_url.is_some()).build();
        Ok(DynamoStore {
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            table,
            bucket,
            snapshot_prefix: cfg.snapshot_prefix.clone(),
            key_prefix: cfg.key_prefix.clone(),
            instance: format!("{:016x}", rand::random::<u64>()),
            last_snapshot: Mutex::new(None),
        })
    }

    fn head_pk(&self) -> String {
        format!("{}#head", self.key_prefix)
    }

    fn pos_pk(&self, key: &str) -> String {
        format!("{}#pos#{key}", self.key_prefix)
    }

    async fn get(&self, pk: String) -> Result<Option<HashMap<String, AttributeValue>>, StateError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("dynamodb GetItem", e))?;
        Ok(out.item)
    }

    fn put(&self, mut item: HashMap<String, AttributeValue>, commit: u64) -> Result<TransactWriteItem, StateError> {
        item.insert("owner".to_string(), AttributeValue::S(self.instance.clone()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NEWER)
            .expression_attribute_names("#c", "commit")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":c", AttributeValue::N(commit.to_string()))
            .expression_attribute_values(":o", AttributeValue::S(self.instance.clone()))
            .build()
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, commit: u64) -> Result<(), StateError> {
        let r = self.ddb.transact_write_items().set_transact_items(Some(items)).send().await;
        r.map(|_| ()).map_err(|e| transact_error(e, &self.table, commit))
    }

    /// Uploads the snapshot unless it is the one last written; returns its
    /// key and the key of a loaded snapshot that it replaces.
    async fn write_snapshot(&self, bytes: &[u8]) -> Result<(String, Option<String>), StateError> {
        let previous = self.last_snapshot.lock().expect("snapshot lock").clone();
        if let Some((key, old)) = &previous {
            if old == bytes {
                return Ok((key.clone(), None));
            }
        }
        let slot = |n: u8| format!("{}{}/windows-{}-{n}.json", self.snapshot_prefix, self.key_prefix, self.instance);
        let key = if previous.as_ref().is_some_and(|(k, _)| *k == slot(0)) { slot(1) } else { slot(0) };
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(|e| aws_error("s3 PutObject", e))?;
        let foreign = previous.map(|(k, _)| k).filter(|k| *k != slot(0) && *k != slot(1));
        Ok((key, foreign))
    }
}

/// A failed TransactWriteItems: a failed condition is a [`StateError::Conflict`];
/// a cancellation by a concurrent transaction or throttling is retryable.
fn transact_error(
    e: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, HttpResponse>,
    table: &str,
    commit: u64,
) -> StateError {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    if let SdkError::ServiceError(s) = &e {
        if let TransactWriteItemsError::TransactionCanceledException(t) = s.err() {
            let codes: Vec<&str> = t.cancellation_reasons().iter().filter_map(|r| r.code()).collect();
            // Some emulators leave the reasons out; the message still says why.
            let stale = codes.contains(&"ConditionalCheckFailed")
                || t.message().is_some_and(|m| m.contains("ConditionalCheckFailed"));
            if stale {
                return StateError::Conflict(format!(
                    "table {table} already holds a commit at or after generation {commit}: another instance owns \
                     these checkpoints"
                ));
            }
            let transient = codes.iter().all(|c| {
                matches!(
                    *c,
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                        | "RequestLimitExceeded"
                )
            });
            return StateError::Aws {
                operation: "dynamodb TransactWriteItems",
                message: aws::error_text(&e),
                retryable: transient,
            };
        }
    }
    aws_error("dynamodb TransactWriteItems", e)
}

fn n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|s| s.parse().ok())
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn load(&self) -> Result<Option<Committed>, StateError> {
        let head_pk = self.head_pk();
        let Some(head) = self.get(head_pk.clone()).await? else { return Ok(None) };
        let bad = |what: &str| StateError::Invalid(format!("table {} item {head_pk}: {what}", self.table));
        let commit = n(&head, "commit").ok_or_else(|| bad("no numeric `commit`"))?;
        let keys: Vec<String> = match head.get("keys") {
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            None => Vec::new(),
            Some(_) => return Err(bad("`keys` is not a list")),
        };
        let mut positions = BTreeMap::new();
        for key in keys {
            let pk = self.pos_pk(&key);
            let item = self.get(pk.clone()).await?.ok_or_else(|| {
                StateError::Invalid(format!("table {}: the head lists {key} but item {pk} is missing", self.table))
            })?;
            let pos = s(&item, "position")
                .ok_or_else(|| StateError::Invalid(format!("table {} item {pk}: no `position`", self.table)))?;
            positions.insert(key, pos.to_string());
        }
        let windows = match s(&head, "snapshot") {
            Some(key) => {
                let out = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| aws_error("s3 GetObject", e))?;
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StateError::Aws {
                        operation: "s3 GetObject",
                        message: format!("s3://{}/{key}: {e}", self.bucket),
                        retryable: true,
                    })?
                    .into_bytes()
                    .to_vec();
                *self.last_snapshot.lock().expect("snapshot lock") = Some((key.to_string(), bytes.clone()));
                Some(bytes)
            }
            None => None,
        };
        Ok(Some(Committed { commit, positions, windows, ..Committed::default() }))
    }

    async fn commit(&self, c: &Committed, changed: &[String]) -> Result<(), StateError> {
        let (snapshot, replaced) = match &c.windows {
            Some(bytes) => {
                let (k, old) = self.write_snapshot(bytes).await?;
                (Some(k), old)
            }
            None => (None, None),
        };
        let gen = AttributeValue::N(c.commit.to_string());
        let mut items = Vec::new();
        for key in changed {
            let Some(pos) = c.positions.get(key) else { continue };
            let item = HashMap::from([
                ("pk".to_string(), AttributeValue::S(self.pos_pk(key))),
                ("position".to_string(), AttributeValue::S(pos.clone())),
                ("commit".to_string(), gen.clone()),
            ]);
            items.push(self.put(item, c.commit)?);
        }
        let mut head = HashMap::from([
            ("pk".to_string(), AttributeValue::S(self.head_pk())),
            ("commit".to_string(), gen.clone()),
            ("keys".to_string(), AttributeValue::L(c.positions.keys().cloned().map(AttributeValue::S).collect())),
            (
                "updated_at".to_string(),
                AttributeValue::S(
                    time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                ),
            ),
        ]);
        if let Some(k) = &snapshot {
            head.insert("snapshot".to_string(), AttributeValue::S(k.clone()));
        }
        // Positions first, the head in the last transaction (see the module docs).
        while items.len() >= TRANSACT_MAX {
            let rest = items.split_off(TRANSACT_MAX - 1);
            self.transact(std::mem::replace(&mut items, rest), c.commit).await?;
        }
        items.push(self.put(head, c.commit)?);
        self.transact(items, c.commit).await?;

        if let (Some(k), Some(bytes)) = (&snapshot, &c.windows) {
            *self.last_snapshot.lock().expect("snapshot lock") = Some((k.clone(), bytes.clone()));
        }
        if let Some(old) = replaced {
            // The previous instance's other slot is no longer needed either.
            let sibling = old
                .strip_suffix("-0.json")
                .map(|b| format!("{b}-1.json"))
                .or_else(|| old.strip_suffix("-1.json").map(|b| format!("{b}-0.json")));
            for key in std::iter::once(old).chain(sibling) {
                if let Err(e) = self.s3.delete_object().bucket(&self.bucket).key(&key).send().await {
                    tracing::debug!(
                        "old window snapshot s3://{}/{key} not deleted: {}",
                        self.bucket,
                        aws::error_text(&e)
                    );
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("dynamodb store (table {}, snapshots in s3://{}/{})", self.table, self.bucket, self.snapshot_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_smithy_types::body::SdkBody;

    fn cancelled(codes: &[&str]) -> StateError {
        let mut t = TransactionCanceledException::builder().message("Transaction cancelled");
        for c in codes {
            t = t.cancellation_reasons(CancellationReason::builder().code(*c).build());
        }
        let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        transact_error(
            SdkError::service_error(TransactWriteItemsError::TransactionCanceledException(t.build()), raw),
            "t",
            7,
        )
    }

    #[test]
    fn cancellations_are_conflicts_or_retries() {
        let e = cancelled(&["None", "ConditionalCheckFailed"]);
        assert!(matches!(e, StateError::Conflict(_)) && !e.is_retryable(), "{e}");
        assert!(e.to_string().contains("generation 7"), "{e}");
        let e = cancelled(&["TransactionConflict", "None"]);
        assert!(matches!(e, StateError::Aws { .. }) && e.is_retryable(), "{e}");
        let e = cancelled(&["ThrottlingError"]);
        assert!(e.is_retryable(), "{e}");
        // A bad item does not get better by retrying.
        let e = cancelled(&["ValidationError"]);
        assert!(!e.is_retryable(), "{e}");
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        let throttled = TransactWriteItemsError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .message("slow down")
                // Parsed from the reply in real use.
                .meta(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .build(),
                )
                .build(),
        );
        let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        assert!(transact_error(SdkError::service_error(throttled, raw), "t", 1).is_retryable());
        let internal = TransactWriteItemsError::InternalServerError(
            aws_sdk_dynamodb::types::error::InternalServerError::builder().message("oops").build(),
        );
        let raw = HttpResponse::new(500.try_into().unwrap(), SdkBody::empty());
        assert!(transact_error(SdkError::service_error(internal, raw), "t", 1).is_retryable());
    }
}
