//! The settle stage: from the previous status and what a check classified and did, the
//! findings, the conflict records, the Events, the metric deltas and the new status. Every
//! "announced once, on the transition" rule is decided here by comparing the previous status
//! with the new one: drift only for an object not already non-compliant, a conflict only when
//! new, a held revision only when the pending revision (or its validation) changes, a render
//! failure only when new. Pure: no client, no `.await`; the clocks are inputs.

use std::collections::BTreeSet;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;

use super::act::{Acted, Pruned, Refusal};
use super::classify::{Change, Classified, Write, describe_drift, finding};
use super::events::BaselineEvent;
use super::rendered::{RenderedBody, RenderedSet};
use super::scope::{self, Basis, Memory, Scope};
use super::status::{self, BaselineCondition, Finding, FindingState, Hold};
use crate::api::baseline::{BaselineMode, ConflictRecord, SecurityBaselineStatus};
use crate::baseline::{TakeBacks, summarize_change};
use crate::controller::kit::{Announce, conditions};

/// How a check ended.
pub enum Outcome<'a> {
    /// The spec's revision cannot be computed.
    InvalidSpec { message: String },
    /// A new revision waits for its approval annotation.
    AwaitingApproval { revision: &'a str },
    /// The API server refused objects of a new revision in the dry-run.
    Refused {
        revision: &'a str,
        refusals: Vec<Refusal>,
    },
    /// The revision was checked (and, in Enforce mode, applied).
    Checked(Box<Round<'a>>),
}

/// What a check of a rolled-out revision saw and did.
pub struct Round<'a> {
    pub mode: BaselineMode,
    pub revision: &'a str,
    pub set: &'a RenderedSet,
    pub classified: Classified<'a>,
    pub acted: Vec<Acted<'a>>,
    pub pruned: Vec<Pruned>,
    /// For a new revision: (`Kind/name`, rendered hash) of what the baseline had stamped before.
    pub hashes_before: Option<Vec<(String, String)>>,
    /// The baseline's reverts of other field managers' edits so far.
    pub take_backs: TakeBacks,
    /// What the earlier checks found in the namespaces this one did not cover.
    pub memory: Option<Memory>,
    pub basis: Basis,
    pub scope: &'a Scope,
    /// When the check started (the scope's clock).
    pub started: Instant,
    /// The take-backs' clock.
    pub now: Instant,
}

/// Counts for the drift metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricDeltas {
    /// Drift first seen in this check (reverted, or newly drifted or conflicted).
    pub drift_detected: u64,
    pub drift_reverted: u64,
}

/// What a checked round keeps for the next check and for the PolicyReports.
pub struct Kept {
    /// This check's findings (the namespaces it covered).
    pub findings: Vec<Finding>,
    pub take_backs: TakeBacks,
    pub memory: Memory,
}

/// The settle stage's result.
pub struct Settled {
    /// The status to write (without lastCheckTime, set by the write).
    pub status: SecurityBaselineStatus,
    /// The Events to publish, in order, after the status is written.
    pub events: Vec<Announce<BaselineEvent>>,
    pub metrics: MetricDeltas,
    /// None when the check held or stopped before checking objects.
    pub kept: Option<Kept>,
}

/// Settles a check of a baseline at `generation` whose last status was `previous`.
pub fn settle(
    previous: &SecurityBaselineStatus,
    generation: Option<i64>,
    now: Timestamp,
    outcome: Outcome<'_>,
) -> Settled {
    let held = |status: SecurityBaselineStatus, events| Settled {
        status,
        events,
        metrics: MetricDeltas::default(),
        kept: None,
    };
    match outcome {
        Outcome::InvalidSpec { message } => held(
            status::invalid(previous, generation, &message, now),
            Vec::new(),
        ),
        Outcome::AwaitingApproval { revision } => {
            let msg = format!(
                "revision {revision} waits for the annotation {}={revision}",
                crate::baseline::APPROVE_REVISION_ANNOTATION
            );
            let status = status::held(
                previous,
                revision,
                generation,
                Hold::AwaitingApproval,
                &msg,
                now,
            );
            let mut events = Vec::new();
            if previous.pending_revision != status.pending_revision {
                events.push(Announce::new(BaselineEvent::AwaitingApproval, msg));
            }
            held(status, events)
        }
        Outcome::Refused { revision, refusals } => {
            let first = refusals
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let msg = format!(
                "revision {revision} not rolled out: the API server refused {} object(s); first: {first}",
                refusals.len(),
            );
            let status = status::held(previous, revision, generation, Hold::Refused, &msg, now);
            let mut events = Vec::new();
            if previous.pending_revision != status.pending_revision
                || conditions::turned_false(
                    &previous.conditions,
                    &status.conditions,
                    BaselineCondition::Validated,
                )
            {
                events.push(Announce::new(BaselineEvent::ValidationFailed, msg));
            }
            held(status, events)
        }
        Outcome::Checked(round) => checked(previous, generation, now, *round),
    }
}

