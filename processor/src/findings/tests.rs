use std::path::Path;

use serde_json::Value;
use time::macros::datetime;

use super::*;

fn rule(level: Level, tags: &[&str]) -> RuleMeta {
    let mut custom = BTreeMap::new();
    custom.insert(
        "remediation".into(),
        serde_json::json!({"text": "Turn it back on.", "url": "https://docs.aws.amazon.com/x"}),
    );
    RuleMeta {
        id: "11111111-2222-3333-4444-555555555555".into(),
        name: None,
        title: "CloudTrail logging stopped".into(),
        description: Some("Someone stopped a trail.".into()),
        level,
        status: Some("stable".into()),
        author: None,
        date: None,
        modified: None,
        tags: tags.iter().map(|s| s.to_string()).collect(),
        references: vec!["https://example.com/ref".into()],
        falsepositives: vec![],
        custom,
        source: "builtin:t.yml".into(),
        line: 1,
    }
}

fn samples(rel: &str) -> Vec<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples").join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("shared sample {} missing: {e}", p.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn build(rule: &RuleMeta, class: EventClass, ev: &Value, ctx: &FindingContext) -> AsffFinding {
    let id = ev.get("eventID").or_else(|| ev.get("id")).and_then(Value::as_str).map(str::to_string);
    build_finding(
        &FindingInput {
            rule,
            class,
            event: ev,
            event_ids: id.into_iter().collect(),
            correlation: None,
            now: datetime!(2026-01-01 0:00 UTC),
        },
        ctx,
    )
}

#[test]
fn every_sample_gives_a_valid_finding() {
    crate::test_support::shared_or_skip!("sample events");
    let r = rule(Level::High, &["attack.defense-evasion", "nist_csf.de.cm-7"]);
    let ctx = FindingContext::default();
    let mut n = 0;
    for (file, class) in [
        ("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl", EventClass::CloudTrail),
        ("stratus-detonations/aws.persistence.iam-backdoor-role.jsonl", EventClass::CloudTrail),
        ("ecr/cloudtrail_ecr_api_examples.jsonl", EventClass::CloudTrail),
        ("ecr/eventbridge_ecr_image_scan_basic.jsonl", EventClass::Ecr),
        ("ecr/eventbridge_inspector2_finding_ecr.jsonl", EventClass::Inspector2),
    ] {
        for ev in samples(file) {
            let f = build(&r, class, &ev, &ctx);
            if let Err(v) = validate(&f) {
                panic!("{file}: {v:?}");
            }
            n += 1;
        }
    }
    assert!(n >= 10);
}

#[test]
fn ids_are_deterministic() {
    crate::test_support::shared_or_skip!("sample events");
    let r = rule(Level::High, &[]);
    let ctx = FindingContext::default();
    let evs = samples("stratus-detonations/aws.credential-access.secretsmanager-retrieve-secrets.jsonl");
    let a = build(&r, EventClass::CloudTrail, &evs[0], &ctx);
    let b = build(&r, EventClass::CloudTrail, &evs[0], &ctx);
    assert_eq!(a, b);
    let c = build(&r, EventClass::CloudTrail, &evs[1], &ctx);
    assert_ne!(a.id, c.id);
    let mut r2 = r.clone();
    r2.id = "other".into();
    assert_ne!(a.id, build(&r2, EventClass::CloudTrail, &evs[0], &ctx).id);
    // Pinned: a changed id scheme would make every replay duplicate findings
    // already in Security Hub instead of updating them.
    assert_eq!(finding_id("r", "e"), "trailwatch/r/7a8d860a5a26126bae17587ee69aec2e");
    assert_ne!(finding_id("r", "e1"), finding_id("r1", "e"));
}

