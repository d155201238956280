//! `push docker://HOST[:PORT]/NAME[:TAG]`: an image sent to a registry, skipping the blobs
//! the registry already has.
//!
//! Each layer is compressed as [`super::oci_layout`] compresses it (same bytes, so the same
//! digests as `oci:`) into a temporary file while its compressed bytes are hashed. When the
//! layer ends, the file is handed to a small pool of upload threads ([`UPLOADS`] at a
//! time) and the next layer is compressed meanwhile. An upload thread `HEAD`s the blob;
//! if the registry lacks it, it mounts it from another repository of the same registry
//! that had it (when the layer cache knows one), else uploads it from the file (reopened at
//! each retry), and removes the file. At most [`QUEUED`] finished files wait for a thread:
//! past that, the layer producers wait, so the temporary disk space stays bounded (about
//! `UPLOADS + QUEUED + 1` compressed layers).
//!
//! [`Destination::finish`] waits for every layer upload (the first error wins and is the
//! push's), then sends the config, and puts the OCI manifest **last**, so a failed push
//! never leaves the tag naming a blob the registry lacks.
//!
//! Before any layer is read, [`Destination::present`] looks up each layer's compressed
//! blob in the layer cache, and [`RegistryPush::check_known`] `HEAD`s those blobs in parallel
//! ([`HEADS`] at a time): a blob the registry has, with the size we know, or one mounted
//! from another repository, makes its layer skipped, not read at all.

use super::oci_layout::layer_media_type;
use crate::layer::Hashing;
use super::{media_type, oci_manifest, Blob, Destination, FinishedImage, KnownLayer};
use crate::compress::Compression;
use crate::cache::{compression_id, LayerCache, LayerKey};
use crate::compress::Compressed;
use crate::layer::LayerDigest;
use crate::plan::human_size;
use crate::registry::Client;
use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::Digest;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Blob uploads in flight at once. A few streams fill a link to a registry better than
/// one (a single TCP stream rarely does over a long path), and more would only split the
/// same bandwidth while holding more temporary files.
pub const UPLOADS: usize = 3;
/// Finished layer files that may wait for an upload thread before the producers wait.
pub const QUEUED: usize = 2;
/// `HEAD` requests in flight at once when checking the blobs the cache knows.
pub const HEADS: usize = 8;
/// Other repositories tried for a mount, at most, per blob: each miss costs a request.
const MOUNT_TRIES: usize = 3;

/// How a blob came to be in the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its bytes were sent.
    Uploaded,
    /// The repository had it already (`HEAD`).
    Present,
    /// Mounted from another repository of the same registry, no byte sent.
    Mounted,
}

impl Outcome {
    /// `uploaded`, `present` or `mounted`, as the per-layer lines say.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Uploaded => "uploaded",
            Outcome::Present => "present",
            Outcome::Mounted => "mounted",
        }
    }
}

/// What is known, before reading a layer, of its compressed blob: the blob (from the layer
/// cache, for this push's compression) and the repositories that had it, spelt
/// `HOST[:PORT]/REPOSITORY` (only those of this push's registry are used, for mounts).
#[derive(Clone, Debug)]
pub struct KnownBlob {
    /// The compressed layer: media type, digest, size.
    pub blob: Blob,
    /// `HOST[:PORT]/REPOSITORY` of repositories that had the blob.
    pub repositories: Vec<String>,
}

/// What a push did, for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Blobs uploaded (layers and config).
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Bytes of the uploaded blobs.
    pub bytes_sent: u64,
}

/// The layer being compressed into its temporary file.
struct OpenLayer {
    index: usize,
    writer: Compressed<Hashing<BufWriter<File>>>,
    path: PathBuf,
    started: Instant,
}

/// A finished layer file for an upload thread.
struct Job {
    index: usize,
    blob: Blob,
    path: PathBuf,
    started: Instant,
    mount_from: Vec<String>,
}

/// What the push's threads share.
struct Shared {
    client: Client,
    repository: String,
    progress: Progress,
    /// Set with the first error; upload threads then drop what they are given.
    failed: AtomicBool,
    first_error: Mutex<Option<anyhow::Error>>,
    /// Blobs now in the repository, with how they got there (for the caller's cache).
    landed: Mutex<Vec<(usize, Blob, Outcome)>>,
    /// Repositories that lent a layer by a mount: the config is tried there too (an image
    /// pushed again under another name has the same config).
    lenders: Mutex<Vec<String>>,
}

