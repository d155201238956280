//! The layer cache: what earlier runs learnt about a layer, so that a later push or load
//! can skip it without reading a byte of it.
//!
//! A layer's [`LayerKey`] is a SHA-256 over everything its tar bytes are made of: this
//! program's version and the cache format, the tar owner and mtime, every entry's tar
//! header fields (name, kind, mode, size, link target), the bytes of entries not on disk,
//! and the `narHash` of each store path in the layer (Nix's own proof of the files'
//! content). Layers whose store paths lack a `narHash`, and prebuilt layers that cannot be
//! identified, get no key and are always read.
//!
//! Entries, one small JSON file each under `$XDG_CACHE_HOME/nix-layers/v1/` (else
//! `~/.cache/nix-layers/v1/`), written to a temporary file and renamed into place, so
//! concurrent runs never see half an entry:
//! - `layers/<key>`: the layer's diff_id and tar size;
//! - `blobs/<key>-<compression>`: its compressed blob (digest, size, media type) for one
//!   compression setting, with the diff_id it compresses;
//! - `repositories/<blob digest>`: `host[:port]/repository` lines that had the blob (for
//!   cross-repository mounts).
//!
//! An entry that does not parse, or a blob entry whose diff_id disagrees with the layer
//! entry, is a miss. What a destination does with a hit is checked against the other side
//! (a registry's `HEAD`, an engine's layer list), so a stale entry costs a transfer, never a
//! wrong image. The cache is never used inside a Nix build (`HOME=/homeless-shelter`), nor
//! by `build` and `stream-script`, whose outputs must depend on their inputs only.

use crate::destination::Blob;
use crate::layer::{hex, LayerDigest};
use crate::tar_header::Owner;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bumped whenever the bytes a key stands for may change for the same inputs.
const FORMAT: &str = "nix-layers layer cache 1";

/// Identifies a layer's exact tar bytes. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerKey(pub [u8; 32]);

impl LayerKey {
    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// Builds a [`LayerKey`]: fields are fed with their lengths, so no two different inputs
/// give the same byte stream.
pub struct KeyBuilder {
    sha: Sha256,
}

impl KeyBuilder {
    /// A key for a layer whose entries are owned by `owner`.
    pub fn new(owner: &Owner) -> KeyBuilder {
        let mut builder = KeyBuilder { sha: Sha256::new() };
        builder.bytes(FORMAT.as_bytes());
        builder.bytes(env!("CARGO_PKG_VERSION").as_bytes());
        builder.number(owner.uid);
        builder.number(owner.gid);
        builder.bytes(owner.uname.as_bytes());
        builder.bytes(owner.gname.as_bytes());
        builder.number(owner.mtime as u64);
        builder
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.number(bytes.len() as u64);
        self.sha.update(bytes);
    }

    /// A number.
    pub fn number(&mut self, n: u64) {
        self.sha.update(n.to_le_bytes());
    }

