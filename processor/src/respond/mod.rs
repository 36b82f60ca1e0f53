//! Responses: actions on findings (`[[responses]]`), with safety limits.
//!
//! Plugged into the pipeline as the last sink: it sees each finding once
//! per commit, after the other sinks (Security Hub) have it. Actions run at
//! the commit's flush; a finding read again after a restart is harmless:
//! the (finding Id, action) pairs carried out are kept in `state_dir`
//! ([`handled`], so `notify` does not repeat), and every other action is
//! idempotent anyway (it checks the current state first). In one run a pair
//! is acted on once.
//!
//! - [`config`]: `[respond]` and `[[responses]]`;
//! - [`matcher`]: which responses apply to a finding;
//! - [`safety`]: protected principals, service-linked roles, rate limits and the hourly cap;
//! - [`actions`]: the AWS calls (through the member account's response role);
//! - [`writeback`]: the outcome on the finding (BatchUpdateFindings).
//!
//! An action failing (AccessDenied, a missing role) is logged, counted and
//! written back; it never holds the pipeline.

pub mod actions;
pub mod config;
pub mod handled;
pub mod matcher;
pub mod safety;
pub mod writeback;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use config::{ActionKind, Mode, RespondConfig, ResponseRule};
pub use matcher::FindingView;

use crate::findings::request;
use crate::findings::Finding;
use crate::sinks::{Sink, SinkError};
use actions::{Change, Drift, Executor};
use matcher::Matcher;
use safety::{Limited, Limits, Protected};

/// What happened to one planned action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Changed something.
    Done,
    /// Already as wanted: nothing changed.
    Already,
    /// Dry-run: would have run.
    DryRun,
    SkippedProtected,
    SkippedServiceLinked,
    SkippedNoTarget,
    SkippedRateLimited,
    SkippedCap,
    /// The same finding and action were already handled in this run.
    Duplicate,
    /// An analyst asked for an action no on-request/enforce response allows for the finding.
    SkippedNotAllowed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Already => "already",
            Outcome::DryRun => "dry_run",
            Outcome::SkippedProtected => "skipped_protected",
            Outcome::SkippedServiceLinked => "skipped_service_linked",
            Outcome::SkippedNoTarget => "skipped_no_target",
            Outcome::SkippedRateLimited => "skipped_rate_limited",
            Outcome::SkippedCap => "skipped_cap",
            Outcome::Duplicate => "duplicate",
            Outcome::SkippedNotAllowed => "skipped_not_allowed",
            Outcome::Failed => "failed",
        }
    }
}

/// One planned action and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub finding_id: String,
    pub product_arn: String,
    pub rule_id: String,
    pub title: String,
    pub account: String,
    pub when: String,
    pub response: String,
    pub action: ActionKind,
    pub mode: Mode,
    pub outcome: Outcome,
    /// What the action acts on (role, user, repository, trail, channel).
    pub target: String,
    pub detail: String,
    /// What the action removed (JSON), e.g. repository policy statements, so an operator can put it back.
    pub removed: Option<String>,
}

impl ActionRecord {
    /// A record of `action` on `f`, not yet carried out (outcome Failed until it is).
    fn of(f: &FindingView, response: String, action: ActionKind, mode: Mode) -> ActionRecord {
        ActionRecord {
            finding_id: f.id.clone(),
            product_arn: f.product_arn.clone(),
            rule_id: f.rule_id.clone(),
            title: f.title.clone(),
            account: f.account.clone(),
            when: f.last_seen.clone(),
            response,
            action,
            mode,
            outcome: Outcome::Failed,
            target: String::new(),
            detail: String::new(),
            removed: None,
        }
    }
}

/// What an action would act on.
enum Target {
    Finding,
    Role(String),
    User(String),
    Drift(Drift),
    /// An ECS task ARN.
    Task(String),
}

impl Target {
    fn text(&self) -> String {
        match self {
            Target::Finding => "notification".into(),
            Target::Role(r) => r.clone(),
            Target::User(u) => u.clone(),
            Target::Drift(d) => d.describe(),
            Target::Task(t) => t.clone(),
        }
    }
}

