//! Bench input: realistic CloudTrail records, made by replicating the real
//! record shapes in ../shared/samples (Stratus Red Team detonations and ECR
//! API examples) with fresh ids, times, accounts, principals and addresses,
//! plus the org's everyday image pulls by node roles (expected pullers).
//!
//! A stand-in until the loadtest generator (`loadtest/`) can produce bench
//! input; deterministic for a given count and seed.
#![allow(dead_code)] // each bench binary uses a different part

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(p.join("samples").is_dir(), "bench needs ../shared next to the repository ({})", p.display());
    p
}

/// Every CloudTrail record of the samples, parsed.
pub fn templates() -> Vec<Value> {
    let mut out = Vec::new();
    let root = shared().join("samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("stratus-detonations"))
        .expect("samples/stratus-detonations")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.push(root.join("ecr/cloudtrail_ecr_api_examples.jsonl"));
    files.sort();
    for p in files {
        if p.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.get("eventName").is_some() && v.get("eventVersion").is_some() {
                out.push(v);
            }
        }
    }
    assert!(out.len() > 100, "too few sample records");
    out
}

/// xorshift64*: small and deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 + (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

fn rfc3339(secs: i64) -> String {
    let (days, r) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", r / 3600, (r % 3600) / 60, r % 60)
}

/// An image layer pull by an EKS node role in `account` (an expected puller).
fn node_pull(rng: &mut Rng, account: &str, region: &str) -> Value {
    let node = format!("i-{:017x}", rng.next() >> 4);
    let repo = ["shop/web", "shop/api", "platform/envoy", "platform/fluent-bit", "data/etl"][rng.below(5) as usize];
    let name = ["GetDownloadUrlForLayer", "GetDownloadUrlForLayer", "BatchGetImage", "GetAuthorizationToken"]
        [rng.below(4) as usize];
    let mut params = json!({"registryId": account, "repositoryName": repo});
    if name == "GetDownloadUrlForLayer" {
        params["layerDigest"] =
            json!(format!("sha256:{:016x}{:016x}{:016x}{:016x}", rng.next(), rng.next(), rng.next(), rng.next()));
    } else if name == "BatchGetImage" {
        params["imageIds"] = json!([{"imageTag": "v1.42.0"}]);
        params["acceptedMediaTypes"] = json!(["application/vnd.docker.distribution.manifest.v2+json"]);
    } else {
        params = Value::Null;
    }
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": format!("AROAEXAMPLENODEROLE:{node}"),
            "arn": format!("arn:aws:sts::{account}:assumed-role/eks-prod-node-role/{node}"),
            "accountId": account,
            "accessKeyId": format!("ASIA{:016X}", rng.next() >> 1),
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLENODEROLE", "arn": format!("arn:aws:iam::{account}:role/eks-prod-node-role"), "accountId": account, "userName": "eks-prod-node-role"},
                "attributes": {"creationDate": "2026-11-01T09:00:00Z", "mfaAuthenticated": "false"},
                "ec2RoleDelivery": "2.0"
            }
        },
        "eventTime": "",
        "eventSource": "ecr.amazonaws.com",
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254)),
        "userAgent": "containerd/v1.7.2",
        "requestParameters": params,
        "responseElements": null,
        "requestID": "",
        "eventID": "",
        "readOnly": true,
        "resources": [{"ARN": format!("arn:aws:ecr:{region}:{account}:repository/{repo}"), "accountId": account}],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.2", "cipherSuite": "ECDHE-RSA-AES128-GCM-SHA256", "clientProvidedHostHeader": format!("api.ecr.{region}.amazonaws.com")}
    })
}

/// `n` CloudTrail records as compact JSON lines, about `rate` per second of
/// event time (with a few seconds of disorder), over 20 accounts and 300
/// principals; a quarter are node-role image pulls, the rest are the sample
/// shapes (mostly Describe/Get noise, some attack techniques).
pub fn cloudtrail_records(n: usize, rate: u64, seed: u64) -> Vec<String> {
    let templates = templates();
    let mut rng = Rng::new(seed);
    let accounts: Vec<String> = (0..20).map(|i| format!("{:012}", 210_987_654_321u64 + i * 7_919)).collect();
    let regions = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2"];
    let start = 1_793_527_200i64; // 2026-11-01T08:00:00Z
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let account = &accounts[rng.below(accounts.len() as u64) as usize];
        let region = regions[rng.below(4) as usize];
        let mut v = if rng.below(4) == 0 {
            node_pull(&mut rng, account, region)
        } else {
            let mut v = templates[rng.below(templates.len() as u64) as usize].clone();
            let user = format!("u{}", rng.below(300));
            if let Some(ui) = v.get_mut("userIdentity").and_then(Value::as_object_mut) {
                if let Some(Value::String(arn)) = ui.get("arn") {
                    // Same shape, another account and principal name.
                    let parts: Vec<&str> = arn.splitn(6, ':').collect();
                    if parts.len() == 6 {
                        let res = parts[5];
                        let res = match res.rsplit_once('/') {
                            Some((head, _)) => format!("{head}/{user}"),
                            None => res.to_string(),
                        };
                        let arn = format!("{}:{}:{}:{}:{account}:{res}", parts[0], parts[1], parts[2], parts[3]);
                        ui.insert("arn".into(), Value::String(arn));
                    }
                }
                if ui.contains_key("accountId") {
                    ui.insert("accountId".into(), Value::String(account.clone()));
                }
                if ui.contains_key("userName") {
                    ui.insert("userName".into(), Value::String(user));
                }
            }
            if v.get("recipientAccountId").is_some() {
                v["recipientAccountId"] = json!(account);
            }
            v["awsRegion"] = json!(region);
            if v.get("sourceIPAddress").and_then(Value::as_str).is_some_and(|s| !s.ends_with(".com")) {
                v["sourceIPAddress"] = json!(format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                ));
            }
            v
        };
        let t = start + (i as u64 / rate.max(1)) as i64 - rng.below(4) as i64;
        v["eventTime"] = json!(rfc3339(t));
        v["eventID"] = json!(rng.uuid());
        if v.get("requestID").is_some() {
            v["requestID"] = json!(rng.uuid());
        }
        out.push(serde_json::to_string(&v).unwrap());
    }
    out
}

/// The records as NDJSON bytes.
pub fn ndjson(records: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for r in records {
        b.extend_from_slice(r.as_bytes());
        b.push(b'\n');
    }
    b
}
