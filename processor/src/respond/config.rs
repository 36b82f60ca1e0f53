//! `[respond]` (how actions run, safety limits, channels) and
//! `[[responses]]` (which findings get which actions, in which mode).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An action a response can take.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// SNS publish and/or webhook POST with a readable summary.
    Notify,
    /// Inline deny policy with `aws:TokenIssueTime` on the role behind an assumed-role principal.
    RevokeRoleSessions,
    /// Deactivate the user's access keys and attach AWSCompromisedKeyQuarantineV3.
    QuarantineUser,
    /// Undo the configuration drift the built-in pack detects (ECR scan on
    /// push, tag immutability, repository policy statements, a stopped trail
    /// or Config recorder).
    RestoreConfig,
    /// ECS StopTask (with a reason naming the finding) on the task the finding is about.
    StopTask,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Notify,
        ActionKind::RevokeRoleSessions,
        ActionKind::QuarantineUser,
        ActionKind::RestoreConfig,
        ActionKind::StopTask,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Notify => "notify",
            ActionKind::RevokeRoleSessions => "revoke-role-sessions",
            ActionKind::QuarantineUser => "quarantine-user",
            ActionKind::RestoreConfig => "restore-config",
            ActionKind::StopTask => "stop-task",
        }
    }

    /// Default actions per hour for this action (`respond.rate_limits`).
    fn default_rate(self) -> u32 {
        match self {
            ActionKind::Notify => 120,
            ActionKind::RevokeRoleSessions | ActionKind::QuarantineUser | ActionKind::StopTask => 10,
            ActionKind::RestoreConfig => 30,
        }
    }
}

/// How a response runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Log and count what would be done; change nothing.
    #[default]
    DryRun,
    /// Do it.
    Enforce,
    /// Only when an analyst asks (Security Hub custom action); never from the stream.
    OnRequest,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Enforce => "enforce",
            Mode::OnRequest => "on-request",
        }
    }
}

/// One `[[responses]]` entry. A finding matches when every given criterion
/// does (empty lists match everything).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseRule {
    /// Shown in logs and on the finding; default `responses[N]`.
    pub name: Option<String>,
    /// Rule ids; `*` matches any run of characters (`"3b57fec2-*"`).
    pub rules: Vec<String>,
    /// Rule tags, any of them (`"attack.t1562.008"`, `"attack.*"`).
    pub tags: Vec<String>,
    /// INFORMATIONAL, LOW, MEDIUM, HIGH or CRITICAL: the finding's severity label at least this.
    pub min_severity: Option<String>,
    /// 12-digit account ids the finding is about.
    pub accounts: Vec<String>,
    pub actions: Vec<ActionKind>,
    pub mode: Mode,
}

/// `[respond]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// The role assumed in the member account for every change there.
    pub role_name: String,
    /// ExternalId passed to AssumeRole (the member role's trust policy requires it).
    pub external_id: Option<String>,
    pub session_name: String,
    /// Principals no action touches: ARNs (roles, users, assumed-role
    /// sessions) or role/user names; `*` matches any run of characters. The
    /// trailwatch roles (`trailwatch*`, `role_name`) are always protected, and
    /// service-linked roles are never changed.
    pub protected_principals: Vec<String>,
    /// Actions per hour, per action (rolling hour); beyond it, skipped and counted.
    /// Keys are action names (`revoke-role-sessions = 10`); unlisted actions keep their default.
    pub rate_limits: BTreeMap<String, u32>,
    /// Actions per hour across all actions; beyond it, skipped and counted.
    pub max_actions_per_hour: u32,
    /// `notify`: SNS topic to publish to (the security team's, published with the task's own rights).
    pub sns_topic_arn: Option<String>,
    /// `notify`: a webhook (Slack/Teams incoming webhook, or any HTTPS endpoint taking JSON).
    pub webhook_url: Option<String>,
    /// PEM file of CA certificates the webhook's https certificate must chain
    /// to, instead of the system roots (a webhook behind a private CA).
    pub webhook_ca_file: Option<std::path::PathBuf>,
    /// Write each action's outcome back to the finding (BatchUpdateFindings:
    /// Note, UserDefinedFields, Workflow status NOTIFIED).
    pub writeback: bool,
    /// Security Hub endpoint for the write-back (default: the `[aws]` chain).
    pub securityhub_endpoint_url: Option<String>,
    /// Endpoint for the member-account clients (STS/IAM/ECR/CloudTrail; tests, VPC endpoints).
    pub endpoint_url: Option<String>,
    /// Security Hub custom action id (the end of its ARN, `…:action/custom/<Id>`)
    /// → the action it requests. The deploy template creates these five.
    pub custom_actions: BTreeMap<String, String>,
    /// Per-call timeout of actions, write-backs and webhook posts.
    #[serde(with = "crate::timetext::duration_text")]
    pub call_timeout: Duration,
    /// (finding Id, action) pairs carried out are kept in
    /// `service.state_dir/responses-handled.ndjson` this long, so a finding
    /// read again after a restart is not acted on (notified) twice.
    #[serde(with = "crate::timetext::duration_text")]
    pub handled_ttl: Duration,
    /// ... and at most this many pairs (the oldest go first).
    pub handled_max: usize,
}

