//! Benign org traffic: what a normal day looks like.
//!
//! Each kind of activity gets a share of the configured rate; an activity
//! (an image pull, a console session, a CI pipeline) emits several related
//! events, and the budget carries over between slices so the long-run rate is
//! exact. People and CI follow office hours (UTC 08-16 carries most of it);
//! machines run all day.

//! The activities live by theme, as the rule pack's themes do: [`ecr`] (pulls, the CI
//! pipeline, scans), [`ecs`] (workloads, task definitions), [`identity`] (people and
//! sessions), [`services`] (service principals and service-linked roles); the clients'
//! user agents are [`crate::agents`] (the org's nodes name them too). Scenarios build
//! on the same helpers.

use rand::Rng;

use crate::record::Emitter;

mod ecr;
mod ecs;
mod identity;
mod services;

pub use crate::agents::*;
pub use ecr::{inspector_finding, pull_image, repo_arn, repo_resources, MEDIA_TYPES};
pub use ecs::{container_definitions, task_definition_params};
pub use identity::{access_denied, console_login, console_sign_in, saml_sign_in, session_key, Sso};
pub use services::source_static;

use ecr::{ci_pipeline, node_pull, scanner};
use ecs::workload;
use identity::human_session;
use services::{service_linked_role, service_principal};

/// Activity kinds and their share of the event rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NodePull,
    ServicePrincipal,
    ServiceLinkedRole,
    Workload,
    Human,
    Ci,
    Scanner,
}

const KINDS: [(Kind, f64); 7] = [
    (Kind::NodePull, 0.30),
    (Kind::ServicePrincipal, 0.13),
    (Kind::ServiceLinkedRole, 0.18),
    (Kind::Workload, 0.258),
    (Kind::Human, 0.08),
    (Kind::Ci, 0.05),
    (Kind::Scanner, 0.002),
];

/// Benign traffic state: the rate and each kind's budget carried over.
pub struct Traffic {
    rate: f64,
    budget: [f64; KINDS.len()],
}

impl Traffic {
    pub fn new(rate: f64) -> Self {
        Traffic { rate, budget: [0.0; KINDS.len()] }
    }

    /// Emits the activities starting in `[t0, t1)`; their later events may fall in later slices.
    pub fn slice(&mut self, em: &mut Emitter<'_>, t0: i64, t1: i64) {
        let secs = (t1 - t0) as f64;
        for (k, (kind, share)) in KINDS.iter().enumerate() {
            let shape = match kind {
                Kind::Human | Kind::Ci => office_hours((t0 + t1) / 2),
                _ => 1.0,
            };
            self.budget[k] += self.rate * secs * share * shape;
            while self.budget[k] >= 1.0 {
                let t = em.rng.random_range(t0..t1);
                let n = match kind {
                    Kind::NodePull => node_pull(em, t),
                    Kind::ServicePrincipal => service_principal(em, t),
                    Kind::ServiceLinkedRole => service_linked_role(em, t),
                    Kind::Workload => workload(em, t),
                    Kind::Human => human_session(em, t),
                    Kind::Ci => ci_pipeline(em, t),
                    Kind::Scanner => scanner(em, t),
                };
                self.budget[k] -= n.max(1) as f64;
            }
        }
    }
}

/// Office-hours shape with a mean of 1 over a day: 2.6 from 08 to 16 UTC, 0.2 otherwise.
pub fn office_hours(t: i64) -> f64 {
    let hour = t.rem_euclid(86_400) / 3600;
    if (8..16).contains(&hour) {
        2.6
    } else {
        0.2
    }
}
