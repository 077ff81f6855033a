//! The SecurityBaseline status computed from what a check found and did: counts per namespace
//! state, the non-compliant and conflicted objects, the history, and the conditions (their types
//! are [`BaselineCondition`]). Pure: the same findings give byte-for-byte the same status, so an
//! idle check writes nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::baseline::{
    BaselineMode, ConflictRecord, NamespaceCounts, NonCompliance, SecurityBaselineStatus,
};
use crate::controller::kit::Conditions;

crate::condition_types! {
    /// The condition types of a SecurityBaseline's status.
    pub enum BaselineCondition {
        /// The revision is rolled out and every selected namespace is enforced (or audited).
        Ready,
        /// Every selected namespace is as rendered.
        Compliant,
        /// Another baseline or a field manager disputes objects of this baseline.
        Conflicted,
        /// The API server accepted the revision in a dry-run.
        Validated,
        /// A new revision waits for its approval annotation.
        AwaitingApproval,
    }
}

/// Most non-compliant entries kept in status.
pub const MAX_NON_COMPLIANT: usize = 100;

/// What a check found for one object (or the labels of one namespace).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub namespace: String,
    /// `Kind/name`.
    pub object: String,
    pub state: FindingState,
    pub message: String,
}

/// The state of one object after the check and any action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingState {
    /// As rendered (possibly after the operator applied it in this check).
    Compliant,
    /// Absent and not created (Audit).
    Missing,
    /// Differs and not reverted (Audit).
    Drifted,
    /// A field manager keeps taking back fields the baseline reverted (a second revert of its
    /// change within [`crate::baseline::conflict::TAKE_BACK_WINDOW`]); one edit is `Drifted`.
    /// Objects two baselines render are conflicts too (`status.conflicts`), counted per
    /// namespace.
    Conflicted,
    /// Could not be rendered, applied or checked.
    Failed,
}

impl FindingState {
    /// The `status.nonCompliant[].reason` of the state.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Compliant => "Compliant",
            Self::Missing => "Missing",
            Self::Drifted => "Drifted",
            Self::Conflicted => "Conflicted",
            Self::Failed => "Failed",
        }
    }
}

/// Everything the status is computed from.
pub struct Inputs<'a> {
    pub previous: &'a SecurityBaselineStatus,
    pub generation: Option<i64>,
    pub mode: BaselineMode,
    pub revision: &'a str,
    /// Namespaces selected (rendered or failed).
    pub selected: Vec<String>,
    pub findings: Vec<Finding>,
    pub conflicts: Vec<ConflictRecord>,
    /// A history entry to add (a new revision was applied): summary of the change.
    pub applied_change: Option<String>,
    pub now: Timestamp,
}

/// Why a new revision is not rolled out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `spec.rollout.requireApproval` and the approval annotation does not name it yet.
    AwaitingApproval,
    /// The API server refused some of its objects in the dry-run.
    Refused,
}

/// The status of a revision held back (awaiting approval, or refused by the dry-run): the
/// previous status, with `revision` pending and the conditions of `hold` set to `message`.
pub fn held(
    previous: &SecurityBaselineStatus,
    revision: &str,
    generation: Option<i64>,
    hold: Hold,
    message: &str,
    now: Timestamp,
) -> SecurityBaselineStatus {
    let mut status = previous.clone();
    status.pending_revision = Some(revision.into());
    status.observed_generation = generation;
    let mut c = Conditions::new(&mut status.conditions, now, generation);
    match hold {
        Hold::AwaitingApproval => c
            .set(
                BaselineCondition::AwaitingApproval,
                true,
                "AwaitingApproval",
                message,
            )
            .set(BaselineCondition::Ready, false, "AwaitingApproval", message),
        Hold::Refused => c
            .set(
                BaselineCondition::Validated,
                false,
                "DryRunRefused",
                message,
            )
            .set(BaselineCondition::Ready, false, "ValidationFailed", message),
    };
    status
}

