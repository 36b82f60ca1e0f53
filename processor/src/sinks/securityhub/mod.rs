//! The Security Hub sink: BatchImportFindings, batched, rate-limited,
//! retried, spooled to disk when Security Hub is unreachable.
//!
//! - **Never invalid**: every finding is checked with
//!   [`crate::findings::validate`] (required fields, ≤240 KB, ≤32
//!   RelatedRequirements, ProductArn account = AwsAccountId, …) before it
//!   leaves; a finding that fails is logged, counted
//!   (`sink_findings{outcome="failed"}`) and written to the dead-letter file
//!   (`dead_letter`, default `state_dir/securityhub-rejected.ndjson`).
//! - **Batches** of at most `batch_size` (≤100) findings per account and
//!   region, sent when full or `batch_timeout` old, and at every flush.
//! - **Pacing**: per account and region a token bucket
//!   (`requests_per_second`, `burst`; Security Hub documents 10/s, burst 30)
//!   and at most `concurrency` calls in flight.
//! - **Retries**: throttling, 5xx and transport errors are retried up to
//!   `max_retries` times with exponential backoff and full jitter. Findings a
//!   partly failed batch lists in `FailedFindings` are retried when the
//!   error is transient, else dead-lettered; the others are not held back.
//!   A whole call refused as `InvalidInputException` is halved until the
//!   bad finding is isolated.
//! - **Routes**: each account and region is a route with its own spool
//!   queue, so one route never holds back another. A route whose call
//!   fails is *parked* (500 ms doubling up to `park_max`; gauge
//!   `trailwatch_securityhub_routes_parked`); its new batches queue behind
//!   its spooled ones. A call *refused* for good (access denied, a failed
//!   AssumeRole, a region the role may not use: neither transient nor
//!   invalid input) counts towards `max_refused_attempts`; at that many
//!   refusals in a row the route's findings are dead-lettered with the
//!   reason (kind `securityhub_refused`) instead of retried forever, until
//!   the route delivers again.
//! - **Spool**: what still cannot be delivered is written to the route's
//!   on-disk queue (`spool_dir/<account>_<region>`, default
//!   `state_dir/spool/<sink>`, at most `spool_max_bytes` in all) of fsynced
//!   segment files, on blocking threads (never the async runtime's). With
//!   `spool_durable = true` (default: the spool outlives the process and its
//!   host) `flush` succeeds once findings are delivered *or spooled*, so
//!   checkpoints move on; with `false` it fails while findings are spooled,
//!   which holds the checkpoints until they are delivered. A background
//!   task drains each route's queue oldest first when its parking ends
//!   (also after a restart; a spool of an older version, one queue for all
//!   routes, is split into route queues on start). A full spool makes
//!   `flush` fail, which holds the checkpoints and slows the sources down:
//!   nothing is dropped.
//!
//! # Organisations
//!
//! Security Hub takes a finding of the custom-integration product
//! `arn:aws:securityhub:REGION:ACCOUNT:product/ACCOUNT/default` only from the
//! account named in both the ARN and `AwsAccountId`. Two set-ups:
//!
//! - `findings.report_to = "event-account"` + `member_role_name`: findings
//!   belong to the account the event came from; the sink assumes
//!   `arn:aws:iam::<AwsAccountId>:role/<member_role_name>` (with
//!   `external_id` if set) and imports there, one client, rate limiter and
//!   batcher per account and region (the ProductArn's region). The
//!   credentials are cached by the client and refreshed before they expire.
//!   Each member role needs `securityhub:BatchImportFindings` and a trust
//!   policy for the trailwatch task role.
//! - `findings.report_to = "central"`: every finding is reported under
//!   `findings.central_account` with the service's own credentials; the
//!   affected account stays in `Resources` (an `AwsAccount` resource).
//!
//! Without `member_role_name` in event-account mode the service's own
//! credentials are used, which works for findings of that account only.

mod config;
mod convert;
mod limiter;
mod sink;
mod spool;

pub use config::SecurityHubSinkConfig;
pub use sink::SecurityHubSink;
