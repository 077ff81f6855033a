//! `make bench-baseline`: the SecurityBaseline controller against a real control plane.
//!
//! A benchmark, not a test: it asserts nothing about time, it prints figures (a markdown table,
//! also written to `target/bench-baseline.md`). For each size N (100 and 1,000 tenant namespaces
//! by default; `BENCH_SIZES=100` or `-- --sizes 100` runs one) it creates N labelled namespaces
//! and a SecurityBaseline with four controls (networkIsolation, resourceQuota, limitRange,
//! tenantAccess: 5 objects) and two ConfigMap templates, i.e. 7 objects per namespace (podSecurity
//! is left out, so no namespace label writes), starts the release operator
//! (`target/release/opsec-operator run --controllers baseline`, a Lease of its own, RUST_LOG=warn)
//! and measures:
//! 1. cold convergence: from the baseline's creation (operator already running and leading, its
//!    caches synced) until `status.namespaces.compliant == N`;
//! 2. the API writes it issued, read from the API server's own `apiserver_request_total`, against
//!    the minimum (N x 7 objects + 1 finalizer + 1 status write);
//! 3. writes during an idle window of 25 s with `checkInterval: 10s` (goal 0; Leases and Events
//!    excluded);
//! 4. new namespace to compliant (its template ConfigMap exists), p50/p99 over 50 samples;
//! 5. drift to reverted (a stamped ConfigMap deleted, or edited by another field manager), p50/p99
//!    over 60 samples;
//! 6. the operator's peak RSS (VmHWM);
//! 7. the API server's rate of server-side-apply writes from this client at the operator's
//!    concurrency (32 in flight): of plain ConfigMaps, and of the convergence's own writes (the
//!    seven objects and the PolicyReport the operator wrote into a tenant namespace, copied into
//!    N fresh namespaces under the bench's labels: as many writes as the convergence's); and the
//!    ratio convergence / (minimal writes /
//!    the rate of those same writes). The minimal writes are N x 7 objects, N PolicyReports (one
//!    per namespace is part of the job), the finalizer and one status write.
//!
//! Needs KUBECONFIG, kubectl on PATH and the release binary: `make bench-baseline` provides all.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use opsec_operator::api::SecurityBaseline;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;
/// Writes so far (dry-run, objects, PolicyReports, status) at a moment of the convergence.
type Timeline = Arc<Mutex<Vec<(Duration, [u64; 4])>>>;

/// Writes in flight at once, as the operator's WRITE_CONCURRENCY.
const WRITE_CONCURRENCY: usize = 32;
/// Objects the baseline stamps in each namespace: NetworkPolicy, ResourceQuota, LimitRange, two
/// RoleBindings, two ConfigMaps.
const OBJECTS_PER_NAMESPACE: u64 = 7;
const TEMPLATE: &str = "tenant-info";
const CLASS_LABEL: &str = "bench.opsec.x1642.dev/class";
const TENANT_LABEL: &str = "opsec.x1642.dev/tenant";
const IDLE_WINDOW: Duration = Duration::from_secs(25);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Vec<usize> {
    let mut raw = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "100,1000".into());
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--sizes=") {
            raw = v.into();
        } else if a == "--sizes"
            && let Some(v) = args.get(i + 1)
        {
            raw = v.clone();
        }
    }
    raw.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-baseline failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Res<()> {
    opsec_operator::install_crypto_provider();
    if std::env::var("KUBECONFIG").unwrap_or_default().is_empty() {
        return Err(
            "KUBECONFIG is not set: run `make bench-baseline`, which starts a control plane".into(),
        );
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = std::env::var("OPSEC_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/opsec-operator"));
    if !binary.exists() {
        return Err(format!(
            "{} is missing: `cargo build --release` first (make bench-baseline does)",
            binary.display()
        )
        .into());
    }
    let sizes = sizes();
    if sizes.is_empty() {
        return Err("no size to run (BENCH_SIZES=100,1000)".into());
    }
    let client = Client::try_default().await?;
    install_crds(&root)?;
    let run_id = format!("{:x}", std::process::id() % 0xffff);
    let mut results = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        eprintln!("== N = {n} namespaces");
        let r = run_size(&client, &root, &binary, &run_id, n, last).await?;
        results.push(r);
        // Written after every size, so a later failure keeps the earlier figures.
        std::fs::write(root.join("target/bench-baseline.md"), table(&results))?;
    }
    println!("\n{}", table(&results));
    eprintln!(
        "written to {}",
        root.join("target/bench-baseline.md").display()
    );
    Ok(())
}

