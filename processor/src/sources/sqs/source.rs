use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinSet;

use super::SqsSourceConfig;
use crate::aws::{self, AwsConfig};
use crate::decode::ObjectRef;
use crate::pipeline::batch::{AckStatus, EventBatch, Partitions, SourceBatch};
use crate::sources::{batch_span, finish_batch, Source, SourceContext, SourceError};

pub struct SqsSource {
    cfg: SqsSourceConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
}

impl SqsSource {
    pub async fn build(_name: &str, cfg: &SqsSourceConfig, aws_cfg: &AwsConfig) -> Result<Self, SourceError> {
        let sdk = aws::sdk_config(&aws_cfg.with_overrides(cfg.region.as_ref(), cfg.endpoint_url.as_ref())).await;
        // Path-style S3 addressing works with every endpoint (emulators, VPC endpoints).
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.endpoint_url.is_some() || aws_cfg.endpoint_url.is_some())
            .build();
        Ok(SqsSource { cfg: cfg.clone(), sqs: aws_sdk_sqs::Client::new(&sdk), s3: aws_sdk_s3::Client::from_conf(s3) })
    }
}

/// Hands the receivers' batches to the pipeline in the order their
/// ReceiveMessage calls returned, so several receivers (fetching and
/// decoding in parallel) deliver the queue's order, as one would: a batch
/// finished early does not run ahead of an older one and make it late.
struct Order {
    /// Held around ReceiveMessage; the next ticket.
    receive: Mutex<u64>,
    /// The ticket whose batch goes next.
    turn: watch::Sender<u64>,
}

/// Why a message is left for the queue's redrive policy.
enum Poison {
    /// Nothing in it could be decoded.
    Undecodable(String),
    /// The S3 object it announces cannot be read, and retrying will not help.
    Object(String),
}

/// A message's fate after decoding.
enum Prepared {
    Ok(EventBatch),
    Poison(Poison),
    /// A transient failure (S3 unavailable): leave it, it comes back.
    Retry(String),
}

#[async_trait]
impl Source for SqsSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let me = Arc::new(*self);
        let ctx = Arc::new(ctx);
        // The visibility timeout in force: ours, else the queue's.
        let visibility = match me.cfg.visibility_timeout {
            Some(v) => v,
            None => me.queue_visibility().await.unwrap_or(Duration::from_secs(30)),
        };
        // Messages of an earlier run that was stopped before it committed
        // them come back within a visibility timeout, older than what is read
        // meanwhile: the watermark waits for them (see service/design.md).
        let hold = Partitions { hold_for: Some(visibility * 2 + me.cfg.wait_time), ..Partitions::default() };
        let held = ctx.out.send(SourceBatch::partitions_only(&ctx.name, now_ms(), hold)).await;
        if !held {
            return Ok(());
        }
        let order = Arc::new(Order { receive: Mutex::new(0), turn: watch::Sender::new(0) });
        let mut receivers = JoinSet::new();
        for i in 0..me.cfg.receivers.max(1) {
            let (me, ctx, order) = (Arc::clone(&me), Arc::clone(&ctx), Arc::clone(&order));
            receivers.spawn(async move { me.receive_loop(&ctx, i, visibility, &order).await });
        }
        // One receiver failing or dying fails the source at once (the service
        // then stops): never a queue read by fewer receivers than configured
        // without anyone noticing.
        while let Some(r) = receivers.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    ctx.health.set_source(&ctx.name, false);
                    return Err(SourceError::Fatal(format!("an sqs receiver died: {e}")));
                }
            }
        }
        Ok(())
    }
}