#[test]
fn cloudtrail_finding_content() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    let r = rule(Level::High, &["attack.defense-evasion", "attack.t1562.008", "nist_csf.de.cm-7", "nist_csf.pr.pt-1"]);
    let f = build(&r, EventClass::CloudTrail, ev, &FindingContext::default());
    assert_eq!(f.aws_account_id, "143434273843");
    // Imported in the import region (findings.region), not the event's
    // (here an anonymised, non-existent one); the event's region is kept.
    assert_eq!(f.product_arn, "arn:aws:securityhub:us-east-1:143434273843:product/143434273843/default");
    assert_eq!(f.product_fields["trailwatch/EventRegion"], "apiso-centralnorth-2r");
    assert_eq!(f.severity.label, "HIGH");
    assert_eq!(f.types, vec!["TTPs/Defense Evasion"]);
    assert_eq!(f.finding_provider_fields.types, f.types);
    assert_eq!(f.compliance.as_ref().unwrap().related_requirements, vec!["NIST CSF DE.CM-7", "NIST CSF PR.PT-1"]);
    assert_eq!(f.remediation.as_ref().unwrap().recommendation.text, "Turn it back on.");
    assert_eq!(f.created_at, "2024-07-31T13:06:24Z");
    assert_eq!(f.updated_at, "2026-01-01T00:00:00Z");
    assert!(f.resources.iter().any(|r| r.kind == "AwsIamUser" && r.id == "arn:aws:iam::143434273843:user/christophe"));
    assert!(f.resources.iter().any(|r| r.kind == "AwsAccount" && r.id == "AWS::::Account:143434273843"));
    let act = &f.action.as_ref().unwrap().aws_api_call_action;
    assert_eq!(act.api, "StopLogging");
    assert_eq!(act.remote_ip_details.as_ref().unwrap().ip_address_v4, "86.245.153.234");
    assert_eq!(f.product_fields["trailwatch/EventIds"], "10163ed2-2253-469d-a5ee-cbc6651f8934");
}

#[test]
fn severity_levels_and_scan_severity() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    for (l, label, n) in [
        (Level::Informational, "INFORMATIONAL", 0),
        (Level::Low, "LOW", 30),
        (Level::Medium, "MEDIUM", 50),
        (Level::High, "HIGH", 70),
        (Level::Critical, "CRITICAL", 90),
    ] {
        let f = build(&rule(l, &[]), EventClass::CloudTrail, ev, &FindingContext::default());
        assert_eq!((f.severity.label.as_str(), f.severity.normalized), (label, n));
    }
    // A scan with criticals raises an informational rule to CRITICAL.
    let scan = &samples("ecr/eventbridge_ecr_image_scan_basic.jsonl")[0];
    let f = build(&rule(Level::Informational, &[]), EventClass::Ecr, scan, &FindingContext::default());
    assert_eq!(f.severity.label, "CRITICAL");
    assert_eq!(f.types, vec!["Software and Configuration Checks/Vulnerabilities/CVE"]);
    assert!(f.resources.iter().any(|r| r.kind == "AwsEcrContainerImage"));
}

#[test]
fn assumed_role_resource_and_ecr_repository() {
    assert_eq!(
        resources::role_arn_of_assumed("arn:aws:sts::123456789012:assumed-role/ci-deployer/run-42").unwrap(),
        "arn:aws:iam::123456789012:role/ci-deployer"
    );
    let ev: Value = serde_json::json!({
        "eventVersion": "1.08", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "ecr.amazonaws.com",
        "eventName": "GetDownloadUrlForLayer", "awsRegion": "eu-west-1", "recipientAccountId": "123456789012",
        "eventID": "x", "sourceIPAddress": "ecs.amazonaws.com",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/ci-deployer/run-42"},
        "requestParameters": {"repositoryName": "app/web", "layerDigest": "sha256:ab"}
    });
    let f = build(&rule(Level::Medium, &[]), EventClass::CloudTrail, &ev, &FindingContext::default());
    assert!(validate(&f).is_ok());
    let kinds: Vec<&str> = f.resources.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, vec!["AwsEcrContainerImage", "AwsEcrRepository", "AwsIamRole", "AwsAccount"]);
    assert_eq!(f.resources[1].id, "arn:aws:ecr:eu-west-1:123456789012:repository/app/web");
    assert_eq!(f.resources[2].id, "arn:aws:iam::123456789012:role/ci-deployer");
    let act = &f.action.as_ref().unwrap().aws_api_call_action;
    assert_eq!(act.caller_type, "domain");
    assert_eq!(act.domain_details.as_ref().unwrap().domain, "ecs.amazonaws.com");
}

#[test]
fn central_reporting_keeps_the_affected_account() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    let ctx =
        FindingContext { report_to: ReportTo::Central { account: "999999999999".into() }, ..FindingContext::default() };
    let f = build(&rule(Level::High, &[]), EventClass::CloudTrail, ev, &ctx);
    assert_eq!(f.aws_account_id, "999999999999");
    assert!(f.product_arn.contains(":999999999999:product/999999999999/default"));
    assert!(f.resources.iter().any(|r| r.id == "AWS::::Account:143434273843"));
    assert_eq!(f.product_fields["trailwatch/AffectedAccount"], "143434273843");
    assert!(validate(&f).is_ok());
}

