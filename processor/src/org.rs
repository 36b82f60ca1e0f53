//! Org context discovered, never required: the organization id and member
//! accounts the pack's outside-account rules need (`%org_id%`,
//! `%org_accounts%`).
//!
//! Precedence: explicit `[rules.placeholders]` always wins. Otherwise `run`
//! asks AWS Organizations (DescribeOrganization + ListAccounts, at start-up
//! and every `rules.org_refresh`); without Organizations access (or in
//! `replay`) the accounts are derived from the input: every account that
//! appears as a CloudTrail record's `recipientAccountId`. An organization
//! trail delivers every member account's records, and a record's recipient is
//! the account it was logged in, so a recipient is always an org account
//! (an outside caller shows up in `userIdentity.accountId`, never as the
//! recipient).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::config::RulesConfig;

pub const ACCOUNTS: &str = "org_accounts";
pub const ORG_ID: &str = "org_id";

/// Where a placeholder's values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `[rules.placeholders]` in the configuration.
    Config,
    /// AWS Organizations (DescribeOrganization / ListAccounts).
    Organizations,
    /// The input's `recipientAccountId`s.
    Derived,
    /// The pack default (rules/pack/placeholders.json).
    Default,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Organizations => "organizations",
            Origin::Derived => "derived",
            Origin::Default => "default",
        }
    }
}

/// Which of the org placeholders the configuration leaves to discovery.
pub fn unset(cfg: &RulesConfig) -> Vec<&'static str> {
    [ACCOUNTS, ORG_ID].into_iter().filter(|k| cfg.placeholders.get(*k).is_none_or(|v| v.is_empty())).collect()
}

/// The org as AWS Organizations describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub org_id: String,
    /// Every account listed (any status: a suspended member is still ours).
    pub accounts: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// No permission, or not in (or not allowed to read) an organization.
    #[error("AWS Organizations is not readable here: {0}")]
    Denied(String),
    #[error("AWS Organizations could not be read: {0}")]
    Failed(String),
}

/// DescribeOrganization + ListAccounts (every page). Works from the
/// management account or a delegated administrator; from a member account
/// ListAccounts is refused (→ [`DiscoverError::Denied`]).
pub async fn discover(sdk: &aws_config::SdkConfig) -> Result<Discovered, DiscoverError> {
    use aws_sdk_organizations::error::ProvideErrorMetadata;
    let client = aws_sdk_organizations::Client::new(sdk);
    fn classify<E>(
        e: aws_sdk_organizations::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> DiscoverError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let denied = e.code().is_some_and(|c| {
            matches!(
                c,
                "AccessDeniedException"
                    | "AccessDenied"
                    | "AWSOrganizationsNotInUseException"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
            )
        });
        let text = crate::aws::error_text(&e);
        if denied {
            DiscoverError::Denied(text)
        } else {
            DiscoverError::Failed(text)
        }
    }
    let org = client.describe_organization().send().await.map_err(classify)?;
    let org_id = org.organization().and_then(|o| o.id()).unwrap_or_default().to_string();
    let mut accounts = BTreeSet::new();
    let mut pages = client.list_accounts().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(classify)?;
        for a in page.accounts() {
            if let Some(id) = a.id() {
                accounts.insert(id.to_string());
            }
        }
    }
    if accounts.is_empty() {
        return Err(DiscoverError::Failed("ListAccounts returned no accounts".into()));
    }
    Ok(Discovered { org_id, accounts })
}

/// Org values filled in where the configuration leaves them unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgValues {
    pub org_id: Option<String>,
    pub accounts: BTreeSet<String>,
}

impl OrgValues {
    /// What AWS Organizations says now (it replaces the account list: an
    /// account that left the organization is outside again).
    pub fn merged(&self, d: &Discovered) -> OrgValues {
        OrgValues { org_id: (!d.org_id.is_empty()).then(|| d.org_id.clone()), accounts: d.accounts.clone() }
    }

    /// As placeholder values, for the names `unset` leaves to discovery.
    pub fn placeholders(&self, unset: &[&str]) -> BTreeMap<String, Vec<String>> {
        let mut m = BTreeMap::new();
        if unset.contains(&ACCOUNTS) && !self.accounts.is_empty() {
            m.insert(ACCOUNTS.to_string(), self.accounts.iter().cloned().collect());
        }
        if let Some(id) = self.org_id.as_ref().filter(|_| unset.contains(&ORG_ID)) {
            m.insert(ORG_ID.to_string(), vec![id.clone()]);
        }
        m
    }
}