impl Shared {
    /// Keeps `error` if it is the first.
    fn fail(&self, error: anyhow::Error) {
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(error);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The first error, if any (taken: it is reported once).
    fn take_error(&self) -> Option<anyhow::Error> {
        if !self.failed.load(Ordering::SeqCst) {
            return None;
        }
        let taken = self.first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Taken once already: this is a later call after the push failed.
        Some(taken.unwrap_or_else(|| anyhow!("the push failed (see the error above)")))
    }

    /// Whether the repository has `blob` (a `HEAD` with the right size), else whether one
    /// of `mount_from` (repositories of this registry) lends it.
    fn find(&self, blob: &Blob, mount_from: &[String]) -> Result<Option<Outcome>> {
        let digest = blob.digest();
        if let Some(size) = self.client.blob_exists(&self.repository, &digest)? {
            if size == blob.size {
                return Ok(Some(Outcome::Present));
            }
            // A size that differs from what we know of the digest's bytes (a stale cache
            // entry, a registry's odd answer): upload, the registry checks the digest.
            return Ok(None);
        }
        for from in mount_from.iter().take(MOUNT_TRIES) {
            // A refused mount (no pull right on `from`, a registry without mounts) is no
            // reason to fail: the blob is uploaded instead.
            if let Ok(true) = self.client.mount_blob(&self.repository, &digest, from) {
                let mut lenders = self.lenders.lock().unwrap_or_else(|p| p.into_inner());
                if !lenders.contains(from) {
                    lenders.push(from.clone());
                }
                return Ok(Some(Outcome::Mounted));
            }
        }
        Ok(None)
    }

    /// Makes sure the repository has `blob`: present, mounted, or uploaded from `open`'s
    /// bytes (called again at each try).
    fn send<R: Read>(&self, blob: &Blob, mount_from: &[String], mut open: impl FnMut() -> io::Result<R>) -> Result<Outcome> {
        if let Some(outcome) = self.find(blob, mount_from)? {
            return Ok(outcome);
        }
        let bar = self.progress.bar.as_ref();
        self.client.upload_blob_replayable(&self.repository, &blob.digest(), blob.size, || {
            open().map(|inner| CountingRead { inner, bar })
        })?;
        Ok(Outcome::Uploaded)
    }

    /// An upload thread: takes finished layer files until the queue closes.
    fn upload_loop(&self, jobs: &Mutex<Receiver<Job>>) {
        loop {
            // One thread waits in `recv` at a time; the others wait for the lock.
            let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(job) = job else { break };
            if !self.failed.load(Ordering::SeqCst) {
                match self.send(&job.blob, &job.mount_from, || File::open(&job.path)) {
                    Ok(outcome) => {
                        self.progress.blob(Some(job.index), outcome, job.blob.size, job.started.elapsed());
                        self.landed.lock().unwrap_or_else(|p| p.into_inner()).push((job.index, job.blob, outcome));
                    }
                    Err(e) => self.fail(e),
                }
            }
            // The compressed copy is not needed any more; the directory goes at the end anyway.
            let _ = std::fs::remove_file(&job.path);
        }
    }
}

/// Counts streamed bytes into the progress bar (a retry counts its bytes again: they are
/// sent again).
struct CountingRead<'a, R> {
    inner: R,
    bar: Option<&'a ProgressBar>,
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

/// What the user sees: on a terminal, one live line (layers done, present, mounted, bytes
/// sent and rate); otherwise one line per blob and the caller's summary.
struct Progress {
    layer_count: usize,
    bar: Option<ProgressBar>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    layers_done: usize,
    stats: PushStats,
}

impl Progress {
    fn new(layer_count: usize, live: bool) -> Progress {
        let bar = live.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg}, {binary_bytes} sent ({binary_bytes_per_sec}), {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let progress = Progress { layer_count, bar, counts: Mutex::new(Counts::default()) };
        progress.redraw(&Counts::default());
        progress
    }

