//! Sigma semantics, one behaviour per test: each builds a rule, then checks
//! which events match.

use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

fn rule_text(id: &str, detection: &str) -> String {
    format!("title: t\nid: {id}\nlogsource:\n  product: aws\n  service: cloudtrail\ndetection:\n{detection}\n")
}

fn set_with(detection: &str, opts: &CompileOptions) -> RuleSet {
    let files = [RuleFile { name: "t.yml".into(), text: rule_text("r1", detection) }];
    RuleSet::load(&files, opts).unwrap_or_else(|e| panic!("{e}")).0
}

fn matches(set: &RuleSet, event: &str) -> bool {
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    set.eval(EventClass::CloudTrail, event, &mut scratch, &mut out).unwrap();
    !out.is_empty()
}

fn check(detection: &str, yes: &[&str], no: &[&str]) {
    let set = set_with(detection, &CompileOptions::default());
    for e in yes {
        assert!(matches(&set, e), "should match: {e}\n{detection}");
    }
    for e in no {
        assert!(!matches(&set, e), "should not match: {e}\n{detection}");
    }
}

fn load_err(detection: &str) -> String {
    let text = format!("title: t\nid: r1\nlogsource:\n  product: aws\ndetection:\n{detection}\n");
    RuleSet::load(&[RuleFile { name: "bad.yml".into(), text }], &CompileOptions::default()).unwrap_err().to_string()
}