/// Compiles the same rule files with other org values.
pub type Recompile = std::sync::Arc<dyn Fn(&OrgValues) -> anyhow::Result<trailwatch_rules::RuleSet> + Send + Sync>;

/// Account ids that appear as `"recipientAccountId"` in the inputs (files,
/// gzip or not; `-` is skipped: stdin cannot be read twice). A byte scan, not
/// a JSON parse, so the pre-pass costs little next to the replay itself; it
/// also finds the key JSON-escaped inside CloudWatch Logs messages.
pub fn scan_recipient_accounts(inputs: &[PathBuf]) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for p in inputs {
        if p.as_os_str() == "-" {
            continue;
        }
        scan_file(p, &mut out)?;
    }
    Ok(out)
}

fn scan_file(p: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    let mut f = std::fs::File::open(p)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec()).chain(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        scan_reader(flate2::read::MultiGzDecoder::new(head), out)
    } else {
        scan_reader(head, out)
    }
}

const KEY: &[u8] = b"recipientAccountId";
/// Bytes kept from the end of a chunk so a key cut by the chunk edge is found.
const OVERLAP: usize = 64;

/// Scans a stream in chunks (memory stays bounded on large archives).
pub fn scan_reader(mut r: impl Read, out: &mut BTreeSet<String>) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut kept = 0usize;
    loop {
        let n = match r.read(&mut buf[kept..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = kept + n;
        scan_bytes(&buf[..end], out);
        let keep = OVERLAP.min(end);
        buf.copy_within(end - keep..end, 0);
        kept = keep;
    }
    Ok(())
}

/// Finds `recipientAccountId` followed by `":"` (any quoting/escaping and
/// whitespace) and 12 digits.
pub fn scan_bytes(b: &[u8], out: &mut BTreeSet<String>) {
    for at in memchr::memmem::find_iter(b, KEY) {
        let mut i = at + KEY.len();
        let mut skipped = 0;
        while i < b.len() && skipped < 8 && matches!(b[i], b'"' | b'\\' | b':' | b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
            skipped += 1;
        }
        if i + 12 <= b.len()
            && b[i..i + 12].iter().all(u8::is_ascii_digit)
            && b.get(i + 12).is_none_or(|c| !c.is_ascii_digit())
        {
            if let Ok(s) = std::str::from_utf8(&b[i..i + 12]) {
                if !out.contains(s) {
                    out.insert(s.to_string());
                }
            }
        }
    }
}

/// The recipient account of one event (the service's incremental derivation).
pub fn recipient_of(json: &str) -> Option<&str> {
    let b = json.as_bytes();
    let at = memchr::memmem::find(b, KEY)?;
    let mut i = at + KEY.len();
    while i < b.len() && matches!(b[i], b'"' | b'\\' | b':' | b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    let s = json.get(i..i + 12)?;
    (s.bytes().all(|c| c.is_ascii_digit()) && b.get(i + 12).is_none_or(|c| !c.is_ascii_digit())).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_recipients_plain_escaped_and_spaced() {
        let mut out = BTreeSet::new();
        scan_bytes(br#"{"recipientAccountId":"111122223333"}{"recipientAccountId": "444455556666"}"#, &mut out);
        scan_bytes(br#"{"message":"{\"recipientAccountId\":\"777788889999\"}"}"#, &mut out);
        // Not an account id: too short, too long.
        scan_bytes(br#"{"recipientAccountId":"1234"}{"recipientAccountId":"1234567890123"}"#, &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["111122223333", "444455556666", "777788889999"]);
    }

    #[test]
    fn finds_a_key_cut_by_the_chunk_edge_and_inside_gzip() {
        let mut text = vec![b' '; (1 << 20) - 10];
        text.extend_from_slice(br#"{"recipientAccountId":"111122223333"}"#);
        let mut out = BTreeSet::new();
        scan_reader(io::Cursor::new(&text), &mut out).unwrap();
        assert!(out.contains("111122223333"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, br#"{"Records":[{"recipientAccountId":"222233334444"}]}"#).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let found = scan_recipient_accounts(&[p]).unwrap();
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["222233334444"]);
    }

    #[test]
    fn recipient_of_one_event() {
        assert_eq!(recipient_of(r#"{"a":1,"recipientAccountId":"111122223333","b":2}"#), Some("111122223333"));
        assert_eq!(recipient_of(r#"{"recipientAccountId":"x"}"#), None);
        assert_eq!(recipient_of(r#"{}"#), None);
    }
}
