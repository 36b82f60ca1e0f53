//! Envelope formats: which keys tell them apart and how each unwraps.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use trailwatch_rules::EventClass;

use super::{DecodeErrorKind, Decoded, Decoder, Event, EventBridgeMeta, Position, SkipReason, Via};

/// An S3 object to fetch: a new CloudTrail log file announced by an S3 event
/// notification or by CloudTrail's own SNS delivery notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// URL-decoded object key.
    pub key: String,
    pub size: Option<u64>,
    pub position: Position,
}

/// The first key of a JSON object, when it has no escapes (the common case).
pub(super) fn first_key(text: &str) -> Option<&str> {
    let t = text.trim_start().strip_prefix('{')?.trim_start();
    let t = t.strip_prefix('"')?;
    let end = t.find(['"', '\\'])?;
    (t.as_bytes()[end] == b'"').then(|| &t[..end])
}

/// Keys that only CloudTrail records start with.
pub(super) fn is_cloudtrail_key(k: &str) -> bool {
    matches!(
        k,
        "eventVersion"
            | "eventTime"
            | "eventSource"
            | "eventName"
            | "userIdentity"
            | "awsRegion"
            | "eventID"
            | "eventType"
    )
}

/// Every key that identifies a format; all else is skipped by serde.
#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(rename = "detail-type", borrow)]
    detail_type: Option<&'a RawValue>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    account: Option<&'a RawValue>,
    #[serde(borrow)]
    region: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(rename = "Type", borrow)]
    sns_type: Option<&'a RawValue>,
    #[serde(rename = "Message", borrow)]
    sns_message: Option<&'a RawValue>,
    #[serde(rename = "TopicArn", borrow)]
    topic_arn: Option<&'a RawValue>,
    #[serde(rename = "messageType", borrow)]
    message_type: Option<&'a RawValue>,
    #[serde(rename = "logEvents", borrow)]
    log_events: Option<Vec<&'a RawValue>>,
    #[serde(rename = "eventVersion", borrow)]
    event_version: Option<&'a RawValue>,
    #[serde(rename = "eventName", borrow)]
    event_name: Option<&'a RawValue>,
    #[serde(rename = "eventSource", borrow)]
    event_source: Option<&'a RawValue>,
    #[serde(rename = "digestStartTime", borrow)]
    digest_start: Option<&'a RawValue>,
    #[serde(rename = "s3Bucket", borrow)]
    s3_bucket: Option<&'a RawValue>,
    #[serde(rename = "s3ObjectKey", borrow)]
    s3_object_key: Option<&'a RawValue>,
    #[serde(rename = "Event", borrow)]
    s3_event: Option<&'a RawValue>,
}

/// A string value, unescaped only when needed.
fn text<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw?.get()).ok()
}

#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    size: Option<u64>,
}

