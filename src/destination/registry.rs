//! `push docker://HOST[:PORT]/NAME[:TAG]`: an image sent to a registry, skipping the blobs
//! the registry already has.
//!
//! Each layer is compressed as [`super::oci_layout`] compresses it (same bytes, so the same
//! digests as `oci:`) into a temporary file while its compressed bytes are hashed. When the
//! layer ends, a `HEAD` asks the registry whether it has the blob; if not, the blob is
//! uploaded from the file (reopened at each retry), and the file is removed. The config
//! follows, and the OCI manifest is `PUT` last, so a failed push never leaves the tag
//! naming a blob the registry lacks.
//!
//! This first version is sequential: a layer is uploaded when it ends, before the next
//! one is compressed (the layer producers wait meanwhile; their queues are bounded), and
//! every layer is read and compressed even when the registry has it (no layer cache yet).

use super::oci_layout::{layer_media_type, Hashing};
use super::{media_type, oci_manifest, Blob, Destination, FinishedImage};
use crate::attrs::Compressor;
use crate::compress::Compressed;
use crate::layer::LayerDigest;
use crate::plan::human_size;
use crate::registry::Client;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

/// The layer being compressed into its temporary file.
struct OpenLayer {
    writer: Compressed<Hashing<BufWriter<File>>>,
    path: PathBuf,
    started: Instant,
}

/// What a push did, for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Blobs uploaded (layers and config).
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub present: usize,
    /// Bytes of the uploaded blobs.
    pub bytes_sent: u64,
}

/// Pushes an image to one repository of a registry.
pub struct RegistryPush {
    client: Client,
    repository: String,
    tag: String,
    compressor: Compressor,
    threads: usize,
    layer_count: usize,
    temp_dir: tempfile::TempDir,
    current: Option<OpenLayer>,
    blobs: Vec<Blob>,
    stats: PushStats,
    /// The manifest's digest, once it is pushed.
    manifest_digest: Option<String>,
}

impl RegistryPush {
    /// Starts a push of an image of `layer_count` layers to `repository:tag` through
    /// `client`; layer files go to a new temporary directory (under `$TMPDIR`).
    ///
    /// # Errors
    /// The temporary directory cannot be created.
    pub fn new(
        client: Client,
        repository: &str,
        tag: &str,
        compressor: Compressor,
        threads: usize,
        layer_count: usize,
    ) -> Result<RegistryPush> {
        let temp_dir = tempfile::Builder::new()
            .prefix("nix-layers-push-")
            .tempdir()
            .with_context(|| format!("cannot create a temporary directory in `{}`", std::env::temp_dir().display()))?;
        // Compressed layers can be GBs: a signal must not leave them behind.
        crate::output::track_temp(temp_dir.path().to_path_buf());
        Ok(RegistryPush {
            client,
            repository: repository.to_string(),
            tag: tag.to_string(),
            compressor,
            threads,
            layer_count,
            temp_dir,
            current: None,
            blobs: Vec::new(),
            stats: PushStats::default(),
            manifest_digest: None,
        })
    }

    /// What was uploaded and what was present so far.
    pub fn stats(&self) -> PushStats {
        self.stats
    }

    /// The pushed manifest's digest (after [`Destination::finish`]).
    pub fn manifest_digest(&self) -> Option<&str> {
        self.manifest_digest.as_deref()
    }

    /// Uploads `blob` unless the registry has it; `open` gives its bytes (at each try).
    /// Returns whether it was uploaded.
    fn ensure_blob<R: std::io::Read>(&mut self, blob: &Blob, open: impl FnMut() -> std::io::Result<R>) -> Result<bool> {
        let digest = blob.digest();
        if let Some(size) = self.client.blob_exists(&self.repository, &digest)? {
            if size == blob.size {
                self.stats.present += 1;
                return Ok(false);
            }
            // A size that differs from the digest's bytes: upload ours, the registry
            // checks the digest.
        }
        self.client.upload_blob_replayable(&self.repository, &digest, blob.size, open)?;
        self.stats.uploaded += 1;
        self.stats.bytes_sent += blob.size;
        Ok(true)
    }
}

fn outcome(uploaded: bool) -> &'static str {
    if uploaded { "uploaded" } else { "present" }
}

impl Destination for RegistryPush {
    fn begin_layer(&mut self, index: usize, _tar_size: u64) -> Result<()> {
        let path = self.temp_dir.path().join(format!("layer-{}", index + 1));
        let file = File::create(&path).with_context(|| format!("cannot create `{}`", path.display()))?;
        let hashing = Hashing { inner: BufWriter::with_capacity(1 << 20, file), sha: Sha256::new(), size: 0 };
        let writer = Compressed::new(hashing, self.compressor, self.threads)?;
        self.current = Some(OpenLayer { writer, path, started: Instant::now() });
        Ok(())
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let layer = self.current.as_mut().context("internal error: a layer chunk before the layer")?;
        layer.writer.write_all(bytes).with_context(|| format!("cannot write `{}`", layer.path.display()))
    }

    fn end_layer(&mut self, _digest: LayerDigest) -> Result<()> {
        let OpenLayer { writer, path, started } = self.current.take().context("internal error: a layer ends before it began")?;
        let hashing = writer.finish().with_context(|| format!("cannot write `{}`", path.display()))?;
        hashing.inner.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write `{}`", path.display()))?;
        let blob = Blob { media_type: layer_media_type(self.compressor), sha256: hashing.sha.finalize().into(), size: hashing.size };
        let uploaded = self.ensure_blob(&blob, || File::open(&path))?;
        // The compressed copy is not needed any more; the directory goes at the end anyway.
        let _ = std::fs::remove_file(&path);
        eprintln!(
            "nix-layers: layer {}/{}: {}, {}, {:.1} s",
            self.blobs.len() + 1,
            self.layer_count,
            outcome(uploaded),
            human_size(blob.size),
            started.elapsed().as_secs_f64()
        );
        self.blobs.push(blob);
        Ok(())
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        let started = Instant::now();
        let config = Blob::of(media_type::CONFIG, image.config);
        let uploaded = self.ensure_blob(&config, || Ok(image.config))?;
        eprintln!("nix-layers: config: {}, {}, {:.1} s", outcome(uploaded), human_size(config.size), started.elapsed().as_secs_f64());
        // Last: until now the tag still names the previous image, whose blobs are there.
        let manifest = oci_manifest(&config, &self.blobs);
        let digest = self.client.put_manifest(&self.repository, &self.tag, media_type::MANIFEST, &manifest)?;
        self.manifest_digest = Some(digest);
        Ok(())
    }
}
