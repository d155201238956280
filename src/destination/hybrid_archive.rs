//! The archive `build` and `stream` write: an OCI image layout and docker's
//! `manifest.json` in one uncompressed tar (what `docker save` writes since docker 25).
//! docker (20.10 and later) reads `manifest.json`; podman and skopeo read either
//! (`docker-archive:` or `oci-archive:`).
//!
//! One pass, every layer byte written once as it is produced. A tar entry's name comes
//! before its bytes, but an OCI blob's name is its digest, known only after the last
//! byte. So each layer's bytes go to `layers/NNN.tar` (its size is known from the scan),
//! and once it is hashed a symlink `blobs/sha256/<diff_id>` → `../../layers/NNN.tar`
//! follows: OCI readers extract the tar and open the blob through the link. docker's
//! `manifest.json` names `layers/NNN.tar` itself, which every docker-archive reader
//! handles (symlinked layers are what `docker save` wrote for shared layers before 25).
//! The alternative, hashing every layer before writing it, would read the store twice.
//!
//! Order: `blobs/`, `blobs/sha256/`, `layers/`; per layer its tar and its blob link; the
//! config blob, the OCI manifest blob, `index.json`, `manifest.json`, `oci-layout`.
//!
//! For `load`, a layer the engine already has can be omitted ([`HybridArchive::omit_layer`]):
//! neither its tar nor its blob link is written, but `manifest.json`, the OCI manifest and
//! the config still list it, so the engine takes it from its own store (docker 20.10 by
//! chain ID, podman by diff_id; see `engine_load`).

use super::{archive_tar, index_entry, media_type, oci_index, oci_manifest, Blob, Destination, FinishedImage, TarWriter};
use super::{CONTAINERD_NAME, OCI_LAYOUT, REF_NAME};
use crate::attrs::ImageSpec;
use crate::layer::LayerDigest;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;

/// Writes the hybrid archive to a byte stream (`W` may be a `&mut` of one).
pub struct HybridArchive<W: Write> {
    out: W,
    tar: TarWriter,
    /// `layers/NNN.tar`, in order.
    names: Vec<String>,
    /// Each layer's blob, in order.
    blobs: Vec<Blob>,
    /// Blob links written (two identical layers share one).
    linked: HashSet<[u8; 32]>,
}

impl<W: Write> HybridArchive<W> {
    /// Starts the archive (its directory entries) on `out`.
    ///
    /// # Errors
    /// Writing to `out` fails.
    pub fn start(mut out: W, spec: &ImageSpec) -> Result<Self> {
        let tar = archive_tar(spec);
        for dir in ["blobs/", "blobs/sha256/", "layers/"] {
            tar.dir(&mut out, dir).context("cannot write the image")?;
        }
        Ok(HybridArchive { out, tar, names: Vec::new(), blobs: Vec::new(), linked: HashSet::new() })
    }

    /// Layer `index` (0-based, in order with the written layers), whose diff_id and size
    /// are `digest`, is left out: no tar, no blob link, but it is listed in
    /// `manifest.json` (as `layers/NNN.tar`, the name it would have had), the OCI manifest
    /// and the config, for an engine that already stores it.
    pub fn omit_layer(&mut self, index: usize, digest: LayerDigest) {
        self.names.push(layer_name(index));
        self.blobs.push(layer_blob(digest));
    }

    /// The writer, once [`Destination::finish`] has written the end of the archive.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The name of layer `index` (0-based) in the archive.
fn layer_name(index: usize) -> String {
    format!("layers/{:03}.tar", index + 1)
}

/// The OCI blob of an uncompressed layer.
fn layer_blob(digest: LayerDigest) -> Blob {
    Blob { media_type: media_type::LAYER_TAR, sha256: digest.sha256, size: digest.size }
}

impl<W: Write> Destination for HybridArchive<W> {
    fn begin_layer(&mut self, index: usize, tar_size: u64) -> Result<()> {
        let name = layer_name(index);
        self.tar.file_header(&mut self.out, &name, tar_size).context("cannot write the image")?;
        self.names.push(name);
        Ok(())
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).context("cannot write the image")
    }

    fn end_layer(&mut self, digest: LayerDigest) -> Result<()> {
        TarWriter::pad(&mut self.out, digest.size).context("cannot write the image")?;
        let blob = layer_blob(digest);
        if self.linked.insert(digest.sha256) {
            let target = format!("../../{}", self.names.last().map_or("", String::as_str));
            self.tar.symlink(&mut self.out, &blob.path(), &target).context("cannot write the image")?;
        }
        self.blobs.push(blob);
        Ok(())
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        let config = Blob::of(media_type::CONFIG, image.config);
        let manifest_bytes = oci_manifest(&config, &self.blobs);
        let manifest = Blob::of(media_type::MANIFEST, &manifest_bytes);
        let spec = image.spec;
        let repo_tag = spec.repo_tag();
        let index = oci_index(vec![index_entry(&manifest, &[(CONTAINERD_NAME, &repo_tag), (REF_NAME, &spec.tag)])]);
        let docker_manifest = serde_json::to_vec(&json!([{
            "Config": config.path(),
            "RepoTags": [repo_tag],
            "Layers": self.names,
        }]))?;
        let (tar, out) = (&self.tar, &mut self.out);
        tar.file(out, &config.path(), image.config)?;
        tar.file(out, &manifest.path(), &manifest_bytes)?;
        tar.file(out, "index.json", &index)?;
        tar.file(out, "manifest.json", &docker_manifest)?;
        tar.file(out, "oci-layout", OCI_LAYOUT)?;
        TarWriter::end(out)?;
        out.flush().context("cannot write the image")?;
        Ok(())
    }
}

/// Writes the whole hybrid archive of `layers` to `out`, producing layers on `threads`
/// workers (what `stream` does; `build` passes a compressing writer), recording layers'
/// diff_ids in `cache` (`stream` only: a Nix build gets a disabled one).
///
/// # Errors
/// Reading a store file fails or it changed size, or writing to `out` fails.
pub fn write_archive(
    out: &mut impl Write,
    spec: &ImageSpec,
    layers: &[crate::archive::ImageLayer],
    threads: usize,
    cache: &crate::cache::LayerCache,
) -> Result<crate::archive::Written> {
    crate::archive::write_image(&mut HybridArchive::start(out, spec)?, spec, layers, threads, cache)
}
