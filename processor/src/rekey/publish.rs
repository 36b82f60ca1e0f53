//! Puts re-keyed records on the re-keyed stream (PutRecords: at most 500
//! records and 5 MiB per call). Records wait in order; an entry the service
//! refuses (throttled, internal error) stays at the front and is put again
//! by the next attempt, so [`Publisher::flush`] returning Ok means every
//! record given so far is on the stream.
//!
//! IAM: `kinesis:PutRecords` on the re-keyed stream.

use std::collections::VecDeque;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use super::Record;
use crate::aws;

/// Per PutRecords call.
const MAX_RECORDS: usize = 500;
const MAX_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("PutRecords on {stream} failed: {message}")]
    Request { stream: String, message: String },
    #[error("PutRecords on {stream} refused {refused} of {sent} records ({code}); they are put again")]
    Refused { stream: String, refused: usize, sent: usize, code: String },
}

pub struct Publisher {
    client: Client,
    /// Stream name or ARN.
    stream: String,
    by_arn: bool,
    queue: VecDeque<Record>,
    queued_bytes: usize,
}

impl Publisher {
    /// For the stream that `source` (a Kinesis source config) reads.
    pub async fn build(source: &crate::sources::kinesis::KinesisSourceConfig, aws_cfg: &aws::AwsConfig) -> Self {
        let sdk = aws::sdk_config(&aws_cfg.with_overrides(source.region.as_ref(), source.endpoint_url.as_ref())).await;
        let (stream, by_arn) = match (&source.stream_name, &source.stream_arn) {
            (Some(n), _) => (n.clone(), false),
            (None, Some(a)) => (a.clone(), true),
            (None, None) => (String::new(), false),
        };
        Publisher { client: Client::new(&sdk), stream, by_arn, queue: VecDeque::new(), queued_bytes: 0 }
    }

    pub fn describe(&self) -> &str {
        &self.stream
    }

    pub fn push(&mut self, records: Vec<Record>) {
        for r in records {
            self.queued_bytes += r.data.len() + r.partition_key.len();
            self.queue.push_back(r);
        }
    }

    /// Enough queued for a full call.
    pub fn full(&self) -> bool {
        self.queue.len() >= MAX_RECORDS || self.queued_bytes >= MAX_BYTES
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// One PutRecords call with the records at the front. The accepted ones
    /// leave the queue; refused ones stay in front, in order.
    pub async fn put_once(&mut self) -> Result<(), PublishError> {
        let mut n = 0;
        let mut bytes = 0;
        for r in &self.queue {
            let b = r.data.len() + r.partition_key.len();
            if n == MAX_RECORDS || (n > 0 && bytes + b > MAX_BYTES) {
                break;
            }
            n += 1;
            bytes += b;
        }
        if n == 0 {
            return Ok(());
        }
        let entries: Vec<PutRecordsRequestEntry> = self
            .queue
            .iter()
            .take(n)
            .filter_map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
                    .ok()
            })
            .collect();
        let req = self.client.put_records().set_records(Some(entries));
        let req = if self.by_arn { req.stream_arn(&self.stream) } else { req.stream_name(&self.stream) };
        let m = crate::metrics::get();
        let out = req
            .send()
            .await
            .map_err(|e| PublishError::Request { stream: self.stream.clone(), message: aws::error_text(&e) })?;
        let results = out.records();
        let mut kept = VecDeque::new();
        let mut code = String::new();
        for (i, r) in self.queue.drain(..n).enumerate() {
            match results.get(i) {
                Some(res) if res.error_code().is_none() && res.sequence_number().is_some() => {
                    self.queued_bytes -= r.data.len() + r.partition_key.len();
                }
                Some(res) => {
                    if code.is_empty() {
                        code = res.error_code().unwrap_or("no sequence number").to_string();
                    }
                    kept.push_back(r);
                }
                // No result for it: not known to be on the stream.
                None => kept.push_back(r),
            }
        }
        let refused = kept.len();
        m.rekey_published.inc_by((n - refused) as u64);
        if refused == 0 {
            return Ok(());
        }
        m.rekey_failed.with_label_values(&["refused"]).inc_by(refused as u64);
        while let Some(r) = kept.pop_back() {
            self.queue.push_front(r);
        }
        Err(PublishError::Refused { stream: self.stream.clone(), refused, sent: n, code })
    }
}
