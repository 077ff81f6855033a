//! Each store's copy of one backup run, written by a task of its own, so that no store waits
//! for another: the on-site copy is committed as soon as its own data is written, whatever an
//! off-site store is doing. A store that falls far behind the others (stalled or much slower)
//! while another keeps up is dropped from the run, and its copy is abandoned (the policy
//! replicates it later from a complete copy, never by exporting again); a store alone in a run
//! is waited for, which is the backpressure that bounds memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::StoreResult;
use super::store::{BackupLocation, DataUpload, Store, StoreError};

/// Stored bytes queued for one store, in chunks of about 256 KiB (16 MiB): how far a store may
/// fall behind the fastest before it is dropped.
pub const STORE_QUEUE_CHUNKS: usize = 64;
/// A manifest's bytes and signature, once built.
pub type ManifestParts = Option<(Bytes, Option<String>)>;

/// How long a full queue may stay full before its store counts as fallen behind.
pub const STALL: Duration = Duration::from_secs(2);

/// One store's copy: its task writes the data handed to it.
struct Copy {
    store: Store,
    /// `None` once it takes no more data.
    data: Option<mpsc::Sender<Bytes>>,
    /// Set when the run dropped the store: its task abandons the upload.
    dropped: Arc<AtomicBool>,
    task: JoinHandle<Result<DataUpload, StoreError>>,
}

impl Copy {
    fn stop_data(&mut self, drop_copy: bool) {
        if drop_copy {
            self.dropped.store(true, Ordering::Release);
        }
        self.data = None;
    }
}

/// The copies of one run.
pub(crate) struct Copies {
    location: BackupLocation,
    copies: Vec<Copy>,
}

/// Starts one store's upload and feeds it until the data ends; hands the upload back,
/// unfinished, for the commit (or abandons it when the run dropped the store). Starting is
/// part of the task too: a store that does not answer holds up nobody else.
async fn feed(
    store: Store,
    location: BackupLocation,
    mut data: mpsc::Receiver<Bytes>,
    dropped: Arc<AtomicBool>,
) -> Result<DataUpload, StoreError> {
    let mut upload = match store.start_data(&location).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(store = store.name(), error = %e, "backup store failed to start");
            return Err(e);
        }
    };
    while let Some(chunk) = data.recv().await {
        upload.write(chunk);
        if let Err(e) = upload.wait().await {
            let _ = upload.abort().await;
            return Err(e);
        }
    }
    tracing::debug!(store = store.name(), "backup store has all its data");
    if dropped.load(Ordering::Acquire) {
        let _ = upload.abort().await;
        return Err(StoreError::FellBehind {
            path: store
                .file_path(&location, super::store::DATA_FILE)
                .to_string(),
            queued: (STORE_QUEUE_CHUNKS as u64) * 256 * 1024,
        });
    }
    Ok(upload)
}

impl Copies {
    /// Starts every store's copy on a task of its own.
    pub fn start(stores: &[Store], location: &BackupLocation) -> Self {
        let copies = stores
            .iter()
            .map(|store| {
                let (tx, rx) = mpsc::channel(STORE_QUEUE_CHUNKS);
                let dropped = Arc::new(AtomicBool::new(false));
                Copy {
                    store: store.clone(),
                    data: Some(tx),
                    task: tokio::spawn(feed(store.clone(), location.clone(), rx, dropped.clone())),
                    dropped,
                }
            })
            .collect();
        Self {
            location: location.clone(),
            copies,
        }
    }

    /// Whether some store still takes data.
    pub fn any_alive(&self) -> bool {
        self.copies.iter().any(|c| c.data.is_some())
    }

    /// Hands a chunk to every store still taking data. A store whose queue stays full for
    /// [`STALL`] while another store still takes data is dropped from the run; one alone is
    /// waited for.
    pub async fn send(&mut self, chunk: Bytes) {
        for i in 0..self.copies.len() {
            let Some(tx) = self.copies[i].data.clone() else {
                continue;
            };
            let (sent, drop_copy) = match tx.try_send(chunk.clone()) {
                Ok(()) => (true, false),
                Err(mpsc::error::TrySendError::Closed(_)) => (false, false),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    match tokio::time::timeout(STALL, tx.send(chunk.clone())).await {
                        Ok(r) => (r.is_ok(), false),
                        Err(_) if self.others_alive(i) => {
                            tracing::warn!(
                                store = self.copies[i].store.name(),
                                "backup store fell behind: its copy is abandoned and replicated later"
                            );
                            (false, true)
                        }
                        Err(_) => (tx.send(chunk.clone()).await.is_ok(), false),
                    }
                }
            };
            if !sent {
                // Its task ended (failed), or it fell behind: it takes no more data.
                self.copies[i].stop_data(drop_copy);
            }
        }
    }

    fn others_alive(&self, i: usize) -> bool {
        self.copies
            .iter()
            .enumerate()
            .any(|(j, c)| j != i && c.data.is_some())
    }

    /// No more data: each store finishes writing what it was given.
    pub fn end_data(&mut self) {
        for c in &mut self.copies {
            c.stop_data(false);
        }
    }

    /// Commits every store on its own: its data completed, then `manifest.sig`, then
    /// `manifest.json` (the commit marker) last. A store's commit waits for nothing but its own
    /// data; the call returns once every store is done (or has failed).
    /// `parts` gives the manifest's bytes and signature once built (`None`: it could not be,
    /// and no store is committed).
    pub async fn commit(
        mut self,
        parts: Shared<BoxFuture<'static, ManifestParts>>,
    ) -> Vec<StoreResult> {
        self.end_data();
        let location = &self.location;
        futures::future::join_all(self.copies.into_iter().map(|c| {
            let parts = parts.clone();
            async move {
                let name = c.store.name().to_string();
                let result = async {
                    let upload = c.task.await.map_err(|e| StoreError::Task {
                        store: name.clone(),
                        reason: e.to_string(),
                    })??;
                    upload.finish().await?;
                    tracing::debug!(store = %name, "backup store completed its data");
                    let Some((manifest, signature)) = parts.await else {
                        return Err(StoreError::Task {
                            store: name.clone(),
                            reason: "the manifest could not be built".into(),
                        });
                    };
                    if let Some(sig) = &signature {
                        c.store.put_signature(location, sig).await?;
                    }
                    c.store.put_manifest(location, manifest).await
                }
                .await;
                if let Err(e) = &result {
                    tracing::warn!(store = %name, error = %e, "backup store failed");
                }
                StoreResult {
                    store: name,
                    result,
                }
            }
        }))
        .await
    }

    /// Abandons every copy: no store gets a `manifest.json`. Returns each store's failure, if
    /// it had one of its own (for the report when every store failed).
    pub async fn abort(mut self) -> Vec<(String, StoreError)> {
        self.end_data();
        let mut failures = Vec::new();
        for c in self.copies {
            let name = c.store.name().to_string();
            match c.task.await {
                Ok(Ok(upload)) => {
                    let _ = upload.abort().await;
                }
                Ok(Err(e)) => failures.push((name, e)),
                Err(e) => failures.push((
                    name.clone(),
                    StoreError::Task {
                        store: name,
                        reason: e.to_string(),
                    },
                )),
            }
        }
        failures
    }
}