    /// The key.
    pub fn finish(self) -> LayerKey {
        LayerKey(self.sha.finalize().into())
    }
}

/// The cache, or nothing when it is disabled. Cheap to clone; clones share the directory.
pub struct LayerCache {
    dir: Option<PathBuf>,
    /// A failed write is reported once; the run goes on without it.
    warned: AtomicBool,
}

impl Clone for LayerCache {
    fn clone(&self) -> LayerCache {
        LayerCache { dir: self.dir.clone(), warned: AtomicBool::new(self.warned.load(Ordering::Relaxed)) }
    }
}

impl LayerCache {
    /// The user's cache, unless `no_cache`, inside a Nix build, or without a home.
    pub fn open(no_cache: bool) -> LayerCache {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        // Nix sets HOME to this non-existent directory in every build, sandboxed or not.
        let in_nix_build = home.as_deref() == Some(std::ffi::OsStr::new("/homeless-shelter"));
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| Path::new(d).is_absolute())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| Path::new(&h).join(".cache")));
        match base {
            Some(base) if !no_cache && !in_nix_build => LayerCache::at(base.join("nix-layers")),
            _ => LayerCache::disabled(),
        }
    }

    /// A cache in `dir` (its `v1/` subdirectory).
    pub fn at(dir: PathBuf) -> LayerCache {
        LayerCache { dir: Some(dir.join("v1")), warned: AtomicBool::new(false) }
    }

    /// No cache: every lookup misses, nothing is written.
    pub fn disabled() -> LayerCache {
        LayerCache { dir: None, warned: AtomicBool::new(false) }
    }

    /// Whether lookups can hit.
    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The layer's diff_id and tar size, when known.
    pub fn diff_id(&self, key: &LayerKey) -> Option<LayerDigest> {
        let entry = self.read(&format!("layers/{}", key.hex()))?;
        parse_digest(entry.get("diff_id")?, entry.get("size")?)
    }

    /// Remembers the layer's diff_id and tar size.
    pub fn record_diff_id(&self, key: &LayerKey, digest: LayerDigest) {
        if self.diff_id(key) != Some(digest) {
            self.write(&format!("layers/{}", key.hex()), &json!({ "diff_id": digest.diff_id(), "size": digest.size }));
        }
    }

    /// The layer's compressed blob for `compression` (see [`compression_id`]), when known
    /// and consistent with the layer's diff_id.
    pub fn blob(&self, key: &LayerKey, compression: &str) -> Option<Blob> {
        let diff_id = self.diff_id(key)?;
        let entry = self.read(&format!("blobs/{}-{}", key.hex(), name_safe(compression)))?;
        if entry.get("compression")?.as_str()? != compression || entry.get("diff_id")?.as_str()? != diff_id.diff_id() {
            return None;
        }
        let digest = parse_digest(entry.get("digest")?, entry.get("size")?)?;
        let media_type = crate::destination::media_type::LAYERS
            .into_iter()
            .find(|m| Some(*m) == entry.get("mediaType").and_then(Value::as_str))?;
        Some(Blob { media_type, sha256: digest.sha256, size: digest.size })
    }

    /// Remembers the layer's compressed blob (its diff_id must be recorded first).
    pub fn record_blob(&self, key: &LayerKey, compression: &str, blob: &Blob) {
        let Some(diff_id) = self.diff_id(key) else { return };
        if self.blob(key, compression).as_ref() == Some(blob) {
            return;
        }
        let entry = json!({
            "compression": compression,
            "diff_id": diff_id.diff_id(),
            "digest": blob.digest(),
            "size": blob.size,
            "mediaType": blob.media_type,
        });
        self.write(&format!("blobs/{}-{}", key.hex(), name_safe(compression)), &entry);
    }

    /// `host[:port]/repository` names that had `blob`, most recent last.
    pub fn repositories(&self, blob: &Blob) -> Vec<String> {
        self.read(&format!("repositories/{}", hex(&blob.sha256)))
            .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|r| r.as_str().map(String::from)).collect()))
            .unwrap_or_default()
    }

    /// Remembers that `registry_repository` (`host[:port]/repository`) has `blob`.
    pub fn record_repository(&self, blob: &Blob, registry_repository: &str) {
        let mut known = self.repositories(blob);
        if known.last().map(String::as_str) == Some(registry_repository) {
            return;
        }
        known.retain(|r| r != registry_repository);
        known.push(registry_repository.to_string());
        // A blob pushed to many repositories: the newest few are enough to mount from.
        let keep = known.len().saturating_sub(16);
        self.write(&format!("repositories/{}", hex(&blob.sha256)), &json!(known[keep..]));
    }

    fn read(&self, name: &str) -> Option<Value> {
        let bytes = std::fs::read(self.dir.as_ref()?.join(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write(&self, name: &str, value: &Value) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(name);
        if let Err(err) = write_entry(&path, value) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("nix-layers: warning: cannot write the layer cache `{}`: {err} (going on without it)", path.display());
            }
        }
    }
}

/// Writes `value` to `path` through a temporary file in the same directory and a rename,
/// so a reader sees the old entry or the new one, never a part.
fn write_entry(path: &Path, value: &Value) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new().prefix(".entry-").tempfile_in(dir)?;
    temp.write_all(value.to_string().as_bytes())?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn parse_digest(digest: &Value, size: &Value) -> Option<LayerDigest> {
    let hex_digest = digest.as_str()?.strip_prefix("sha256:")?;
    if hex_digest.len() != 64 {
        return None;
    }
    let mut sha256 = [0u8; 32];
    for (i, byte) in sha256.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex_digest.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(LayerDigest { sha256, size: size.as_u64()? })
}