#[test]
fn validation_names_each_violation() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    let mut f = build(&rule(Level::High, &[]), EventClass::CloudTrail, ev, &FindingContext::default());
    f.schema_version = "1".into();
    f.aws_account_id = "12".into();
    f.types = vec!["Bogus/Thing".into()];
    f.title = String::new();
    f.resources.clear();
    f.severity.label = "SEVERE".into();
    f.created_at = "yesterday".into();
    f.compliance = Some(Compliance { status: "FAILED".into(), related_requirements: vec!["x".into(); 33] });
    let v = validate(&f).unwrap_err();
    let fields: Vec<&str> = v.iter().map(|x| x.field).collect();
    for want in [
        "SchemaVersion",
        "AwsAccountId",
        "ProductArn",
        "Types",
        "Title",
        "Resources",
        "Severity.Label",
        "CreatedAt",
        "Compliance.RelatedRequirements",
    ] {
        assert!(fields.contains(&want), "{want} not reported: {v:?}");
    }
}

#[test]
fn long_text_is_clipped_and_huge_findings_shrink() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    let mut r = rule(Level::High, &[]);
    r.description = Some("x".repeat(5000));
    r.title = "t".repeat(400);
    let tags: Vec<String> = (0..40).map(|i| format!("nist_csf.de.cm-{i}")).collect();
    r.tags = tags;
    let f = build(&r, EventClass::CloudTrail, ev, &FindingContext::default());
    assert_eq!(f.description.len(), 1024);
    assert!(f.description.ends_with('…'));
    assert_eq!(f.compliance.as_ref().unwrap().related_requirements.len(), 32);
    assert!(validate(&f).is_ok());
    let mut big = f.clone();
    for i in 0..200 {
        big.product_fields.insert(format!("k{i}"), "v".repeat(2000));
    }
    big.product_fields.retain(|k, _| k.len() < 5 || k.starts_with("trail"));
    let mut huge = build(&r, EventClass::CloudTrail, ev, &FindingContext::default());
    for res in &mut huge.resources {
        res.details = Some(serde_json::json!({"blob": "y".repeat(150_000)}));
    }
    assert!(validate(&huge).is_err());
    shrink_to_fit(&mut huge);
    assert!(validate(&huge).is_ok());
}

#[test]
fn correlation_findings_use_the_dedup_key() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl")[0];
    let r = rule(Level::High, &[]);
    let corr = |count| CorrelationSummary {
        count,
        window_start: datetime!(2024-07-31 13:00 UTC),
        window_end: datetime!(2024-07-31 13:05 UTC),
        group: vec![("userIdentity.arn".into(), "arn:aws:iam::1:user/x".into())],
        sample_event_ids: vec!["a".into(), "b".into()],
        dedup_key: "k1".into(),
    };
    let mk = |c| {
        build_finding(
            &FindingInput {
                rule: &r,
                class: EventClass::CloudTrail,
                event: ev,
                event_ids: vec![],
                correlation: Some(c),
                now: datetime!(2026-01-01 0:00 UTC),
            },
            &FindingContext::default(),
        )
    };
    let a = mk(corr(12));
    let b = mk(corr(30));
    assert_eq!(a.id, b.id, "an update keeps the Id");
    assert_eq!(b.product_fields["trailwatch/Count"], "30");
    assert_eq!(a.product_fields["trailwatch/WindowStart"], "2024-07-31T13:00:00Z");
    assert_eq!(a.product_fields["trailwatch/EventIds"], "a,b");
    assert_eq!(a.first_observed_at, "2024-07-31T13:00:00Z");
    assert!(validate(&a).is_ok());
}

/// Every event of `../shared/samples` and `examples/events`, with its class.
fn all_sample_events() -> Vec<(EventClass, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["../shared/samples/stratus-detonations", "../shared/samples/ecr", "examples/events"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "jsonl" || x == "ndjson") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let class = match (v.get("detail-type").and_then(Value::as_str), v.get("source").and_then(Value::as_str)) {
                (Some("ECR Image Scan"), _) | (_, Some("aws.ecr")) => EventClass::Ecr,
                (_, Some("aws.inspector2")) => EventClass::Inspector2,
                (Some(_), _) => EventClass::EventBridge,
                _ => EventClass::CloudTrail,
            };
            out.push((class, v));
        }
    }
    out
}

