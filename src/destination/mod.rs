//! Where an image goes: one writer per destination behind one small interface.
//!
//! [`crate::archive::write_image`] calls, in this order: for each layer
//! [`Destination::begin_layer`], [`Destination::layer_chunk`] for each piece of its
//! uncompressed tar, [`Destination::end_layer`] with its diff_id and size; then
//! [`Destination::finish`] once with the image config. Layers are produced in parallel
//! but always arrive in image order, one at a time.
//!
//! Writers: [`hybrid_archive`] (what `build` and `stream` write: an OCI image layout and
//! docker's `manifest.json` in one tar) and [`oci_layout`] (`oci:DIR` and
//! `oci-archive:FILE`, compressed layers) and [`registry`] (`push docker://…`: the
//! same compressed layers, uploaded unless the registry has them).

pub mod engine_load;
pub mod hybrid_archive;
pub mod oci_layout;
pub mod registry;

use crate::attrs::ImageSpec;
use crate::cache::LayerKey;
use crate::layer::{hex, LayerDigest};
use crate::tar_header::{self, Header, Kind, Owner};
use anyhow::Result;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;

/// The receiving end of an image being written. See the module documentation for the
/// order of calls.
pub trait Destination {
    /// Called once before any layer is read, with what the layer cache knows of each layer.
    /// Returns, per layer, whether the destination already has it: such a layer is not
    /// read, and [`Destination::skip_layer`] takes the place of its begin/chunk/end calls,
    /// in order. A layer reported present must have a known diff_id. Default: none.
    ///
    /// # Errors
    /// Asking the other side (a registry, an engine) fails.
    fn present(&mut self, layers: &[KnownLayer]) -> Result<Vec<bool>> {
        Ok(vec![false; layers.len()])
    }

    /// Layer `index`, reported present by [`Destination::present`], is in the image but
    /// its bytes are not sent.
    ///
    /// # Errors
    /// The destination cannot be written.
    fn skip_layer(&mut self, index: usize, _known: &KnownLayer) -> Result<()> {
        anyhow::bail!("internal error: layer {} skipped, but the destination did not report it present", index + 1)
    }

    /// Layer `index` (0-based) starts; its uncompressed tar is `tar_size` bytes (known
    /// from the scan, before any byte is read).
    ///
    /// # Errors
    /// The destination cannot be written.
    fn begin_layer(&mut self, index: usize, tar_size: u64) -> Result<()>;

    /// The next bytes of the current layer's uncompressed tar.
    ///
    /// # Errors
    /// The destination cannot be written.
    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()>;

    /// The current layer is complete: `digest` is the SHA-256 of its uncompressed tar
    /// (the diff_id) and its size.
    ///
    /// # Errors
    /// The destination cannot be written.
    fn end_layer(&mut self, digest: LayerDigest) -> Result<()>;

    /// Whether the destination shows its own per-layer progress (a registry push: its
    /// bar or its uploaded/present/mounted lines). Then [`crate::archive::write_image`]
    /// prints no line per layer, which would repeat those and break a terminal's bar.
    fn shows_progress(&self) -> bool {
        false
    }

    /// Every layer is written: write the config, manifests and index.
    ///
    /// # Errors
    /// The destination cannot be written.
    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()>;
}

/// What the layer cache knows of a layer before it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownLayer {
    /// Its cache key, when it has one (see [`crate::cache`]).
    pub key: Option<LayerKey>,
    /// Its diff_id and tar size, when the cache knows them.
    pub diff_id: Option<LayerDigest>,
}

/// What a destination is given once every layer is written.
pub struct FinishedImage<'a> {
    /// The image attributes (name, tag, mtime).
    pub spec: &'a ImageSpec,
    /// The image config JSON, the same bytes for every destination.
    pub config: &'a [u8],
    /// Every layer's diff_id and uncompressed size, in order.
    pub diff_ids: &'a [LayerDigest],
}

/// OCI media types.
pub mod media_type {
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip-compressed layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd-compressed layer.
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Every layer media type we write.
    pub const LAYERS: [&str; 3] = [LAYER_TAR, LAYER_GZIP, LAYER_ZSTD];
}

