use std::io::Write;

use super::*;

#[derive(Debug, PartialEq)]
enum Item {
    Ev(EventClass, String, Position),
    Obj(String, String),
    Skip(SkipReason),
    Err(DecodeErrorKind, Position),
}

fn run(input: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    decode(input, "t", &DecodeOptions::default(), &mut |d| out.push(conv(d)));
    // The streaming form must agree with the in-memory one.
    let mut streamed = Vec::new();
    decode_reader(input, "t", &DecodeOptions::default(), &mut |d| streamed.push(conv(d))).unwrap();
    assert_eq!(out, streamed, "decode and decode_reader disagree");
    // Lines split across reads (the reader's buffer) decode the same.
    let mut chunked = Vec::new();
    decode_reader(Chunks(input, 7), "t", &DecodeOptions::default(), &mut |d| chunked.push(conv(d))).unwrap();
    assert_eq!(out, chunked, "decode_reader over short reads disagrees");
    out
}

/// A reader that returns at most N bytes per read.
struct Chunks<'a>(&'a [u8], usize);

impl std::io::Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn conv(d: Decoded<'_>) -> Item {
    match d {
        Decoded::Event(e) => Item::Ev(e.class, e.json.to_string(), e.position),
        Decoded::ObjectRef(o) => Item::Obj(o.bucket, o.key),
        Decoded::Skipped { reason, .. } => Item::Skip(reason),
        Decoded::Error(e) => Item::Err(e.kind, e.position),
    }
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

const CT: &str =
    r#"{"eventVersion":"1.08","eventName":"StopLogging","eventSource":"cloudtrail.amazonaws.com","eventID":"1"}"#;

fn pos(line: u64, record: Option<u64>) -> Position {
    Position { line, byte_offset: 0, record }
}

fn strip_offsets(items: Vec<Item>) -> Vec<Item> {
    items
        .into_iter()
        .map(|i| match i {
            Item::Ev(c, j, p) => Item::Ev(c, j, Position { byte_offset: 0, ..p }),
            Item::Err(k, p) => Item::Err(k, Position { byte_offset: 0, ..p }),
            o => o,
        })
        .collect()
}

#[test]
fn plain_record_and_ndjson_with_a_bad_line() {
    let input = format!("{CT}\n\n{{\"eventVersion\": [}}\n{CT}\n");
    let got = strip_offsets(run(input.as_bytes()));
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Item::Ev(EventClass::CloudTrail, CT.into(), pos(1, None)));
    // The hot path hands a broken record to the engine (which reports it);
    // a line that is not even an object is an error here.
    assert_eq!(got[2], Item::Ev(EventClass::CloudTrail, CT.into(), pos(4, None)));
    let got = strip_offsets(run(format!("{CT}\nnot json\n{CT}\n").as_bytes()));
    assert_eq!(got[1], Item::Err(DecodeErrorKind::UnknownFormat, pos(2, None)));
    let got = strip_offsets(run(format!("{CT}\n{{\"foo\": [1,}}\n{CT}\n").as_bytes()));
    assert_eq!(got[1], Item::Err(DecodeErrorKind::Json, pos(2, None)));
    assert_eq!(got.len(), 3);
}

#[test]
fn gzip_cloudtrail_log_file() {
    let log = format!(r#"{{"Records":[{CT},{CT}]}}"#);
    let got = strip_offsets(run(&gz(log.as_bytes())));
    assert_eq!(
        got,
        vec![
            Item::Ev(EventClass::CloudTrail, CT.into(), pos(1, Some(0))),
            Item::Ev(EventClass::CloudTrail, CT.into(), pos(1, Some(1))),
        ]
    );
}

#[test]
fn pretty_printed_document_and_array() {
    let doc = format!("{{\n  \"Records\": [\n    {CT},\n    {CT}\n  ]\n}}\n");
    let got = strip_offsets(run(doc.as_bytes()));
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[1], Item::Ev(EventClass::CloudTrail, _, p) if p.record == Some(1) && p.line == 1));
    let arr = format!("[\n{CT},\n{CT}\n]");
    assert_eq!(run(arr.as_bytes()).len(), 2);
    // Concatenated multi-line values, a broken one in the middle.
    let cat = "{\n\"eventVersion\": \"1\"\n}\n{\n\"x\": \n}\n{\n\"eventVersion\": \"2\"\n}\n";
    let got = strip_offsets(run(cat.as_bytes()));
    assert!(matches!(got[0], Item::Ev(..)));
    assert!(matches!(got[1], Item::Err(DecodeErrorKind::Json, _)), "{got:?}");
    assert!(matches!(got.last(), Some(Item::Ev(..))), "{got:?}");
}