impl Default for RespondConfig {
    fn default() -> Self {
        RespondConfig {
            role_name: "trailwatch-response".into(),
            external_id: None,
            session_name: "trailwatch-response".into(),
            protected_principals: Vec::new(),
            rate_limits: ActionKind::ALL.iter().map(|a| (a.as_str().to_string(), a.default_rate())).collect(),
            max_actions_per_hour: 200,
            sns_topic_arn: None,
            webhook_url: None,
            webhook_ca_file: None,
            writeback: true,
            securityhub_endpoint_url: None,
            endpoint_url: None,
            custom_actions: [
                ("TwNotify", ActionKind::Notify),
                ("TwRevokeSessions", ActionKind::RevokeRoleSessions),
                ("TwQuarantineUser", ActionKind::QuarantineUser),
                ("TwRestoreConfig", ActionKind::RestoreConfig),
                ("TwStopTask", ActionKind::StopTask),
            ]
            .iter()
            .map(|(k, a)| (k.to_string(), a.as_str().to_string()))
            .collect(),
            call_timeout: Duration::from_secs(10),
            handled_ttl: Duration::from_secs(7 * 86_400),
            handled_max: 200_000,
        }
    }
}

impl RespondConfig {
    /// The action a custom action id requests.
    pub fn custom_action(&self, id: &str) -> Option<ActionKind> {
        let name = self.custom_actions.get(id)?;
        ActionKind::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn rate_limit(&self, a: ActionKind) -> u32 {
        self.rate_limits.get(a.as_str()).copied().unwrap_or_else(|| a.default_rate())
    }
}

pub const SEVERITIES: [&str; 5] = ["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

pub fn severity_rank(label: &str) -> Option<usize> {
    SEVERITIES.iter().position(|s| s.eq_ignore_ascii_case(label))
}

/// Start-up checks of `[respond]` and `[[responses]]`.
pub fn validate(respond: &RespondConfig, responses: &[ResponseRule], problems: &mut Vec<String>) {
    let role_ok = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    };
    if !role_ok(&respond.role_name) {
        problems.push(format!("respond.role_name `{}` is not an IAM role name", respond.role_name));
    }
    if !(2..=64).contains(&respond.session_name.len()) {
        problems.push("respond.session_name must be 2 to 64 characters".into());
    }
    if let Some(e) = &respond.external_id {
        if !(2..=1224).contains(&e.len()) {
            problems.push("respond.external_id must be 2 to 1224 characters".into());
        }
    }
    if respond.max_actions_per_hour == 0 {
        problems
            .push("respond.max_actions_per_hour must be at least 1 (use mode = \"dry-run\" to act on nothing)".into());
    }
    if let Some(t) = &respond.sns_topic_arn {
        if !t.starts_with("arn:") || !t.contains(":sns:") {
            problems.push(format!("respond.sns_topic_arn `{t}` is not an SNS topic ARN"));
        }
    }
    if let Some(u) = &respond.webhook_url {
        match u.parse::<hyper::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("https") | Some("http")) && uri.host().is_some() => {}
            _ => problems.push(format!("respond.webhook_url `{u}` is not an http(s) URL")),
        }
    }
    if respond.webhook_ca_file.is_some() && respond.webhook_url.is_none() {
        problems.push("respond.webhook_ca_file is set without respond.webhook_url".into());
    }
    for k in respond.rate_limits.keys() {
        if !ActionKind::ALL.iter().any(|a| a.as_str() == k) {
            problems.push(format!(
                "respond.rate_limits: `{k}` is not an action (notify, revoke-role-sessions, quarantine-user, restore-config, stop-task)"
            ));
        }
    }
    for (id, a) in &respond.custom_actions {
        // Security Hub's limit on a custom action id.
        if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            problems
                .push(format!("respond.custom_actions: `{id}` is not a custom action id (1-20 letters and digits)"));
        }
        if !ActionKind::ALL.iter().any(|k| k.as_str() == a) {
            problems.push(format!("respond.custom_actions.{id}: `{a}` is not an action"));
        }
    }
    if respond.handled_ttl.as_secs() == 0 {
        problems.push("respond.handled_ttl must be at least 1s".into());
    }
    if respond.handled_max == 0 {
        problems.push("respond.handled_max must be at least 1".into());
    }
    if respond.call_timeout.is_zero() {
        problems.push("respond.call_timeout must be more than 0".into());
    }
    for (i, r) in responses.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("responses[{i}]"));
        if r.actions.is_empty() {
            problems.push(format!("{name}: actions is empty (one or more of notify, revoke-role-sessions, quarantine-user, restore-config, stop-task)"));
        }
        if let Some(s) = &r.min_severity {
            if severity_rank(s).is_none() {
                problems.push(format!("{name}: min_severity `{s}` is not one of {}", SEVERITIES.join(", ")));
            }
        }
        for a in &r.accounts {
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(format!("{name}: account `{a}` is not a 12-digit account id"));
            }
        }
        if r.rules.is_empty() && r.tags.is_empty() && r.min_severity.is_none() && r.accounts.is_empty() {
            problems.push(format!("{name}: matches every finding; give rules, tags, min_severity or accounts"));
        }
        if r.actions.contains(&ActionKind::Notify)
            && r.mode != Mode::DryRun
            && respond.sns_topic_arn.is_none()
            && respond.webhook_url.is_none()
        {
            problems.push(format!("{name}: notify needs respond.sns_topic_arn or respond.webhook_url"));
        }
    }
}
