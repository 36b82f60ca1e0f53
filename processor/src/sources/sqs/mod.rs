//! The SQS source: long polling with several receivers; bodies are
//! EventBridge events, SNS notifications, or S3 notifications of new
//! CloudTrail log files (then the object is read from S3). A message is
//! deleted only once committed; poison messages are left for the queue's
//! redrive policy.
//!
//! `receivers` tasks long-poll (ReceiveMessage, up to 10 messages, up to 20 s
//! wait). Each receive becomes one batch with an acknowledgement channel; a
//! task per batch extends the messages' visibility (every half timeout) while
//! the batch is in flight and deletes them (DeleteMessageBatch) once the batch
//! is committed, i.e. once every finding from it was accepted by the sinks. A
//! dropped batch (shutdown before commit) leaves its messages to come back.
//! S3 notifications (direct, SNS-wrapped, or EventBridge "Object Created")
//! are fetched with GetObject and decoded like any CloudTrail log file;
//! digest files are skipped without a GetObject. A message that decodes to
//! nothing but errors, or announces an object that cannot be read (missing,
//! access denied, over `max_object_bytes`), is poison: counted
//! (`trailwatch_sqs_poison_messages_total`), logged, and not deleted, so the
//! queue's redrive policy moves it to its dead-letter queue; transient S3
//! errors leave the message to be retried. `trailwatch_sqs_oldest_message_age_seconds`
//! is the age of the oldest message of the last receive (SQS has no
//! age attribute; CloudWatch's ApproximateAgeOfOldestMessage is the queue-side view).
//!
//! IAM: `sqs:ReceiveMessage`, `sqs:DeleteMessage`, `sqs:ChangeMessageVisibility`,
//! `sqs:GetQueueAttributes` on the queue; `s3:GetObject` on the trail bucket's
//! `AWSLogs/` prefix; `kms:Decrypt` for customer-managed keys.

mod config;
mod source;

pub use config::SqsSourceConfig;
pub use source::SqsSource;