#[test]
fn pruned_event_gives_the_same_finding() {
    crate::test_support::shared_or_skip!("sample events");
    let r = rule(Level::Medium, &["attack.persistence", "nist_csf.de.cm-7"]);
    let mut events = all_sample_events();
    assert!(events.len() > 300, "{}", events.len());
    // Shapes the samples lack: wrong types on kept paths, duplicate and
    // escaped keys, deep nesting under skipped keys.
    for extra in [
        r#"{"eventID":"e1","eventTime":"2026-01-01T00:00:00Z","userIdentity":"x","requestParameters":[1,{"repositoryName":"r"}],"responseElements":{"taskDefinition":"td"}}"#,
        r#"{"eventID":"e2","recipientAccountId":"111111111111","recipientAccountId":"222222222222","requestParameters":{"repositoryName":"a","repositoryName":"b","imageIds":[{"imageDigest":"sha256:1"}],"deep":{"x":[[[{}]]]}}}"#,
        r#"{"eventID":"e3","user\u0049dentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/\u00e9"},"sourceIPAddress":"2001:db8::1","awsRegion":null}"#,
    ] {
        events.push((EventClass::CloudTrail, serde_json::from_str(extra).unwrap()));
    }
    for ctx in [
        FindingContext::default(),
        FindingContext { report_to: ReportTo::Central { account: "999999999999".into() }, ..FindingContext::default() },
    ] {
        for (class, ev) in &events {
            let text = ev.to_string();
            let pruned = parse_event(&text).unwrap();
            // The ids come from the engine, not from the parsed event.
            let ids: Vec<String> = ev
                .get("eventID")
                .or_else(|| ev.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .into_iter()
                .collect();
            let line = |event: &Value| {
                let input = FindingInput {
                    rule: &r,
                    class: *class,
                    event,
                    event_ids: ids.clone(),
                    correlation: None,
                    now: datetime!(2026-01-01 0:00 UTC),
                };
                build_finding_line(&input, &ctx).1
            };
            assert_eq!(line(&pruned), line(ev), "{text}");
        }
    }
}

#[test]
fn the_json_line_is_the_serialised_finding() {
    crate::test_support::shared_or_skip!("sample events");
    let r = rule(Level::High, &["attack.defense-evasion"]);
    for (class, ev) in all_sample_events().iter().take(50) {
        let input = FindingInput {
            rule: &r,
            class: *class,
            event: ev,
            event_ids: vec!["id-1".into()],
            correlation: None,
            now: datetime!(2026-01-01 0:00 UTC),
        };
        let (f, line) = build_finding_line(&input, &FindingContext::default());
        assert_eq!(line, serde_json::to_string(&f).unwrap());
    }
}

#[test]
fn hand_written_json_is_serde_json() {
    crate::test_support::shared_or_skip!("sample events");
    let ev = &samples("ecr/cloudtrail_ecr_api_examples.jsonl")[0];
    let base = build(&rule(Level::High, &["nist_csf.de.cm-7"]), EventClass::CloudTrail, ev, &FindingContext::default());
    let same = |f: &AsffFinding| assert_eq!(f.to_json_line(), serde_json::to_string(f).unwrap());
    same(&base);
    // Every optional part absent.
    let mut bare = base.clone();
    bare.remediation = None;
    bare.source_url = None;
    bare.compliance = None;
    bare.action = None;
    bare.region = None;
    bare.severity.original = None;
    bare.finding_provider_fields.severity.original = None;
    bare.product_fields.clear();
    bare.types.clear();
    for r in &mut bare.resources {
        r.region = None;
        r.details = None;
    }
    same(&bare);
    bare.resources.clear();
    same(&bare);
    // Strings that need escapes, at every length around the 16-byte chunks.
    let mut odd = base.clone();
    for (i, s) in
        ["a\"b", "back\\slash", "tab\there", "\u{1}\u{1f}", "é ü 漢字 🙂", "</script>", "\u{7f}"].iter().enumerate()
    {
        for pad in [0, 5, 15, 16, 17, 31, 40] {
            let v = format!("{}{s}", "x".repeat(pad));
            odd.title = v.clone();
            odd.id = v.clone();
            odd.types = vec![v.clone(), "TTPs".into()];
            odd.product_fields.insert(format!("k{i}{v}"), v.clone());
            if let Some(a) = odd.action.as_mut() {
                a.aws_api_call_action.domain_details = Some(DomainDetails { domain: v.clone() });
                a.aws_api_call_action.remote_ip_details = None;
            }
            odd.resources[0].details = Some(serde_json::json!({"K": v, "N": [1, 2.5, null, true]}));
            same(&odd);
        }
    }
}

#[test]
fn inspector_updates_of_one_finding_share_the_id() {
    crate::test_support::shared_or_skip!("sample events");
    let r = rule(Level::High, &[]);
    let ctx = FindingContext::default();
    let ev = samples("ecr/eventbridge_inspector2_finding_ecr.jsonl").remove(0);
    let mut update = ev.clone();
    update["id"] = Value::String("another-eventbridge-id".into());
    update["time"] = Value::String("2021-12-04T18:02:30Z".into());
    update["detail"]["severity"] = Value::String("CRITICAL".into());
    let (a, b) = (build(&r, EventClass::Inspector2, &ev, &ctx), build(&r, EventClass::Inspector2, &update, &ctx));
    assert_eq!(a.id, b.id, "same Inspector finding, new event");
    // The update carries Inspector's new severity.
    assert_eq!(b.severity.label, "CRITICAL");
    let mut other = ev.clone();
    other["detail"]["findingArn"] = Value::String("arn:aws:inspector2:us-east-2:123456789012:finding/other".into());
    assert_ne!(a.id, build(&r, EventClass::Inspector2, &other, &ctx).id);
}

/// Issue 15: `clip` counted characters while validation counts bytes, so
/// non-ASCII text clipped to N characters was still over N bytes and the
/// finding failed validation (and was lost). Clipping is by bytes now, at
/// character boundaries.
#[test]
fn non_ascii_text_is_clipped_to_the_byte_limit_not_lost() {
    let ev = serde_json::json!({"eventVersion": "1.08", "eventID": "e-utf8", "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com", "eventName": "ListUsers", "awsRegion": "us-east-1",
        "recipientAccountId": "111122223333", "sourceIPAddress": "198.51.100.1",
        "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{}", "ü".repeat(1500)),
            "accountId": "111122223333"}});
    let mut r = rule(Level::High, &[]);
    r.description = Some("é".repeat(1100));
    r.title = "é".repeat(1100);
    let f = build(&r, EventClass::CloudTrail, &ev, &FindingContext::default());
    assert!(validate(&f).is_ok(), "{:?}", validate(&f));
    assert!(f.description.len() <= validate::MAX_DESCRIPTION, "{} bytes", f.description.len());
    assert!(f.description.starts_with("éé") && f.description.ends_with('…'));
    assert_eq!(f.description.trim_end_matches('…').chars().filter(|c| *c != 'é').count(), 0, "cut between characters");
    assert!(f.title.len() <= validate::MAX_TITLE);
    // 1100 × 'é' is 2200 bytes: over the 2048-byte ProductFields value limit.
    let t = &f.product_fields["trailwatch/RuleTitle"];
    assert!(t.len() <= 2048 && t.ends_with('…'), "{}", t.len());
    assert!(f.product_fields["aws/cloudtrail/UserIdentityArn"].len() <= 2048);
    for s in ["aé", "€€€€", "x𝄞y"] {
        for max in 3..=12 {
            let c = clip(s, max);
            assert!(c.len() <= max.max(3), "{s:?} {max}: {c:?}");
        }
    }
    assert_eq!(clip("abc", 3), "abc");
}