/// A compression id as a file name part: its SHA-256, short (ids hold `/` and spaces).
fn name_safe(compression: &str) -> String {
    hex(&Sha256::digest(compression.as_bytes())[..12])
}

/// What a layer's compressed bytes depend on besides its tar: the format, level, our
/// settings and the compression library's version.
pub fn compression_id(compression: crate::compress::Compression) -> String {
    use crate::attrs::Compressor;
    use crate::compress;
    let level = compression.level;
    match compression.format {
        Compressor::None => "none".to_string(),
        Compressor::Gz => format!("gzip level {level} members {} {}", compress::GZ_BLOCK, compress::DEFLATE_LIBRARY),
        Compressor::Zstd => {
            let tables = compression.zstd_tables().map(|(hash, chain)| format!(" hashlog {hash} chainlog {chain}")).unwrap_or_default();
            format!("zstd level {level} job {}{tables} libzstd {}", compress::ZSTD_JOB_SIZE, zstd::zstd_safe::version_number())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::media_type;

    fn key(n: u8) -> LayerKey {
        LayerKey([n; 32])
    }

    #[test]
    fn records_and_finds_layers_blobs_and_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::at(dir.path().to_path_buf());
        let digest = LayerDigest { sha256: [7; 32], size: 10240 };
        assert_eq!(cache.diff_id(&key(1)), None);
        cache.record_diff_id(&key(1), digest);
        assert_eq!(cache.diff_id(&key(1)), Some(digest));
        let blob = Blob { media_type: media_type::LAYER_GZIP, sha256: [9; 32], size: 300 };
        cache.record_blob(&key(1), "gzip x", &blob);
        assert_eq!(cache.blob(&key(1), "gzip x"), Some(blob.clone()));
        assert_eq!(cache.blob(&key(1), "gzip y"), None);
        cache.record_repository(&blob, "127.0.0.1:5000/a");
        cache.record_repository(&blob, "127.0.0.1:5000/b");
        cache.record_repository(&blob, "127.0.0.1:5000/a");
        assert_eq!(cache.repositories(&blob), ["127.0.0.1:5000/b", "127.0.0.1:5000/a"]);
    }

    #[test]
    fn a_blob_of_another_diff_id_or_a_corrupt_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::at(dir.path().to_path_buf());
        let blob = Blob { media_type: media_type::LAYER_GZIP, sha256: [9; 32], size: 300 };
        cache.record_diff_id(&key(2), LayerDigest { sha256: [1; 32], size: 1 });
        cache.record_blob(&key(2), "gzip", &blob);
        // The layer entry changes (say, another run wrote it): the old blob no longer counts.
        std::fs::write(dir.path().join("v1/layers").join(key(2).hex()), r#"{"diff_id":"sha256:0202020202020202020202020202020202020202020202020202020202020202","size":1}"#).unwrap();
        assert_eq!(cache.blob(&key(2), "gzip"), None);
        std::fs::write(dir.path().join("v1/layers").join(key(2).hex()), "{\"diff_id\": ").unwrap();
        assert_eq!(cache.diff_id(&key(2)), None);
    }

    #[test]
    fn disabled_cache_never_hits() {
        let cache = LayerCache::disabled();
        cache.record_diff_id(&key(3), LayerDigest { sha256: [1; 32], size: 1 });
        assert_eq!(cache.diff_id(&key(3)), None);
        assert!(!cache.is_enabled());
    }

    #[test]
    fn compression_ids_name_settings_and_library() {
        use crate::attrs::Compressor;
        use crate::compress::Compression;
        let id = |format| compression_id(Compression::default_for(format));
        let gzip = id(Compressor::Gz);
        assert!(gzip.starts_with(&format!("gzip level {}", crate::compress::GZ_LEVEL)), "{gzip}");
        // build.rs found libdeflate's version in Cargo.lock: another version may deflate differently.
        assert!(gzip.contains("libdeflate-sys 1.") && !gzip.contains("unknown"), "{gzip}");
        assert!(id(Compressor::Zstd).contains("libzstd"));
        assert_eq!(id(Compressor::None), "none");
        let fast = compression_id(Compression::with_level(Compressor::Gz, Some(1)).unwrap());
        assert!(fast.starts_with("gzip level 1 ") && fast != gzip, "{fast}");
    }
}