fn checked(
    previous: &SecurityBaselineStatus,
    generation: Option<i64>,
    now: Timestamp,
    round: Round<'_>,
) -> Settled {
    let Round {
        mode,
        revision,
        set,
        classified,
        acted,
        pruned,
        hashes_before,
        mut take_backs,
        memory,
        basis,
        scope,
        started,
        now: clock,
    } = round;
    let known = |f: &Finding| {
        previous
            .non_compliant
            .iter()
            .any(|p| p.namespace == f.namespace && p.object == f.object)
    };
    let mut events = Vec::new();
    let mut findings = Vec::new();

    // What the schema could not judge (a template that does not render here): an Event the
    // first time, the finding in status for as long as it lasts.
    for f in &set.failed {
        let failed = Finding {
            namespace: f.namespace.clone(),
            object: format!("Namespace/{}", f.namespace),
            state: FindingState::Failed,
            message: format!("{}: {}", f.reason.as_str(), f.message),
        };
        let announced = previous.non_compliant.iter().any(|p| {
            p.namespace == failed.namespace
                && p.object == failed.object
                && p.message == failed.message
        });
        if !announced {
            events.push(Announce::new(
                f.reason.event(),
                format!("{}: {}", f.namespace, failed.message),
            ));
        }
        findings.push(failed);
    }

    // Reverts of other managers' edits are recorded first: a second one is a fight.
    for a in &acted {
        if let Acted::Applied(Write::Object {
            object,
            change: Change::Revert { fields, managers },
            ..
        }) = a
            && !managers.is_empty()
        {
            take_backs.reverted(
                &object.namespace,
                &object.display_name(),
                managers,
                fields,
                clock,
            );
        }
    }
    let mut fights = Vec::new();
    let mut judge = |obj: &RenderedBody, findings: &mut Vec<Finding>| {
        let (f, c) = compliant_or_fought(&take_backs, obj, clock);
        findings.push(f);
        fights.extend(c);
    };
    for obj in &classified.compliant {
        judge(obj, &mut findings);
    }
    for ns in &classified.labels_compliant {
        findings.push(Finding {
            namespace: ns.to_string(),
            object: format!("Namespace/{ns}"),
            state: FindingState::Compliant,
            message: String::new(),
        });
    }
    findings.extend(classified.findings);

    let mut created = 0usize;
    let mut created_keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut reverted = Vec::new();
    for a in acted {
        match a {
            Acted::Applied(Write::Object { object, change, .. }) => {
                judge(object, &mut findings);
                let (name, ns) = (object.display_name(), &object.namespace);
                match change {
                    Change::Create => {
                        created += 1;
                        created_keys.insert((ns.clone(), name));
                    }
                    Change::Recreate => {
                        reverted.push(Announce::about(
                            BaselineEvent::DriftReverted,
                            format!("{name} in {ns} was deleted; recreated"),
                            Some(object.reference()),
                        ));
                        created_keys.insert((ns.clone(), name));
                    }
                    Change::Revert { fields, managers } => {
                        let from = if managers.is_empty() {
                            String::new()
                        } else {
                            format!(" (taken back from {})", managers.join(", "))
                        };
                        reverted.push(Announce::about(
                            BaselineEvent::DriftReverted,
                            format!(
                                "{name} in {ns}: {}; reverted{from}",
                                describe_drift(&fields, &managers)
                            ),
                            Some(object.reference()),
                        ));
                    }
                }
            }
            Acted::Failed {
                write: Write::Object { object, .. },
                message,
            } => findings.push(finding(
                object,
                FindingState::Failed,
                format!("ApplyFailed: {message}"),
            )),
            Acted::Applied(Write::Labels { namespace, .. }) => {
                findings.push(Finding {
                    namespace: namespace.to_string(),
                    object: format!("Namespace/{namespace}"),
                    state: FindingState::Compliant,
                    message: String::new(),
                });
                created += 1;
            }
            Acted::Failed {
                write: Write::Labels { namespace, .. },
                message,
            } => findings.push(Finding {
                namespace: namespace.to_string(),
                object: format!("Namespace/{namespace}"),
                state: FindingState::Failed,
                message,
            }),
        }
    }

    let mut pruned_events = Vec::new();
    for p in pruned {
        match p {
            Pruned::Deleted(key) => pruned_events.push(Announce::about(
                BaselineEvent::Pruned,
                format!(
                    "deleted {} in {}: no longer rendered",
                    key.display_name(),
                    key.namespace
                ),
                Some(ObjectReference {
                    api_version: Some(key.api_version.clone()),
                    kind: Some(key.kind.clone()),
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    ..Default::default()
                }),
            )),
            Pruned::Released {
                namespace,
                put_back,
            } => pruned_events.push(Announce::about(
                BaselineEvent::Pruned,
                format!(
                    "took its Pod Security labels off namespace {namespace}: no longer rendered; put back {}",
                    describe_labels(&put_back)
                ),
                Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some(namespace),
                    ..Default::default()
                }),
            )),
            Pruned::Failed {
                namespace,
                object,
                message,
            } => findings.push(Finding {
                namespace,
                object,
                state: FindingState::Failed,
                message: format!("PruneFailed: {message}"),
            }),
        }
    }

    let conflicts: Vec<ConflictRecord> = set
        .contested
        .iter()
        .map(|c| ConflictRecord {
            namespace: c.key.namespace.clone(),
            object: c.key.display_name(),
            with: c
                .with
                .iter()
                .map(|b| format!("SecurityBaseline/{b}"))
                .collect::<Vec<_>>()
                .join(", "),
            fields: if c.tie {
                vec!["(equal priority: applied by neither)".into()]
            } else {
                vec!["(a higher priority baseline applies it)".into()]
            },
        })
        .chain(fights)
        .collect();

    // Events: only for what was done or newly found, so a quiet check announces nothing.
    if created > 0 {
        events.push(Announce::new(
            BaselineEvent::Applied,
            format!(
                "created {created} object(s) in {} namespace(s)",
                set.namespaces.len()
            ),
        ));
    }
    let drift_reverted = reverted.len() as u64;
    events.extend(reverted);
    events.extend(pruned_events);
    let mut drift_detected = drift_reverted;
    for f in findings.iter().filter(|f| {
        matches!(
            f.state,
            FindingState::Drifted | FindingState::Missing | FindingState::Conflicted
        )
    }) {
        if known(f) {
            continue;
        }
        if f.state != FindingState::Missing {
            drift_detected += 1;
        }
        let related = f
            .object
            .split_once('/')
            .map(|(kind, name)| ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: Some(f.namespace.clone()),
                ..Default::default()
            });
        events.push(Announce::about(
            BaselineEvent::DriftDetected,
            format!("{} in {}: {}", f.object, f.namespace, f.message),
            related,
        ));
    }
    for c in &conflicts {
        let announced = previous
            .conflicts
            .iter()
            .any(|p| p.namespace == c.namespace && p.object == c.object && p.with == c.with);
        if !announced {
            events.push(Announce::new(
                BaselineEvent::ConflictDetected,
                format!("{} in {} disputed with {}", c.object, c.namespace, c.with),
            ));
        }
    }
    events.extend(migrated(set, &created_keys, now));
    let applied_change = hashes_before.map(|before| summarize_change(&before, &set.hashes));
    if let Some(summary) = &applied_change {
        events.push(Announce::new(
            BaselineEvent::RevisionApplied,
            format!("revision {revision}: {summary}"),
        ));
    }

    let (memory, merged) = scope::merge(
        memory,
        basis,
        scope,
        started,
        set.selected(),
        findings.clone(),
        conflicts,
    );
    let status = status::build(status::Inputs {
        previous,
        generation,
        mode,
        revision,
        selected: merged.selected,
        findings: merged.findings,
        conflicts: merged.conflicts,
        applied_change,
        now,
    });
    Settled {
        status,
        events,
        metrics: MetricDeltas {
            drift_detected,
            drift_reverted,
        },
        kept: Some(Kept {
            findings,
            take_backs,
            memory,
        }),
    }
}

