//! OCI image layouts: `oci:DIR[:TAG]` (a directory) and `oci-archive:FILE[:TAG]` (a tar
//! of one), skopeo's transport names, with compressed layer blobs.
//!
//! Each layer is compressed as it arrives, in order, into a temporary file under
//! `blobs/sha256/` while the compressed bytes are hashed, then renamed to its digest.
//! gzip and zstd each use `threads` workers within a layer (fixed block and job sizes, so
//! the bytes do not depend on the thread count). What limits parallelism: a layer is
//! compressed only when its turn comes, so the layer producers wait on the compressor
//! (their queues are bounded), and a layer smaller than one gzip block (1 MiB) or zstd
//! job (4 MiB) is compressed by one thread.
//!
//! A failure never leaves a broken index: blobs are written first, `index.json` last,
//! each through a temporary file renamed into place. Blobs a failed run leaves behind are
//! unreferenced, which the layout allows.

use super::{archive_tar, index_entry, media_type, oci_index, oci_manifest, Blob, Destination, FinishedImage, TarWriter};
use super::{KnownLayer, OCI_LAYOUT, REF_NAME};
use crate::cache::{compression_id, LayerCache, LayerKey};
use crate::attrs::Compressor;
use crate::compress::Compression;
use crate::compress::Compressed;
use crate::layer::{Hashing, LayerDigest};
use crate::output::{write_atomically, AtomicFile};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sha2::Digest;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where an OCI image goes, as skopeo spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciTarget {
    /// `oci:DIR`: a layout directory, created or added to.
    Dir(PathBuf),
    /// `oci-archive:FILE`: a tar of a layout, replaced whole.
    Archive(PathBuf),
}

impl OciTarget {
    /// Parses `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`; the path ends at the first `:`
    /// after the transport, as in skopeo.
    ///
    /// # Errors
    /// Another transport, an empty path or an empty tag.
    pub fn parse(dest: &str) -> Result<(OciTarget, Option<String>)> {
        let (transport, rest) = dest.split_once(':').ok_or_else(|| anyhow!("`{dest}` is not `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`"))?;
        let (path, tag) = match rest.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (rest, None),
        };
        if path.is_empty() {
            bail!("`{dest}` names no path");
        }
        if let Some(tag) = tag {
            if tag.is_empty() || tag.contains('/') {
                bail!("`{dest}`: the tag `{tag}` is empty or contains `/`");
            }
        }
        let target = match transport {
            "oci" => OciTarget::Dir(PathBuf::from(path)),
            "oci-archive" => OciTarget::Archive(PathBuf::from(path)),
            _ => bail!("`{dest}`: unknown transport `{transport}:` (use `oci:` or `oci-archive:`)"),
        };
        Ok((target, tag.map(str::to_string)))
    }
}

/// The layer media type for `compressor`.
pub fn layer_media_type(compressor: Compressor) -> &'static str {
    match compressor {
        Compressor::None => media_type::LAYER_TAR,
        Compressor::Gz => media_type::LAYER_GZIP,
        Compressor::Zstd => media_type::LAYER_ZSTD,
    }
}

/// A file removed when dropped unless it was renamed away first.
struct TempFile(PathBuf);

impl TempFile {
    /// A temporary file at `path`, removed when dropped or when a signal ends the process.
    fn new(path: PathBuf) -> TempFile {
        crate::output::track_temp(path.clone());
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        crate::output::forget_temp(&self.0);
    }
}

/// The layer being compressed.
struct OpenLayer {
    writer: Compressed<Hashing<BufWriter<File>>>,
    temp: TempFile,
    index: usize,
}

/// Writes an image into an OCI layout directory.
pub struct OciLayout {
    dir: PathBuf,
    tag: String,
    compression: Compression,
    threads: usize,
    current: Option<OpenLayer>,
    blobs: Vec<Blob>,
    /// Remembers each layer's compressed blob, and knows those of earlier runs.
    cache: LayerCache,
    /// From [`Destination::present`]: each layer's cache key, and the blob of each layer
    /// the directory already holds.
    keys: Vec<Option<LayerKey>>,
    held: Vec<Option<Blob>>,
}