impl SqsSource {
    async fn queue_visibility(&self) -> Option<Duration> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.cfg.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .ok()?;
        let secs: u64 = out.attributes()?.get(&QueueAttributeName::VisibilityTimeout)?.parse().ok()?;
        Some(Duration::from_secs(secs))
    }

    /// One receiver: long polls, decodes, sends, and leaves deletion to an
    /// ack task per batch. At shutdown it stops receiving and waits for its
    /// batches to be committed (the service's commits go on meanwhile) or
    /// dropped, so their messages are deleted before the process exits.
    async fn receive_loop(
        &self,
        ctx: &SourceContext,
        receiver: usize,
        visibility: Duration,
        order: &Order,
    ) -> Result<(), SourceError> {
        let m = crate::metrics::get();
        let mut acks: JoinSet<()> = JoinSet::new();
        let mut failures = 0u32;
        // Readiness watches this receiver: a long poll must complete within its budget.
        let interval = self.cfg.wait_time.max(Duration::from_secs(1));
        let beat = ctx.health.partition(&ctx.name, &format!("receiver-{receiver}"), interval);
        loop {
            while acks.try_join_next().is_some() {}
            let mut req = self
                .sqs
                .receive_message()
                .queue_url(&self.cfg.queue_url)
                .max_number_of_messages(self.cfg.max_messages)
                .wait_time_seconds(self.cfg.wait_time.as_secs() as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp);
            if let Some(v) = self.cfg.visibility_timeout {
                req = req.visibility_timeout(v.as_secs() as i32);
            }
            let received = async {
                let mut next = order.receive.lock().await;
                let r = req.send().await;
                let ticket = match &r {
                    Ok(out) if !out.messages().is_empty() => {
                        *next += 1;
                        Some(*next - 1)
                    }
                    _ => None,
                };
                (r, ticket)
            };
            let (resp, ticket) = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                r = received => r,
            };
            let messages = match resp {
                Ok(r) => {
                    failures = 0;
                    ctx.health.set_source(&ctx.name, true);
                    beat.polled(interval);
                    crate::panics::test_point("sqs-receiver");
                    r.messages.unwrap_or_default()
                }
                Err(e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    m.source_errors.with_label_values(&[&ctx.name, "receive_message"]).inc();
                    if code.contains("NonExistentQueue") || code == "QueueDoesNotExist" {
                        ctx.health.set_source(&ctx.name, false);
                        return Err(SourceError::Fatal(format!(
                            "queue {} does not exist: {}",
                            self.cfg.queue_url,
                            aws::error_text(&e)
                        )));
                    }
                    failures += 1;
                    if failures >= 3 {
                        ctx.health.set_source(&ctx.name, false);
                    }
                    tracing::warn!(source = %ctx.name, receiver, error = %aws::error_text(&e), "ReceiveMessage failed; backing off");
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff(failures)) => continue,
                    }
                }
            };
            if messages.is_empty() {
                continue;
            }
            let now = now_ms();
            let oldest_sent = messages
                .iter()
                .filter_map(|msg| {
                    msg.attributes()?.get(&MessageSystemAttributeName::SentTimestamp)?.parse::<i64>().ok()
                })
                .min();
            if let Some(sent) = oldest_sent {
                m.sqs_oldest_message_age.with_label_values(&[&ctx.name]).set((now - sent).max(0) as f64 / 1000.0);
            }
            // Until the batch's own settle task takes over, keep every message
            // invisible: S3 reads and waiting for this batch's turn can take
            // longer than a short visibility timeout.
            let received: Vec<String> =
                messages.iter().filter_map(|m| m.receipt_handle().map(str::to_string)).collect();
            let keep = tokio_util::sync::CancellationToken::new();
            let guard = keep.clone().drop_guard();
            acks.spawn(keep_visible(
                self.sqs.clone(),
                self.cfg.queue_url.clone(),
                Arc::clone(&ctx.name),
                received,
                visibility,
                keep,
            ));
            let mut batch = EventBatch::new(Some(now));
            let mut handles: Vec<String> = Vec::new();
            let mut retry = false;
            // Decoding and S3 reads are the batch's work (the long poll is waiting).
            let span = batch_span(&ctx.name, "");
            for msg in &messages {
                // Decoding and S3 reads are not a stalled poll.
                match beat.busy(tracing::Instrument::instrument(self.prepare(ctx, msg, now), span.clone())).await {
                    Prepared::Ok(b) => {
                        batch.append(b);
                        handles.extend(msg.receipt_handle().map(str::to_string));
                    }
                    Prepared::Poison(p) => {
                        let (reason, why) = match p {
                            Poison::Undecodable(w) => ("undecodable", w),
                            Poison::Object(w) => ("object_unreadable", w),
                        };
                        m.sqs_messages_poison.with_label_values(&[&ctx.name, reason]).inc();
                        tracing::warn!(
                            source = %ctx.name,
                            message_id = msg.message_id().unwrap_or_default(),
                            receive_count = receive_count(msg),
                            reason,
                            "poison message left for the queue's redrive policy: {why}"
                        );
                    }
                    Prepared::Retry(why) => {
                        retry = true;
                        m.source_errors.with_label_values(&[&ctx.name, "s3_get_object"]).inc();
                        tracing::warn!(
                            source = %ctx.name,
                            message_id = msg.message_id().unwrap_or_default(),
                            "message left to come back: {why}"
                        );
                    }
                }
            }
            // Our turn: every batch received before this one was handed on.
            let ticket = ticket.unwrap_or_default();
            let mut turn = order.turn.subscribe();
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = turn.wait_for(|t| *t == ticket) => {}
            }
            // A message left to come back returns after a visibility
            // timeout: the watermark waits for it.
            let partitions =
                Partitions { hold_for: retry.then(|| visibility + self.cfg.wait_time), ..Partitions::default() };
            if handles.is_empty() {
                let sent = partitions.hold_for.is_none()
                    || ctx.out.send(SourceBatch::partitions_only(&ctx.name, now, partitions)).await;
                order.turn.send_replace(ticket + 1);
                if !sent {
                    break;
                }
                continue;
            }
            let trace = finish_batch(span, &ctx.name, "", handles.len() as u64, &batch);
            let (tx, rx) = oneshot::channel();
            let sent = beat
                .busy(ctx.out.send(SourceBatch {
                    source: Arc::clone(&ctx.name),
                    events: batch,
                    checkpoint: None,
                    ack: Some(tx),
                    trace,
                    partitions,
                }))
                .await;
            order.turn.send_replace(ticket + 1);
            if !sent {
                break;
            }
            let sqs = self.sqs.clone();
            let url = self.cfg.queue_url.clone();
            let name = Arc::clone(&ctx.name);
            acks.spawn(async move { settle(sqs, url, name, handles, rx, visibility).await });
            drop(guard);
        }
        // Stopped receiving: wait for what is in flight to be committed or dropped.
        while acks.join_next().await.is_some() {}
        Ok(())
    }

    /// Decodes a message body; fetches and decodes the CloudTrail log files it announces.
    async fn prepare(&self, ctx: &SourceContext, msg: &Message, now: i64) -> Prepared {
        let id = msg.message_id().unwrap_or_default();
        let body = msg.body().unwrap_or_default();
        let mut b = EventBatch::new(Some(now));
        b.push_unit(body.as_bytes(), format!("sqs:{}/{id}", queue_name(&self.cfg.queue_url)), &ctx.decode);
        // Events in the body: each in the stream of its own account+region.
        b.set_event_partitions(|json| event_partition(&ctx.name, json));
        let refs = std::mem::take(&mut b.object_refs);
        if b.is_empty() && b.skipped.is_empty() && refs.is_empty() {
            return Prepared::Poison(Poison::Undecodable("empty message".into()));
        }
        if b.events().next().is_none() && b.error_count() > 0 && refs.is_empty() {
            let why = b.errors().next().map(|(e, _)| e.message.clone()).unwrap_or_default();
            return Prepared::Poison(Poison::Undecodable(why));
        }
        for r in refs {
            // Digest files carry hashes, not events: skip them without a GetObject.
            if r.key.contains("/CloudTrail-Digest/") {
                *b.skipped.entry("digest_file").or_default() += 1;
                continue;
            }
            let body = match self.open(&r).await {
                Ok(body) => body,
                Err(FetchError::Permanent(w)) => return Prepared::Poison(Poison::Object(w)),
                Err(FetchError::Transient(w)) => return Prepared::Retry(w),
            };
            // The body is streamed into the decoder (gunzip and parse on the
            // decode pool, off the runtime's threads): memory holds decoded
            // values, not the compressed object too.
            let partition = key_partition(&ctx.name, &r.key).map(Arc::from);
            let (origin, opts) = (format!("s3://{}/{}", r.bucket, r.key), ctx.decode.clone());
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let pump = tokio::spawn(pump(body, tx, r.clone(), self.cfg.max_object_bytes));
            let fault = Arc::new(std::sync::Mutex::new(None));
            let reader = BodyReader { rx, chunk: bytes::Bytes::new(), fault: Arc::clone(&fault) };
            let unit = crate::pipeline::blocking::decode(move || {
                let mut u = EventBatch::new(Some(now));
                u.push_reader_in(reader, origin, partition, &opts);
                u
            })
            .await;
            pump.abort();
            // A failed read ends the unit early: drop what it gave and let the
            // message come back (transient) or become poison (too large).
            match fault.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(FetchError::Permanent(w)) => return Prepared::Poison(Poison::Object(w)),
                Some(FetchError::Transient(w)) => return Prepared::Retry(w),
                None => {}
            }
            match unit {
                Ok(u) => b.append(u),
                Err(e) => return Prepared::Poison(Poison::Undecodable(e)),
            }
        }
        Prepared::Ok(b)
    }

    /// GetObject, with the size checks the headers allow; the body is read by [`pump`].
    async fn open(&self, r: &ObjectRef) -> Result<aws_sdk_s3::primitives::ByteStream, FetchError> {
        if let Some(n) = r.size.filter(|n| *n > self.cfg.max_object_bytes) {
            return Err(too_big(r, n, self.cfg.max_object_bytes));
        }
        let out = self.s3.get_object().bucket(&r.bucket).key(&r.key).send().await.map_err(|e| {
            let text = format!("GetObject s3://{}/{}: {}", r.bucket, r.key, aws::error_text(&e));
            let code = e.code().unwrap_or_default();
            if matches!(code, "NoSuchKey" | "NoSuchBucket" | "AccessDenied" | "InvalidObjectState") {
                FetchError::Permanent(text)
            } else {
                FetchError::Transient(text)
            }
        })?;
        if let Some(n) = out.content_length().map(|n| n.max(0) as u64).filter(|n| *n > self.cfg.max_object_bytes) {
            return Err(too_big(r, n, self.cfg.max_object_bytes));
        }
        Ok(out.body)
    }
}

