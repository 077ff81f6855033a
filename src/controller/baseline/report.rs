//! The SecurityBaseline status computed from what a check found and did: counts per namespace
//! state, the non-compliant and conflicted objects, and the conditions. Pure: the same findings
//! give byte-for-byte the same status, so an idle check writes nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::baseline::{
    BaselineMode, ConflictRecord, NamespaceCounts, NonCompliance, SecurityBaselineStatus,
};
use crate::api::common::{ConditionStatus, set_condition};

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

/// The status of a revision held back (awaiting approval, or refused by the dry-run): the
/// previous status, with `revision` pending and each `(type, status, reason)` condition set to
/// `message`.
pub fn held(
    previous: &SecurityBaselineStatus,
    revision: &str,
    generation: Option<i64>,
    conditions: &[(&str, ConditionStatus, &str)],
    message: &str,
    now: Timestamp,
) -> SecurityBaselineStatus {
    let mut status = previous.clone();
    status.pending_revision = Some(revision.into());
    status.observed_generation = generation;
    for (type_, value, reason) in conditions {
        set_condition(
            &mut status.conditions,
            type_,
            *value,
            reason,
            message.to_string(),
            generation,
            now,
        );
    }
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
    let c = &mut status.conditions;
    set_condition(
        c,
        "Compliant",
        ConditionStatus::from(problems == 0),
        if problems == 0 {
            "AllCompliant"
        } else {
            "NotCompliant"
        },
        compliant_msg.clone(),
        generation,
        now,
    );
    let conflicted = !status.conflicts.is_empty();
    set_condition(
        c,
        "Conflicted",
        ConditionStatus::from(conflicted),
        if conflicted {
            "ConflictDetected"
        } else {
            "NoConflict"
        },
        if conflicted {
            format!(
                "{} objects are disputed by other baselines or field managers",
                status.conflicts.len()
            )
        } else {
            "no conflicts".into()
        },
        generation,
        now,
    );
    set_condition(
        c,
        "Validated",
        ConditionStatus::True,
        "Validated",
        format!("revision {revision} accepted by the API server"),
        generation,
        now,
    );
    set_condition(
        c,
        "AwaitingApproval",
        ConditionStatus::False,
        "Approved",
        format!("revision {revision} is rolled out"),
        generation,
        now,
    );
    let (ready, reason, msg) = match (counts.failed, mode) {
        (0, BaselineMode::Enforce) if counts.drifted == 0 => (true, "Enforced", compliant_msg),
        (0, BaselineMode::Audit) => (true, "Audited", compliant_msg),
        (0, _) => (false, "NotCompliant", compliant_msg),
        _ => (false, "NamespacesFailed", compliant_msg),
    };
    set_condition(
        c,
        "Ready",
        ConditionStatus::from(ready),
        reason,
        msg,
        generation,
        now,
    );
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

/// Annotation on every stamped object: SHA-256 of its rendered body, so the next revision can say
/// what it added, changed and removed without keeping the old spec.
pub const HASH_ANNOTATION: &str = "opsec.x1642.dev/rendered-hash";

/// The hash of a rendered body (without the hash annotation itself).
pub fn hash_of(object: &serde_json::Value) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let emptied = meta
            .get_mut("annotations")
            .and_then(|a| a.as_object_mut())
            .map(|a| {
                a.remove(HASH_ANNOTATION);
                a.is_empty()
            })
            .unwrap_or(false);
        if emptied {
            meta.remove("annotations");
        }
    }
    let bytes = serde_json::to_vec(&o).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Adds the hash annotation to a rendered body.
pub fn stamp_hash(object: &mut serde_json::Value) {
    let Some(hash) = hash_of(object) else { return };
    if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(HASH_ANNOTATION.into(), hash.into());
        }
    }
}

/// What changed between two renderings, as (`Kind/name`, hash) pairs over all namespaces:
/// `added NetworkPolicy/opsec-isolation (12 namespaces); changed ...; removed ...`.
pub fn summarize(before: &[(String, String)], after: &[(String, String)]) -> String {
    use std::collections::BTreeMap;
    fn index(items: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
        let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, h) in items {
            m.entry(k.as_str()).or_default().push(h.as_str());
        }
        m
    }
    let (b, a) = (index(before), index(after));
    let mut parts = Vec::new();
    for (k, hs) in &a {
        match b.get(k) {
            None => parts.push(format!("added {k} ({} ns)", hs.len())),
            Some(old) => {
                let changed = hs.iter().filter(|h| !old.contains(h)).count();
                if changed > 0 {
                    parts.push(format!("changed {k} ({changed} ns)"));
                }
            }
        }
    }
    for (k, hs) in &b {
        if !a.contains_key(k) {
            parts.push(format!("removed {k} ({} ns)", hs.len()));
        }
    }
    if parts.is_empty() {
        "no change to rendered objects".into()
    } else {
        parts.join("; ")
    }
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
            &[
                ("Validated", ConditionStatus::False, "DryRunRefused"),
                ("Ready", ConditionStatus::False, "ValidationFailed"),
            ],
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
    fn summarizes_added_changed_and_removed_objects() {
        let before = vec![
            ("ResourceQuota/q".to_string(), "h1".to_string()),
            ("ConfigMap/x".to_string(), "h2".to_string()),
        ];
        let after = vec![
            ("ResourceQuota/q".to_string(), "h9".to_string()),
            ("NetworkPolicy/n".to_string(), "h3".to_string()),
        ];
        assert_eq!(
            summarize(&before, &after),
            "added NetworkPolicy/n (1 ns); changed ResourceQuota/q (1 ns); removed ConfigMap/x (1 ns)"
        );
        assert_eq!(summarize(&after, &after), "no change to rendered objects");
    }

    #[test]
    fn the_hash_ignores_its_own_annotation() {
        let mut o = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let h = hash_of(&o).unwrap();
        stamp_hash(&mut o);
        assert_eq!(
            o.pointer("/metadata/annotations/opsec.x1642.dev~1rendered-hash")
                .and_then(|v| v.as_str()),
            Some(h.as_str())
        );
        assert_eq!(hash_of(&o).unwrap(), h);
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
