//! The Events a SecurityBaseline check publishes on the baseline: one enum of reasons, with the
//! type, action, detection signal and meaning of each (the README's list). The render-failure
//! reasons are also the `reason` of a namespace the plan could not render ([`super::plan`]).

crate::event_reasons! {
    /// The Event reasons of the SecurityBaseline controller.
    pub enum BaselineEvent {
        Applied => Normal, "Apply", None,
            "Objects of the baseline were created where they did not exist yet (a first rollout or a new revision).";
        RevisionApplied => Normal, "Apply", None,
            "A new revision was rolled out; the note says what it added, changed and removed.";
        AwaitingApproval => Normal, "Approve", None,
            "A new revision waits for the approval annotation that names it (`spec.rollout.requireApproval`).";
        ValidationFailed => Warning, "Validate", None,
            "The API server refused objects of a new revision in the dry-run; the revision is held back.";
        DriftReverted => Normal, "Revert", Some(Signal::BaselineDrift),
            "An object that was deleted or changed was put back as rendered (the editor is named): the configuration was tampered with, and Enforce undid it.";
        Pruned => Normal, "Delete", None,
            "An object (or the Pod Security labels of a namespace) the baseline no longer renders was removed.";
        DriftDetected => Warning, "Check", Some(Signal::BaselineDrift),
            "An object is missing, changed, or fought over by a field manager (first seen in this check).";
        ConflictDetected => Warning, "Check", Some(Signal::BaselineDrift),
            "An object is disputed with another baseline, or a field manager keeps taking back what was reverted.";
        ConfigurationMigrated => Normal, "Migrate", None,
            "The configuration of a workload followed it into a namespace; the note says how long it took.";
        RenderFailed => Warning, "Render", None,
            "The baseline's templates cannot be rendered for a selected namespace.";
        MissingTenant => Warning, "Render", None,
            "A selected namespace has no label naming its tenant, so nothing is rendered there.";
        InvalidSelector => Warning, "Render", None,
            "A selector of the baseline is invalid, so a namespace cannot be selected or rendered.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::kit::Reason;
    use crate::signals::Signal;

    #[test]
    fn drift_found_reverted_or_fought_raises_the_baseline_drift_signal() {
        for r in BaselineEvent::all() {
            let expected = matches!(
                r,
                BaselineEvent::DriftDetected
                    | BaselineEvent::DriftReverted
                    | BaselineEvent::ConflictDetected
            )
            .then_some(Signal::BaselineDrift);
            assert_eq!(r.signal(), expected, "{r:?}");
        }
        assert_eq!(BaselineEvent::RenderFailed.as_str(), "RenderFailed");
        assert!(BaselineEvent::ValidationFailed.is_warning());
        assert!(!BaselineEvent::DriftReverted.is_warning());
    }
}
