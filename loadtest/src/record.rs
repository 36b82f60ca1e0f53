//! Event shapes: CloudTrail records (key order, `userIdentity` variants,
//! `tlsDetails`, ...) copied from real records, and native EventBridge events
//! ("ECR Image Scan", "Inspector2 Finding"). The [`Emitter`] renders them to
//! JSON text once; outputs only wrap that text.

use rand::Rng;

use crate::json::Json;
use crate::org::{Org, Role};
use crate::util::{self, Rand};

/// Where an event lives: CloudTrail records can be wrapped by outputs
/// (EventBridge "AWS API Call via CloudTrail", log files, CloudWatch Logs);
/// native EventBridge events are only ever EventBridge events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A CloudTrail record; the value is its `eventSource`.
    CloudTrail(&'static str),
    /// A whole EventBridge event; the value is its `source` (`aws.ecr`, `aws.inspector2`).
    EventBridge(&'static str),
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct GenEvent {
    /// Unix seconds of event time.
    pub time: i64,
    /// Tie-breaker among events of the same second (generation order).
    pub seq: u64,
    /// Index of the account it is recorded in (`recipientAccountId` / `account`).
    pub account: u16,
    /// Index into [`Org::regions`].
    pub region: u16,
    pub kind: EventKind,
    /// CloudTrail `eventID` or EventBridge `id`.
    pub id: String,
    /// The event as JSON text (one line).
    pub json: String,
}

impl GenEvent {
    /// The EventBridge `source` of this event (`aws.ecr` for `ecr.amazonaws.com`).
    pub fn eventbridge_source(&self) -> String {
        match self.kind {
            EventKind::CloudTrail(src) => format!("aws.{}", src.split('.').next().unwrap_or(src)),
            EventKind::EventBridge(src) => src.to_string(),
        }
    }
}

/// `userIdentity` variants seen in real records.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// `AssumedRole`: a role session (SSO, node, task, CI, service-linked role).
    Role {
        account: &'a str,
        role: &'a Role,
        session: &'a str,
        key: &'a str,
        mfa: bool,
        created: i64,
        /// OIDC provider ARN for sessions from AssumeRoleWithWebIdentity (IRSA).
        web_identity: Option<&'a str>,
        invoked_by: Option<&'a str>,
    },
    /// `IAMUser` with an access key (or a console session when `key` is None).
    User { account: &'a str, name: &'a str, id: &'a str, key: Option<&'a str> },
    /// `Root`.
    Root { account: &'a str, key: Option<&'a str> },
    /// `AWSService`: a service principal acting on its own (e.g. assuming a role).
    Service { invoked_by: &'a str },
    /// `AWSAccount`: a principal of another account (cross-account calls).
    Account { account: &'a str, principal: &'a str },
    /// `SAMLUser`: AssumeRoleWithSAML, how IAM Identity Center signs people into an account.
    Saml { provider_id: &'a str, user: &'a str },
    /// `WebIdentityUser`: the AssumeRoleWithWebIdentity call itself.
    WebIdentity { provider: &'a str, subject: &'a str },
    /// No type, `invokedBy: AWS Internal` (e.g. ECR lifecycle policy runs).
    Internal { account: &'a str },
}

impl<'a> Who<'a> {
    /// A role session without MFA, web identity or a service calling for it: most sessions.
    pub fn role(account: &'a str, role: &'a Role, session: &'a str, key: &'a str, created: i64) -> Self {
        Who::Role { account, role, session, key, mfa: false, created, web_identity: None, invoked_by: None }
    }

    /// This role session, with calls made for it by `service` (`invokedBy`).
    pub fn invoked_by(mut self, service: &'a str) -> Self {
        if let Who::Role { invoked_by, .. } = &mut self {
            *invoked_by = Some(service);
        }
        self
    }

    /// This role session, started by AssumeRoleWithWebIdentity from `provider` (IRSA).
    pub fn web_identity(mut self, provider: &'a str) -> Self {
        if let Who::Role { web_identity, .. } = &mut self {
            *web_identity = Some(provider);
        }
        self
    }

    /// The identity's ARN, when it has one.
    pub fn arn(&self) -> Option<String> {
        match self {
            Who::Role { account, role, session, .. } => {
                Some(format!("arn:aws:sts::{account}:assumed-role/{}/{session}", role.name))
            }
            Who::User { account, name, .. } => Some(format!("arn:aws:iam::{account}:user/{name}")),
            Who::Root { account, .. } => Some(format!("arn:aws:iam::{account}:root")),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    ApiCall,
    ConsoleSignIn,
    ServiceEvent,
}

/// One API call to render as a CloudTrail record.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub time: i64,
    /// Account index it is recorded in.
    pub recipient: usize,
    pub region: usize,
    pub source: &'static str,
    pub name: &'a str,
    pub who: Who<'a>,
    pub ip: &'a str,
    pub agent: &'a str,
    pub params: Option<&'a str>,
    pub response: Option<&'a str>,
    pub error: Option<(&'a str, &'a str)>,
    pub read_only: bool,
    pub event_type: EventType,
    pub additional: Option<&'a str>,
    pub resources: Option<&'a str>,
    pub service_details: Option<&'a str>,
    /// TLS host header; None = the service's default endpoint; Some("") = no tlsDetails.
    pub host: Option<&'a str>,
}

impl<'a> Call<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        time: i64,
        recipient: usize,
        region: usize,
        source: &'static str,
        name: &'a str,
        who: Who<'a>,
        ip: &'a str,
        agent: &'a str,
    ) -> Self {
        let read_only =
            ["Get", "Describe", "List", "BatchGet", "BatchCheck", "Lookup", "Head"].iter().any(|p| name.starts_with(p));
        Call {
            time,
            recipient,
            region,
            source,
            name,
            who,
            ip,
            agent,
            params: None,
            response: None,
            error: None,
            read_only,
            event_type: EventType::ApiCall,
            additional: None,
            resources: None,
            service_details: None,
            host: None,
        }
    }
    pub fn params(mut self, p: &'a str) -> Self {
        self.params = Some(p);
        self
    }
    pub fn response(mut self, r: &'a str) -> Self {
        self.response = Some(r);
        self
    }
    pub fn error(mut self, code: &'a str, message: &'a str) -> Self {
        self.error = Some((code, message));
        self
    }
    pub fn resources(mut self, r: &'a str) -> Self {
        self.resources = Some(r);
        self
    }
    pub fn host(mut self, h: &'a str) -> Self {
        self.host = Some(h);
        self
    }
    pub fn read_only(mut self, ro: bool) -> Self {
        self.read_only = ro;
        self
    }
}

/// Renders events and collects them with their metadata.
pub struct Emitter<'o> {
    pub org: &'o Org,
    pub rng: Rand,
    pub events: Vec<GenEvent>,
    seq: u64,
}

impl<'o> Emitter<'o> {
    /// `seq_base` keeps ties between emitters in a fixed order.
    pub fn new(org: &'o Org, rng: Rand, seq_base: u64) -> Self {
        Emitter { org, rng, events: Vec::new(), seq: seq_base }
    }

    fn push(&mut self, time: i64, account: usize, region: usize, kind: EventKind, id: String, json: String) {
        self.seq += 1;
        self.events.push(GenEvent {
            time,
            seq: self.seq,
            account: account as u16,
            region: region as u16,
            kind,
            id,
            json,
        });
    }

    /// Renders a CloudTrail record; returns its eventID.
    pub fn ct(&mut self, c: &Call<'_>) -> String {
        let org = self.org;
        let event_id = util::uuid(&mut self.rng);
        let recipient = &org.accounts[c.recipient].id;
        let region = &org.regions[c.region];
        let mut j = Json::with_capacity(1400);
        j.obj();
        let version = match (c.event_type, c.source) {
            (EventType::ConsoleSignIn, _) | (EventType::ServiceEvent, _) => "1.08",
            (_, "ssm.amazonaws.com") | (_, "sts.amazonaws.com") => "1.08",
            (_, "ecr.amazonaws.com") | (_, "ecs.amazonaws.com") => "1.09",
            _ => "1.10",
        };
        j.s("eventVersion", version);
        identity(&mut j, &c.who, c.time);
        j.s("eventTime", &util::iso(c.time));
        j.s("eventSource", c.source);
        j.s("eventName", c.name);
        j.s("awsRegion", region);
        j.s("sourceIPAddress", c.ip);
        j.s("userAgent", c.agent);
        if let Some((code, msg)) = c.error {
            j.s("errorCode", code);
            j.s("errorMessage", msg);
        }
        // Console sign-ins carry null parameters; service events carry none.
        if c.event_type != EventType::ServiceEvent {
            j.r("requestParameters", c.params);
            j.r("responseElements", if c.error.is_some() { None } else { c.response });
        }
        if let Some(a) = c.additional {
            j.key("additionalEventData").raw(a);
        }
        if c.event_type != EventType::ServiceEvent {
            j.s("requestID", &util::uuid(&mut self.rng));
        }
        j.s("eventID", &event_id);
        j.b("readOnly", c.read_only);
        if let Some(r) = c.resources {
            j.key("resources").raw(r);
        }
        j.s(
            "eventType",
            match c.event_type {
                EventType::ApiCall => "AwsApiCall",
                EventType::ConsoleSignIn => "AwsConsoleSignIn",
                EventType::ServiceEvent => "AwsServiceEvent",
            },
        );
        j.b("managementEvent", true);
        j.s("recipientAccountId", recipient);
        if let Some(d) = c.service_details {
            j.key("serviceEventDetails").raw(d);
        }
        j.s("eventCategory", "Management");
        let tls = match c.host {
            Some("") => None,
            Some(h) => Some(h.to_string()),
            None if matches!(c.who, Who::Service { .. } | Who::Internal { .. }) || c.ip.ends_with(".amazonaws.com") => {
                None
            }
            None => Some(default_host(c.source, region)),
        };
        if let Some(host) = tls {
            j.key("tlsDetails").obj();
            if self.rng.random_bool(0.8) {
                j.s("tlsVersion", "TLSv1.3").s("cipherSuite", "TLS_AES_128_GCM_SHA256");
            } else {
                j.s("tlsVersion", "TLSv1.2").s("cipherSuite", "ECDHE-RSA-AES128-GCM-SHA256");
            }
            j.s("clientProvidedHostHeader", &host);
            j.end();
        }
        j.end();
        let kind = EventKind::CloudTrail(c.source);
        self.push(c.time, c.recipient, c.region, kind, event_id.clone(), j.into_string());
        event_id
    }
}

fn identity(j: &mut Json, who: &Who<'_>, now: i64) {
    j.key("userIdentity").obj();
    match *who {
        Who::Role { account, role, session, key, mfa, created, web_identity, invoked_by } => {
            j.s("type", "AssumedRole");
            j.s("principalId", &format!("{}:{session}", role.id));
            j.s("arn", &format!("arn:aws:sts::{account}:assumed-role/{}/{session}", role.name));
            j.s("accountId", account);
            j.s("accessKeyId", key);
            j.key("sessionContext").obj();
            j.key("sessionIssuer").obj();
            j.s("type", "Role").s("principalId", &role.id);
            j.s("arn", &format!("arn:aws:iam::{account}:role/{}{}", role.path, role.name));
            j.s("accountId", account).s("userName", &role.name);
            j.end();
            if let Some(p) = web_identity {
                j.key("webIdFederationData").obj();
                j.s("federatedProvider", p);
                j.key("attributes").obj().end();
                j.end();
            }
            j.key("attributes").obj();
            j.s("creationDate", &util::iso(created.min(now)));
            j.s("mfaAuthenticated", if mfa { "true" } else { "false" });
            j.end();
            j.end();
            if let Some(by) = invoked_by {
                j.s("invokedBy", by);
            }
        }
        Who::User { account, name, id, key } => {
            j.s("type", "IAMUser").s("principalId", id);
            j.s("arn", &format!("arn:aws:iam::{account}:user/{name}"));
            j.s("accountId", account);
            if let Some(k) = key {
                j.s("accessKeyId", k);
            }
            j.s("userName", name);
        }
        Who::Root { account, key } => {
            j.s("type", "Root").s("principalId", account);
            j.s("arn", &format!("arn:aws:iam::{account}:root"));
            j.s("accountId", account);
            if let Some(k) = key {
                j.s("accessKeyId", k);
            }
        }
        Who::Service { invoked_by } => {
            j.s("type", "AWSService").s("invokedBy", invoked_by);
        }
        Who::Account { account, principal } => {
            j.s("type", "AWSAccount").s("principalId", principal).s("accountId", account);
        }
        Who::Saml { provider_id, user } => {
            j.s("type", "SAMLUser").s("principalId", &format!("{provider_id}:{user}"));
            j.s("userName", user).s("identityProvider", provider_id);
        }
        Who::WebIdentity { provider, subject } => {
            j.s("type", "WebIdentityUser");
            j.s("principalId", &format!("{provider}:sts.amazonaws.com:{subject}"));
            j.s("userName", subject);
            j.s("identityProvider", provider);
        }
        Who::Internal { account } => {
            j.s("accountId", account).s("invokedBy", "AWS Internal");
        }
    }
    j.end();
}

impl Emitter<'_> {
    /// Renders a native EventBridge event; returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn eventbridge(
        &mut self,
        time: i64,
        account: usize,
        region: usize,
        source: &'static str,
        detail_type: &str,
        resources: &[&str],
        detail: &str,
    ) -> String {
        let id = util::uuid(&mut self.rng);
        let mut j = Json::with_capacity(512 + detail.len());
        j.obj();
        j.s("version", "0").s("id", &id).s("detail-type", detail_type).s("source", source);
        j.s("account", &self.org.accounts[account].id);
        j.s("time", &util::iso(time));
        j.s("region", &self.org.regions[region]);
        j.strs("resources", resources);
        j.key("detail").raw(detail);
        j.end();
        self.push(time, account, region, EventKind::EventBridge(source), id.clone(), j.into_string());
        id
    }
}