fn kubectl(root: &std::path::Path, args: &[&str]) -> Res<String> {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .current_dir(root)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn install_crds(root: &std::path::Path) -> Res<()> {
    kubectl(
        root,
        &["apply", "--server-side", "--force-conflicts", "-f", "crds/"],
    )?;
    kubectl(
        root,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            "crds/",
        ],
    )?;
    Ok(())
}

/// The figures of one size.
#[derive(Default)]
struct Figures {
    n: usize,
    cold: Duration,
    writes: Writes,
    minimal: u64,
    idle_writes: u64,
    idle_detail: String,
    idle_checks: u64,
    /// kube-controller-manager's ResourceQuota status writes in the idle window (not counted).
    idle_controller_manager: u64,
    new_ns: Vec<Duration>,
    drift: Vec<Duration>,
    rss_peak_kib: u64,
    rss_now_kib: u64,
    ssa_writes: usize,
    ssa_rate: f64,
    /// The same writes as the convergence (the seven objects and the PolicyReport of a tenant
    /// namespace, copied into fresh namespaces): count and rate.
    mix_writes: usize,
    mix_rate: f64,
    /// CPU seconds the operator used during the cold convergence.
    cold_cpu: f64,
    cleanup: Duration,
}

/// Writes of the cold convergence window, by what they were for.
#[derive(Default)]
struct Writes {
    objects: u64,
    namespaces: u64,
    status: u64,
    baseline: u64,
    dry_run: u64,
    policy_reports: u64,
    /// Not the operator's: kube-controller-manager's (ResourceQuota status).
    controller_manager: u64,
    other: u64,
    other_detail: String,
}

impl Writes {
    fn persisted(&self) -> u64 {
        self.objects
            + self.namespaces
            + self.status
            + self.baseline
            + self.policy_reports
            + self.other
    }
}