fn target_of(action: ActionKind, f: &FindingView) -> Result<Target, String> {
    match action {
        ActionKind::Notify => Ok(Target::Finding),
        ActionKind::RevokeRoleSessions => {
            let p = f.principal.as_deref().unwrap_or("");
            // Only the role behind an assumed-role session: a long-lived user
            // or root has no sessions this revocation could end.
            let role = safety::role_arn_of_session(p).or_else(|| {
                (p.contains(":assumed-role/")).then(|| f.resource("AwsIamRole").map(str::to_string)).flatten()
            });
            role.map(Target::Role).ok_or_else(|| format!("the principal `{p}` is not an assumed-role session"))
        }
        ActionKind::QuarantineUser => {
            let p = f.principal.as_deref().unwrap_or("");
            if p.contains(":user/") {
                Ok(Target::User(p.to_string()))
            } else {
                Err(format!("the principal `{p}` is not an IAM user"))
            }
        }
        ActionKind::StopTask => f
            .resource("AwsEcsTask")
            .map(|t| Target::Task(t.to_string()))
            .ok_or_else(|| "the finding names no ECS task".to_string()),
        ActionKind::RestoreConfig => Drift::of(f).map(Target::Drift).ok_or_else(|| {
            format!("no known restore for rule {} (event {})", f.rule_id, f.event_name.as_deref().unwrap_or("-"))
        }),
    }
}

/// How many (finding, action) keys are remembered for de-duplication.
const MAX_DONE_KEYS: usize = 200_000;

/// Matches findings to responses and runs (or, in dry-run, describes) their actions.
pub struct Responder {
    matcher: Matcher,
    protected: Protected,
    limits: Limits,
    /// Dry-run counts against its own limits: what enforce would have skipped, without using enforce's budget.
    dry_limits: Limits,
    done: HashSet<(String, ActionKind)>,
    done_order: VecDeque<(String, ActionKind)>,
    /// Pairs carried out (done or already), across restarts when opened on a state dir.
    handled: handled::Handled,
    exec: Option<Executor>,
    writeback: Option<writeback::Writeback>,
}

impl Responder {
    /// Dry-run only: no AWS client at all (replay).
    pub fn offline(cfg: &RespondConfig, responses: &[ResponseRule], tags: HashMap<String, Vec<String>>) -> Responder {
        Responder {
            matcher: Matcher::new(responses, tags),
            protected: Protected::new(cfg),
            limits: Limits::new(cfg),
            dry_limits: Limits::new(cfg),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            handled: handled::Handled::memory(cfg.handled_ttl, cfg.handled_max),
            exec: None,
            writeback: None,
        }
    }