#[test]
fn eventbridge_cloudtrail_and_ecr() {
    let eb = format!(
        r#"{{"version":"0","id":"e-1","detail-type":"AWS API Call via CloudTrail","source":"aws.ecr","account":"1","time":"t","region":"r","resources":[],"detail":{CT}}}"#
    );
    assert_eq!(strip_offsets(run(eb.as_bytes())), vec![Item::Ev(EventClass::CloudTrail, CT.into(), pos(1, None))]);
    let scan = r#"{"version":"0","id":"e-2","detail-type":"ECR Image Scan","source":"aws.ecr","detail":{"scan-status":"COMPLETE"}}"#;
    assert_eq!(strip_offsets(run(scan.as_bytes())), vec![Item::Ev(EventClass::Ecr, scan.into(), pos(1, None))]);
    let bad = r#"{"detail-type":"ECR Image Scan","source":"aws.ecr"}"#;
    assert!(matches!(run(bad.as_bytes())[0], Item::Err(DecodeErrorKind::Envelope, _)));
    let created = r#"{"version":"0","id":"e-3","detail-type":"Object Created","source":"aws.s3","detail":{"bucket":{"name":"trail"},"object":{"key":"AWSLogs/1/CloudTrail/x.json.gz","size":9}}}"#;
    assert_eq!(run(created.as_bytes()), vec![Item::Obj("trail".into(), "AWSLogs/1/CloudTrail/x.json.gz".into())]);
    let no_key = r#"{"version":"0","id":"e-4","detail-type":"Object Created","source":"aws.s3","detail":{"bucket":{"name":"trail"}}}"#;
    assert!(matches!(run(no_key.as_bytes())[0], Item::Err(DecodeErrorKind::Envelope, _)));
}