/// An object as rendered: compliant, unless a field manager keeps taking back what the baseline
/// reverted (then Conflicted, the manager and how often named, with the conflict record of the
/// fight; the baseline still reverts it).
fn compliant_or_fought(
    take_backs: &TakeBacks,
    obj: &RenderedBody,
    now: Instant,
) -> (Finding, Option<ConflictRecord>) {
    match take_backs.fight(&obj.namespace, &obj.display_name(), now) {
        Some(t) => (
            finding(
                obj,
                FindingState::Conflicted,
                format!(
                    "fields {} taken back by {} {} times after the baseline reverted them",
                    t.fields.join(", "),
                    t.managers.join(", "),
                    t.count
                ),
            ),
            Some(ConflictRecord {
                namespace: obj.namespace.clone(),
                object: obj.display_name(),
                with: t
                    .managers
                    .iter()
                    .map(|m| format!("fieldManager/{m}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                fields: t.fields.clone(),
            }),
        ),
        None => (finding(obj, FindingState::Compliant, String::new()), None),
    }
}

/// Labels as `k=v, ...`, or `none`.
fn describe_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 8.5.5: configuration that followed a workload into a namespace, with how long it took.
fn migrated(
    set: &RenderedSet,
    created_keys: &BTreeSet<(String, String)>,
    now: Timestamp,
) -> Vec<Announce<BaselineEvent>> {
    let mut out = Vec::new();
    for nsp in &set.namespaces {
        for (workload, created) in &nsp.workloads {
            let source_prefix = format!("workload/{workload}/");
            // Covered in this check: some of the workload's configuration was just created here.
            let newly = nsp
                .objects
                .iter()
                .filter(|o| o.source.starts_with(&source_prefix))
                .any(|o| created_keys.contains(&(o.namespace.clone(), o.display_name())));
            if !newly {
                continue;
            }
            let took = created
                .map(|c| crate::api::common::format_duration(now.duration_since(c).unsigned_abs()))
                .unwrap_or_else(|| "an unknown time".into());
            let related = workload
                .split_once('/')
                .map(|(kind, name)| ObjectReference {
                    kind: Some(kind.into()),
                    name: Some(name.into()),
                    namespace: Some(nsp.namespace.clone()),
                    ..Default::default()
                });
            out.push(Announce::about(
                BaselineEvent::ConfigurationMigrated,
                format!(
                    "configuration of {workload} is in place in {} ({took} after the workload appeared there)",
                    nsp.namespace
                ),
                related,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controller::baseline::testing::{self, FakeLive, NS, REVISION};
    use crate::controller::kit::conditions::is_true;

    const T0: &str = "2026-12-01T00:00:00Z";

    fn reasons(s: &Settled) -> Vec<BaselineEvent> {
        s.events.iter().map(|e| e.reason).collect()
    }

    /// Classifies `live` in Enforce mode, applies every write successfully and settles.
    fn enforce_round(
        previous: &SecurityBaselineStatus,
        set: &RenderedSet,
        live: &FakeLive,
        rollout: bool,
        take_backs: TakeBacks,
        clock: Instant,
    ) -> Settled {
        let classified = testing::classify(set, live, true, rollout);
        let acted = classified
            .writes
            .iter()
            .cloned()
            .map(Acted::Applied)
            .collect();
        let scope = Scope::All;
        let round = testing::round(
            BaselineMode::Enforce,
            set,
            classified,
            acted,
            take_backs,
            &scope,
            clock,
        );
        settle(
            previous,
            Some(1),
            testing::at(T0),
            Outcome::Checked(Box::new(round)),
        )
    }

    /// A check of `set` that wrote nothing (Audit, or nothing to write), settled at T0.
    fn settle_unacted(
        previous: &SecurityBaselineStatus,
        mode: BaselineMode,
        set: &RenderedSet,
        classified: Classified<'_>,
    ) -> Settled {
        let scope = Scope::All;
        let round = testing::round(
            mode,
            set,
            classified,
            Vec::new(),
            TakeBacks::default(),
            &scope,
            Instant::now(),
        );
        settle(
            previous,
            Some(1),
            testing::at(T0),
            Outcome::Checked(Box::new(round)),
        )
    }

    #[test]
    fn a_missing_object_of_a_new_revision_is_created_and_counted_in_one_applied_event() {
        let set = testing::set();
        let prev = SecurityBaselineStatus::default();
        let s = enforce_round(
            &prev,
            &set,
            &FakeLive::default(),
            true,
            TakeBacks::default(),
            Instant::now(),
        );
        assert_eq!(reasons(&s), [BaselineEvent::Applied]);
        assert_eq!(s.events[0].note, "created 1 object(s) in 1 namespace(s)");
        assert_eq!(s.metrics, MetricDeltas::default());
        assert_eq!(s.status.namespaces.compliant, 1);
        assert_eq!(s.status.revision.as_deref(), Some(REVISION));
    }

    #[test]
    fn a_deleted_object_of_the_same_revision_is_recreated_and_announced_as_reverted() {
        let set = testing::set();
        let prev = SecurityBaselineStatus {
            revision: Some(REVISION.into()),
            ..Default::default()
        };
        let s = enforce_round(
            &prev,
            &set,
            &FakeLive::default(),
            false,
            TakeBacks::default(),
            Instant::now(),
        );
        assert_eq!(reasons(&s), [BaselineEvent::DriftReverted]);
        assert_eq!(
            s.events[0].note,
            format!("ConfigMap/tenant-info in {NS} was deleted; recreated")
        );
        assert_eq!(
            s.events[0].related.as_ref().and_then(|r| r.name.as_deref()),
            Some("tenant-info")
        );
        assert_eq!(s.metrics.drift_reverted, 1);
        assert_eq!(s.metrics.drift_detected, 1);
    }

    #[test]
    fn a_drift_fought_twice_by_one_manager_is_one_conflict_announced_once() {
        let set = testing::set();
        let obj = set.objects().next().unwrap();
        let edited = FakeLive::edited(obj, "kubectl-edit");
        let t0 = Instant::now();
        let prev = SecurityBaselineStatus {
            revision: Some(REVISION.into()),
            ..Default::default()
        };

        // The first edit: reverted, naming the editor; one edit is drift, not a conflict.
        let first = enforce_round(&prev, &set, &edited, false, TakeBacks::default(), t0);
        assert_eq!(reasons(&first), [BaselineEvent::DriftReverted]);
        assert_eq!(
            first.events[0].note,
            format!(
                "ConfigMap/tenant-info in {NS}: fields /data/k changed by kubectl-edit; reverted (taken back from kubectl-edit)"
            )
        );
        assert!(first.status.conflicts.is_empty());
        let kept = first.kept.expect("checked");

        // Taken back within the window: reverted again, and now a conflict.
        let t1 = t0 + Duration::from_secs(60);
        let second = enforce_round(&first.status, &set, &edited, false, kept.take_backs, t1);
        let conflicts: Vec<_> = second
            .events
            .iter()
            .filter(|e| e.reason == BaselineEvent::ConflictDetected)
            .collect();
        assert_eq!(conflicts.len(), 1, "{:?}", second.events);
        assert_eq!(
            conflicts[0].note,
            format!("ConfigMap/tenant-info in {NS} disputed with fieldManager/kubectl-edit")
        );
        assert_eq!(
            second
                .events
                .iter()
                .filter(|e| e.reason == BaselineEvent::DriftReverted)
                .count(),
            1
        );
        assert_eq!(
            second.status.conflicts,
            [ConflictRecord {
                namespace: NS.into(),
                object: "ConfigMap/tenant-info".into(),
                with: "fieldManager/kubectl-edit".into(),
                fields: vec!["/data/k".into()],
            }]
        );
        assert_eq!(second.status.namespaces.conflicted, 1);
        let kept = second.kept.expect("checked");

        // The next check finds it as rendered, the fight still on: nothing new to announce.
        let t2 = t1 + Duration::from_secs(1);
        let third = enforce_round(
            &second.status,
            &set,
            &FakeLive::compliant(obj),
            false,
            kept.take_backs,
            t2,
        );
        assert!(third.events.is_empty(), "{:?}", third.events);
        assert_eq!(third.status.conflicts, second.status.conflicts);
    }

    #[test]
    fn a_drift_in_audit_is_found_naming_the_editor_and_announced_once() {
        let set = testing::set();
        let obj = set.objects().next().unwrap();
        let live = FakeLive::edited(obj, "kubectl-edit");
        let audit = |previous: &SecurityBaselineStatus| {
            let classified = testing::classify(&set, &live, false, false);
            assert!(classified.writes.is_empty(), "Audit never writes");
            settle_unacted(previous, BaselineMode::Audit, &set, classified)
        };
        let first = audit(&SecurityBaselineStatus::default());
        assert_eq!(reasons(&first), [BaselineEvent::DriftDetected]);
        assert!(first.events[0].note.contains("kubectl-edit"));
        assert_eq!(first.metrics.drift_detected, 1);
        let drifted = &first.status.non_compliant[0];
        assert_eq!(drifted.reason, "Drifted");
        assert_eq!(drifted.message, "fields /data/k changed by kubectl-edit");
        assert_eq!(
            first.kept.as_ref().map(|k| k.findings.len()),
            Some(1),
            "the PolicyReport's finding"
        );

        let second = audit(&first.status);
        assert!(second.events.is_empty(), "{:?}", second.events);
        assert_eq!(second.metrics, MetricDeltas::default());
    }

    #[test]
    fn the_approval_hold_announces_awaiting_approval_once_and_is_not_ready() {
        let prev = SecurityBaselineStatus {
            revision: Some("sha256:old".into()),
            ..Default::default()
        };
        let hold = |previous: &SecurityBaselineStatus| {
            settle(
                previous,
                Some(2),
                testing::at(T0),
                Outcome::AwaitingApproval { revision: REVISION },
            )
        };
        let first = hold(&prev);
        assert_eq!(reasons(&first), [BaselineEvent::AwaitingApproval]);
        assert!(first.kept.is_none());
        let c = &first.status.conditions;
        assert_eq!(is_true(c, BaselineCondition::Ready), Some(false));
        assert_eq!(is_true(c, BaselineCondition::AwaitingApproval), Some(true));
        assert_eq!(first.status.pending_revision.as_deref(), Some(REVISION));
        assert_eq!(first.status.revision.as_deref(), Some("sha256:old"));

        let second = hold(&first.status);
        assert!(second.events.is_empty(), "{:?}", second.events);
        assert!(!status::differs(&first.status, &second.status));
    }

    #[test]
    fn a_refused_revision_is_held_and_announced_once() {
        let refused = |previous: &SecurityBaselineStatus| {
            settle(
                previous,
                Some(2),
                testing::at(T0),
                Outcome::Refused {
                    revision: REVISION,
                    refusals: vec![Refusal {
                        object: "ConfigMap/tenant-info".into(),
                        namespace: NS.into(),
                        message: "denied".into(),
                    }],
                },
            )
        };
        let first = refused(&SecurityBaselineStatus::default());
        assert_eq!(reasons(&first), [BaselineEvent::ValidationFailed]);
        assert!(first.events[0].note.ends_with(&format!(
            "refused 1 object(s); first: ConfigMap/tenant-info in {NS}: denied"
        )));
        let c = &first.status.conditions;
        assert_eq!(is_true(c, BaselineCondition::Validated), Some(false));
        assert_eq!(is_true(c, BaselineCondition::Ready), Some(false));
        assert!(refused(&first.status).events.is_empty());
    }

    #[test]
    fn a_render_failure_is_announced_once_and_stays_a_finding() {
        let set = testing::failed_set();
        let once = |previous: &SecurityBaselineStatus| {
            let classified = testing::classify(&set, &FakeLive::default(), true, false);
            settle_unacted(previous, BaselineMode::Enforce, &set, classified)
        };
        let first = once(&SecurityBaselineStatus::default());
        assert_eq!(reasons(&first), [BaselineEvent::RenderFailed]);
        assert_eq!(
            first.events[0].note,
            format!("{NS}: RenderFailed: spec.templates[0].data.hello: unknown variable")
        );
        assert_eq!(first.status.namespaces.failed, 1);
        let second = once(&first.status);
        assert!(second.events.is_empty(), "{:?}", second.events);
        assert_eq!(second.status.namespaces.failed, 1);
    }

    #[test]
    fn an_invalid_spec_is_not_ready_and_announces_nothing() {
        let s = settle(
            &SecurityBaselineStatus::default(),
            Some(1),
            testing::at(T0),
            Outcome::InvalidSpec {
                message: "cannot serialize".into(),
            },
        );
        assert!(s.events.is_empty());
        let ready = conditions::find(&s.status.conditions, BaselineCondition::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
    }
}