fn too_big(r: &ObjectRef, n: u64, max: u64) -> FetchError {
    FetchError::Permanent(format!("s3://{}/{} is {n} bytes, over max_object_bytes ({max})", r.bucket, r.key))
}

/// Moves an object's body, chunk by chunk, to the decoder's reader; the size
/// limit holds while reading, whatever Content-Length said. Stops when the
/// reader is gone (the decoder stopped early).
async fn pump(
    mut body: aws_sdk_s3::primitives::ByteStream,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, FetchError>>,
    r: ObjectRef,
    max: u64,
) {
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let item = match chunk {
            Ok(c) if n + c.len() as u64 > max => Err(too_big(&r, n + c.len() as u64, max)),
            Ok(c) => {
                n += c.len() as u64;
                Ok(c)
            }
            Err(e) => Err(FetchError::Transient(format!("reading s3://{}/{}: {e}", r.bucket, r.key))),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// The blocking side of [`pump`]: a `Read` over the chunks. A read fills the
/// caller's buffer as far as the chunks allow, so the decoder's first look
/// sees the gzip magic even if the first chunk were one byte. A failure is
/// kept in `fault` for the caller and ends the stream with an I/O error.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, FetchError>>,
    chunk: bytes::Bytes,
    fault: Arc<std::sync::Mutex<Option<FetchError>>>,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.chunk.is_empty() {
                match self.rx.blocking_recv() {
                    Some(Ok(c)) => self.chunk = c,
                    Some(Err(f)) => {
                        let what = match &f {
                            FetchError::Permanent(w) | FetchError::Transient(w) => w.clone(),
                        };
                        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                        return Err(std::io::Error::other(what));
                    }
                    None => break,
                }
                continue;
            }
            let n = self.chunk.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&self.chunk[..n]);
            bytes::Buf::advance(&mut self.chunk, n);
            filled += n;
        }
        Ok(filled)
    }
}