/// Annotation naming a manifest's tag in an OCI index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the full `name:tag`, which docker and podman read when loading.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A content-addressed blob: media type, SHA-256 and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Its media type.
    pub media_type: &'static str,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// Its length.
    pub size: u64,
}

impl Blob {
    /// The blob holding `bytes`.
    pub fn of(media_type: &'static str, bytes: &[u8]) -> Blob {
        Blob { media_type, sha256: Sha256::digest(bytes).into(), size: bytes.len() as u64 }
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.sha256))
    }

    /// Its path in an OCI layout: `blobs/sha256/<hex>`.
    pub fn path(&self) -> String {
        format!("blobs/sha256/{}", hex(&self.sha256))
    }

    /// The OCI descriptor (`mediaType`, `digest`, `size`).
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest(), "size": self.size })
    }
}

/// The OCI image manifest of `config` and `layers`.
pub fn oci_manifest(config: &Blob, layers: &[Blob]) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// A manifest's entry in an OCI index, with `annotations`.
pub fn index_entry(manifest: &Blob, annotations: &[(&str, &str)]) -> Value {
    let mut entry = manifest.descriptor();
    let annotations: Map<String, Value> =
        annotations.iter().map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string()))).collect();
    entry["annotations"] = Value::Object(annotations);
    entry
}

/// An OCI index listing `manifests`.
pub fn oci_index(manifests: Vec<Value>) -> Vec<u8> {
    let index = json!({ "schemaVersion": 2, "mediaType": media_type::INDEX, "manifests": manifests });
    serde_json::to_vec(&index).unwrap_or_default()
}

/// Tar entries for the files of a layout (shared by the hybrid archive and `oci-archive`).
pub(crate) struct TarWriter {
    /// Owner and mtime of every entry.
    pub owner: Owner,
}

impl TarWriter {
    /// A regular file `name` holding `data`.
    pub fn file(&self, out: &mut impl Write, name: &str, data: &[u8]) -> Result<()> {
        self.file_header(out, name, data.len() as u64)?;
        out.write_all(data)?;
        Self::pad(out, data.len() as u64)
    }

    /// The header of a regular file `name` of `size` bytes; the caller writes the bytes
    /// and then [`TarWriter::pad`].
    pub fn file_header(&self, out: &mut impl Write, name: &str, size: u64) -> Result<()> {
        Header { name: name.as_bytes(), kind: Kind::File, mode: 0o644, size, link: b"", owner: &self.owner }.write_to(out)?;
        Ok(())
    }

    /// Zeros after a file's `size` bytes, to the end of its block.
    pub fn pad(out: &mut impl Write, size: u64) -> Result<()> {
        out.write_all(&tar_header::ZEROS[..tar_header::padding(size)])?;
        Ok(())
    }

    /// A directory `name` (ending with `/`).
    pub fn dir(&self, out: &mut impl Write, name: &str) -> Result<()> {
        Header { name: name.as_bytes(), kind: Kind::Directory, mode: 0o755, size: 0, link: b"", owner: &self.owner }.write_to(out)?;
        Ok(())
    }

    /// A symlink `name` → `target`.
    pub fn symlink(&self, out: &mut impl Write, name: &str, target: &str) -> Result<()> {
        Header { name: name.as_bytes(), kind: Kind::Symlink, mode: 0o777, size: 0, link: target.as_bytes(), owner: &self.owner }
            .write_to(out)?;
        Ok(())
    }

    /// The end of the archive: two zero blocks.
    pub fn end(out: &mut impl Write) -> Result<()> {
        out.write_all(&tar_header::ZEROS)?;
        out.write_all(&tar_header::ZEROS)?;
        Ok(())
    }
}

/// Files of an archive are root's, with the image's mtime.
pub(crate) fn archive_tar(spec: &ImageSpec) -> TarWriter {
    TarWriter { owner: Owner { uid: 0, gid: 0, uname: String::new(), gname: String::new(), mtime: spec.mtime.unix } }
}
