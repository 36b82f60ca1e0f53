//! The SQS source: long polling with several receivers; bodies are
//! EventBridge events, SNS notifications, or S3 notifications of new
//! CloudTrail log files (then the object is read from S3). A message is
//! deleted only once committed; poison messages are left for the queue's
//! redrive policy.

mod config;
mod source;

pub use config::SqsSourceConfig;
pub use source::SqsSource;
