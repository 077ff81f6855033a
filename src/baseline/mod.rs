//! Pure logic of the SecurityBaseline controller: which namespaces a baseline selects, what it
//! renders there, the revision of a spec, drift and conflict detection. No client, no network.
//!
//! The controller (`crate::controller::baseline`, which talks to the cluster) checks each
//! baseline in stages:
//!
//! 1. [`revision()`] of the spec; compare with `status.revision` and, when
//!    `spec.rollout.requireApproval`, with the [`APPROVE_REVISION_ANNOTATION`] on the baseline.
//! 2. Plan: for each Namespace [`select_namespace`] → [`Selection::Selected`] gives the tenant;
//!    [`render_namespace`] (and [`render_workload`] for every workload whose pod-template labels
//!    match a [`workload_matches`] selector) → [`Rendered`]; across all baselines
//!    [`Rendered::claims`] → [`resolve`] decides which baseline may apply each object (priority
//!    wins, ties apply nobody). Each object applied is stamped with [`revision::stamp_hash`].
//! 3. Classify each won object against its cached live copy: [`applicable_ignores`] +
//!    [`classify_cached`] → [`ObjectState`] (Compliant, Missing or Drifted, naming the other
//!    field managers).
//! 4. Act: in Enforce mode server-side apply what is missing or drifted with field manager
//!    [`FIELD_MANAGER`], recording reverts of other managers' edits in [`TakeBacks`] (a
//!    manager taking a field back is in conflict); in Audit mode only report.
//! 5. Settle the status: a new revision gets a `status.history` entry from
//!    [`summarize_change`] of the stamped and the rendered hashes.
//!
//! Every rendered object carries the labels [`MANAGED_BY_LABEL`]=[`MANAGED_BY_VALUE`] and
//! [`BASELINE_LABEL`]=`<baseline name>` (select on both to find what to prune), and the annotation
//! [`SOURCE_ANNOTATION`] naming the control or template that produced it.

pub mod conflict;
pub mod drift;
pub mod render;
pub mod revision;
pub mod select;

pub use conflict::{
    Claim, Conflict, ConflictError, ObjectKey, Overridden, Resolution, TakeBacks, resolve,
};
pub use drift::{
    DriftError, FieldDiff, ObjectState, ParsedQuantity, applicable_ignores, classify,
    classify_cached, diff, field_managers, quantities_equal,
};
pub use render::{
    RenderError, Rendered, RenderedObject, ensure_unique, render_namespace, render_workload,
};
pub use revision::{
    HASH_ANNOTATION, RevisionError, hash_of, revision, stamp_hash, summarize_change,
};
pub use select::{
    Selection, SelectorError, label_selector_matches, select_namespace, workload_matches,
};

pub use crate::FIELD_MANAGER;

/// Label on every rendered object: who manages it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "opsec-operator";
/// Label on every rendered object: the name of the SecurityBaseline that rendered it.
pub const BASELINE_LABEL: &str = "opsec.x1642.dev/baseline";
/// Annotation on every rendered object: the control or template that produced it
/// (`control/networkIsolation`, `template/0:ConfigMap/tenant-info`, ...).
pub const SOURCE_ANNOTATION: &str = "opsec.x1642.dev/source";
/// Annotation on a SecurityBaseline that approves a revision (`sha256:...`) when
/// `spec.rollout.requireApproval` is set.
pub const APPROVE_REVISION_ANNOTATION: &str = "opsec.x1642.dev/approve-revision";

/// Pod Security Admission label prefix (`pod-security.kubernetes.io/enforce`, ...).
pub const PSA_LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
/// Annotation on a Namespace whose Pod Security labels a baseline sets: that baseline's name.
pub const POD_SECURITY_BY_ANNOTATION: &str = "opsec.x1642.dev/pod-security-by";
/// Annotation on a Namespace whose Pod Security labels a baseline sets: the Pod Security labels
/// it held before any baseline set them (JSON), put back when the baseline stops applying there.
pub const POD_SECURITY_BEFORE_ANNOTATION: &str = "opsec.x1642.dev/pod-security-before";
/// Annotation on a Namespace whose Pod Security labels a baseline sets: the operator's signature
/// over the record (namespace, baseline, labels before), so no one else can write one it trusts.
pub const POD_SECURITY_SIGNATURE_ANNOTATION: &str = "opsec.x1642.dev/pod-security-signature";

/// Name of the NetworkPolicy of the `networkIsolation` control.
pub const NETWORK_POLICY_NAME: &str = "opsec-isolation";
/// Name of the ResourceQuota of the `resourceQuota` control.
pub const RESOURCE_QUOTA_NAME: &str = "opsec-quota";
/// Name of the LimitRange of the `limitRange` control.
pub const LIMIT_RANGE_NAME: &str = "opsec-limits";
/// Name of the admin RoleBinding of the `tenantAccess` control.
pub const ADMIN_BINDING_NAME: &str = "opsec-tenant-admins";
/// Name of the view RoleBinding of the `tenantAccess` control.
pub const VIEW_BINDING_NAME: &str = "opsec-tenant-viewers";
/// Name of the ServiceAccount of the `serviceAccounts` control (it already exists: the operator
/// only owns `automountServiceAccountToken` and its own labels on it, and never deletes it).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