/// Unwraps one parsed envelope.
pub(super) fn dispatch(d: &mut Decoder<'_, '_>, env: Envelope<'_>, whole: &str, pos: Position, via: Via, depth: u8) {
    // CloudTrail log file, or S3 event notification.
    if let Some(records) = env.records {
        // An empty log file is accounted for, not silently nothing.
        if records.is_empty() {
            return (d.out)(Decoded::Skipped { reason: SkipReason::Empty, position: pos });
        }
        let via = Via { log_file: true, ..via };
        for (i, raw) in records.into_iter().enumerate() {
            let p = Position { record: Some(i as u64), ..pos.clone() };
            let rec = raw.get();
            if !rec.trim_start().starts_with('{') {
                d.error(p, DecodeErrorKind::Envelope, "a Records element is not an object".into());
                continue;
            }
            if rec.contains("\"aws:s3\"") {
                match serde_json::from_str::<S3Record>(rec) {
                    Ok(S3Record { event_source: Some(src), s3: Some(s3) }) if src == "aws:s3" => {
                        (d.out)(Decoded::ObjectRef(ObjectRef {
                            bucket: s3.bucket.name,
                            key: url_decode(&s3.object.key),
                            size: s3.object.size,
                            position: p,
                        }));
                        continue;
                    }
                    _ => {}
                }
            }
            (d.out)(Decoded::Event(Event {
                json: rec,
                class: EventClass::CloudTrail,
                position: p,
                via,
                eventbridge: None,
            }));
        }
        return;
    }
    // EventBridge.
    if let Some(dt) = text(env.detail_type) {
        let source = text(env.source).unwrap_or(Cow::Borrowed(""));
        let meta = EventBridgeMeta {
            id: text(env.id).unwrap_or(Cow::Borrowed("")),
            detail_type: dt.clone(),
            source: source.clone(),
            account: text(env.account),
            region: text(env.region),
            time: text(env.time),
        };
        let via = Via { eventbridge: true, ..via };
        if dt.ends_with("via CloudTrail") {
            match env.detail {
                Some(detail) if detail.get().trim_start().starts_with('{') => {
                    (d.out)(Decoded::Event(Event {
                        json: detail.get(),
                        class: EventClass::CloudTrail,
                        position: pos,
                        via,
                        eventbridge: Some(meta),
                    }));
                }
                _ => {
                    d.error(pos, DecodeErrorKind::Envelope, format!("EventBridge event `{dt}` has no `detail` object"))
                }
            }
            return;
        }
        if env.detail.is_none() {
            return d.error(pos, DecodeErrorKind::Envelope, format!("EventBridge event `{dt}` has no `detail`"));
        }
        // S3 "Object Created" through EventBridge (a bucket with EventBridge
        // notifications on): a new CloudTrail log file to fetch, like an S3
        // event notification.
        if dt == "Object Created" && source == "aws.s3" {
            #[derive(Deserialize)]
            struct Detail {
                bucket: Option<Named>,
                object: Option<Obj>,
            }
            #[derive(Deserialize)]
            struct Named {
                name: String,
            }
            #[derive(Deserialize)]
            struct Obj {
                key: String,
                size: Option<u64>,
            }
            let detail = env.detail.and_then(|r| serde_json::from_str::<Detail>(r.get()).ok());
            return match detail {
                Some(Detail { bucket: Some(b), object: Some(o) }) => {
                    (d.out)(Decoded::ObjectRef(ObjectRef { bucket: b.name, key: o.key, size: o.size, position: pos }))
                }
                _ => d.error(pos, DecodeErrorKind::Envelope, "S3 `Object Created` event without bucket and key".into()),
            };
        }
        let class = EventClass::from_eventbridge_source(&source);
        (d.out)(Decoded::Event(Event { json: whole, class, position: pos, via, eventbridge: Some(meta) }));
        return;
    }
    // SNS notification.
    if let (Some(t), true) = (text(env.sns_type), env.sns_message.is_some() || env.topic_arn.is_some()) {
        match t.as_ref() {
            "Notification" => match text(env.sns_message) {
                Some(m) => {
                    let via = Via { sns: true, ..via };
                    d.value(&m, pos, via, depth + 1);
                }
                None => d.error(pos, DecodeErrorKind::Envelope, "SNS notification without a string `Message`".into()),
            },
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                (d.out)(Decoded::Skipped { reason: SkipReason::SnsSubscription, position: pos })
            }
            other => d.error(pos, DecodeErrorKind::Envelope, format!("unknown SNS message type `{other}`")),
        }
        return;
    }
    // CloudWatch Logs subscription.
    if let Some(mt) = text(env.message_type) {
        if mt == "CONTROL_MESSAGE" {
            return (d.out)(Decoded::Skipped { reason: SkipReason::ControlMessage, position: pos });
        }
        let Some(events) = env.log_events else {
            return d.error(pos, DecodeErrorKind::Envelope, "CloudWatch Logs payload without `logEvents`".into());
        };
        if events.is_empty() {
            return (d.out)(Decoded::Skipped { reason: SkipReason::Empty, position: pos });
        }
        let via = Via { cloudwatch_logs: true, ..via };
        for (i, raw) in events.into_iter().enumerate() {
            let p = Position { record: Some(i as u64), ..pos.clone() };
            match serde_json::from_str::<LogEvent<'_>>(raw.get()) {
                Ok(LogEvent { message: Some(m) }) => {
                    if m.trim_start().starts_with('{') {
                        d.value(&m, p, via, depth + 1);
                    } else {
                        d.error(p, DecodeErrorKind::Envelope, "log event message is not a JSON object".into());
                    }
                }
                _ => d.error(p, DecodeErrorKind::Envelope, "log event without a string `message`".into()),
            }
        }
        return;
    }
    if env.digest_start.is_some() {
        return (d.out)(Decoded::Skipped { reason: SkipReason::DigestFile, position: pos });
    }
    if text(env.s3_event).is_some_and(|e| e == "s3:TestEvent") {
        return (d.out)(Decoded::Skipped { reason: SkipReason::S3TestEvent, position: pos });
    }
    if let Some(bucket) = text(env.s3_bucket) {
        let keys: Vec<String> = env.s3_object_key.and_then(|k| serde_json::from_str(k.get()).ok()).unwrap_or_default();
        if keys.is_empty() {
            return d.error(pos, DecodeErrorKind::Envelope, "CloudTrail notification without `s3ObjectKey`".into());
        }
        for (i, key) in keys.into_iter().enumerate() {
            (d.out)(Decoded::ObjectRef(ObjectRef {
                bucket: bucket.to_string(),
                key,
                size: None,
                position: Position { record: Some(i as u64), ..pos.clone() },
            }));
        }
        return;
    }
    // A CloudTrail record whose first key was not a telling one.
    if env.event_version.is_some() || (env.event_name.is_some() && env.event_source.is_some()) {
        return (d.out)(Decoded::Event(Event {
            json: whole,
            class: EventClass::CloudTrail,
            position: pos,
            via,
            eventbridge: None,
        }));
    }
    d.error(
        pos,
        DecodeErrorKind::UnknownFormat,
        "no known event format (CloudTrail, EventBridge, SNS, CloudWatch Logs, S3 notification)".into(),
    )
}

/// S3 notification keys are URL-encoded with `+` for spaces.
pub(super) fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
