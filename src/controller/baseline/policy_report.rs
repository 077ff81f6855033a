//! The PolicyReport (`wgpolicyk8s.io/v1alpha2`) a baseline keeps in each namespace it selects:
//! one result per control and template (`rule` is the source of the rendered objects:
//! `control/networkIsolation`, `template/0:ConfigMap/tenant-info`, ...), computed from the
//! findings of the check. Pure: the same findings and live report give the same report, and the
//! timestamp of a result is the time it last changed (taken from the live report), so an idle
//! check finds nothing to write.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ObjectMeta;

use super::status::{Finding, FindingState};
use crate::api::baseline::BaselineMode;
use crate::api::policy_report::{
    PolicyReport, PolicyReportResult, PolicyReportSpec, PolicyReportSummary, PolicyResult,
    PolicySeverity, ReportTimestamp,
};
use crate::baseline::{BASELINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// `results[].source` of every result the operator writes.
pub const SOURCE: &str = "opsec-operator";
/// `results[].category`: the X.1642 clause the report gives evidence for.
pub const CATEGORY: &str = "X.1642 8.5.3";
/// Rule of the result that says why a selected namespace could not be rendered at all.
pub const NAMESPACE_RULE: &str = "namespace";
/// Source (rule) of the Pod Security labels on the Namespace.
pub const POD_SECURITY_SOURCE: &str = "control/podSecurity";

/// Name of the report of `baseline` in each namespace.
pub fn report_name(baseline: &str) -> String {
    format!("opsec-{baseline}")
}

/// Why this baseline does not apply an object it renders.
#[derive(Clone, Debug, PartialEq)]
pub enum Withheld {
    /// Other baselines of equal priority render it too: nobody applies it.
    Tie(Vec<String>),
    /// A baseline of higher priority applies it.
    Overridden(Vec<String>),
}

/// One object a control or template renders into the namespace (or the Namespace itself, for
/// the Pod Security labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    /// The control or template: the rule of the result.
    pub source: String,
    pub reference: ObjectReference,
    /// Set when the object is not this baseline's to apply.
    pub withheld: Option<Withheld>,
}

impl Subject {
    /// `Kind/name`, as in [`Finding::object`].
    pub fn object(&self) -> String {
        format!(
            "{}/{}",
            self.reference.kind.as_deref().unwrap_or_default(),
            self.reference.name.as_deref().unwrap_or_default()
        )
    }
}

/// Everything one report is computed from.
pub struct Inputs<'a> {
    pub baseline: &'a str,
    pub namespace: &'a str,
    pub mode: BaselineMode,
    /// What the baseline renders here, in render order.
    pub subjects: Vec<Subject>,
    /// The findings of the check in this namespace.
    pub findings: Vec<&'a Finding>,
    /// The report as it is in the cluster, if any: unchanged results keep their timestamp.
    pub live: Option<&'a PolicyReport>,
    pub now: Timestamp,
}

/// The outcome of one subject.
struct Outcome {
    result: PolicyResult,
    state: &'static str,
    message: Option<String>,
}

fn outcome(subject: &Subject, finding: Option<&Finding>) -> Outcome {
    let object = subject.object();
    if let Some(w) = &subject.withheld {
        return match w {
            Withheld::Tie(with) => Outcome {
                result: PolicyResult::Fail,
                state: "Conflicted",
                message: Some(format!(
                    "{object}: equal priority with {}, applied by neither",
                    baselines(with)
                )),
            },
            Withheld::Overridden(by) => Outcome {
                result: PolicyResult::Skip,
                state: "Overridden",
                message: Some(format!(
                    "{object}: applied by {} (higher priority)",
                    baselines(by)
                )),
            },
        };
    }
    let Some(f) = finding else {
        return Outcome {
            result: PolicyResult::Skip,
            state: "NotChecked",
            message: Some(format!("{object}: not checked")),
        };
    };
    let result = match f.state {
        FindingState::Compliant => PolicyResult::Pass,
        FindingState::Missing | FindingState::Drifted | FindingState::Conflicted => {
            PolicyResult::Fail
        }
        FindingState::Failed => PolicyResult::Error,
    };
    Outcome {
        result,
        state: f.state.reason(),
        message: (f.state != FindingState::Compliant).then(|| format!("{object}: {}", f.message)),
    }
}

