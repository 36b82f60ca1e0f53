//! What no action may do: touch a protected principal or a service-linked
//! role, or run more often than its per-action rate or the global hourly cap.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::config::{ActionKind, RespondConfig};
use super::matcher::glob;

const HOUR: Duration = Duration::from_secs(3600);

/// Protected principals: configured patterns plus the trailwatch roles.
pub struct Protected {
    patterns: Vec<String>,
}

impl Protected {
    pub fn new(cfg: &RespondConfig) -> Protected {
        let mut patterns = cfg.protected_principals.clone();
        // trailwatch's own roles (task, import, response): an action against
        // them would blind or disarm the responder itself.
        patterns.push("trailwatch*".into());
        patterns.push(cfg.role_name.clone());
        Protected { patterns }
    }

    /// Is this principal (an ARN of a role, user or assumed-role session, or
    /// a bare name) protected? Patterns are matched against the ARN, the
    /// role/user ARN behind a session, and the bare name.
    pub fn is_protected(&self, principal: &str) -> bool {
        let mut forms = vec![principal.to_string()];
        if let Some(role) = role_arn_of_session(principal) {
            forms.push(role);
        }
        if let Some(name) = principal_name(principal) {
            forms.push(name);
        }
        forms.iter().any(|f| self.patterns.iter().any(|p| glob(p, f)))
    }
}

/// `arn:aws:sts::A:assumed-role/NAME/SESSION` → `arn:aws:iam::A:role/NAME`.
pub fn role_arn_of_session(arn: &str) -> Option<String> {
    let (head, rest) = arn.split_once(":assumed-role/")?;
    let name = rest.split('/').next().filter(|n| !n.is_empty())?;
    Some(format!("{}:role/{name}", head.replacen(":sts:", ":iam:", 1)))
}

/// The role or user name of an ARN (the last path element), or the text itself when it is no ARN.
pub fn principal_name(arn: &str) -> Option<String> {
    if !arn.starts_with("arn:") {
        return Some(arn.to_string());
    }
    let res = arn.splitn(6, ':').nth(5)?;
    if let Some(rest) = res.strip_prefix("assumed-role/") {
        return rest.split('/').next().map(str::to_string);
    }
    if res.starts_with("role/") || res.starts_with("user/") {
        return res.rsplit('/').next().map(str::to_string);
    }
    None
}

/// Service-linked roles live under `/aws-service-role/` and belong to AWS
/// services: changing them breaks the service and IAM refuses most edits.
pub fn is_service_linked(role_arn: &str) -> bool {
    role_arn.contains(":role/aws-service-role/")
        || principal_name(role_arn).is_some_and(|n| n.starts_with("AWSServiceRoleFor"))
}

/// Why an action was not allowed to run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The action's own rate (`respond.rate_limits`).
    Rate,
    /// The global cap (`respond.max_actions_per_hour`).
    Cap,
}

/// Rolling-hour counts per action and in total.
pub struct Limits {
    per_action: HashMap<ActionKind, (u32, VecDeque<Instant>)>,
    cap: u32,
    all: VecDeque<Instant>,
}

impl Limits {
    pub fn new(cfg: &RespondConfig) -> Limits {
        Limits {
            per_action: ActionKind::ALL.iter().map(|a| (*a, (cfg.rate_limit(*a), VecDeque::new()))).collect(),
            cap: cfg.max_actions_per_hour,
            all: VecDeque::new(),
        }
    }

    /// Takes one slot for `action` at `now`, or says which limit is full.
    /// Only actions that will change something take a slot (dry-run and
    /// already-done actions do not).
    pub fn take(&mut self, action: ActionKind, now: Instant) -> Result<(), Limited> {
        let expire = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= HOUR) {
                q.pop_front();
            }
        };
        expire(&mut self.all);
        let (rate, q) = self.per_action.get_mut(&action).expect("every action has a limit");
        expire(q);
        if q.len() as u32 >= *rate {
            return Err(Limited::Rate);
        }
        if self.all.len() as u32 >= self.cap {
            return Err(Limited::Cap);
        }
        q.push_back(now);
        self.all.push_back(now);
        Ok(())
    }

    /// Gives back a slot taken for an action that turned out to change nothing.
    pub fn give_back(&mut self, action: ActionKind) {
        if let Some((_, q)) = self.per_action.get_mut(&action) {
            q.pop_back();
        }
        self.all.pop_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_forms_and_trailwatch_roles() {
        let cfg = RespondConfig {
            protected_principals: vec!["breakglass".into(), "arn:aws:iam::*:user/admin-*".into()],
            ..Default::default()
        };
        let p = Protected::new(&cfg);
        assert!(p.is_protected("arn:aws:sts::111122223333:assumed-role/breakglass/alice"));
        assert!(p.is_protected("arn:aws:iam::111122223333:role/breakglass"));
        assert!(p.is_protected("arn:aws:iam::111122223333:user/admin-bob"));
        assert!(p.is_protected("arn:aws:iam::111122223333:role/trailwatch-import"));
        assert!(p.is_protected("arn:aws:sts::111122223333:assumed-role/trailwatch-response/s"));
        assert!(!p.is_protected("arn:aws:sts::111122223333:assumed-role/dev/alice"));
        assert!(!p.is_protected("arn:aws:iam::111122223333:user/bob"));
    }

    #[test]
    fn service_linked_roles_are_recognised() {
        assert!(is_service_linked("arn:aws:iam::1:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"));
        assert!(!is_service_linked("arn:aws:iam::1:role/dev"));
    }

    #[test]
    fn rate_then_cap_over_a_rolling_hour() {
        let mut rates = std::collections::BTreeMap::new();
        rates.insert("notify".to_string(), 2);
        rates.insert("restore-config".to_string(), 10);
        let cfg = RespondConfig { rate_limits: rates, max_actions_per_hour: 3, ..Default::default() };
        let mut l = Limits::new(&cfg);
        let t0 = Instant::now();
        assert_eq!(l.take(ActionKind::Notify, t0), Ok(()));
        assert_eq!(l.take(ActionKind::Notify, t0), Ok(()));
        assert_eq!(l.take(ActionKind::Notify, t0), Err(Limited::Rate));
        assert_eq!(l.take(ActionKind::RestoreConfig, t0), Ok(()));
        assert_eq!(l.take(ActionKind::RestoreConfig, t0), Err(Limited::Cap));
        l.give_back(ActionKind::RestoreConfig);
        assert_eq!(l.take(ActionKind::RestoreConfig, t0), Ok(()));
        // An hour later every slot is free again.
        let t1 = t0 + HOUR;
        assert_eq!(l.take(ActionKind::Notify, t1), Ok(()));
        assert_eq!(l.take(ActionKind::Notify, t1), Ok(()));
        assert_eq!(l.take(ActionKind::RestoreConfig, t1), Ok(()));
        assert_eq!(l.take(ActionKind::RestoreConfig, t1), Err(Limited::Cap));
    }
}