impl OciLayout {
    /// Opens (or creates) the layout at `dir`, to tag the image `tag`.
    ///
    /// # Errors
    /// `dir` exists and is neither empty nor an OCI layout, or cannot be created.
    pub fn open(dir: &Path, tag: &str, compression: Compression, threads: usize, cache: LayerCache) -> Result<OciLayout> {
        let layout_file = dir.join("oci-layout");
        if layout_file.exists() {
            let text = fs::read(&layout_file).with_context(|| format!("cannot read `{}`", layout_file.display()))?;
            let value: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
            if value.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
                bail!("`{}` is not an OCI layout file (no `imageLayoutVersion`)", layout_file.display());
            }
        } else if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!("`{}` is not empty and is not an OCI layout (it has no `oci-layout` file)", dir.display());
        }
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("cannot create `{}`", blobs.display()))?;
        Ok(OciLayout {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
            compression,
            threads,
            current: None,
            blobs: Vec::new(),
            cache,
            keys: Vec::new(),
            held: Vec::new(),
        })
    }

    /// Writes `bytes` as a blob (unless the layout has it already).
    fn put_blob(&self, blob: &Blob, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(blob.path());
        if fs::metadata(&path).is_ok_and(|m| m.len() == blob.size) {
            return Ok(());
        }
        write_atomically(&path, bytes, 0o644)
    }

    /// `index.json` with the existing manifests, except the one tagged `tag`, then ours.
    fn updated_index(&self, manifest: &Blob) -> Result<Vec<u8>> {
        let path = self.dir.join("index.json");
        let mut manifests = Vec::new();
        match fs::read(&path) {
            Ok(text) => {
                let index: Value = serde_json::from_slice(&text).with_context(|| format!("`{}` is not valid JSON", path.display()))?;
                let Some(existing) = index.get("manifests").and_then(Value::as_array) else {
                    bail!("`{}` has no `manifests` list", path.display());
                };
                let tagged_here = |m: &Value| m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))).and_then(Value::as_str) == Some(&self.tag);
                manifests.extend(existing.iter().filter(|m| !tagged_here(m)).cloned());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        }
        manifests.push(index_entry(manifest, &[(REF_NAME, &self.tag)]));
        Ok(oci_index(manifests))
    }
}

impl Destination for OciLayout {
    /// A layer whose compressed blob the cache knows and the directory holds (written by
    /// an earlier run, same size) is not read again.
    fn present(&mut self, layers: &[KnownLayer]) -> Result<Vec<bool>> {
        let compression = compression_id(self.compression);
        self.keys = layers.iter().map(|l| l.key).collect();
        self.held = layers
            .iter()
            .map(|l| {
                let blob = self.cache.blob(&l.key?, &compression)?;
                fs::metadata(self.dir.join(blob.path())).is_ok_and(|m| m.is_file() && m.len() == blob.size).then_some(blob)
            })
            .collect();
        Ok(self.held.iter().map(Option::is_some).collect())
    }

    fn skip_layer(&mut self, index: usize, _known: &KnownLayer) -> Result<()> {
        let blob = self.held.get(index).cloned().flatten().context("internal error: skipping a layer the layout lacks")?;
        self.blobs.push(blob);
        Ok(())
    }

    fn begin_layer(&mut self, index: usize, _tar_size: u64) -> Result<()> {
        let temp = self.dir.join(format!("blobs/sha256/.layer-{}.nix-layers-{}.tmp", index + 1, std::process::id()));
        let temp = TempFile::new(temp);
        let file = File::create(&temp.0).with_context(|| format!("cannot create `{}`", temp.0.display()))?;
        let hashing = Hashing::new(BufWriter::with_capacity(1 << 20, file));
        let writer = Compressed::new(hashing, self.compression, self.threads)?;
        self.current = Some(OpenLayer { writer, temp, index });
        Ok(())
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let layer = self.current.as_mut().context("internal error: a layer chunk before the layer")?;
        layer.writer.write_all(bytes).with_context(|| format!("cannot write `{}`", layer.temp.0.display()))
    }