enum FetchError {
    Permanent(String),
    Transient(String),
}

/// Extends the visibility of `handles` every half timeout until `stop`.
async fn keep_visible(
    sqs: aws_sdk_sqs::Client,
    url: String,
    source: Arc<str>,
    handles: Vec<String>,
    visibility: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = (visibility / 2).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => extend(&sqs, &url, &source, &handles, visibility).await,
        }
    }
}

async fn extend(sqs: &aws_sdk_sqs::Client, url: &str, source: &str, handles: &[String], visibility: Duration) {
    let entries: Vec<_> = handles
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .visibility_timeout(visibility.as_secs().max(1) as i32)
                .build()
                .ok()
        })
        .collect();
    for chunk in entries.chunks(10) {
        let r = sqs.change_message_visibility_batch().queue_url(url).set_entries(Some(chunk.to_vec())).send().await;
        if let Err(e) = r {
            crate::metrics::get().source_errors.with_label_values(&[source, "change_visibility"]).inc();
            tracing::warn!(source = %source, error = %aws::error_text(&e), "cannot extend visibility");
        }
    }
}

/// Waits for a batch's fate: deletes its messages once committed, keeps
/// their visibility extended while it is in flight, leaves them otherwise.
async fn settle(
    sqs: aws_sdk_sqs::Client,
    url: String,
    source: Arc<str>,
    handles: Vec<String>,
    mut rx: oneshot::Receiver<AckStatus>,
    visibility: Duration,
) {
    let m = crate::metrics::get();
    // Extend at half the timeout, so a slow pipeline never lets messages reappear.
    let every = (visibility / 2).max(Duration::from_secs(1));
    let status = loop {
        tokio::select! {
            r = &mut rx => break r.unwrap_or(AckStatus::Dropped),
            _ = tokio::time::sleep(every) => extend(&sqs, &url, &source, &handles, visibility).await,
        }
    };
    if status != AckStatus::Committed {
        return;
    }
    let mut pending: Vec<(usize, &String)> = handles.iter().enumerate().collect();
    for attempt in 0..5u32 {
        let mut failed = Vec::new();
        for chunk in pending.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .filter_map(|(i, h)| {
                    DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(*h).build().ok()
                })
                .collect();
            match sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await {
                Ok(out) => {
                    for f in out.failed() {
                        if let Some(x) = chunk.iter().find(|(i, _)| i.to_string() == f.id()) {
                            failed.push(*x);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %source, error = %aws::error_text(&e), "DeleteMessageBatch failed");
                    failed.extend(chunk.iter().copied());
                }
            }
        }
        if failed.is_empty() {
            return;
        }
        m.source_errors.with_label_values(&[&source, "delete_message"]).inc();
        pending = failed;
        tokio::time::sleep(backoff(attempt + 1)).await;
    }
    // They come back and are processed again; the finding ids make that an upsert.
    tracing::warn!(source = %source, messages = pending.len(), "messages not deleted; they will be received again");
}