#[test]
fn cloudwatch_logs_and_sns() {
    let msg = serde_json::to_string(CT).unwrap();
    let cwl = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{{"id":"1","timestamp":1,"message":{msg}}},{{"id":"2","timestamp":2,"message":"oops"}},{{"id":"3","timestamp":3,"message":{msg}}}]}}"#
    );
    let got = strip_offsets(run(&gz(cwl.as_bytes())));
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Item::Ev(EventClass::CloudTrail, CT.into(), pos(1, Some(0))));
    assert_eq!(got[1], Item::Err(DecodeErrorKind::Envelope, pos(1, Some(1))));
    let ctl = r#"{"messageType":"CONTROL_MESSAGE","logEvents":[]}"#;
    assert_eq!(run(ctl.as_bytes()), vec![Item::Skip(SkipReason::ControlMessage)]);

    let scan = r#"{"version":"0","id":"e","detail-type":"ECR Image Scan","source":"aws.ecr","detail":{}}"#;
    let sns = format!(
        r#"{{"Type":"Notification","MessageId":"m","TopicArn":"arn","Message":{}}}"#,
        serde_json::to_string(scan).unwrap()
    );
    assert_eq!(strip_offsets(run(sns.as_bytes())), vec![Item::Ev(EventClass::Ecr, scan.into(), pos(1, None))]);
    let s3 = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","s3":{"bucket":{"name":"b"},"object":{"key":"AWSLogs/1/CloudTrail/a+b%3Dc.json.gz","size":10}}}]}"#;
    let sns_s3 =
        format!(r#"{{"Type":"Notification","TopicArn":"arn","Message":{}}}"#, serde_json::to_string(s3).unwrap());
    assert_eq!(run(sns_s3.as_bytes()), vec![Item::Obj("b".into(), "AWSLogs/1/CloudTrail/a b=c.json.gz".into())]);
    let notice = r#"{"s3Bucket":"trail-bucket","s3ObjectKey":["k1","k2"]}"#;
    assert_eq!(run(notice.as_bytes()).len(), 2);
    assert_eq!(run(br#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#), vec![Item::Skip(SkipReason::S3TestEvent)]);
    assert_eq!(
        run(br#"{"Type":"SubscriptionConfirmation","TopicArn":"a","Message":"m"}"#),
        vec![Item::Skip(SkipReason::SnsSubscription)]
    );
    assert_eq!(run(br#"{"digestStartTime":"x","logFiles":[]}"#), vec![Item::Skip(SkipReason::DigestFile)]);
}

#[test]
fn nesting_limit_and_unknown_formats() {
    let mut v = CT.to_string();
    for _ in 0..6 {
        v = format!(r#"{{"Type":"Notification","TopicArn":"a","Message":{}}}"#, serde_json::to_string(&v).unwrap());
    }
    assert!(matches!(run(v.as_bytes())[0], Item::Err(DecodeErrorKind::Nesting, _)));
    assert!(matches!(run(b"42")[0], Item::Err(DecodeErrorKind::UnknownFormat, _)));
    assert!(matches!(run(b"{}")[0], Item::Err(DecodeErrorKind::UnknownFormat, _)));
    assert!(matches!(run(b"{\"foo\":1}")[0], Item::Err(DecodeErrorKind::UnknownFormat, _)));
}

#[test]
fn bad_gzip_utf8_and_size_limits() {
    let mut g = gz(format!("{CT}\n{CT}\n").as_bytes());
    g.truncate(g.len() / 2);
    let got = run(&g);
    assert!(got.iter().any(|i| matches!(i, Item::Err(DecodeErrorKind::Gzip, _))), "{got:?}");
    let mut bad = CT.as_bytes().to_vec();
    bad[30] = 0xff;
    let got = run(&[bad.as_slice(), b"\n", CT.as_bytes()].concat());
    assert!(matches!(got[0], Item::Err(DecodeErrorKind::Utf8, _)));
    assert!(matches!(got[1], Item::Ev(..)));
    let opts = DecodeOptions { max_decompressed_bytes: 50, ..DecodeOptions::default() };
    let mut out = Vec::new();
    decode(&gz(format!("{CT}\n").as_bytes()), "t", &opts, &mut |d| out.push(conv(d)));
    assert!(matches!(out[0], Item::Err(DecodeErrorKind::TooLarge, _)));
}

#[test]
fn streamed_plain_input_is_limited_per_value_gzip_in_total() {
    let opts = DecodeOptions { max_decompressed_bytes: CT.len() as u64 + 1, ..DecodeOptions::default() };
    let ndjson = format!("{CT}\n").repeat(20);
    let mut out = Vec::new();
    decode_reader(ndjson.as_bytes(), "t", &opts, &mut |d| out.push(conv(d))).unwrap();
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|i| matches!(i, Item::Ev(..))), "{out:?}");
    // One value over the limit stops the unit with a clear error.
    let long = format!("{CT}\n{}\n", CT.replace("StopLogging", "StopLoggingAndMore"));
    for chunk in [1 << 20, 5] {
        let mut out = Vec::new();
        decode_reader(Chunks(long.as_bytes(), chunk), "t", &opts, &mut |d| out.push(conv(d))).unwrap();
        assert!(matches!(out[0], Item::Ev(..)));
        assert!(matches!(out[1], Item::Err(DecodeErrorKind::TooLarge, Position { line: 2, .. })), "{out:?}");
    }
    let doc = format!("[\n{CT}\n]\n");
    let mut out = Vec::new();
    decode_reader(doc.as_bytes(), "t", &opts, &mut |d| out.push(conv(d))).unwrap();
    assert!(matches!(out[0], Item::Err(DecodeErrorKind::TooLarge, _)), "a document is one value: {out:?}");
    // Gzip counts the whole decompressed unit (gzip bombs).
    let mut out = Vec::new();
    decode_reader(gz(ndjson.as_bytes()).as_slice(), "t", &opts, &mut |d| out.push(conv(d))).unwrap();
    assert!(matches!(out.last(), Some(Item::Err(DecodeErrorKind::TooLarge, _))), "{out:?}");
    assert_eq!(out.iter().filter(|i| matches!(i, Item::Ev(..))).count(), 1);
}

#[test]
fn every_shared_sample_decodes_to_its_class() {
    let root = crate::test_support::shared_or_skip!("sample events").join("samples");
    let mut n = 0;
    for dir in ["ecr", "stratus-detonations"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "jsonl") {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let want = if name.contains("inspector2") {
                EventClass::Inspector2
            } else if name.starts_with("eventbridge_ecr") {
                EventClass::Ecr
            } else {
                EventClass::CloudTrail
            };
            for item in run(&std::fs::read(&p).unwrap()) {
                match item {
                    Item::Ev(c, _, _) => assert_eq!(c, want, "{name}"),
                    other => panic!("{name}: {other:?}"),
                }
                n += 1;
            }
        }
    }
    assert!(n >= 320, "{n}");
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let samples = [
        CT.to_string(),
        format!(r#"{{"Records":[{CT}]}}"#),
        r#"{"Type":"Notification","TopicArn":"a","Message":"{\"Records\":[]}"}"#.to_string(),
        r#"{"detail-type":"ECR Image Scan","source":"aws.ecr","detail":{"a":[1,2]}}"#.to_string(),
    ];
    for i in 0..3000 {
        let mut b = samples[i % samples.len()].clone().into_bytes();
        if i % 3 == 0 {
            b = gz(&b);
        }
        for _ in 0..(next() % 6) {
            if b.is_empty() {
                break;
            }
            let at = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[at] = next() as u8,
                1 => {
                    b.remove(at);
                }
                _ => b.insert(at, b"{}[]\",:\n\\"[(next() % 9) as usize]),
            }
        }
        let mut count = 0;
        decode(&b, "fuzz", &DecodeOptions::default(), &mut |_| count += 1);
        decode_reader(b.as_slice(), "fuzz", &DecodeOptions::default(), &mut |_| count += 1).unwrap();
        decode_reader(Chunks(&b, 3), "fuzz", &DecodeOptions::default(), &mut |_| count += 1).unwrap();
    }
}