/// Issue 15: a finding is imported in the region the deployment allows
/// (`findings.region`), whatever region the event came from; the event's
/// region stays visible in the resources and ProductFields.
#[test]
fn a_finding_from_another_region_is_imported_in_the_import_region() {
    let ev = serde_json::json!({"eventVersion": "1.08", "eventID": "e-eu", "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com", "eventName": "ListUsers", "awsRegion": "eu-west-1",
        "recipientAccountId": "111122223333", "sourceIPAddress": "198.51.100.1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/u", "accountId": "111122223333"}});
    let r = rule(Level::High, &[]);
    let ctx = FindingContext { product_region: "us-east-1".into(), ..FindingContext::default() };
    let f = build(&r, EventClass::CloudTrail, &ev, &ctx);
    assert_eq!(f.product_arn, "arn:aws:securityhub:us-east-1:111122223333:product/111122223333/default");
    assert_eq!(f.region.as_deref(), Some("us-east-1"));
    assert_eq!(f.product_fields["trailwatch/EventRegion"], "eu-west-1");
    assert!(f.resources.iter().any(|r| r.region.as_deref() == Some("eu-west-1")), "{:?}", f.resources);
    assert!(f.resources.iter().all(|r| r.region.as_deref() != Some("us-east-1")), "{:?}", f.resources);
    // An allowed import region keeps its own findings.
    let ctx = FindingContext { import_regions: vec!["eu-west-1".into()], ..ctx };
    let f2 = build(&r, EventClass::CloudTrail, &ev, &ctx);
    assert_eq!(f2.product_arn, "arn:aws:securityhub:eu-west-1:111122223333:product/111122223333/default");
    assert_eq!(f2.region.as_deref(), Some("eu-west-1"));
    assert_eq!(f.id, f2.id, "the Id does not depend on the import region");
}
