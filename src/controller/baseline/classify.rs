//! The classify stage: each rendered object against its live copy as the caches hold it
//! ([`Verdict`]: Compliant, Missing or Drifted with the fields and their other field managers),
//! and the Pod Security labels of each namespace; in Enforce mode what differs becomes a
//! [`Write`], in Audit mode a finding naming the editor. Pure: no client, no `.await` (the
//! caches are read through [`Live`]).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject};

use super::rendered::{RenderedBody, RenderedSet};
use super::status::{Finding, FindingState};
use crate::api::baseline::IgnoreDifference;
use crate::baseline::{ObjectState, applicable_ignores, classify_cached};

/// A rendered object compared with its live copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Compliant,
    Missing,
    /// Fields (JSON pointers) differ; `managers` are the other field managers owning them.
    Drifted {
        fields: Vec<String>,
        managers: Vec<String>,
    },
}

impl Verdict {
    fn of(state: ObjectState) -> Self {
        match state {
            ObjectState::Compliant => Self::Compliant,
            ObjectState::Missing => Self::Missing,
            ObjectState::Drifted { diffs, managers } => Self::Drifted {
                fields: diffs.into_iter().map(|d| d.pointer).collect(),
                managers,
            },
        }
    }
}

/// `fields /a, /b changed` and ` by m1, m2` when a manager is known.
pub fn describe_drift(fields: &[String], managers: &[String]) -> String {
    let who = if managers.is_empty() {
        String::new()
    } else {
        format!(" by {}", managers.join(", "))
    };
    format!("fields {} changed{who}", fields.join(", "))
}

/// A live object as [`Live`] finds it.
#[derive(Clone, Debug)]
pub enum LiveObject {
    /// Its kind cannot be watched (not served, or cluster-scoped): it cannot be checked.
    Unwatched { message: String },
    /// Not there; `resource` is its kind's API resource, to create it through.
    Absent { resource: ApiResource },
    Present {
        object: Box<DynamicObject>,
        resource: ApiResource,
    },
}

/// A live namespace's labels and annotations.
#[derive(Clone, Debug, Default)]
pub struct LiveNamespace {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// What the caches hold, as classify reads it.
pub trait Live {
    /// The live copy of `o`.
    fn object(&self, o: &RenderedBody) -> LiveObject;
    /// The live namespace `name`, if it exists.
    fn namespace(&self, name: &str) -> Option<LiveNamespace>;
}

/// What a Missing object's apply will be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first rollout, or a new revision: created.
    Create,
    /// Deleted since the revision was rolled out: recreated (drift).
    Recreate,
    /// Fields changed: taken back from `managers`.
    Revert {
        fields: Vec<String>,
        managers: Vec<String>,
    },
}

/// A write Enforce makes.
#[derive(Clone, Debug)]
pub enum Write<'a> {
    Object {
        object: &'a RenderedBody,
        resource: ApiResource,
        change: Change,
    },
    /// The namespace's Pod Security labels (and their signed record).
    Labels {
        namespace: &'a str,
        body: &'a serde_json::Value,
    },
}

/// The classify stage's outcome.
#[derive(Debug, Default)]
pub struct Classified<'a> {
    /// Objects as rendered (settle names those a field manager keeps fighting over).
    pub compliant: Vec<&'a RenderedBody>,
    /// Namespaces whose Pod Security labels are as rendered.
    pub labels_compliant: Vec<&'a str>,
    /// What Enforce writes (taken by the act stage, whose results settle reads).
    pub writes: Vec<Write<'a>>,
    /// What Audit reports as it is, and objects that could not be checked.
    pub findings: Vec<Finding>,
}

/// How to classify.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// Enforce (write what differs) or Audit (report it).
    pub enforce: bool,
    /// A first rollout or a new revision: a missing object is created, not recreated.
    pub rollout: bool,
    pub ignore_differences: &'a [IgnoreDifference],
}