/// The endpoint a client names in TLS for a service.
pub fn default_host(source: &str, region: &str) -> String {
    let svc = source.trim_end_matches(".amazonaws.com");
    match svc {
        "iam" => "iam.amazonaws.com".into(),
        "signin" => "signin.aws.amazon.com".into(),
        "ecr" => format!("api.ecr.{region}.amazonaws.com"),
        "sts" => format!("sts.{region}.amazonaws.com"),
        "events" => format!("events.{region}.amazonaws.com"),
        _ => format!("{svc}.{region}.amazonaws.com"),
    }
}

/// Wraps a CloudTrail record as EventBridge delivers it ("AWS API Call via CloudTrail").
pub fn wrap_eventbridge(ev: &GenEvent, org: &Org) -> String {
    match ev.kind {
        EventKind::EventBridge(_) => ev.json.clone(),
        EventKind::CloudTrail(_) => {
            let detail_type = if ev.json.contains("\"eventType\":\"AwsConsoleSignIn\"") {
                "AWS Console Sign In via CloudTrail"
            } else if ev.json.contains("\"eventType\":\"AwsServiceEvent\"") {
                "AWS Service Event via CloudTrail"
            } else {
                "AWS API Call via CloudTrail"
            };
            let mut j = Json::with_capacity(ev.json.len() + 300);
            j.obj();
            j.s("version", "0").s("id", &util::derived_uuid(&ev.id, 0x6562));
            j.s("detail-type", detail_type).s("source", &ev.eventbridge_source());
            j.s("account", &org.accounts[ev.account as usize].id);
            j.s("time", &util::iso(ev.time));
            j.s("region", &org.regions[ev.region as usize]);
            j.key("resources").arr().end_arr();
            j.key("detail").raw(&ev.json);
            j.end();
            j.into_string()
        }
    }
}