fn receive_count(msg: &Message) -> u32 {
    msg.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The watermark partition of a CloudTrail log file: its account and region
/// from the key (`.../<account>/CloudTrail/<region>/<yyyy>/...`), else None
/// (the source's own partition).
fn key_partition(source: &str, key: &str) -> Option<String> {
    let segs: Vec<&str> = key.split('/').collect();
    let i = segs.iter().position(|s| *s == "CloudTrail")?;
    let account = segs.get(i.checked_sub(1)?)?;
    let region = segs.get(i + 1)?;
    let plausible = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !region.is_empty();
    plausible.then(|| format!("{source}/{account}/{region}"))
}

/// The watermark partition of an event from a message body (EventBridge,
/// raw records, SNS-wrapped either way): its own account and region
/// (CloudTrail `recipientAccountId`/`awsRegion`, else EventBridge
/// `account`/`region`), named as [`key_partition`] names the log files of
/// the same account+region; None without both (the source's partition).
fn event_partition(source: &str, json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Where<'a> {
        #[serde(borrow, rename = "recipientAccountId")]
        recipient: Option<&'a str>,
        #[serde(borrow, rename = "awsRegion")]
        aws_region: Option<&'a str>,
        #[serde(borrow)]
        account: Option<&'a str>,
        #[serde(borrow)]
        region: Option<&'a str>,
    }
    let w: Where<'_> = serde_json::from_str(json).ok()?;
    let account = w.recipient.or(w.account).filter(|a| !a.is_empty())?;
    let region = w.aws_region.or(w.region).filter(|r| !r.is_empty())?;
    Some(format!("{source}/{account}/{region}"))
}