#[test]
fn lists_or_maps_and_case_insensitive() {
    check(
        "  sel:\n    eventName: [StopLogging, DeleteTrail]\n    eventSource: cloudtrail.amazonaws.com\n  condition: sel",
        &[r#"{"eventName":"stoplogging","eventSource":"CloudTrail.amazonaws.com"}"#],
        &[r#"{"eventName":"StopLogging","eventSource":"s3.amazonaws.com"}"#, r#"{"eventName":"StopLoggingX","eventSource":"cloudtrail.amazonaws.com"}"#],
    );
}

#[test]
fn list_of_maps_is_or() {
    check(
        "  sel:\n    - eventName: A\n    - eventSource: b\n  condition: sel",
        &[r#"{"eventName":"a"}"#, r#"{"eventSource":"B"}"#],
        &[r#"{"eventName":"b"}"#],
    );
}

#[test]
fn cased_opts_out_of_case_folding() {
    check(
        "  sel:\n    userAgent|cased: Boto3\n  condition: sel",
        &[r#"{"userAgent":"Boto3"}"#],
        &[r#"{"userAgent":"boto3"}"#],
    );
}

#[test]
fn wildcards_and_escapes() {
    check(
        "  sel:\n    eventName: 'Delete*'\n  condition: sel",
        &[r#"{"eventName":"DeleteTrail"}"#],
        &[r#"{"eventName":"XDelete"}"#],
    );
    check(
        "  sel:\n    eventName: 'Get?bject'\n  condition: sel",
        &[r#"{"eventName":"GetObject"}"#],
        &[r#"{"eventName":"GetObbject"}"#],
    );
    check("  sel:\n    a: 'x*y*z'\n  condition: sel", &[r#"{"a":"x-1-y-2-z"}"#, r#"{"a":"XYZ"}"#], &[r#"{"a":"xzy"}"#]);
    check(
        r#"  sel:
    a: 'lit\*star'
  condition: sel"#,
        &[r#"{"a":"lit*star"}"#],
        &[r#"{"a":"litXstar"}"#],
    );
    check(
        r#"  sel:
    a: 'c:\windows\*'
  condition: sel"#,
        &[r#"{"a":"c:\\windows*"}"#],
        &[r#"{"a":"c:\\windowsX"}"#],
    );
}

#[test]
fn contains_startswith_endswith_all() {
    check(
        "  sel:\n    userAgent|contains: trufflehog\n  condition: sel",
        &[r#"{"userAgent":"x TruffleHog y"}"#],
        &[r#"{"userAgent":"x"}"#],
    );
    check("  sel:\n    a|startswith: ab\n  condition: sel", &[r#"{"a":"ABc"}"#], &[r#"{"a":"cab"}"#]);
    check("  sel:\n    a|endswith: ab\n  condition: sel", &[r#"{"a":"cAB"}"#], &[r#"{"a":"abc"}"#]);
    check("  sel:\n    a|contains|all: [foo, bar]\n  condition: sel", &[r#"{"a":"bar foo"}"#], &[r#"{"a":"foo"}"#]);
    // Many alternatives fold into a set / automaton with the same meaning.
    check(
        "  sel:\n    a|contains: [p1, p2, p3, p4, p5, p6, p7]\n    b: [q1, q2, q3, q4, q5, q6, Q7]\n  condition: sel",
        &[r#"{"a":"xxP7xx","b":"q7"}"#],
        &[r#"{"a":"xxP8xx","b":"q7"}"#, r#"{"a":"p1","b":"q8"}"#],
    );
}

#[test]
fn null_numbers_booleans_empty() {
    check(
        "  sel:\n    errorCode: null\n  condition: sel",
        &[r#"{"a":1}"#, r#"{"errorCode":null}"#],
        &[r#"{"errorCode":"AccessDenied"}"#],
    );
    check(
        "  sel:\n    port: 22\n  condition: sel",
        &[r#"{"port":22}"#, r#"{"port":"22"}"#, r#"{"port":22.0}"#],
        &[r#"{"port":23}"#],
    );
    check(
        "  sel:\n    readOnly: false\n  condition: sel",
        &[r#"{"readOnly":false}"#, r#"{"readOnly":"false"}"#],
        &[r#"{"readOnly":true}"#],
    );
    check("  sel:\n    a: ''\n  condition: sel", &[r#"{"a":""}"#], &[r#"{"a":"x"}"#, r#"{"b":""}"#]);
    check("  sel:\n    a: [null, x]\n  condition: sel", &[r#"{"b":1}"#, r#"{"a":"X"}"#], &[r#"{"a":"y"}"#]);
}

#[test]
fn regex_with_flags() {
    check("  sel:\n    a|re: '^Ab+c$'\n  condition: sel", &[r#"{"a":"Abbc"}"#], &[r#"{"a":"abbc"}"#]);
    check("  sel:\n    a|re|i: '^ab+c$'\n  condition: sel", &[r#"{"a":"ABBC"}"#], &[r#"{"a":"ac"}"#]);
    check("  sel:\n    a|re|m: '^x$'\n  condition: sel", &[r#"{"a":"y\nx"}"#], &[r#"{"a":"y x"}"#]);
    check("  sel:\n    a|re|s: 'y.x'\n  condition: sel", &[r#"{"a":"y\nx"}"#], &[r#"{"a":"yx"}"#]);
}

#[test]
fn cidr_v4_and_v6() {
    check(
        "  sel:\n    sourceIPAddress|cidr: [10.0.0.0/8, '2001:db8::/32']\n  condition: sel",
        &[r#"{"sourceIPAddress":"10.2.3.4"}"#, r#"{"sourceIPAddress":"2001:db8::5"}"#],
        &[r#"{"sourceIPAddress":"11.0.0.1"}"#, r#"{"sourceIPAddress":"ecs.amazonaws.com"}"#],
    );
}

#[test]
fn base64_and_base64offset_and_wide() {
    check("  sel:\n    a|base64: 'abc'\n  condition: sel", &[r#"{"a":"YWJj"}"#], &[r#"{"a":"abc"}"#]);
    check(
        "  sel:\n    a|base64offset|contains: '/bin/sh'\n  condition: sel",
        &[r#"{"a":"ZWNobyAvYmluL3No"}"#, r#"{"a":"IC9iaW4vc2g="}"#],
        &[r#"{"a":"L3Vzci9iaW4="}"#],
    );
    // "cmd" as UTF-16LE, base64: "YwBtAGQA"
    check("  sel:\n    a|wide|base64: cmd\n  condition: sel", &[r#"{"a":"YwBtAGQA"}"#], &[r#"{"a":"Y21k"}"#]);
    check("  sel:\n    a|utf16be|base64: cmd\n  condition: sel", &[r#"{"a":"AGMAbQBk"}"#], &[r#"{"a":"YwBtAGQA"}"#]);
}

#[test]
fn windash() {
    check(
        "  sel:\n    a|windash|contains: ' -enc '\n  condition: sel",
        &[r#"{"a":"x /enc y"}"#, r#"{"a":"x —enc y"}"#],
        &[r#"{"a":"x enc y"}"#],
    );
}

/// `all` needs every written value, each in any of its forms: a dash
/// variant, a base64 offset or a placeholder value. SigmaHQ writes
/// `CommandLine|windash|contains|all` often; requiring every form instead
/// (every dash at once) matched nothing (found by loadtest/peers/semantics.sh).
#[test]
fn all_needs_each_value_in_any_of_its_forms() {
    check(
        "  sel:\n    a|windash|contains|all:\n      - '-u'\n      - 'NTLM'\n  condition: sel",
        &[r#"{"a":"rpcping /u NTLM"}"#, r#"{"a":"rpcping -u NTLM"}"#, r#"{"a":"rpcping \u2013u ntlm"}"#],
        &[r#"{"a":"rpcping NTLM"}"#, r#"{"a":"rpcping /u"}"#],
    );
    // One value alone with `all`: the same as without.
    check("  sel:\n    a|contains|all|windash: '-s'\n  condition: sel", &[r#"{"a":"x /s"}"#], &[r#"{"a":"x s"}"#]);
    // "/bin/sh" at offset 0 (L2Jpbi9zaA) and "curl" at offset 1 (Y3VybA decoded after one byte: IGN1cmw).
    check(
        "  sel:\n    a|base64offset|contains|all:\n      - '/bin/sh'\n      - 'curl'\n  condition: sel",
        &[r#"{"a":"L2Jpbi9zaA IGN1cmw"}"#],
        &[r#"{"a":"L2Jpbi9zaA"}"#],
    );
    let mut opts = CompileOptions::default();
    opts.placeholders.insert("tools".into(), vec!["psexec".into(), "paexec".into()]);
    let set = set_with(
        "  sel:\n    a|contains|all|expand:\n      - '%tools%'\n      - '-accepteula'\n  condition: sel",
        &opts,
    );
    assert!(matches(&set, r#"{"a":"paexec -accepteula \\\\host"}"#));
    assert!(!matches(&set, r#"{"a":"paexec \\\\host"}"#));
    assert!(!matches(&set, r#"{"a":"cmd -accepteula"}"#));
    // A placeholder with no values: that value can never be present.
    let set = set_with("  sel:\n    a|contains|all|expand:\n      - '%unset%'\n      - 'x'\n  condition: sel", &opts);
    assert!(!matches(&set, r#"{"a":"x"}"#));
}

#[test]
fn exists_and_comparisons() {
    check(
        "  sel:\n    errorCode|exists: true\n  condition: sel",
        &[r#"{"errorCode":"x"}"#, r#"{"errorCode":null}"#],
        &[r#"{"a":1}"#],
    );
    check("  sel:\n    errorCode|exists: false\n  condition: sel", &[r#"{"a":1}"#], &[r#"{"errorCode":"x"}"#]);
    check(
        "  sel:\n    detail.finding-severity-counts.CRITICAL|gt: 0\n  condition: sel",
        &[r#"{"detail":{"finding-severity-counts":{"CRITICAL":3}}}"#],
        &[r#"{"detail":{"finding-severity-counts":{"CRITICAL":0}}}"#, r#"{"detail":{}}"#],
    );
    check("  sel:\n    n|gte: 5\n  condition: sel", &[r#"{"n":5}"#, r#"{"n":"6"}"#], &[r#"{"n":4.9}"#]);
    check("  sel:\n    n|lt: 5\n  condition: sel", &[r#"{"n":-1}"#], &[r#"{"n":5}"#]);
    check("  sel:\n    n|lte: 5\n  condition: sel", &[r#"{"n":5}"#], &[r#"{"n":6}"#]);
}

#[test]
fn fieldref_compares_two_fields() {
    check(
        "  sel:\n    userIdentity.accountId|fieldref: recipientAccountId\n  condition: sel",
        &[r#"{"userIdentity":{"accountId":"111"},"recipientAccountId":"111"}"#],
        &[r#"{"userIdentity":{"accountId":"111"},"recipientAccountId":"222"}"#],
    );
    // `not` + fieldref: cross-account calls.
    check(
        "  sel:\n    userIdentity.accountId|fieldref: recipientAccountId\n  condition: not sel",
        &[r#"{"userIdentity":{"accountId":"111"},"recipientAccountId":"222"}"#],
        &[],
    );
}

#[test]
fn expand_placeholders_from_configuration() {
    let mut opts = CompileOptions::default();
    opts.placeholders.insert("trusted_cidrs".into(), vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()]);
    let set = set_with("  sel:\n    sourceIPAddress|cidr|expand: '%trusted_cidrs%'\n  condition: not sel", &opts);
    assert!(!matches(&set, r#"{"sourceIPAddress":"192.168.1.1"}"#));
    assert!(matches(&set, r#"{"sourceIPAddress":"8.8.8.8"}"#));
}

#[test]
fn keywords_search_every_string() {
    check(
        "  keywords:\n    - trufflehog\n    - 'evil*tool'\n  condition: keywords",
        &[r#"{"a":{"b":["x","TruffleHog/3"]}}"#, r#"{"ua":"an evil little tool"}"#],
        &[r#"{"a":"clean"}"#],
    );
}

#[test]
fn dotted_paths_cross_arrays() {
    check(
        "  sel:\n    requestParameters.containerDefinitions.privileged: true\n  condition: sel",
        &[r#"{"requestParameters":{"containerDefinitions":[{"privileged":false},{"privileged":true}]}}"#],
        &[r#"{"requestParameters":{"containerDefinitions":[{"privileged":false}]}}"#],
    );
    check(
        "  sel:\n    requestParameters.imageScanningConfiguration.scanOnPush: false\n  condition: sel",
        &[r#"{"requestParameters":{"imageScanningConfiguration":{"scanOnPush":false}}}"#],
        &[r#"{"requestParameters":{"imageScanningConfiguration":{"scanOnPush":true}}}"#],
    );
}

#[test]
fn condition_grammar() {
    let d = "  sel_a:\n    a: 1\n  sel_b:\n    b: 1\n  filter:\n    c: 1\n";
    check(&format!("{d}  condition: 1 of sel_* and not filter"), &[r#"{"b":1}"#], &[r#"{"b":1,"c":1}"#, r#"{"c":1}"#]);
    check(&format!("{d}  condition: all of sel_*"), &[r#"{"a":1,"b":1}"#], &[r#"{"a":1}"#]);
    check(&format!("{d}  condition: 1 of them"), &[r#"{"c":1}"#], &[r#"{"d":1}"#]);
    check(&format!("{d}  condition: all of them"), &[r#"{"a":1,"b":1,"c":1}"#], &[r#"{"a":1,"b":1}"#]);
    check(&format!("{d}  condition: (sel_a or sel_b) and not (filter)"), &[r#"{"a":1}"#], &[r#"{"a":1,"c":1}"#]);
}

#[test]
fn errors_name_the_line_and_reason() {
    let e = load_err("  sel:\n    a|bogus: 1\n  condition: sel");
    assert!(e.starts_with("bad.yml:7: "), "{e}");
    assert!(e.contains("unknown modifier `bogus`"), "{e}");
    let e = load_err("  sel:\n    a: 1\n  condition: sel and nope");
    assert!(e.starts_with("bad.yml:8: ") && e.contains("`nope`"), "{e}");
    let e = load_err("  sel:\n    a|re: '('\n  condition: sel");
    assert!(e.contains("invalid regular expression"), "{e}");
    // In a list: the line of the pattern that fails, not the key's.
    let e = load_err("  sel:\n    a|re:\n      - 'x+'\n      - 'y('\n  condition: sel");
    assert!(e.starts_with("bad.yml:9: ") && e.contains("invalid regular expression"), "{e}");
    let e = load_err("  sel:\n    a|cidr: 10.0.0.0/99\n  condition: sel");
    assert!(e.contains("invalid prefix length"), "{e}");
    let e = load_err("  sel:\n    a|gt: abc\n  condition: sel");
    assert!(e.contains("not a number"), "{e}");
    let e = load_err("  sel:\n    a|exists: 3\n  condition: sel");
    assert!(e.contains("one boolean"), "{e}");
    let e = load_err("  sel:\n    a|contains|re: x\n  condition: sel");
    assert!(e.contains("cannot be combined"), "{e}");
    let e = load_err("  sel:\n    a: 1\n");
    assert!(e.contains("no `condition`"), "{e}");
}

#[test]
fn malformed_json_is_an_error_not_a_match() {
    let set = set_with("  sel:\n    a: 1\n  condition: sel", &CompileOptions::default());
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let err = set.eval(EventClass::CloudTrail, r#"{"a":1,"b":[}"#, &mut scratch, &mut out).err().unwrap();
    assert!(err.to_string().contains("byte 12"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn logsource_routes_classes() {
    let text = "title: scan\nid: s1\nlogsource: {product: aws, service: ecr}\ndetection:\n  sel:\n    detail-type: ECR Image Scan\n    detail.finding-severity-counts.CRITICAL|gt: 0\n  condition: sel\n";
    let (set, _) =
        RuleSet::load(&[RuleFile { name: "s.yml".into(), text: text.into() }], &CompileOptions::default()).unwrap();
    let ev =
        r#"{"detail-type":"ECR Image Scan","source":"aws.ecr","detail":{"finding-severity-counts":{"CRITICAL":2}}}"#;
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    set.eval(EventClass::Ecr, ev, &mut scratch, &mut out).unwrap();
    assert_eq!(out, vec![0]);
    out.clear();
    set.eval(EventClass::CloudTrail, ev, &mut scratch, &mut out).unwrap();
    assert!(out.is_empty(), "an ecr rule does not see CloudTrail records");
}

#[test]
fn none_matches_when_some_value_is_outside_the_list() {
    let opts = CompileOptions {
        placeholders: [("org_accounts".to_string(), vec!["111122223333".to_string(), "444455556666".to_string()])]
            .into(),
        ..CompileOptions::default()
    };
    let det = "  sel:\n    p.AWS|contains|expand|none: '%org_accounts%'\n  condition: sel";
    let set = set_with(det, &opts);
    // One outsider among insiders is enough (unlike `not`, which needs all outside).
    assert!(matches(&set, r#"{"p":{"AWS":["arn:aws:iam::111122223333:root","arn:aws:iam::999988887777:root"]}}"#));
    assert!(matches(&set, r#"{"p":{"AWS":"999988887777"}}"#));
    assert!(!matches(&set, r#"{"p":{"AWS":["arn:aws:iam::111122223333:root","444455556666"]}}"#));
    // A missing field has no value outside the list.
    assert!(!matches(&set, r#"{"q":1}"#));
    // An unset placeholder leaves nothing to be outside of: never matches.
    let unset = set_with(det, &CompileOptions::default());
    assert!(!matches(&unset, r#"{"p":{"AWS":"999988887777"}}"#));
    // Folded sets (six or more alternatives) behave the same.
    check(
        "  sel:\n    r|none: [a, b, c, d, e, f]\n  condition: sel",
        &[r#"{"r":["a","x"]}"#, r#"{"r":"G"}"#],
        &[r#"{"r":["A","f"]}"#, r#"{"r":[]}"#],
    );
    assert!(load_err("  sel:\n    r|all|none: [a, b]\n  condition: sel").contains("`none` cannot be combined"));
    assert!(load_err("  sel:\n    r|none: [a, null]\n  condition: sel").contains("null"));
}

#[test]
fn policy_documents_held_in_strings_are_matched_by_path() {
    let det = "  public:\n    requestParameters.policyText.Statement.Principal: '*'\n  allow:\n    requestParameters.policyText.Statement.Effect: Allow\n  org:\n    requestParameters.policyText.Statement.Condition.*.aws:PrincipalOrgID|exists: true\n  condition: public and allow and not org";
    let policy = |cond: &str| {
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"s","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage"]{cond}}}]}}"#
        );
        format!(
            r#"{{"eventName":"SetRepositoryPolicy","requestParameters":{{"policyText":{}}}}}"#,
            serde_json::to_string(&doc).unwrap()
        )
    };
    check(
        det,
        &[&policy(""), &policy(r#","Condition":{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#)],
        &[
            &policy(r#","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-abc"}}"#),
            &policy(r#","Condition":{"ForAnyValue:StringLike":{"aws:PrincipalOrgID":["o-abc"]}}"#),
            // Not JSON inside: just a string, no statement to match.
            r#"{"eventName":"SetRepositoryPolicy","requestParameters":{"policyText":"Principal *"}}"#,
        ],
    );
}

#[test]
fn scoped_fields_hold_in_one_array_element() {
    // Allow + Principal "*" + no org condition, all in the same statement.
    let det = "  public:\n    p.Statement[].Effect: Allow\n    p.Statement[].Principal: '\\*'\n    p.Statement[].Condition.*.aws:PrincipalOrgID|exists: false\n  condition: public";
    let doc = |stmts: &str| {
        format!(r#"{{"p":{}}}"#, serde_json::to_string(&format!(r#"{{"Statement":[{stmts}]}}"#)).unwrap())
    };
    let open = r#"{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}"#;
    let org = r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-1"}}}"#;
    let deny = r#"{"Effect":"Deny","Principal":"*","Action":"ecr:*"}"#;
    let named = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"ecr:*"}"#;
    check(
        det,
        // An open statement next to an org-restricted one is still open.
        &[&doc(open), &doc(&format!("{org},{open}")), &doc(&format!("{open},{org}"))],
        &[
            &doc(org),
            // Deny with "*" and Allow for a named account: no statement is both.
            &doc(&format!("{deny},{named}")),
            &doc(""),
        ],
    );
    // A single statement object (not an array) is one element too.
    let single = format!(r#"{{"p":{}}}"#, serde_json::to_string(&format!(r#"{{"Statement":{open}}}"#)).unwrap());
    assert!(matches(&set_with(det, &CompileOptions::default()), &single));
    // Unscoped paths keep matching across elements, as before.
    check(
        "  s:\n    p.Statement.Effect: Allow\n    p.Statement.Principal: '\\*'\n  condition: s",
        &[&doc(&format!("{deny},{named}"))],
        &[&doc(named)],
    );
    assert!(load_err("  s:\n    a[].b: 1\n    c[].d: 2\n  condition: s").contains("mixes two scopes"));
    assert!(load_err("  s:\n    a[].b|exists: false\n  condition: s").contains("needs a field"));
    assert!(load_err("  s:\n    a[].b[].c: 1\n  condition: s").contains("only one"));
}

#[test]
fn unicode_classes_with_counted_repetition_compile_under_the_default_limit() {
    // A public SigmaHQ rule's pattern: Unicode `\w{1,64}` compiles to more
    // than 1 MiB, which an older limit refused.
    let det = "  sel:\n    CommandLine|re: '-k\\s\\w{1,64}(?:\\s?(?:-p|-s))?'\n  condition: sel";
    let set = set_with(det, &CompileOptions::default());
    assert_eq!(set.rules().len(), 1);
    // The limit is configurable: a tiny one refuses the same rule, naming it.
    let opts = CompileOptions { regex_size_limit: Some(64 << 10), ..CompileOptions::default() };
    let files = [RuleFile { name: "r.yml".into(), text: rule_text("r1", det) }];
    let err = RuleSet::load(&files, &opts).expect_err("refused under 64 KiB");
    assert!(err.to_string().contains("r.yml:") && err.to_string().contains("size limit"), "{err}");
}

#[test]
fn a_rule_that_does_not_compile_costs_that_rule_not_the_set() {
    let good = rule_text("r1", "  sel:\n    eventName: StopLogging\n  condition: sel");
    let bad = rule_text("r2", "  sel:\n    eventName|containz: x\n  condition: sel");
    let files = [RuleFile { name: "good.yml".into(), text: good }, RuleFile { name: "bad.yml".into(), text: bad }];
    assert!(RuleSet::load(&files, &CompileOptions::default()).is_err(), "strict load fails");
    let (set, _, errors) = RuleSet::load_skipping(&files, &CompileOptions::default());
    assert_eq!(set.rules().len(), 1, "the good rule loads");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "bad.yml");
    assert!(errors[0].line > 1 && errors[0].reason.contains("containz"), "{:?}", errors[0]);
}

#[test]
fn upper_case_condition_keywords_are_read_and_flagged() {
    let detection = "  sel:\n    eventName: StopLogging\n  filter:\n    errorCode: x\n  condition: sel AND NOT filter";
    let files = [RuleFile { name: "t.yml".into(), text: rule_text("r1", detection) }];
    let (set, warnings) = RuleSet::load(&files, &CompileOptions::default()).unwrap();
    assert!(matches(&set, r#"{"eventName":"StopLogging"}"#));
    assert!(!matches(&set, r#"{"eventName":"StopLogging","errorCode":"x"}"#));
    let w: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("t.yml:11") && w[0].contains("`AND` is read as `and`"), "{w:?}");
    // Lower case, and search names that merely contain a keyword: no warning.
    let detection = "  ANDROID:\n    eventName: StopLogging\n  condition: 1 of ANDROID*";
    let files = [RuleFile { name: "t.yml".into(), text: rule_text("r1", detection) }];
    assert!(RuleSet::load(&files, &CompileOptions::default()).unwrap().1.is_empty());
}