/// Classifies every object and Pod Security label set of `set` against `live`.
pub fn classify<'a>(set: &'a RenderedSet, live: &impl Live, rules: Rules<'_>) -> Classified<'a> {
    let mut out = Classified::default();
    for nsp in &set.namespaces {
        for obj in &nsp.objects {
            let (live_object, resource) = match live.object(obj) {
                LiveObject::Unwatched { message } => {
                    out.findings
                        .push(finding(obj, FindingState::Failed, message));
                    continue;
                }
                LiveObject::Absent { resource } => (None, resource),
                LiveObject::Present { object, resource } => (Some(object), resource),
            };
            let ignores = applicable_ignores(
                rules.ignore_differences,
                &obj.api_version,
                &obj.kind,
                &obj.name,
            );
            let state = classify_cached(&obj.value(), live_object.as_deref(), &ignores);
            match (Verdict::of(state), rules.enforce) {
                (Verdict::Compliant, _) => out.compliant.push(obj),
                (Verdict::Missing, true) => out.writes.push(Write::Object {
                    object: obj,
                    resource,
                    change: if rules.rollout {
                        Change::Create
                    } else {
                        Change::Recreate
                    },
                }),
                (Verdict::Drifted { fields, managers }, true) => out.writes.push(Write::Object {
                    object: obj,
                    resource,
                    change: Change::Revert { fields, managers },
                }),
                (Verdict::Missing, false) => out.findings.push(finding(
                    obj,
                    FindingState::Missing,
                    "object does not exist".into(),
                )),
                // Audit reports the edit as Enforce would revert it: drift, its editor named.
                // Conflicts are between baselines, or a fight over a revert.
                (Verdict::Drifted { fields, managers }, false) => out.findings.push(finding(
                    obj,
                    FindingState::Drifted,
                    describe_drift(&fields, &managers),
                )),
            }
        }
        if let Some(body) = &nsp.namespace_labels {
            let matches = live
                .namespace(&nsp.namespace)
                .is_some_and(|ns| labels_match(body, &ns));
            if matches {
                out.labels_compliant.push(&nsp.namespace);
            } else if rules.enforce {
                out.writes.push(Write::Labels {
                    namespace: &nsp.namespace,
                    body,
                });
            } else {
                out.findings.push(Finding {
                    namespace: nsp.namespace.clone(),
                    object: format!("Namespace/{}", nsp.namespace),
                    state: FindingState::Drifted,
                    message: "Pod Security labels differ".into(),
                });
            }
        }
    }
    out
}

/// Whether every label and annotation of the apply `body` is on the namespace as it says.
pub fn labels_match(body: &serde_json::Value, ns: &LiveNamespace) -> bool {
    let all_in = |pointer: &str, live: &BTreeMap<String, String>| {
        body.pointer(pointer)
            .and_then(|l| l.as_object())
            .is_none_or(|want| {
                want.iter()
                    .all(|(k, v)| live.get(k).map(String::as_str) == v.as_str())
            })
    };
    all_in("/metadata/labels", &ns.labels) && all_in("/metadata/annotations", &ns.annotations)
}

/// A finding about a rendered object.
pub fn finding(obj: &RenderedBody, state: FindingState, message: String) -> Finding {
    Finding {
        namespace: obj.namespace.clone(),
        object: obj.display_name(),
        state,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::baseline::testing::{self, FakeLive};

    #[test]
    fn a_missing_object_in_enforce_is_created_on_a_rollout_and_recreated_after_it() {
        let set = testing::set();
        let live = FakeLive::default();
        for (rollout, expected) in [(true, Change::Create), (false, Change::Recreate)] {
            let c = testing::classify(&set, &live, true, rollout);
            assert_eq!(c.writes.len(), 1);
            assert!(c.findings.is_empty() && c.compliant.is_empty());
            match &c.writes[0] {
                Write::Object { object, change, .. } => {
                    assert_eq!(object.display_name(), "ConfigMap/tenant-info");
                    assert_eq!(*change, expected);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_drift_in_enforce_is_a_revert_naming_the_other_field_manager() {
        let set = testing::set();
        let obj = set.objects().next().unwrap();
        let c = testing::classify(&set, &FakeLive::edited(obj, "kubectl-edit"), true, false);
        assert!(c.findings.is_empty());
        match &c.writes[..] {
            [Write::Object { change, .. }] => assert_eq!(
                *change,
                Change::Revert {
                    fields: vec!["/data/k".into()],
                    managers: vec!["kubectl-edit".into()],
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn audit_reports_a_drift_naming_the_editor_and_writes_nothing() {
        let set = testing::set();
        let obj = set.objects().next().unwrap();
        let c = testing::classify(&set, &FakeLive::edited(obj, "kubectl-edit"), false, false);
        assert!(c.writes.is_empty());
        assert_eq!(c.findings.len(), 1);
        let f = &c.findings[0];
        assert_eq!(f.state, FindingState::Drifted);
        assert_eq!(f.object, "ConfigMap/tenant-info");
        assert_eq!(f.message, "fields /data/k changed by kubectl-edit");
        let missing = testing::classify(&set, &FakeLive::default(), false, true);
        assert!(missing.writes.is_empty());
        assert_eq!(missing.findings[0].state, FindingState::Missing);
    }

    #[test]
    fn an_object_as_rendered_is_compliant_and_left_alone() {
        let set = testing::set();
        let obj = set.objects().next().unwrap();
        let c = testing::classify(&set, &FakeLive::compliant(obj), true, false);
        assert!(c.writes.is_empty() && c.findings.is_empty());
        assert_eq!(c.compliant.len(), 1);
    }
}