    /// Blob `layer` (0-based; `None` for the config) is in the repository.
    fn blob(&self, layer: Option<usize>, outcome: Outcome, size: u64, took: Duration) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Uploaded => {
                counts.stats.uploaded += 1;
                counts.stats.bytes_sent += size;
            }
            Outcome::Present => counts.stats.present += 1,
            Outcome::Mounted => counts.stats.mounted += 1,
        }
        if layer.is_some() {
            counts.layers_done += 1;
        }
        if self.bar.is_some() {
            self.redraw(&counts);
        } else {
            let what = match layer {
                Some(i) => format!("layer {}/{}", i + 1, self.layer_count),
                None => "config".to_string(),
            };
            eprintln!("nix-layers: {what}: {}, {}, {:.1} s", outcome.word(), human_size(size), took.as_secs_f64());
        }
    }

    fn redraw(&self, counts: &Counts) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "layers {}/{} ({} present, {} mounted)",
                counts.layers_done, self.layer_count, counts.stats.present, counts.stats.mounted
            ));
        }
    }

    fn stats(&self) -> PushStats {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Removes the live line (the caller prints the summary).
    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The upload threads and the queue that feeds them.
struct Pool {
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(shared: &Arc<Shared>) -> Result<Pool> {
        let (sender, receiver) = sync_channel::<Job>(QUEUED);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::new();
        let mut refused = None;
        for n in 0..UPLOADS {
            let (shared, receiver) = (shared.clone(), receiver.clone());
            match std::thread::Builder::new().name(format!("upload-{n}")).spawn(move || shared.upload_loop(&receiver)) {
                Ok(handle) => workers.push(handle),
                Err(e) => refused = Some(e),
            }
        }
        // As everywhere: fewer threads than asked is slower, not wrong.
        if workers.is_empty() {
            return Err(anyhow!("cannot start an upload thread: {}", refused.map_or_else(String::new, |e| e.to_string())));
        }
        Ok(Pool { sender: Some(sender), workers })
    }

    /// Closes the queue and waits for the threads to finish what they hold.
    fn join(&mut self) -> Result<()> {
        self.sender = None;
        let mut panicked = false;
        for worker in self.workers.drain(..) {
            panicked |= worker.join().is_err();
        }
        if panicked {
            return Err(anyhow!("internal error: an upload thread panicked"));
        }
        Ok(())
    }
}

/// Pushes an image to one repository of a registry.
pub struct RegistryPush {
    shared: Arc<Shared>,
    pool: Pool,
    tag: String,
    compression: Compression,
    threads: usize,
    layer_count: usize,
    temp_dir: tempfile::TempDir,
    current: Option<OpenLayer>,
    /// Each layer's blob, set when it is compressed or skipped.
    blobs: Vec<Option<Blob>>,
    /// Layers found in the registry by [`RegistryPush::check_known`], with how.
    skipped: Vec<Option<(Blob, Outcome, Duration)>>,
    /// The manifest's digest, once it is pushed.
    manifest_digest: Option<String>,
    /// Knows compressed blobs of earlier runs and the repositories that had them; told
    /// the blobs and repositories of this push.
    cache: LayerCache,
    /// Each layer's cache key, from [`Destination::present`].
    keys: Vec<Option<LayerKey>>,
}

impl RegistryPush {
    /// Starts a push of an image of `layer_count` layers to `repository:tag` through
    /// `client`; layer files go to a new temporary directory (under `$TMPDIR`). A live
    /// progress line is drawn when stderr is a terminal. `cache` is read for the blobs of
    /// layers it knows and told what this push compresses and sends.
    ///
    /// # Errors
    /// The temporary directory or the upload threads cannot be created.
    pub fn new(
        client: Client,
        repository: &str,
        tag: &str,
        compression: Compression,
        threads: usize,
        layer_count: usize,
        cache: LayerCache,
    ) -> Result<RegistryPush> {
        let temp_dir = tempfile::Builder::new()
            .prefix("nix-layers-push-")
            .tempdir()
            .with_context(|| format!("cannot create a temporary directory in `{}`", std::env::temp_dir().display()))?;
        // Compressed layers can be GBs: a signal must not leave them behind.
        crate::output::track_temp(temp_dir.path().to_path_buf());
        let shared = Arc::new(Shared {
            client,
            repository: repository.to_string(),
            progress: Progress::new(layer_count, io::stderr().is_terminal()),
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            landed: Mutex::new(Vec::new()),
            lenders: Mutex::new(Vec::new()),
        });
        let pool = Pool::start(&shared)?;
        Ok(RegistryPush {
            shared,
            pool,
            tag: tag.to_string(),
            compression,
            threads,
            layer_count,
            temp_dir,
            current: None,
            blobs: vec![None; layer_count],
            skipped: vec![None; layer_count],
            manifest_digest: None,
            cache,
            keys: vec![None; layer_count],
        })
    }

    /// What was uploaded, present and mounted so far.
    pub fn stats(&self) -> PushStats {
        self.shared.progress.stats()
    }

    /// The pushed manifest's digest (after [`Destination::finish`]).
    pub fn manifest_digest(&self) -> Option<&str> {
        self.manifest_digest.as_deref()
    }

    /// `HOST[:PORT]/REPOSITORY`: how the layer cache names this push's repository.
    pub fn registry_repository(&self) -> String {
        format!("{}/{}", self.shared.client.registry(), self.shared.repository)
    }

    /// The repositories of `repositories` (`HOST[:PORT]/REPOSITORY`) that are on this
    /// push's registry and are not its repository: where a blob can be mounted from.
    pub fn mount_sources(&self, repositories: &[String]) -> Vec<String> {
        let prefix = format!("{}/", self.shared.client.registry());
        // The cache lists the newest last; the newest is the likeliest to still have it.
        repositories
            .iter()
            .rev()
            .filter_map(|r| r.strip_prefix(&prefix))
            .filter(|r| *r != self.shared.repository && !r.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Before any layer is read: for each layer whose compressed blob is known (`known[i]`),
    /// asks the registry in parallel ([`HEADS`] at a time) whether the repository has it,
    /// with that size, or mounts it from a repository of `KnownBlob::repositories` on this
    /// registry. Returns, per layer, whether it is in the repository now: those layers
    /// need not be read; [`RegistryPush::skip`] takes them in their turn.
    ///
    /// # Errors
    /// A `HEAD` fails (after retries): the registry is unreachable or refuses us.
    pub fn check_known(&mut self, known: &[Option<KnownBlob>]) -> Result<Vec<bool>> {
        let asks: Vec<(usize, &Blob, Vec<String>)> = known
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|k| (i, &k.blob, self.mount_sources(&k.repositories))))
            .collect();
        let next = AtomicUsize::new(0);
        type Answer = (usize, Result<Option<Outcome>>, Duration);
        let answers: Mutex<Vec<Answer>> = Mutex::new(Vec::new());
        let shared = &self.shared;
        std::thread::scope(|s| {
            let work = || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((i, blob, from)) = asks.get(n) else { break };
                let started = Instant::now();
                let answer = shared.find(blob, from);
                if answer.is_err() {
                    // Stop handing out work: the push fails with this error.
                    next.store(asks.len(), Ordering::Relaxed);
                }
                answers.lock().unwrap_or_else(|p| p.into_inner()).push((*i, answer, started.elapsed()));
            };
            let mut started = 0;
            for _ in 0..HEADS.min(asks.len()) {
                if std::thread::Builder::new().spawn_scoped(s, work).is_ok() {
                    started += 1;
                }
            }
            // No thread at all: ask from this one.
            if started == 0 {
                work();
            }
        });
        let mut answers = answers.into_inner().unwrap_or_else(|p| p.into_inner());
        answers.sort_by_key(|a| a.0);
        let mut present = vec![false; self.layer_count];
        for (i, answer, took) in answers {
            if let Some(outcome) = answer? {
                if i < self.layer_count {
                    let blob = known[i].as_ref().map(|k| k.blob.clone()).context("internal error: an answer for an unknown blob")?;
                    self.skipped[i] = Some((blob, outcome, took));
                    present[i] = true;
                }
            }
        }
        Ok(present)
    }

    /// Layer `index`, found by [`RegistryPush::check_known`], takes its place in the
    /// manifest without being read. Returns its blob.
    ///
    /// # Errors
    /// `check_known` did not find it (an internal error).
    pub fn skip(&mut self, index: usize) -> Result<Blob> {
        let (blob, outcome, took) = self
            .skipped
            .get_mut(index)
            .and_then(Option::take)
            .with_context(|| format!("internal error: layer {} skipped, but the registry was not found to have it", index + 1))?;
        self.shared.progress.blob(Some(index), outcome, blob.size, took);
        self.shared.landed.lock().unwrap_or_else(|p| p.into_inner()).push((index, blob.clone(), outcome));
        self.blobs[index] = Some(blob.clone());
        Ok(blob)
    }

    /// Blobs that reached the repository since the last call (layer index, blob, how), for
    /// the layer cache's record of which repositories have which blob.
    pub fn take_landed(&self) -> Vec<(usize, Blob, Outcome)> {
        std::mem::take(&mut *self.shared.landed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Tells the cache which repository now has the blobs that landed.
    fn record_landed(&self) {
        let here = self.registry_repository();
        for (_, blob, _) in self.take_landed() {
            self.cache.record_repository(&blob, &here);
        }
    }

    /// Layer `index`'s blob, once compressed or skipped.
    pub fn layer_blob(&self, index: usize) -> Option<&Blob> {
        self.blobs.get(index).and_then(Option::as_ref)
    }

    /// Compresses the open layer's end, records its blob in the cache and hands its file
    /// to the upload threads, with the repositories the cache knows had the blob.
    fn end_current(&mut self) -> Result<Blob> {
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        let OpenLayer { index, writer, path, started } =
            self.current.take().context("internal error: a layer ends before it began")?;
        let hashing = writer.finish().with_context(|| format!("cannot write `{}`", path.display()))?;
        hashing.inner.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write `{}`", path.display()))?;
        let blob = Blob { media_type: layer_media_type(self.compression.format), sha256: hashing.sha.finalize().into(), size: hashing.size };
        self.blobs[index] = Some(blob.clone());
        if let Some(Some(key)) = self.keys.get(index) {
            self.cache.record_blob(key, &compression_id(self.compression), &blob);
        }
        let mount_from = self.mount_sources(&self.cache.repositories(&blob));
        let job = Job { index, blob: blob.clone(), path, started, mount_from };
        let sender = self.pool.sender.as_ref().context("internal error: a layer after the push finished")?;
        // Blocks while QUEUED files wait: the producers wait with us (bounded disk use).
        if let Err(std::sync::mpsc::SendError(job)) = sender.send(job) {
            let _ = std::fs::remove_file(&job.path);
            return Err(self.shared.take_error().unwrap_or_else(|| anyhow!("internal error: the upload threads stopped")));
        }
        Ok(blob)
    }
}

impl Destination for RegistryPush {
    fn shows_progress(&self) -> bool {
        true
    }

    /// The layers whose compressed blob the cache knows (for this compression) are asked
    /// of the registry: those it has, or that are mounted, are not read.
    fn present(&mut self, layers: &[KnownLayer]) -> Result<Vec<bool>> {
        self.keys = layers.iter().map(|l| l.key).collect();
        self.keys.resize(self.layer_count, None);
        let compression = compression_id(self.compression);
        let known: Vec<Option<KnownBlob>> = layers
            .iter()
            .map(|l| {
                // write_image needs the diff_id of a layer it does not read.
                l.diff_id?;
                let blob = self.cache.blob(&l.key?, &compression)?;
                let repositories = self.cache.repositories(&blob);
                Some(KnownBlob { blob, repositories })
            })
            .collect();
        self.check_known(&known)
    }

    fn skip_layer(&mut self, index: usize, _known: &KnownLayer) -> Result<()> {
        self.skip(index).map(drop)
    }

    fn begin_layer(&mut self, index: usize, _tar_size: u64) -> Result<()> {
        // A failed upload ends the push: no point compressing more.
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        if index >= self.layer_count {
            return Err(anyhow!("internal error: layer {} of {}", index + 1, self.layer_count));
        }
        let path = self.temp_dir.path().join(format!("layer-{}", index + 1));
        let file = File::create(&path).with_context(|| format!("cannot create `{}`", path.display()))?;
        let hashing = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        let writer = Compressed::new(hashing, self.compression, self.threads)?;
        self.current = Some(OpenLayer { index, writer, path, started: Instant::now() });
        Ok(())
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let layer = self.current.as_mut().context("internal error: a layer chunk before the layer")?;
        layer.writer.write_all(bytes).with_context(|| format!("cannot write `{}`", layer.path.display()))
    }

    fn end_layer(&mut self, _digest: LayerDigest) -> Result<()> {
        self.end_current().map(drop)
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        // Every layer blob first: the manifest may only name blobs the registry has.
        let joined = self.pool.join();
        // What did land is remembered, even when the push fails.
        self.record_landed();
        joined?;
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        let mut layers = Vec::with_capacity(self.layer_count);
        for (i, blob) in self.blobs.iter().enumerate() {
            layers.push(blob.clone().with_context(|| format!("internal error: layer {} was neither written nor skipped", i + 1))?);
        }
        let started = Instant::now();
        let config = Blob::of(media_type::CONFIG, image.config);
        let lenders = self.shared.lenders.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let outcome = self.shared.send(&config, &lenders, || Ok(image.config))?;
        self.shared.progress.blob(None, outcome, config.size, started.elapsed());
        // Last: until now the tag still names the previous image, whose blobs are there.
        let manifest = oci_manifest(&config, &layers);
        let digest = self.shared.client.put_manifest(&self.shared.repository, &self.tag, media_type::MANIFEST, &manifest)?;
        self.manifest_digest = Some(digest);
        self.shared.progress.clear();
        Ok(())
    }
}

impl Drop for RegistryPush {
    fn drop(&mut self) {
        // After an error: upload threads drop what is queued; those mid-upload end with
        // the process (their files go with the temporary directory).
        self.shared.failed.store(true, Ordering::SeqCst);
        self.pool.sender = None;
        self.shared.progress.clear();
        self.record_landed();
    }
}