    fn end_layer(&mut self, _digest: LayerDigest) -> Result<()> {
        let OpenLayer { writer, temp, index } = self.current.take().context("internal error: a layer ends before it began")?;
        let hashing = writer.finish().with_context(|| format!("cannot write `{}`", temp.0.display()))?;
        hashing.inner.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write `{}`", temp.0.display()))?;
        let blob = Blob { media_type: layer_media_type(self.compression.format), sha256: hashing.sha.finalize().into(), size: hashing.size };
        let path = self.dir.join(blob.path());
        fs::rename(&temp.0, &path).with_context(|| format!("cannot move a layer into place at `{}`", path.display()))?;
        if let Some(Some(key)) = self.keys.get(index) {
            self.cache.record_blob(key, &compression_id(self.compression), &blob);
        }
        self.blobs.push(blob);
        Ok(())
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        let config = Blob::of(media_type::CONFIG, image.config);
        self.put_blob(&config, image.config)?;
        let manifest_bytes = oci_manifest(&config, &self.blobs);
        let manifest = Blob::of(media_type::MANIFEST, &manifest_bytes);
        self.put_blob(&manifest, &manifest_bytes)?;
        let layout_file = self.dir.join("oci-layout");
        if !layout_file.exists() {
            write_atomically(&layout_file, OCI_LAYOUT, 0o644)?;
        }
        // Last: until this rename the index names only complete images.
        write_atomically(&self.dir.join("index.json"), &self.updated_index(&manifest)?, 0o644)
    }
}

/// Writes an `oci-archive:FILE`: the layout is built in a temporary directory next to
/// FILE (compressed sizes are only known afterwards, and a tar header needs them first),
/// then put in a tar that replaces FILE whole.
pub struct OciArchive {
    layout: OciLayout,
    temp_dir: TempDir,
    target: PathBuf,
}

/// A directory removed with its contents when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// A temporary directory at `path`, removed when dropped or when a signal ends the process.
    fn new(path: PathBuf) -> TempDir {
        crate::output::track_temp(path.clone());
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        crate::output::forget_temp(&self.0);
    }
}

impl OciArchive {
    /// Starts writing the archive `target`, tagging the image `tag`.
    ///
    /// # Errors
    /// The temporary directory cannot be created.
    pub fn create(target: &Path, tag: &str, compression: Compression, threads: usize, cache: LayerCache) -> Result<OciArchive> {
        let parent = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = target.file_name().with_context(|| format!("`{}` has no file name", target.display()))?;
        let temp = parent.join(format!(".{}.nix-layers-{}.d", base.to_string_lossy(), std::process::id()));
        let temp_dir = TempDir::new(temp);
        fs::create_dir(&temp_dir.0)
            .with_context(|| format!("cannot create `{}` (for `{}`)", temp_dir.0.display(), target.display()))?;
        let layout = OciLayout::open(&temp_dir.0, tag, compression, threads, cache)?;
        Ok(OciArchive { layout, temp_dir, target: target.to_path_buf() })
    }
}

impl Destination for OciArchive {
    fn present(&mut self, layers: &[KnownLayer]) -> Result<Vec<bool>> {
        // Its layout is new and empty: this only passes the layers' keys on.
        self.layout.present(layers)
    }

    fn begin_layer(&mut self, index: usize, tar_size: u64) -> Result<()> {
        self.layout.begin_layer(index, tar_size)
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.layout.layer_chunk(bytes)
    }

    fn end_layer(&mut self, digest: LayerDigest) -> Result<()> {
        self.layout.end_layer(digest)
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        self.layout.finish(image)?;
        let dir = &self.temp_dir.0;
        let tar = archive_tar(image.spec);
        let mut file = AtomicFile::create(&self.target)?;
        let out = file.writer();
        tar.file(out, "oci-layout", OCI_LAYOUT)?;
        tar.dir(out, "blobs/")?;
        tar.dir(out, "blobs/sha256/")?;
        let mut names: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("cannot list `{}`", dir.display()))?;
        names.sort();
        for name in names {
            let path = dir.join("blobs/sha256").join(&name);
            let mut blob = File::open(&path).with_context(|| format!("cannot open `{}`", path.display()))?;
            let size = blob.metadata()?.len();
            tar.file_header(out, &format!("blobs/sha256/{name}"), size)?;
            let copied = io::copy(&mut blob, out).with_context(|| format!("cannot copy `{}`", path.display()))?;
            if copied != size {
                bail!("internal error: `{}` changed size while copied", path.display());
            }
            TarWriter::pad(out, size)?;
        }
        let index = fs::read(dir.join("index.json")).context("cannot read the layout's index.json")?;
        tar.file(out, "index.json", &index)?;
        TarWriter::end(out)?;
        file.commit(0o644)
    }
}