async fn run_size(
    client: &Client,
    root: &std::path::Path,
    binary: &std::path::Path,
    run_id: &str,
    n: usize,
    last: bool,
) -> Res<Figures> {
    let prefix = format!("bench-{run_id}-{n}");
    let class = prefix.clone();
    let baseline = format!("{prefix}-sbl");
    let mut created_ns: Vec<String> = Vec::new();
    let mut operator: Option<Operator> = None;
    let result = measure(
        client,
        root,
        binary,
        &prefix,
        &class,
        &baseline,
        n,
        &mut created_ns,
        &mut operator,
    )
    .await;
    // Cleanup whatever happened: the baseline (the operator's finalizer removes what it
    // stamped), then the operator, then the namespaces.
    let started = Instant::now();
    eprintln!(
        "cleanup: baseline, operator, {} namespaces",
        created_ns.len()
    );
    let sbl: Api<SecurityBaseline> = Api::all(client.clone());
    let _ = sbl.delete(&baseline, &DeleteParams::default()).await;
    let gone = wait_for(Duration::from_secs(300), || async {
        matches!(sbl.get_opt(&baseline).await, Ok(None))
    })
    .await;
    if !gone {
        eprintln!("baseline {baseline} still present after 300 s; removing its finalizer");
        let _ = sbl
            .patch(
                &baseline,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    let cleanup = started.elapsed();
    if let Some(op) = operator.take() {
        op.stop().await;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let _ = leases.delete(&prefix, &DeleteParams::default()).await;
    delete_namespaces(client, &created_ns, !last).await;
    let mut figures = result?;
    figures.cleanup = cleanup;
    Ok(figures)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    client: &Client,
    root: &std::path::Path,
    binary: &std::path::Path,
    prefix: &str,
    class: &str,
    baseline: &str,
    n: usize,
    created_ns: &mut Vec<String>,
    operator: &mut Option<Operator>,
) -> Res<Figures> {
    let mut fig = Figures {
        n,
        ..Default::default()
    };
    // Tenant namespaces, two per tenant.
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    created_ns.extend(names.iter().cloned());
    let started = Instant::now();
    create_namespaces(client, class, &names, |i| format!("t{}", i / 2)).await?;
    eprintln!(
        "created {n} namespaces in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let kube-controller-manager finish its own writes in them (default ServiceAccount,
    // kube-root-ca.crt), so they do not count as the operator's.
    settle_controller_manager(client, &names).await?;

    // Watch the template ConfigMap in every namespace: the latency probes read it.
    let probe = Probe::start(client.clone());

    let op = Operator::start(binary, root, prefix).await?;
    let pid = op.pid;
    *operator = Some(op);
    let admin = operator.as_ref().map(|o| o.admin_port).unwrap_or_default();
    // Its namespace and workload caches start after leading; give them a moment to list.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1 + 2: cold convergence and its writes.
    let before = api_writes(client).await?;
    let cpu_before = proc_cpu_seconds(pid);
    let started = Instant::now();
    create_baseline(client, baseline, class).await?;
    let timeline = std::env::var("BENCH_TIMELINE").is_ok_and(|v| v == "1");
    // Optional (it adds load): the API server's counters every 500 ms, to see which phase of the
    // convergence takes the time.
    let samples: Timeline = Default::default();
    let sampler = timeline.then(|| {
        let client = client.clone();
        let before = before.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(now) = api_writes(&client).await {
                    let w = classify_writes(&diff_writes(&before, &now));
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push((
                        started.elapsed(),
                        [w.dry_run, w.objects, w.policy_reports, w.status],
                    ));
                }
            }
        })
    });
    let api: Api<SecurityBaseline> = Api::all(client.clone());
    let converged = wait_for(Duration::from_secs(600), || async {
        api.get(baseline)
            .await
            .ok()
            .and_then(|b| b.status)
            .is_some_and(|s| s.namespaces.compliant as usize == n)
    })
    .await;
    fig.cold = started.elapsed();
    fig.cold_cpu = proc_cpu_seconds(pid) - cpu_before;
    if !converged {
        return Err(format!("baseline not compliant in {n} namespaces after 600 s").into());
    }
    eprintln!("converged in {:.2} s", fig.cold.as_secs_f64());
    if let Some(sampler) = sampler {
        sampler.abort();
        let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        for (t, [dry, obj, reports, status]) in samples.iter() {
            eprintln!(
                "  t={:5.1} s  dry-run {dry:5}  objects {obj:5}  PolicyReports {reports:5}  status {status}",
                t.as_secs_f64()
            );
        }
    }
    // Trailing writes of the convergence (a second status write, ...) still count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = api_writes(client).await?;
    let mut diff = diff_writes(&before, &after);
    // The bench's own write: the baseline's creation.
    if let Some(v) = diff.get_mut(&WriteKey {
        resource: "securitybaselines".into(),
        subresource: String::new(),
        verb: "POST".into(),
        dry_run: false,
    }) {
        *v = v.saturating_sub(1);
    }
    fig.writes = classify_writes(&diff);
    // Seven objects and one PolicyReport per namespace, the finalizer and one status write.
    fig.minimal = n as u64 * (OBJECTS_PER_NAMESPACE + 1) + 2;

    // 3: an idle window of more than two check intervals, once kube-controller-manager has
    // filled in the usage of every stamped ResourceQuota (each of its status writes is a change
    // the operator sees).
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let selector = format!("opsec.x1642.dev/baseline={baseline}");
    let quota_started = Instant::now();
    while quota_started.elapsed() < Duration::from_secs(180) {
        let filled = quotas
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|q| q.status.as_ref().is_some_and(|s| s.used.is_some()))
                    .count()
            })
            .unwrap_or(0);
        if filled >= n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "ResourceQuota usage filled in by kube-controller-manager after {:.0} s more",
        quota_started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let checks_before = operator_reconciles(admin).await;
    let idle_before = api_writes(client).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_after = api_writes(client).await?;
    let checks_after = operator_reconciles(admin).await;
    fig.idle_checks = checks_after.saturating_sub(checks_before);
    let idle = diff_writes(&idle_before, &idle_after);
    let mut detail = Vec::new();
    for (k, v) in &idle {
        if k.resource == "leases" || k.resource == "events" || *v == 0 {
            continue;
        }
        if k.resource == "resourcequotas" && k.subresource == "status" {
            fig.idle_controller_manager += v;
            continue;
        }
        fig.idle_writes += v;
        detail.push(format!("{v} {k}"));
    }
    fig.idle_detail = detail.join(", ");
    eprintln!(
        "idle: {} writes over {} checks ({})",
        fig.idle_writes, fig.idle_checks, fig.idle_detail
    );

    // 4: a new tenant namespace until its template exists.
    let samples = env_usize("BENCH_SAMPLES", 50);
    for i in 0..samples {
        let name = format!("{prefix}-new-{i:03}");
        created_ns.push(name.clone());
        let seq = probe.seq();
        let started = Instant::now();
        create_namespaces(client, class, std::slice::from_ref(&name), |_| {
            format!("new{i}")
        })
        .await?;
        let ok = probe
            .wait(Duration::from_secs(60), |p| {
                p.get(&name).is_some_and(|s| s.seq > seq)
            })
            .await;
        if !ok {
            return Err(format!("namespace {name} not compliant after 60 s").into());
        }
        fig.new_ns.push(started.elapsed());
    }
    eprintln!("new namespace: {}", percentiles(&fig.new_ns));

    // 5: drift (even samples delete the ConfigMap, odd ones edit it) until reverted.
    let drift_samples = env_usize("BENCH_DRIFT_SAMPLES", 60);
    for i in 0..drift_samples {
        let ns = &names[i * n / drift_samples];
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let old = probe
            .current(ns)
            .ok_or_else(|| format!("no {TEMPLATE} seen in {ns}"))?;
        let seq = probe.seq();
        let started = Instant::now();
        if i % 2 == 0 {
            cms.delete(TEMPLATE, &DeleteParams::default()).await?;
        } else {
            cms.patch(
                TEMPLATE,
                &PatchParams {
                    field_manager: Some("kubectl-edit".into()),
                    ..Default::default()
                },
                &Patch::Merge(serde_json::json!({"data": {"tenant": "tampered"}})),
            )
            .await?;
        }
        let ok = probe
            .wait(Duration::from_secs(60), |p| {
                // Deleted: back with a new uid. Edited: back to the rendered value.
                p.get(ns).is_some_and(|s| {
                    s.seq > seq
                        && (s.uid_rv.0 != old.uid_rv.0
                            || (s.tenant == old.tenant && s.uid_rv.1 != old.uid_rv.1))
                })
            })
            .await;
        if !ok {
            return Err(format!("drift in {ns} not reverted after 60 s").into());
        }
        fig.drift.push(started.elapsed());
    }
    eprintln!("drift: {}", percentiles(&fig.drift));

    // 6: peak RSS of the operator.
    fig.rss_peak_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    fig.rss_now_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);

    // 7: the API server's server-side-apply rate from this client at the same concurrency.
    let ssa_ns = format!("{prefix}-ssa");
    created_ns.push(ssa_ns.clone());
    create_namespaces(
        client,
        &format!("{class}-none"),
        std::slice::from_ref(&ssa_ns),
        |_| "ssa".into(),
    )
    .await?;
    let m = env_usize("BENCH_SSA_WRITES", 2000);
    let configmaps = kube::api::ApiResource::erase::<ConfigMap>(&());
    let jobs = (0..m)
        .map(|i| {
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:05}"), "namespace": ssa_ns,
                             "labels": {"app.kubernetes.io/managed-by": "bench"}},
                "data": {"tenant": format!("t{i}"), "namespace": ssa_ns, "baseline": "bench",
                         "support": format!("https://support.cloud.example/tenants/t{i}")},
            });
            Ok((configmaps.clone(), serde_json::from_value(body)?))
        })
        .collect::<Res<Vec<_>>>()?;
    let elapsed = apply_all(client, jobs).await?;
    fig.ssa_writes = m;
    fig.ssa_rate = m as f64 / elapsed.as_secs_f64();
    eprintln!("server-side apply: {:.0} writes/s", fig.ssa_rate);

    // The same writes as the convergence: what the operator wrote into its first tenant
    // namespace (the seven objects and the PolicyReport), applied by this client into fresh
    // namespaces no baseline selects, under labels no operator watches; as many namespaces as
    // the convergence had (at least BENCH_SSA_WRITES writes), so the rate is taken over as long a
    // run, on as large a store, as the time it is compared with.
    let sample = written_by_baseline(root, &names[0], baseline)?;
    let per_ns = sample.len();
    let copies = m.div_ceil(per_ns.max(1)).max(n);
    let mix_ns: Vec<String> = (0..copies)
        .map(|i| format!("{prefix}-mix-{i:04}"))
        .collect();
    created_ns.extend(mix_ns.iter().cloned());
    create_namespaces(client, &format!("{class}-none"), &mix_ns, |_| "mix".into()).await?;
    settle_controller_manager(client, &mix_ns).await?;
    let mut resources = HashMap::new();
    for o in &sample {
        let gvk = kube::api::GroupVersionKind::try_from(o.types.as_ref().ok_or("no type")?)?;
        if !resources.contains_key(&gvk) {
            let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await?;
            resources.insert(gvk.clone(), ar);
        }
    }
    let mut jobs = Vec::new();
    for ns in &mix_ns {
        for o in &sample {
            let gvk = kube::api::GroupVersionKind::try_from(o.types.as_ref().ok_or("no type")?)?;
            let mut o = o.clone();
            o.metadata.namespace = Some(ns.clone());
            jobs.push((resources[&gvk].clone(), o));
        }
    }
    let elapsed = apply_all(client, jobs).await?;
    fig.mix_writes = copies * per_ns;
    fig.mix_rate = fig.mix_writes as f64 / elapsed.as_secs_f64();
    eprintln!(
        "server-side apply of the convergence's own writes: {:.0} writes/s",
        fig.mix_rate
    );
    probe.stop();
    Ok(fig)
}

