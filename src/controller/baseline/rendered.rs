//! The plan stage's result as one check keeps it: [`RenderedSet`] owns every object this baseline
//! applies as JSON text with its rendered-hash annotation ([`RenderedBody`]). Namespaces are
//! planned [`PLAN_CHUNK`] at a time and each chunk's objects turned into text at once: a JSON
//! value tree takes about ten times the memory, and a first check of a thousand namespaces
//! renders thousands of objects. Pure.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;

use super::plan::{self, BaselineRef, Contested, NamespaceInfo, Plan, Unplanned, WorkloadInfo};
use crate::baseline::{ObjectKey, RenderedObject, hash_of, stamp_hash};

/// Namespaces planned at once; their rendered objects are then kept as JSON text, not value
/// trees (about a tenth of the memory).
pub const PLAN_CHUNK: usize = 64;

/// One object this baseline applies, its body as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedBody {
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The control or template that produced it ([`RenderedObject::source`]).
    pub source: String,
    text: Box<str>,
}

impl RenderedBody {
    /// Stamps the rendered hash on `o` and keeps its body as text.
    pub fn new(mut o: RenderedObject) -> Self {
        stamp_hash(&mut o.object);
        let text = serde_json::to_string(&o.object).unwrap_or_default();
        Self {
            namespace: o.namespace,
            api_version: o.api_version,
            kind: o.kind,
            name: o.name,
            source: o.source,
            text: text.into_boxed_str(),
        }
    }

    /// The body to apply, as JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The body parsed (for one comparison at a time).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_default()
    }

    /// `Kind/name`, the form of `status.nonCompliant[].object`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The reference Events and PolicyReports name it by.
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }
}

/// What this baseline applies to one namespace.
#[derive(Clone, Debug, Default)]
pub struct RenderedNamespace {
    pub namespace: String,
    /// Objects this baseline won (or alone claims): apply and check them.
    pub objects: Vec<RenderedBody>,
    /// Server-side apply body for the namespace's Pod Security labels (signed), when this
    /// baseline won them.
    pub namespace_labels: Option<serde_json::Value>,
    /// Workloads whose configuration this baseline renders here: (kind/name, creation time).
    pub workloads: Vec<(String, Option<Timestamp>)>,
    /// Objects rendered but not this baseline's to apply (reported in the PolicyReport).
    pub withheld: Vec<RenderedObject>,
    /// Whether this baseline renders Pod Security labels here but may not apply them.
    pub namespace_labels_withheld: bool,
}

/// Everything one check of a baseline applies and reports, with the object bodies as text.
#[derive(Clone, Debug, Default)]
pub struct RenderedSet {
    pub namespaces: Vec<RenderedNamespace>,
    /// Namespaces selected but not renderable.
    pub failed: Vec<Unplanned>,
    /// Objects claimed but not ours to apply (tie or lost to a higher priority).
    pub contested: Vec<Contested>,
    /// Keys this baseline claims in any way: never pruned by it.
    pub claimed: BTreeSet<ObjectKey>,
    /// Keys other baselines won: never pruned by this one even if labelled as its own.
    pub others_own: BTreeSet<ObjectKey>,
    /// (`Kind/name`, rendered hash) of every object, kept for a new revision only (the new
    /// side of its history entry).
    pub hashes: Vec<(String, String)>,
}

/// How to render: who signs the Pod Security records, and whether to keep the hashes.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    pub signer: Option<&'a ed25519_dalek::SigningKey>,
    pub keep_hashes: bool,
}

impl RenderedSet {
    /// The plan of `me` over `namespaces`, a chunk at a time.
    pub fn render(
        me: BaselineRef<'_>,
        baselines: &[BaselineRef<'_>],
        namespaces: &[NamespaceInfo],
        workloads: &[WorkloadInfo],
        options: Options<'_>,
    ) -> Self {
        let mut set = Self::default();
        for chunk in namespaces.chunks(PLAN_CHUNK) {
            set.absorb(plan::plan(me, baselines, chunk, workloads), options);
        }
        set
    }

    /// Adds the plan of other namespaces, its objects turned into text.
    pub fn absorb(&mut self, part: Plan, options: Options<'_>) {
        for n in part.namespaces {
            let mut namespace_labels = n.namespace_labels;
            if let (Some(body), Some(k)) = (namespace_labels.as_mut(), options.signer) {
                plan::sign_record(body, &n.namespace, k);
            }
            let objects: Vec<RenderedBody> = n
                .objects
                .into_iter()
                .map(|o| {
                    if options.keep_hashes {
                        // The hash leaves its own annotation out: the same before stamping.
                        self.hashes
                            .push((o.display_name(), hash_of(&o.object).unwrap_or_default()));
                    }
                    RenderedBody::new(o)
                })
                .collect();
            self.namespaces.push(RenderedNamespace {
                namespace: n.namespace,
                objects,
                namespace_labels,
                workloads: n.workloads,
                withheld: n.withheld,
                namespace_labels_withheld: n.namespace_labels_withheld,
            });
        }
        self.failed.extend(part.failed);
        self.contested.extend(part.contested);
        self.claimed.extend(part.claimed);
        self.others_own.extend(part.others_own);
    }

    /// Every object this baseline applies.
    pub fn objects(&self) -> impl Iterator<Item = &RenderedBody> {
        self.namespaces.iter().flat_map(|n| n.objects.iter())
    }

    /// Every (apiVersion, kind) this baseline applies.
    pub fn kinds(&self) -> BTreeSet<(String, String)> {
        self.objects()
            .map(|o| (o.api_version.clone(), o.kind.clone()))
            .collect()
    }

    /// The namespaces selected (rendered or failed).
    pub fn selected(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.namespace.clone())
            .chain(self.failed.iter().map(|f| f.namespace.clone()))
            .collect()
    }
}