/// The queue's name: the last segment of its URL.
fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// After `failures` failed calls in a row: 100 ms doubling to 10 s, equal jitter.
fn backoff(failures: u32) -> Duration {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).equal_jitter(failures)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    /// Decodes chunks through [`BodyReader`] as `prepare` does; returns the unit and the fault.
    fn stream(chunks: Vec<Result<bytes::Bytes, FetchError>>) -> (EventBatch, Option<FetchError>) {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(c).ok().unwrap();
        }
        drop(tx);
        let fault = Arc::new(std::sync::Mutex::new(None));
        let reader = BodyReader { rx, chunk: bytes::Bytes::new(), fault: Arc::clone(&fault) };
        let mut u = EventBatch::new(Some(0));
        u.push_reader_in(reader, "s3://b/k".into(), None, &crate::decode::DecodeOptions::default());
        let f = fault.lock().unwrap().take();
        (u, f)
    }

    const LOG_FILE: &str = r#"{"Records":[{"eventVersion":"1.08","eventID":"a","eventTime":"2026-11-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"},{"eventVersion":"1.08","eventID":"b","eventTime":"2026-11-01T10:00:01Z","eventSource":"s3.amazonaws.com","eventName":"PutObject"}]}"#;

    #[test]
    fn a_streamed_gzip_object_in_one_byte_chunks_decodes_whole() {
        let z = gzip(LOG_FILE);
        let chunks = z.iter().map(|b| Ok(bytes::Bytes::copy_from_slice(&[*b]))).collect();
        let (u, fault) = stream(chunks);
        assert!(fault.is_none());
        assert_eq!(u.events().count(), 2);
        assert_eq!(u.error_count(), 0);
        assert_eq!(u.input_bytes, z.len() as u64);
    }

    #[test]
    fn a_body_cut_by_the_network_is_a_transient_fault_not_a_dead_letter() {
        let z = gzip(LOG_FILE);
        let half = bytes::Bytes::copy_from_slice(&z[..z.len() / 2]);
        let (_, fault) = stream(vec![Ok(half), Err(FetchError::Transient("reset".into()))]);
        assert!(matches!(fault, Some(FetchError::Transient(w)) if w == "reset"));
    }

    #[test]
    fn a_body_over_the_size_limit_is_permanent() {
        let (_, fault) =
            stream(vec![Ok(bytes::Bytes::from_static(b"{\"Records\":[")), Err(FetchError::Permanent("big".into()))]);
        assert!(matches!(fault, Some(FetchError::Permanent(w)) if w == "big"));
    }

    #[tokio::test]
    async fn the_pump_stops_an_object_over_the_limit_whatever_its_headers_said() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let r = ObjectRef { bucket: "b".into(), key: "k".into(), size: None, position: Default::default() };
        pump(aws_sdk_s3::primitives::ByteStream::from(vec![0u8; 100]), tx, r, 10).await;
        assert!(matches!(rx.recv().await, Some(Err(FetchError::Permanent(w))) if w.contains("over max_object_bytes")));
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn partitions_of_body_events() {
        let ct = r#"{"eventTime":"2026-11-01T00:00:00Z","recipientAccountId":"111122223333","awsRegion":"eu-west-1","userIdentity":{"accountId":"999999999999"}}"#;
        assert_eq!(event_partition("q", ct).as_deref(), Some("q/111122223333/eu-west-1"));
        let eb = r#"{"id":"x","account":"444455556666","region":"us-east-1","detail":{"awsRegion":"eu-west-1"}}"#;
        assert_eq!(event_partition("q", eb).as_deref(), Some("q/444455556666/us-east-1"));
        assert_eq!(event_partition("q", r#"{"account":"444455556666"}"#), None);
        assert_eq!(event_partition("q", "not json"), None);
    }

    #[test]
    fn partitions_from_cloudtrail_keys() {
        let org = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1000Z_a.json.gz";
        assert_eq!(key_partition("q", org).as_deref(), Some("q/111122223333/us-east-1"));
        let plain = "p/AWSLogs/444455556666/CloudTrail/eu-west-1/2026/11/01/x.json.gz";
        assert_eq!(key_partition("q", plain).as_deref(), Some("q/444455556666/eu-west-1"));
        assert_eq!(key_partition("q", "logs/other.json.gz"), None);
        assert_eq!(key_partition("q", "CloudTrail/us-east-1/x"), None);
    }
}