/// The previous status with Ready False for a spec whose revision cannot be computed.
pub fn invalid(
    previous: &SecurityBaselineStatus,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> SecurityBaselineStatus {
    let mut status = previous.clone();
    Conditions::new(&mut status.conditions, now, generation).set(
        BaselineCondition::Ready,
        false,
        "InvalidSpec",
        message,
    );
    status
}

/// The new status (without lastCheckTime, which the caller sets when it writes).
pub fn build(inputs: Inputs<'_>) -> SecurityBaselineStatus {
    let Inputs {
        previous,
        generation,
        mode,
        revision,
        selected,
        findings,
        conflicts,
        applied_change,
        now,
    } = inputs;
    let mut per_ns: BTreeMap<&str, FindingState> = selected
        .iter()
        .map(|n| (n.as_str(), FindingState::Compliant))
        .collect();
    for f in &findings {
        let e = per_ns
            .entry(f.namespace.as_str())
            .or_insert(FindingState::Compliant);
        *e = worse(*e, f.state);
    }
    for c in &conflicts {
        let e = per_ns
            .entry(c.namespace.as_str())
            .or_insert(FindingState::Compliant);
        *e = worse(*e, FindingState::Conflicted);
    }
    let mut counts = NamespaceCounts {
        selected: per_ns.len() as i32,
        ..Default::default()
    };
    for state in per_ns.values() {
        match state {
            FindingState::Compliant => counts.compliant += 1,
            FindingState::Missing | FindingState::Drifted => counts.drifted += 1,
            FindingState::Conflicted => counts.conflicted += 1,
            FindingState::Failed => counts.failed += 1,
        }
    }

    let since_of = |ns: &str, obj: &str, reason: &str| {
        previous
            .non_compliant
            .iter()
            .find(|p| p.namespace == ns && p.object == obj && p.reason == reason)
            .and_then(|p| p.since.clone())
            .unwrap_or(Time(now))
    };
    let mut non_compliant: Vec<NonCompliance> = findings
        .iter()
        .filter(|f| f.state != FindingState::Compliant)
        .map(|f| NonCompliance {
            namespace: f.namespace.clone(),
            object: f.object.clone(),
            reason: f.state.reason().into(),
            message: f.message.clone(),
            since: Some(since_of(&f.namespace, &f.object, f.state.reason())),
        })
        .collect();
    non_compliant.sort_by(|a, b| (&a.namespace, &a.object).cmp(&(&b.namespace, &b.object)));
    non_compliant.truncate(MAX_NON_COMPLIANT);
    let mut conflicts = conflicts;
    conflicts.sort_by(|a, b| {
        (&a.namespace, &a.object, &a.with).cmp(&(&b.namespace, &b.object, &b.with))
    });
    conflicts.truncate(MAX_NON_COMPLIANT);

    let mut history = previous.history.clone();
    if let Some(summary) = applied_change {
        history.insert(
            0,
            crate::api::baseline::RevisionRecord {
                revision: revision.into(),
                applied_at: Time(now),
                summary,
            },
        );
        history.truncate(10);
    }

    let mut status = SecurityBaselineStatus {
        observed_generation: generation,
        revision: Some(revision.into()),
        pending_revision: None,
        namespaces: counts.clone(),
        non_compliant,
        conflicts,
        history,
        last_check_time: previous.last_check_time.clone(),
        conditions: previous.conditions.clone(),
    };
    let problems = counts.drifted + counts.failed + counts.conflicted;
    let compliant_msg = format!(
        "{} of {} selected namespaces compliant ({} drifted, {} conflicted, {} failed)",
        counts.compliant, counts.selected, counts.drifted, counts.conflicted, counts.failed
    );
    let conflicted = !status.conflicts.is_empty();
    let conflicted_msg = if conflicted {
        format!(
            "{} objects are disputed by other baselines or field managers",
            status.conflicts.len()
        )
    } else {
        "no conflicts".into()
    };
    let (ready, reason, msg) = match (counts.failed, mode) {
        (0, BaselineMode::Enforce) if counts.drifted == 0 => {
            (true, "Enforced", compliant_msg.clone())
        }
        (0, BaselineMode::Audit) => (true, "Audited", compliant_msg.clone()),
        (0, _) => (false, "NotCompliant", compliant_msg.clone()),
        _ => (false, "NamespacesFailed", compliant_msg.clone()),
    };
    Conditions::new(&mut status.conditions, now, generation)
        .set(
            BaselineCondition::Compliant,
            problems == 0,
            if problems == 0 {
                "AllCompliant"
            } else {
                "NotCompliant"
            },
            compliant_msg,
        )
        .set(
            BaselineCondition::Conflicted,
            conflicted,
            if conflicted {
                "ConflictDetected"
            } else {
                "NoConflict"
            },
            conflicted_msg,
        )
        .set(
            BaselineCondition::Validated,
            true,
            "Validated",
            format!("revision {revision} accepted by the API server"),
        )
        .set(
            BaselineCondition::AwaitingApproval,
            false,
            "Approved",
            format!("revision {revision} is rolled out"),
        )
        .set(BaselineCondition::Ready, ready, reason, msg);
    status
}

fn worse(a: FindingState, b: FindingState) -> FindingState {
    fn rank(s: FindingState) -> u8 {
        match s {
            FindingState::Compliant => 0,
            FindingState::Missing | FindingState::Drifted => 1,
            FindingState::Conflicted => 2,
            FindingState::Failed => 3,
        }
    }
    if rank(b) > rank(a) { b } else { a }
}

/// True when two statuses differ in anything but lastCheckTime.
pub fn differs(a: &SecurityBaselineStatus, b: &SecurityBaselineStatus) -> bool {
    let mut a = a.clone();
    a.last_check_time = b.last_check_time.clone();
    a != *b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::find_condition;

    #[test]
    fn a_held_revision_keeps_the_previous_status_and_sets_its_conditions() {
        let previous = SecurityBaselineStatus {
            revision: Some("sha256:old".into()),
            ..Default::default()
        };
        let s = held(
            &previous,
            "sha256:new",
            Some(3),
            Hold::Refused,
            "refused",
            Timestamp::now(),
        );
        assert_eq!(s.revision.as_deref(), Some("sha256:old"));
        assert_eq!(s.pending_revision.as_deref(), Some("sha256:new"));
        assert_eq!(s.observed_generation, Some(3));
        let v = find_condition(&s.conditions, "Validated").unwrap();
        assert_eq!(
            (v.status.as_str(), v.reason.as_str()),
            ("False", "DryRunRefused")
        );
        let r = find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("ValidationFailed", "refused")
        );
    }

    fn finding(ns: &str, state: FindingState) -> Finding {
        Finding {
            namespace: ns.into(),
            object: "NetworkPolicy/opsec-isolation".into(),
            state,
            message: "m".into(),
        }
    }

    fn inputs<'a>(
        prev: &'a SecurityBaselineStatus,
        findings: Vec<Finding>,
        now: i64,
    ) -> Inputs<'a> {
        Inputs {
            previous: prev,
            generation: Some(3),
            mode: BaselineMode::Audit,
            revision: "sha256:abc",
            selected: vec!["a".into(), "b".into(), "c".into()],
            findings,
            conflicts: vec![],
            applied_change: None,
            now: Timestamp::from_second(now).unwrap(),
        }
    }

    #[test]
    fn counts_namespaces_by_their_worst_object() {
        let prev = SecurityBaselineStatus::default();
        let s = build(inputs(
            &prev,
            vec![
                finding("a", FindingState::Compliant),
                finding("b", FindingState::Drifted),
                finding("c", FindingState::Failed),
            ],
            10,
        ));
        assert_eq!(
            s.namespaces,
            NamespaceCounts {
                selected: 3,
                compliant: 1,
                drifted: 1,
                conflicted: 0,
                failed: 1
            }
        );
        assert_eq!(s.non_compliant.len(), 2);
        assert_eq!(
            find_condition(&s.conditions, "Compliant").unwrap().status,
            "False"
        );
        assert_eq!(
            find_condition(&s.conditions, "Ready").unwrap().reason,
            "NamespacesFailed"
        );
    }

    #[test]
    fn the_same_findings_later_give_the_same_status() {
        let prev = SecurityBaselineStatus::default();
        let first = build(inputs(&prev, vec![finding("b", FindingState::Drifted)], 10));
        let second = build(inputs(
            &first,
            vec![finding("b", FindingState::Drifted)],
            99,
        ));
        assert!(
            !differs(&first, &second),
            "an unchanged check must not change the status:\n{first:#?}\n{second:#?}"
        );
        assert_eq!(
            second.non_compliant[0].since,
            Some(Time(Timestamp::from_second(10).unwrap()))
        );
    }

    #[test]
    fn history_keeps_the_last_ten_revisions_newest_first() {
        let mut prev = SecurityBaselineStatus::default();
        for i in 0..12 {
            let mut inp = inputs(&prev, vec![], i);
            inp.applied_change = Some(format!("change {i}"));
            prev = build(inp);
        }
        assert_eq!(prev.history.len(), 10);
        assert_eq!(prev.history[0].summary, "change 11");
    }
}