    /// With AWS clients when some response enforces; handled pairs kept in
    /// `state_dir` (when given) across restarts.
    pub async fn build(
        cfg: &RespondConfig,
        responses: &[ResponseRule],
        tags: HashMap<String, Vec<String>>,
        aws: &crate::aws::AwsConfig,
        state_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Responder> {
        let mut r = Responder::offline(cfg, responses, tags);
        if let Some(dir) = state_dir {
            let (h, loaded) = handled::Handled::open(dir, cfg.handled_ttl, cfg.handled_max)
                .map_err(|e| anyhow::anyhow!("handled responses in {}: {e}", dir.join(handled::FILE_NAME).display()))?;
            tracing::info!(
                kept = loaded.kept,
                expired = loaded.expired,
                malformed = loaded.malformed,
                "handled responses loaded"
            );
            r.handled = h;
        }
        if responses.iter().any(|x| matches!(x.mode, Mode::Enforce | Mode::OnRequest)) {
            r.exec = Some(Executor::build(cfg, aws).await?);
            if cfg.writeback {
                r.writeback = Some(writeback::Writeback::build(cfg, aws).await);
            }
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    /// Who is inside the organization, for `restore-config` on repository policies.
    pub fn set_org(&mut self, org: actions::OrgContext) {
        if let Some(e) = &mut self.exec {
            e.org = org;
        }
    }

    /// Does any response apply to this finding?
    pub fn wants(&self, f: &FindingView) -> bool {
        !self.matcher.plan(f).is_empty()
    }

    /// Plans and runs every response for one finding. `now` drives the rate
    /// limits (the wall clock live, the event time in a replay).
    pub async fn handle(&mut self, f: &FindingView, now: Instant) -> Vec<ActionRecord> {
        let mut out = Vec::new();
        for p in self.matcher.plan(f) {
            if p.mode == Mode::OnRequest {
                continue;
            }
            let mut rec = ActionRecord::of(f, p.response.clone(), p.action, p.mode);
            if self.done.contains(&(f.id.clone(), p.action)) {
                rec.outcome = Outcome::Duplicate;
                rec.detail = "already handled in this run".into();
            } else if p.mode != Mode::DryRun && self.handled.contains(&f.id, p.action) {
                rec.outcome = Outcome::Duplicate;
                rec.detail = "already handled before a restart".into();
            } else {
                self.carry_out(f, &mut rec, now).await;
            }
            out.push(rec);
        }
        out
    }

    /// An analyst's request (a Security Hub custom action) for `action` on
    /// one finding: run if a response in mode on-request or enforce matching
    /// the finding lists the action; the safety rules apply as for the stream.
    /// No in-run de-duplication: the analyst asked (the action itself checks
    /// whether anything is left to do).
    pub async fn handle_request(&mut self, f: &FindingView, action: ActionKind, now: Instant) -> ActionRecord {
        let allowed = self.matcher.allows(f, action);
        let mut rec = ActionRecord::of(f, allowed.clone().unwrap_or_else(|| "-".into()), action, Mode::OnRequest);
        if allowed.is_some() {
            self.carry_out(f, &mut rec, now).await;
        } else {
            rec.outcome = Outcome::SkippedNotAllowed;
            rec.detail = format!("no on-request or enforce response allows {} for this finding", action.as_str());
        }
        rec
    }

    /// Runs `rec`'s action and records what happened in it.
    async fn carry_out(&mut self, f: &FindingView, rec: &mut ActionRecord, now: Instant) {
        let (outcome, target, detail) = self.run_one(f, rec.action, rec.mode, &rec.response, now).await;
        rec.outcome = outcome;
        rec.target = target;
        (rec.detail, rec.removed) = detail;
        if outcome != Outcome::Failed {
            // A failure may be retried when the finding comes again.
            self.remember((f.id.clone(), rec.action));
        }
        self.persist(rec);
    }

    /// Keeps a pair carried out for good. Only done/already: a skip (cap,
    /// rate, protection) is decided again after a restart, and dry-run
    /// must not keep enforce from acting once it is switched on.
    fn persist(&mut self, rec: &ActionRecord) {
        if rec.mode != Mode::DryRun && matches!(rec.outcome, Outcome::Done | Outcome::Already) {
            self.handled.insert(&rec.finding_id, rec.action);
        }
    }

    /// Makes the handled pairs durable (each flush).
    pub fn sync_handled(&mut self) {
        if let Err(e) = self.handled.sync() {
            tracing::warn!("handled responses not saved (a restart may repeat them): {e}");
        }
    }

    fn remember(&mut self, key: (String, ActionKind)) {
        if self.done.insert(key.clone()) {
            self.done_order.push_back(key);
            if self.done_order.len() > MAX_DONE_KEYS {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
        }
    }

    async fn run_one(
        &mut self,
        f: &FindingView,
        action: ActionKind,
        mode: Mode,
        response: &str,
        now: Instant,
    ) -> (Outcome, String, (String, Option<String>)) {
        let target = match target_of(action, f) {
            Ok(t) => t,
            Err(why) => return (Outcome::SkippedNoTarget, String::new(), (why, None)),
        };
        let text = target.text();
        let principal = match &target {
            Target::Role(r) => Some(r.as_str()),
            Target::User(u) => Some(u.as_str()),
            _ => None,
        };
        if let Some(p) = principal {
            // The acting session too: a break-glass session may be named by its session ARN.
            if self.protected.is_protected(p) || f.principal.as_deref().is_some_and(|x| self.protected.is_protected(x))
            {
                return (Outcome::SkippedProtected, text, (format!("{p} is a protected principal"), None));
            }
        }
        if let (Target::Task(_), Some(p)) = (&target, f.principal.as_deref()) {
            // A protected (break-glass) session in a task is the approved way in: its task is left running.
            if self.protected.is_protected(p) {
                return (Outcome::SkippedProtected, text, (format!("{p} is a protected principal"), None));
            }
        }
        if let Target::Role(r) = &target {
            if safety::is_service_linked(r) {
                return (Outcome::SkippedServiceLinked, text, (format!("{r} is a service-linked role"), None));
            }
        }
        let live = mode != Mode::DryRun && self.exec.is_some();
        let limits = if live { &mut self.limits } else { &mut self.dry_limits };
        match limits.take(action, now) {
            Ok(()) => {}
            Err(Limited::Rate) => {
                return (
                    Outcome::SkippedRateLimited,
                    text,
                    (format!("{} rate limit per hour reached", action.as_str()), None),
                )
            }
            Err(Limited::Cap) => {
                return (Outcome::SkippedCap, text, ("global cap of actions per hour reached".into(), None))
            }
        }
        let Some(exec) = self.exec.as_mut().filter(|_| live) else {
            return (Outcome::DryRun, text.clone(), (format!("would {}: {text}", action.as_str()), None));
        };
        let seen = OffsetDateTime::parse(&f.last_seen, &time::format_description::well_known::Rfc3339).ok();
        let r = match &target {
            Target::Finding => exec.notify(f, response).await,
            Target::Role(role) => exec.revoke_role_sessions(role, seen, OffsetDateTime::now_utc()).await,
            Target::User(u) => exec.quarantine_user(u).await,
            Target::Drift(d) => exec.restore(d).await,
            Target::Task(t) => exec.stop_task(t, &format!("trailwatch: {} (finding {})", f.title, f.id)).await,
        };
        match r {
            Ok(Change::Done(d)) => (Outcome::Done, text, (d, None)),
            Ok(Change::Removed { detail, removed }) => (Outcome::Done, text, (detail, Some(removed))),
            Ok(Change::Already(d)) => {
                // Nothing changed: the slot is not used up.
                self.limits.give_back(action);
                (Outcome::Already, text, (d, None))
            }
            Err(e) => (Outcome::Failed, text, (e.0, None)),
        }
    }

    /// Writes outcomes back to their findings (enforce mode only; dry-run changes nothing).
    pub async fn write_back(&self, records: &[ActionRecord]) {
        let Some(w) = &self.writeback else { return };
        let mut by_finding: BTreeMap<&str, Vec<&ActionRecord>> = BTreeMap::new();
        for r in records.iter().filter(|r| r.mode != Mode::DryRun && r.outcome != Outcome::Duplicate) {
            by_finding.entry(r.finding_id.as_str()).or_default().push(r);
        }
        let mut updates = Vec::new();
        for (id, recs) in by_finding {
            let note = recs
                .iter()
                .map(|r| format!("{}: {} ({})", r.action.as_str(), r.outcome.as_str().replace('_', " "), r.detail))
                .collect::<Vec<_>>()
                .join("; ");
            let mut fields: BTreeMap<String, String> = recs
                .iter()
                .map(|r| {
                    (
                        format!("trailwatch/response/{}", r.action.as_str()),
                        format!("{}: {}", r.outcome.as_str(), r.detail),
                    )
                })
                .collect();
            for r in &recs {
                if let Some(removed) = &r.removed {
                    // On its own, as JSON: what an operator needs to put it back.
                    fields.insert(format!("trailwatch/response/{}/removed", r.action.as_str()), removed.clone());
                }
            }
            updates.push(writeback::Update {
                id: id.to_string(),
                product_arn: recs[0].product_arn.clone(),
                note: format!("trailwatch responses: {note}"),
                fields,
                notified: recs.iter().any(|r| matches!(r.outcome, Outcome::Done | Outcome::Already | Outcome::Failed)),
            });
        }
        if updates.is_empty() {
            return;
        }
        let n = updates.len() as u64;
        let written = w.send(updates).await;
        let m = crate::metrics::get();
        m.response_writebacks.with_label_values(&["updated"]).inc_by(written.updated);
        m.response_writebacks
            .with_label_values(&["failed"])
            .inc_by(written.failed.max(n.saturating_sub(written.updated)));
    }
}

/// Logs and counts one record.
pub fn observe(r: &ActionRecord) {
    crate::metrics::get()
        .response_actions
        .with_label_values(&[r.action.as_str(), r.mode.as_str(), r.outcome.as_str()])
        .inc();
    let line =
        format!("response {} {} {}: {} [{}]", r.response, r.action.as_str(), r.outcome.as_str(), r.detail, r.target);
    match r.outcome {
        Outcome::Failed => tracing::warn!(finding = %r.finding_id, mode = r.mode.as_str(), "{line}"),
        Outcome::Duplicate => tracing::debug!(finding = %r.finding_id, mode = r.mode.as_str(), "{line}"),
        _ => tracing::info!(finding = %r.finding_id, mode = r.mode.as_str(), "{line}"),
    }
}

/// Rule id → tags of every rule in the set (tags are not in findings).
pub fn rule_tags(set: &trailwatch_rules::RuleSet) -> HashMap<String, Vec<String>> {
    let mut m = HashMap::new();
    for r in set.rules() {
        m.insert(r.meta.id.clone(), r.meta.tags.clone());
    }
    for c in set.correlations() {
        m.insert(c.meta.id.clone(), c.meta.tags.clone());
    }
    m
}

/// The responder as the pipeline's last sink: findings are queued on
/// `send` and acted on at `flush` (each commit), after the sinks before it
/// have delivered them.
pub struct RespondSink {
    responder: Responder,
    pending: Vec<FindingView>,
    requests: Vec<Arc<request::ResponseRequest>>,
    cfg: RespondConfig,
    /// Every record, for tests and embedding (`None`: not kept).
    pub log: Option<Arc<std::sync::Mutex<Vec<ActionRecord>>>>,
}

impl RespondSink {
    pub fn new(responder: Responder, cfg: &RespondConfig) -> RespondSink {
        RespondSink { responder, pending: Vec::new(), requests: Vec::new(), cfg: cfg.clone(), log: None }
    }
}

#[async_trait]
impl Sink for RespondSink {
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        for f in findings {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&f.json) else { continue };
            if let Some(view) = FindingView::from_asff(&v) {
                if self.responder.wants(&view) {
                    self.pending.push(view);
                }
            }
        }
        Ok(())
    }

    async fn requests(&mut self, requests: &[Arc<request::ResponseRequest>]) -> Result<(), SinkError> {
        self.requests.extend(requests.iter().cloned());
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        let pending = std::mem::take(&mut self.pending);
        let mut records = Vec::new();
        for req in std::mem::take(&mut self.requests) {
            let Some(action) = self.cfg.custom_action(&req.action_id) else {
                tracing::warn!(event = %req.event_id, "custom action `{}` is not in respond.custom_actions: ignored", req.action_id);
                continue;
            };
            tracing::info!(event = %req.event_id, findings = req.findings.len(), "analyst requested {}", action.as_str());
            for f in req.findings.iter().filter_map(FindingView::from_asff) {
                let r = self.responder.handle_request(&f, action, Instant::now()).await;
                observe(&r);
                records.push(r);
            }
        }
        for f in &pending {
            for r in self.responder.handle(f, Instant::now()).await {
                observe(&r);
                records.push(r);
            }
        }
        self.responder.sync_handled();
        self.responder.write_back(&records).await;
        if let Some(l) = &self.log {
            l.lock().unwrap_or_else(|e| e.into_inner()).extend(records);
        }
        Ok(())
    }
}

/// `replay --responses dry-run`: a table per action of what would have been done.
pub fn dry_run_table(records: &[ActionRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("responses (dry-run): no finding matched a [[responses]] entry\n");
        return out;
    }
    for a in ActionKind::ALL {
        let rows: Vec<&ActionRecord> = records.iter().filter(|r| r.action == a).collect();
        if rows.is_empty() {
            continue;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rows {
            *counts.entry(r.outcome.as_str()).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "== {} ({} findings: {}) ==", a.as_str(), rows.len(), summary.join(", "));
        let _ = writeln!(
            out,
            "{:<20}  {:<12}  {:<10}  {:<22}  {:<40}  target / detail",
            "when", "account", "mode", "outcome", "rule"
        );
        for r in rows {
            let title: String = r.title.chars().take(40).collect();
            let _ = writeln!(
                out,
                "{:<20}  {:<12}  {:<10}  {:<22}  {:<40}  {}",
                r.when,
                r.account,
                r.mode.as_str(),
                r.outcome.as_str(),
                title,
                if r.outcome == Outcome::DryRun { r.detail.clone() } else { format!("{} — {}", r.target, r.detail) }
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, principal: &str) -> FindingView {
        FindingView {
            id: id.into(),
            rule_id: "r".into(),
            severity: "HIGH".into(),
            account: "111122223333".into(),
            principal: Some(principal.into()),
            last_seen: "2026-12-01T00:00:00Z".into(),
            ..Default::default()
        }
    }

    fn responder(cap: u32) -> Responder {
        let cfg = RespondConfig {
            protected_principals: vec!["breakglass".into()],
            max_actions_per_hour: cap,
            ..Default::default()
        };
        let rules = vec![ResponseRule {
            rules: vec!["r".into()],
            actions: vec![ActionKind::RevokeRoleSessions, ActionKind::QuarantineUser],
            ..Default::default()
        }];
        Responder::offline(&cfg, &rules, HashMap::new())
    }

    #[tokio::test]
    async fn dry_run_describes_and_skips_with_reasons() {
        let mut r = responder(100);
        let now = Instant::now();
        let recs = r.handle(&view("a", "arn:aws:sts::111122223333:assumed-role/dev/alice"), now).await;
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].outcome, Outcome::DryRun);
        assert_eq!(recs[0].target, "arn:aws:iam::111122223333:role/dev");
        assert_eq!(recs[1].outcome, Outcome::SkippedNoTarget, "an assumed role is no IAM user");
        let recs = r.handle(&view("b", "arn:aws:sts::111122223333:assumed-role/breakglass/bob"), now).await;
        assert_eq!(recs[0].outcome, Outcome::SkippedProtected);
        let recs = r.handle(&view("c", "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForECS/ecs"), now).await;
        assert_eq!(recs[0].outcome, Outcome::SkippedServiceLinked);
        // The same finding again: handled once.
        let recs = r.handle(&view("a", "arn:aws:sts::111122223333:assumed-role/dev/alice"), now).await;
        assert_eq!(recs[0].outcome, Outcome::Duplicate);
        let table = dry_run_table(&[]);
        assert!(table.contains("no finding matched"));
    }

    #[tokio::test]
    async fn the_cap_holds_in_dry_run_too() {
        let mut r = responder(3);
        let now = Instant::now();
        let mut outcomes = BTreeMap::new();
        for i in 0..50 {
            for rec in r.handle(&view(&format!("f{i}"), "arn:aws:iam::111122223333:user/u"), now).await {
                *outcomes.entry(rec.outcome).or_insert(0) += 1;
            }
        }
        assert_eq!(outcomes.get(&Outcome::DryRun), Some(&3));
        assert_eq!(outcomes.get(&Outcome::SkippedCap), Some(&47));
        assert_eq!(outcomes.get(&Outcome::SkippedNoTarget), Some(&50));
    }
}