/// Server-side applies every object (under the field manager `bench`, forcing), at the
/// operator's concurrency; returns how long it took.
async fn apply_all(
    client: &Client,
    jobs: Vec<(kube::api::ApiResource, kube::api::DynamicObject)>,
) -> Res<Duration> {
    let started = Instant::now();
    futures::stream::iter(jobs)
        .map(|(ar, o)| {
            let client = client.clone();
            async move {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let name = o.metadata.name.clone().unwrap_or_default();
                let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client, &ns, &ar);
                api.patch(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&o),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// The objects and the PolicyReport `baseline` wrote into `namespace`, as apply bodies for
/// another namespace: server-set fields and status dropped, the operator's labels replaced by
/// the bench's own (so neither the operator nor its caches ever see the copies).
fn written_by_baseline(
    root: &std::path::Path,
    namespace: &str,
    baseline: &str,
) -> Res<Vec<kube::api::DynamicObject>> {
    let out = kubectl(
        root,
        &[
            "get",
            "networkpolicies,resourcequotas,limitranges,rolebindings,configmaps,policyreports",
            "-n",
            namespace,
            "-l",
            &format!("opsec.x1642.dev/baseline={baseline}"),
            "-o",
            "json",
        ],
    )?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let mut objects = Vec::new();
    for item in list["items"].as_array().ok_or("no items")? {
        let mut o: kube::api::DynamicObject = serde_json::from_value(item.clone())?;
        let meta = std::mem::take(&mut o.metadata);
        let mut labels = meta.labels.unwrap_or_default();
        labels.remove("opsec.x1642.dev/baseline");
        labels.insert("app.kubernetes.io/managed-by".into(), "bench".into());
        o.metadata = ObjectMeta {
            name: meta.name,
            labels: Some(labels),
            annotations: meta.annotations,
            ..Default::default()
        };
        if let Some(data) = o.data.as_object_mut() {
            data.remove("status");
        }
        objects.push(o);
    }
    if objects.len() as u64 != OBJECTS_PER_NAMESPACE + 1 {
        return Err(format!(
            "expected {} objects written by the baseline in {namespace}, found {}",
            OBJECTS_PER_NAMESPACE + 1,
            objects.len()
        )
        .into());
    }
    Ok(objects)
}

/// User + system CPU seconds of a process so far (0 when it cannot be read).
fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // /proc counts in USER_HZ, 100 on every Linux ABI.
    ticks / 100.0
}

async fn create_namespaces(
    client: &Client,
    class: &str,
    names: &[String],
    tenant: impl Fn(usize) -> String,
) -> Res<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let api = api.clone();
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        (TENANT_LABEL.to_string(), tenant(i)),
                        (CLASS_LABEL.to_string(), class.to_string()),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            };
            async move { api.create(&PostParams::default(), &ns).await.map(|_| ()) }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn settle_controller_manager(client: &Client, names: &[String]) -> Res<()> {
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let cms: Api<ConfigMap> = Api::all(client.clone());
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let done = wait_for(Duration::from_secs(180), || async {
        let count = |ns: Vec<Option<String>>| {
            ns.iter()
                .filter(|n| n.as_deref().is_some_and(|n| wanted.contains(n)))
                .count()
        };
        let Ok(c) = cms
            .list_metadata(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
            .await
        else {
            return false;
        };
        let Ok(s) = sas
            .list_metadata(&ListParams::default().fields("metadata.name=default"))
            .await
        else {
            return false;
        };
        count(c.items.into_iter().map(|o| o.metadata.namespace).collect()) == wanted.len()
            && count(s.items.into_iter().map(|o| o.metadata.namespace).collect()) == wanted.len()
    })
    .await;
    if !done {
        return Err("kube-controller-manager did not populate the namespaces in 180 s".into());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn delete_namespaces(client: &Client, names: &[String], wait: bool) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let _ = api.delete(name, &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    if !wait {
        return;
    }
    // The next size's counters must not see this size's namespaces being emptied.
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    let gone = wait_for(Duration::from_secs(400), || async {
        api.list_metadata(&ListParams::default())
            .await
            .is_ok_and(|l| {
                !l.items
                    .iter()
                    .any(|ns| wanted.contains(ns.name_any().as_str()))
            })
    })
    .await;
    eprintln!(
        "namespaces {} after {:.0} s",
        if gone { "deleted" } else { "still terminating" },
        started.elapsed().as_secs_f64()
    );
}

async fn create_baseline(client: &Client, name: &str, class: &str) -> Res<()> {
    let spec = serde_yaml::from_str(&format!(
        r#"
namespaceSelector:
  matchLabels: {{{CLASS_LABEL}: {class}}}
tenantLabel: {TENANT_LABEL}
mode: Enforce
checkInterval: 10s
controls:
  networkIsolation:
    allowSameTenant: true
    allowDNS: true
  resourceQuota:
    hard: {{requests.cpu: "8", requests.memory: 16Gi, pods: "100"}}
  limitRange:
    limits:
    - type: Container
      default: {{cpu: 500m, memory: 512Mi}}
      defaultRequest: {{cpu: 100m, memory: 128Mi}}
  tenantAccess:
    adminGroups: ["tenant:${{tenant}}:admins"]
    viewGroups: ["tenant:${{tenant}}:auditors"]
templates:
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: {TEMPLATE}}}
  data:
    tenant: "${{tenant}}"
    namespace: "${{namespace}}"
    baseline: "${{baseline}}"
    support: "https://support.cloud.example/tenants/${{tenant}}"
- apiVersion: v1
  kind: ConfigMap
  metadata: {{name: tenant-contacts}}
  data:
    security: "soc@cloud.example"
    tenant: "${{tenant}}"
"#
    ))?;
    let sb = SecurityBaseline::new(name, spec);
    Api::<SecurityBaseline>::all(client.clone())
        .create(&PostParams::default(), &sb)
        .await?;
    Ok(())
}

/// Polls `check` every 50 ms until true; false after `timeout`.
async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator under test: the release binary with a Lease and an admin port of its own.
struct Operator {
    child: tokio::process::Child,
    pid: u32,
    admin_port: u16,
}

impl Operator {
    async fn start(binary: &std::path::Path, root: &std::path::Path, name: &str) -> Res<Self> {
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = root.join(format!("target/bench-baseline-{name}-operator.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary)
            .args(["run", "--controllers", "baseline", "--exit-on-stdin-close"])
            // The bench reads the operator's counters itself, on loopback.
            .args(["--metrics-auth", "false"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--lease-name", name, "--lease-duration", "15s"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("operator exited at once")?;
        let op = Operator {
            child,
            pid,
            admin_port,
        };
        let started = Instant::now();
        // Leading (the body names it even while its caches sync), then ready.
        let leading = wait_for(Duration::from_secs(60), || async {
            http_get(admin_port, "/readyz")
                .await
                .is_some_and(|(_, b)| b.starts_with("leading"))
        })
        .await;
        if !leading {
            return Err(format!("operator not leading after 60 s; see {}", log.display()).into());
        }
        let ready = wait_for(Duration::from_secs(20), || async {
            http_get(admin_port, "/readyz")
                .await
                .is_some_and(|(ok, _)| ok)
        })
        .await;
        if !ready {
            eprintln!("operator leading but /readyz not 200 after 20 s; going on");
        }
        eprintln!(
            "operator pid {pid} leading after {:.1} s (log {})",
            started.elapsed().as_secs_f64(),
            log.display()
        );
        Ok(op)
    }

    /// SIGTERM, then SIGKILL after 20 s.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (the operator's admin port): (status 200, body).
async fn http_get(port: u16, path: &str) -> Option<(bool, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
        Some((ok, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// `opsec_reconciles_total{controller="baseline"}` of the operator.
async fn operator_reconciles(port: u16) -> u64 {
    http_get(port, "/metrics")
        .await
        .and_then(|(_, m)| {
            m.lines()
                .find(|l| l.starts_with("opsec_reconciles_total{controller=\"baseline\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64
}

/// A `kB` field of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: current).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One counter of the API server's writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct WriteKey {
    resource: String,
    subresource: String,
    verb: String,
    dry_run: bool,
}

impl std::fmt::Display for WriteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if self.dry_run {
            write!(f, " (dry-run)")?;
        }
        Ok(())
    }
}

const WRITE_VERBS: &[&str] = &[
    "APPLY",
    "PATCH",
    "POST",
    "CREATE",
    "PUT",
    "UPDATE",
    "DELETE",
    "DELETECOLLECTION",
];

/// The API server's own count of write requests (`apiserver_request_total`), by resource,
/// subresource, verb and dry-run (the same as `kubectl get --raw /metrics`).
async fn api_writes(client: &Client) -> Res<HashMap<WriteKey, u64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out: HashMap<WriteKey, u64> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let mut l: HashMap<&str, &str> = HashMap::new();
        for kv in labels.split("\",") {
            if let Some((k, v)) = kv.split_once("=\"") {
                l.insert(k, v.trim_end_matches('"'));
            }
        }
        let verb = l.get("verb").copied().unwrap_or_default();
        if !WRITE_VERBS.contains(&verb) {
            continue;
        }
        let key = WriteKey {
            resource: l.get("resource").copied().unwrap_or_default().into(),
            subresource: l.get("subresource").copied().unwrap_or_default().into(),
            verb: verb.into(),
            dry_run: !l.get("dry_run").copied().unwrap_or_default().is_empty(),
        };
        *out.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
    }
    Ok(out)
}

fn diff_writes(
    before: &HashMap<WriteKey, u64>,
    after: &HashMap<WriteKey, u64>,
) -> BTreeMap<WriteKey, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn classify_writes(diff: &BTreeMap<WriteKey, u64>) -> Writes {
    let mut w = Writes::default();
    let mut other = Vec::new();
    for (k, &v) in diff {
        if v == 0 || k.resource == "leases" || k.resource == "events" {
            continue;
        }
        if k.dry_run {
            w.dry_run += v;
            continue;
        }
        match (k.resource.as_str(), k.subresource.as_str()) {
            (
                "configmaps" | "networkpolicies" | "resourcequotas" | "limitranges"
                | "rolebindings",
                "",
            ) => w.objects += v,
            ("namespaces", "") => w.namespaces += v,
            ("policyreports", "") => w.policy_reports += v,
            // kube-controller-manager's quota controller filling in the quotas' usage.
            ("resourcequotas", "status") => w.controller_manager += v,
            ("securitybaselines", "status") => w.status += v,
            ("securitybaselines", "") => w.baseline += v,
            _ => {
                w.other += v;
                other.push(format!("{v} {k}"));
            }
        }
    }
    w.other_detail = other.join(", ");
    w
}

/// The template ConfigMap of every namespace as a watch sees it, with the moment it arrived.
struct Probe {
    state: Arc<Mutex<ProbeState>>,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProbeState {
    seq: u64,
    by_ns: HashMap<String, Seen>,
}

#[derive(Clone)]
struct Seen {
    seq: u64,
    /// uid and resourceVersion.
    uid_rv: (String, String),
    tenant: String,
}

impl Probe {
    fn start(client: Client) -> Self {
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let (tx, changed) = tokio::sync::watch::channel(0u64);
        let st = state.clone();
        let api: Api<ConfigMap> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={TEMPLATE}"));
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, cfg));
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                s.seq += 1;
                let seq = s.seq;
                match ev {
                    watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                        let seen = Seen {
                            seq,
                            uid_rv: (
                                cm.uid().unwrap_or_default(),
                                cm.resource_version().unwrap_or_default(),
                            ),
                            tenant: cm
                                .data
                                .as_ref()
                                .and_then(|d| d.get("tenant").cloned())
                                .unwrap_or_default(),
                        };
                        s.by_ns.insert(cm.namespace().unwrap_or_default(), seen);
                    }
                    watcher::Event::Delete(cm) => {
                        s.by_ns.remove(&cm.namespace().unwrap_or_default());
                    }
                    _ => {}
                }
                drop(s);
                let _ = tx.send(seq);
            }
        });
        Probe {
            state,
            changed,
            task,
        }
    }

    fn seq(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).seq
    }

    fn current(&self, ns: &str) -> Option<Seen> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_ns
            .get(ns)
            .cloned()
    }

    /// Waits until `done` holds for the namespaces seen so far; false after `timeout`.
    async fn wait(&self, timeout: Duration, done: impl Fn(&HashMap<String, Seen>) -> bool) -> bool {
        let mut rx = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.state.lock().unwrap_or_else(|p| p.into_inner()).by_ns) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    fn stop(self) {
        self.task.abort();
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort();
    // Nearest rank.
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn percentiles(samples: &[Duration]) -> String {
    format!(
        "p50 {} / p99 {} (n={})",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        samples.len()
    )
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**MISSED**" }
}

fn table(results: &[Figures]) -> String {
    let mut rows: Vec<(String, Vec<String>, String)> = Vec::new();
    let col = |f: &dyn Fn(&Figures) -> String| results.iter().map(f).collect::<Vec<_>>();
    let ratio = |f: &Figures| {
        let ideal = f.minimal as f64 / f.mix_rate;
        f.cold.as_secs_f64() / ideal
    };
    rows.push((
        "objects stamped (7 per namespace)".into(),
        col(&|f| format!("{}", f.n as u64 * OBJECTS_PER_NAMESPACE)),
        String::new(),
    ));
    rows.push((
        "cold convergence (baseline created → compliant = N)".into(),
        col(&|f| format!("{:.2} s", f.cold.as_secs_f64())),
        String::new(),
    ));
    rows.push((
        "writes issued (persisted)".into(),
        col(&|f| {
            format!(
                "{} ({} objects, {} status, {} baseline, {} PolicyReports{}{})",
                f.writes.persisted(),
                f.writes.objects,
                f.writes.status,
                f.writes.baseline,
                f.writes.policy_reports,
                if f.writes.namespaces > 0 {
                    format!(", {} namespaces", f.writes.namespaces)
                } else {
                    String::new()
                },
                if f.writes.other > 0 {
                    format!(", other: {}", f.writes.other_detail)
                } else {
                    String::new()
                }
            ) + &if f.writes.controller_manager > 0 {
                format!(
                    "; not counted: {} resourcequotas/status by kube-controller-manager",
                    f.writes.controller_manager
                )
            } else {
                String::new()
            }
        }),
        String::new(),
    ));
    rows.push((
        "dry-run writes (rollout.validate)".into(),
        col(&|f| format!("{}", f.writes.dry_run)),
        String::new(),
    ));
    rows.push((
        "minimal writes (N×7 objects + N PolicyReports + finalizer + status)".into(),
        col(&|f| format!("{}", f.minimal)),
        String::new(),
    ));
    rows.push((
        "persisted writes / minimal".into(),
        col(&|f| format!("{:.2}", f.writes.persisted() as f64 / f.minimal as f64)),
        String::new(),
    ));
    rows.push((
        format!(
            "writes in an idle {} s window (checkInterval 10s; Leases, Events excluded)",
            IDLE_WINDOW.as_secs()
        ),
        col(&|f| {
            format!(
                "{} over {} checks {}{}",
                f.idle_writes,
                f.idle_checks,
                verdict(f.idle_writes == 0),
                if f.idle_detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.idle_detail)
                }
            ) + &if f.idle_controller_manager > 0 {
                format!(
                    "; not counted: {} resourcequotas/status by kube-controller-manager",
                    f.idle_controller_manager
                )
            } else {
                String::new()
            }
        }),
        "0".into(),
    ));
    rows.push((
        "new namespace → template present, p50 / p99".into(),
        col(&|f| {
            format!(
                "{} / {} (n={}) {}",
                ms(percentile(&f.new_ns, 50.0)),
                ms(percentile(&f.new_ns, 99.0)),
                f.new_ns.len(),
                verdict(percentile(&f.new_ns, 99.0) <= Duration::from_secs(1))
            )
        }),
        "p99 ≤ 1 s".into(),
    ));
    rows.push((
        "drift → reverted (delete / edit alternately), p50 / p99".into(),
        col(&|f| {
            format!(
                "{} / {} (n={}) {}",
                ms(percentile(&f.drift, 50.0)),
                ms(percentile(&f.drift, 99.0)),
                f.drift.len(),
                verdict(percentile(&f.drift, 99.0) <= Duration::from_secs(1))
            )
        }),
        "p99 ≤ 1 s".into(),
    ));
    rows.push((
        "operator peak RSS (VmHWM; VmRSS at the end)".into(),
        col(&|f| {
            let mib = f.rss_peak_kib as f64 / 1024.0;
            let now = f.rss_now_kib as f64 / 1024.0;
            if f.n >= 1000 {
                format!("{mib:.1} MiB ({now:.1}) {}", verdict(mib <= 100.0))
            } else {
                format!("{mib:.1} MiB ({now:.1})")
            }
        }),
        "≤ 100 MiB at 1,000 namespaces".into(),
    ));
    rows.push((
        "operator CPU during the cold convergence".into(),
        col(&|f| format!("{:.1} s", f.cold_cpu)),
        String::new(),
    ));
    rows.push((
        "API server SSA rate of ConfigMaps (same client, 32 in flight)".into(),
        col(&|f| format!("{:.0} writes/s ({} ConfigMaps)", f.ssa_rate, f.ssa_writes)),
        String::new(),
    ));
    rows.push((
        "API server SSA rate of the convergence's own writes (same client, 32 in flight)".into(),
        col(&|f| {
            format!(
                "{:.0} writes/s ({} writes: {} copies of a tenant namespace's 7 objects + PolicyReport)",
                f.mix_rate,
                f.mix_writes,
                f.mix_writes / (OBJECTS_PER_NAMESPACE as usize + 1)
            )
        }),
        String::new(),
    ));
    rows.push((
        "convergence / (minimal writes / SSA rate of the same writes)".into(),
        col(&|f| format!("{:.2} {}", ratio(f), verdict(ratio(f) <= 1.5))),
        "≤ 1.5".into(),
    ));
    rows.push((
        "cleanup: baseline deletion (finalizer removes its objects)".into(),
        col(&|f| format!("{:.1} s", f.cleanup.as_secs_f64())),
        String::new(),
    ));

    let mut out = String::new();
    out.push_str("| figure |");
    for f in results {
        out.push_str(&format!(" N = {} |", f.n));
    }
    out.push_str(" goal |\n|---|");
    for _ in results {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for (name, values, goal) in rows {
        out.push_str(&format!("| {name} |"));
        for v in values {
            out.push_str(&format!(" {v} |"));
        }
        out.push_str(&format!(" {goal} |\n"));
    }
    out
}