fn baselines(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("SecurityBaseline/{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rank(r: PolicyResult) -> u8 {
    match r {
        PolicyResult::Pass => 0,
        PolicyResult::Skip => 1,
        PolicyResult::Warn => 2,
        PolicyResult::Fail => 3,
        PolicyResult::Error => 4,
    }
}

/// How serious a failure of a control is: the ones that isolate tenants are `high`.
pub fn severity(rule: &str) -> PolicySeverity {
    match rule {
        "control/networkIsolation"
        | "control/podSecurity"
        | "control/tenantAccess"
        | NAMESPACE_RULE => PolicySeverity::High,
        _ => PolicySeverity::Medium,
    }
}

/// The report of `baseline` in `namespace`.
pub fn build(inputs: Inputs<'_>) -> PolicyReport {
    let Inputs {
        baseline,
        namespace,
        mode,
        subjects,
        findings,
        live,
        now,
    } = inputs;
    let finding_of = |object: &str| findings.iter().copied().find(|f| f.object == object);

    // Group the subjects by source, in render order (the Pod Security labels first).
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&Subject>> = BTreeMap::new();
    let mut subjects_sorted: Vec<&Subject> = subjects.iter().collect();
    subjects_sorted.sort_by_key(|s| s.source != POD_SECURITY_SOURCE);
    for s in subjects_sorted {
        if !groups.contains_key(&s.source) {
            order.push(s.source.clone());
        }
        groups.entry(s.source.clone()).or_default().push(s);
    }

    let mode = match mode {
        BaselineMode::Enforce => "Enforce",
        BaselineMode::Audit => "Audit",
    };
    let make = |rule: String,
                result: PolicyResult,
                state: &str,
                message: String,
                resources: Vec<ObjectReference>| PolicyReportResult {
        source: Some(SOURCE.into()),
        policy: baseline.into(),
        severity: Some(severity(&rule)),
        rule: Some(rule),
        category: Some(CATEGORY.into()),
        timestamp: None,
        result: Some(result),
        scored: Some(true),
        message: Some(message),
        resources,
        resource_selector: None,
        properties: [
            ("mode".to_string(), mode.to_string()),
            ("state".to_string(), state.to_string()),
        ]
        .into(),
    };

    let mut results = Vec::new();
    for source in order {
        let members = &groups[&source];
        let outcomes: Vec<Outcome> = members
            .iter()
            .map(|s| outcome(s, finding_of(&s.object())))
            .collect();
        let worst = outcomes
            .iter()
            .max_by_key(|o| rank(o.result))
            .expect("a group has members");
        let (result, state) = (worst.result, worst.state);
        let messages: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| o.message.as_deref())
            .collect();
        let message = if messages.is_empty() {
            let objects: Vec<String> = members.iter().map(|s| s.object()).collect();
            format!("{} in place as rendered", objects.join(", "))
        } else {
            messages.join("; ")
        };
        let resources = members.iter().map(|s| s.reference.clone()).collect();
        results.push(make(source, result, state, message, resources));
    }

    // Findings about no rendered object: a namespace that could not be rendered, a failed prune.
    let namespace_object = format!("Namespace/{namespace}");
    for f in &findings {
        if subjects.iter().any(|s| s.object() == f.object) {
            continue;
        }
        let (rule, reference) = if f.object == namespace_object {
            (
                NAMESPACE_RULE.to_string(),
                ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some(namespace.into()),
                    ..Default::default()
                },
            )
        } else {
            let (kind, name) = f.object.split_once('/').unwrap_or(("", &f.object));
            (
                format!("object/{}", f.object),
                ObjectReference {
                    kind: Some(kind.into()),
                    name: Some(name.into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                },
            )
        };
        let o = outcome(
            &Subject {
                source: rule.clone(),
                reference: reference.clone(),
                withheld: None,
            },
            Some(f),
        );
        let message = o.message.unwrap_or_else(|| f.object.clone());
        results.push(make(rule, o.result, o.state, message, vec![reference]));
    }

    // A result keeps the time it last changed.
    for r in &mut results {
        let previous = live.and_then(|l| {
            l.spec
                .results
                .iter()
                .find(|p| p.policy == r.policy && p.rule == r.rule)
        });
        r.timestamp = match previous {
            Some(p)
                if PolicyReportResult {
                    timestamp: None,
                    ..p.clone()
                } == *r =>
            {
                p.timestamp
            }
            _ => None,
        }
        .or(Some(ReportTimestamp::from(now)));
    }

    let mut summary = PolicyReportSummary::default();
    for r in &results {
        match r.result {
            Some(PolicyResult::Pass) => summary.pass += 1,
            Some(PolicyResult::Fail) => summary.fail += 1,
            Some(PolicyResult::Warn) => summary.warn += 1,
            Some(PolicyResult::Error) => summary.error += 1,
            Some(PolicyResult::Skip) | None => summary.skip += 1,
        }
    }

    PolicyReport {
        metadata: ObjectMeta {
            name: Some(report_name(baseline)),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (BASELINE_LABEL.to_string(), baseline.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: PolicyReportSpec {
            scope: None,
            scope_selector: None,
            summary: Some(summary),
            results,
        },
    }
}

/// True when the live report (if any) is not `desired`: its results, summary or labels differ.
pub fn needs_write(desired: &PolicyReport, live: Option<&PolicyReport>) -> bool {
    let Some(live) = live else { return true };
    let labels_ok = desired.metadata.labels.iter().flatten().all(|(k, v)| {
        live.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|lv| lv == v)
    });
    !labels_ok || desired.spec != live.spec
}

/// The server-side apply body of a report.
pub fn body(report: &PolicyReport) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(source: &str, kind: &str, name: &str) -> Subject {
        Subject {
            source: source.into(),
            reference: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: Some("t1".into()),
                ..Default::default()
            },
            withheld: None,
        }
    }

    fn finding(object: &str, state: FindingState, message: &str) -> Finding {
        Finding {
            namespace: "t1".into(),
            object: object.into(),
            state,
            message: message.into(),
        }
    }

    fn subjects() -> Vec<Subject> {
        vec![
            subject(
                "control/networkIsolation",
                "NetworkPolicy",
                "opsec-isolation",
            ),
            subject("control/tenantAccess", "RoleBinding", "opsec-tenant-admins"),
            subject(
                "control/tenantAccess",
                "RoleBinding",
                "opsec-tenant-viewers",
            ),
            subject(
                "template/0:ConfigMap/tenant-info",
                "ConfigMap",
                "tenant-info",
            ),
            Subject {
                source: POD_SECURITY_SOURCE.into(),
                reference: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some("t1".into()),
                    ..Default::default()
                },
                withheld: None,
            },
        ]
    }

    fn inputs<'a>(findings: &'a [Finding], live: Option<&'a PolicyReport>, now: i64) -> Inputs<'a> {
        Inputs {
            baseline: "standard",
            namespace: "t1",
            mode: BaselineMode::Audit,
            subjects: subjects(),
            findings: findings.iter().collect(),
            live,
            now: Timestamp::from_second(now).unwrap(),
        }
    }

    fn all_compliant() -> Vec<Finding> {
        [
            "NetworkPolicy/opsec-isolation",
            "RoleBinding/opsec-tenant-admins",
            "RoleBinding/opsec-tenant-viewers",
            "ConfigMap/tenant-info",
            "Namespace/t1",
        ]
        .iter()
        .map(|o| finding(o, FindingState::Compliant, ""))
        .collect()
    }

    fn result<'a>(r: &'a PolicyReport, rule: &str) -> &'a PolicyReportResult {
        r.spec
            .results
            .iter()
            .find(|x| x.rule.as_deref() == Some(rule))
            .unwrap_or_else(|| panic!("no result {rule}: {:#?}", r.spec.results))
    }

    #[test]
    fn one_result_per_control_and_template_named_after_the_baseline() {
        let findings = all_compliant();
        let r = build(inputs(&findings, None, 10));
        assert_eq!(r.metadata.name.as_deref(), Some("opsec-standard"));
        assert_eq!(r.metadata.namespace.as_deref(), Some("t1"));
        let labels = r.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "opsec-operator");
        assert_eq!(labels[BASELINE_LABEL], "standard");
        let rules: Vec<&str> = r
            .spec
            .results
            .iter()
            .map(|x| x.rule.as_deref().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "control/podSecurity",
                "control/networkIsolation",
                "control/tenantAccess",
                "template/0:ConfigMap/tenant-info"
            ]
        );
        for x in &r.spec.results {
            assert_eq!(x.result, Some(PolicyResult::Pass));
            assert_eq!(x.policy, "standard");
            assert_eq!(x.source.as_deref(), Some("opsec-operator"));
            assert_eq!(x.category.as_deref(), Some("X.1642 8.5.3"));
            assert_eq!(x.scored, Some(true));
            assert_eq!(
                x.timestamp,
                Some(ReportTimestamp {
                    seconds: 10,
                    nanos: 0
                })
            );
        }
        assert_eq!(result(&r, "control/tenantAccess").resources.len(), 2);
        assert_eq!(
            r.spec.summary,
            Some(PolicyReportSummary {
                pass: 4,
                ..Default::default()
            })
        );
        // The wire format is the upstream one: no spec, lowercase results.
        let v = body(&r);
        assert_eq!(v["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(v["kind"], "PolicyReport");
        assert!(v.get("spec").is_none());
        assert_eq!(v["summary"]["pass"], 4);
        assert_eq!(v["results"][0]["result"], "pass");
        assert_eq!(v["results"][0]["timestamp"]["seconds"], 10);
    }

    #[test]
    fn drift_fails_failures_error_and_the_worst_object_of_a_control_counts() {
        let mut findings = all_compliant();
        findings[0] = finding(
            "NetworkPolicy/opsec-isolation",
            FindingState::Conflicted,
            "fields /spec/policyTypes changed by kubectl-edit",
        );
        findings[2] = finding(
            "RoleBinding/opsec-tenant-viewers",
            FindingState::Missing,
            "object does not exist",
        );
        findings[3] = finding(
            "ConfigMap/tenant-info",
            FindingState::Failed,
            "ApplyFailed: refused",
        );
        let r = build(inputs(&findings, None, 10));
        let np = result(&r, "control/networkIsolation");
        assert_eq!(np.result, Some(PolicyResult::Fail));
        assert!(np.message.as_deref().unwrap().contains("kubectl-edit"));
        assert_eq!(np.properties["state"], "Conflicted");
        assert_eq!(np.properties["mode"], "Audit");
        let ta = result(&r, "control/tenantAccess");
        assert_eq!(ta.result, Some(PolicyResult::Fail));
        assert_eq!(
            ta.message.as_deref(),
            Some("RoleBinding/opsec-tenant-viewers: object does not exist")
        );
        assert_eq!(
            result(&r, "template/0:ConfigMap/tenant-info").result,
            Some(PolicyResult::Error)
        );
        assert_eq!(
            r.spec.summary,
            Some(PolicyReportSummary {
                pass: 1,
                fail: 2,
                error: 1,
                ..Default::default()
            })
        );
    }

    #[test]
    fn an_unchanged_check_keeps_the_timestamps_and_needs_no_write() {
        let findings = all_compliant();
        let first = build(inputs(&findings, None, 10));
        let again = build(inputs(&findings, Some(&first), 99));
        assert_eq!(again, first);
        assert!(!needs_write(&again, Some(&first)));
        assert!(needs_write(&again, None));

        // A result that changes gets the new time; the others keep theirs.
        let mut drifted = findings.clone();
        drifted[3] = finding(
            "ConfigMap/tenant-info",
            FindingState::Drifted,
            "fields /data/x changed",
        );
        let later = build(inputs(&drifted, Some(&first), 99));
        assert!(needs_write(&later, Some(&first)));
        assert_eq!(
            result(&later, "template/0:ConfigMap/tenant-info")
                .timestamp
                .unwrap()
                .seconds,
            99
        );
        assert_eq!(
            result(&later, "control/networkIsolation")
                .timestamp
                .unwrap()
                .seconds,
            10
        );

        // A live report without the operator's labels is rewritten.
        let mut unlabelled = first.clone();
        unlabelled.metadata.labels = None;
        assert!(needs_write(&first, Some(&unlabelled)));
    }

    #[test]
    fn the_live_report_round_trips_through_json() {
        let findings = all_compliant();
        let r = build(inputs(&findings, None, 10));
        let mut v = body(&r);
        v["metadata"]["resourceVersion"] = "42".into();
        v["metadata"]["uid"] = "u".into();
        let live: PolicyReport = serde_json::from_value(v).unwrap();
        assert!(!needs_write(&r, Some(&live)));
    }

    #[test]
    fn withheld_objects_fail_on_a_tie_and_are_skipped_when_overridden() {
        let findings = all_compliant();
        let mut inp = inputs(&findings, None, 10);
        inp.subjects[0].withheld = Some(Withheld::Tie(vec!["other".into()]));
        inp.subjects[3].withheld = Some(Withheld::Overridden(vec!["gold".into()]));
        let r = build(inp);
        let np = result(&r, "control/networkIsolation");
        assert_eq!(np.result, Some(PolicyResult::Fail));
        assert!(
            np.message
                .as_deref()
                .unwrap()
                .contains("SecurityBaseline/other")
        );
        let cm = result(&r, "template/0:ConfigMap/tenant-info");
        assert_eq!(cm.result, Some(PolicyResult::Skip));
    }

    #[test]
    fn a_namespace_that_cannot_be_rendered_gets_one_error_result() {
        let findings = vec![finding(
            "Namespace/t1",
            FindingState::Failed,
            "MissingTenant: namespace has no opsec.x1642.dev/tenant label naming its tenant",
        )];
        let r = build(Inputs {
            subjects: vec![],
            ..inputs(&findings, None, 10)
        });
        assert_eq!(r.spec.results.len(), 1);
        let x = &r.spec.results[0];
        assert_eq!(x.rule.as_deref(), Some(NAMESPACE_RULE));
        assert_eq!(x.result, Some(PolicyResult::Error));
        assert!(x.message.as_deref().unwrap().contains("MissingTenant"));
        assert_eq!(
            r.spec.summary,
            Some(PolicyReportSummary {
                error: 1,
                ..Default::default()
            })
        );
    }
}
