//! The base image of `fromImage`: an image archive whose layers come first in ours.
//!
//! Accepted, as nixpkgs' `fromImage` takes them and more: a docker-archive (`manifest.json`
//! plus config and layer tars, as `docker save`, skopeo's `docker-archive:`, nixpkgs'
//! `pullImage`, `buildImage` or a layered image write it), an OCI image layout in a tar
//! (`index.json`, `blobs/`: skopeo's `oci-archive:`, `docker save` since 25), or both in
//! one (ours). The archive itself may be plain, gzip or zstd, and so may each layer
//! inside it: both are told by their first bytes (magic numbers), never by a name or a
//! media type, which can lie (a `.tar.gz` that is plain, a `tar+gzip` that is not).
//!
//! Nothing is held whole in memory. A compressed archive is decompressed once into an
//! anonymous temporary file (in `$TMPDIR`; it disappears with the process, even on a
//! signal); a compressed layer likewise, and it is checked against its diff_id then,
//! before any output. The archive (or its temporary copy) is then read by offset: each
//! layer is a byte range of a file, copied byte for byte into the image while its
//! SHA-256 is computed and compared with the base config's `rootfs.diff_ids` (see
//! [`BaseLayer::check`]).

use crate::layer::{hex, Hashing};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The largest JSON file (manifest, index, config) read from a base archive. Image
/// configs are at most a few MB (podman and skopeo refuse more than 4 MiB).
const JSON_MAX: u64 = 64 << 20;

/// Symlinks and hard links followed, one after the other, before giving up on a member.
const LINK_HOPS: usize = 40;

/// A base image, read and checked as far as possible without reading its layers.
pub struct BaseImage {
    /// The archive as given (for messages).
    pub source: Arc<Path>,
    /// `docker-archive` or `OCI archive`, for messages.
    pub format: &'static str,
    /// The base config's `config` object (`Env`, `Cmd`, …); `Null` when it has none.
    pub config: Value,
    /// The base config's `architecture`, if given.
    pub architecture: Option<String>,
    /// The layers, bottom first.
    pub layers: Vec<BaseLayer>,
}

/// One layer of the base image: a byte range of a file holding its uncompressed tar.
#[derive(Clone)]
pub struct BaseLayer {
    /// The archive it comes from (for messages).
    pub archive: Arc<Path>,
    /// Its name in the archive (`layers/001.tar`, `blobs/sha256/…`, `<id>/layer.tar`).
    pub member: String,
    /// Its position among the base layers, from 0.
    pub index: usize,
    /// How many layers the base has (for messages).
    pub of: usize,
    /// The diff_id the base config gives it.
    pub diff_id: [u8; 32],
    /// The file holding its bytes: the archive, or a temporary file when the archive or
    /// the layer was compressed.
    pub file: Arc<File>,
    /// Where its bytes start in `file`.
    pub offset: u64,
    /// Its length (uncompressed).
    pub size: u64,
    /// The base config's `history` entries that belong to this layer, kept as they are:
    /// its own, and the `empty_layer` ones just before it (after the last layer, the
    /// trailing ones). Empty when the base's history does not cover it.
    pub history: Vec<Value>,
}

impl BaseLayer {
    /// `layer 2 of 3 of the base image `…` (`layers/002.tar` in the archive)`.
    pub fn describe(&self) -> String {
        format!(
            "layer {} of {} of the base image `{}` (`{}` in the archive)",
            self.index + 1,
            self.of,
            self.archive.display(),
            self.member
        )
    }

    /// A reader of exactly its bytes.
    pub fn reader(&self) -> RangeReader<'_> {
        RangeReader { file: &self.file, pos: self.offset, end: self.offset.saturating_add(self.size) }
    }

    /// Checks the SHA-256 of the bytes copied against the base config's diff_id.
    ///
    /// # Errors
    /// They differ: the error names the layer (its index and name in the archive) and
    /// both digests.
    pub fn check(&self, sha256: &[u8; 32]) -> Result<()> {
        if *sha256 != self.diff_id {
            bail!(
                "{} does not match its diff_id: the base config's `rootfs.diff_ids[{}]` is sha256:{}, \
                 its bytes hash to sha256:{}; the base image is corrupt",
                self.describe(),
                self.index,
                hex(&self.diff_id),
                hex(sha256)
            );
        }
        Ok(())
    }
}

/// Reads one byte range of a shared file with `pread` (the file's offset is never used,
/// so layers of one archive can be read by several workers at once).
pub struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX).min(buf.len());
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader<'_> {
    /// Seeks within the whole file (the tar index reads the archive from 0 to its end).
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// How a stream is compressed, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a stream starting with `head`; xz and bzip2 are named and refused.
fn compression_of(head: &[u8]) -> Result<Compression, &'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err("xz")
    } else if head.starts_with(b"BZh") {
        Err("bzip2")
    } else {
        Ok(Compression::None)
    }
}

/// Copies the decompressed bytes of `input` to `out`; returns their SHA-256 and length.
fn decompress(compression: Compression, input: impl Read, out: &mut impl Write) -> io::Result<([u8; 32], u64)> {
    let mut hashing = Hashing::new(out);
    match compression {
        // Multi-member gzip: ours, pigz's and `gzip -c a b` write several members.
        Compression::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut hashing)?,
        Compression::Zstd => io::copy(&mut zstd::stream::read::Decoder::new(input)?, &mut hashing)?,
        Compression::None => io::copy(&mut { input }, &mut hashing)?,
    };
    Ok((hashing.sha.finalize().into(), hashing.size))
}

/// What a name in the archive is.
#[derive(Clone, Debug)]
enum Member {
    /// A regular file: where its data starts, and its length.
    File { offset: u64, size: u64 },
    /// A symlink or hard link to another member (its normalised name).
    Link(String),
    /// A directory or anything else without data.
    Other,
}

/// An archive's names, normalised (no `./`, no empty or `.` components, no trailing
/// `/`), each mapped to its last entry, as extracting the archive would leave it.
struct Index {
    file: Arc<File>,
    members: HashMap<String, Member>,
}

/// `name` normalised: `./a//b/` → `a/b`; `..` components are resolved when they can be
/// (`a/../b` → `b`) and kept at the start (they then name nothing in the archive).
fn normalise(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

impl Index {
    /// Reads every header of the tar in `file` (`len` bytes); data is skipped.
    fn read(file: Arc<File>, len: u64) -> Result<Index> {
        let mut members = HashMap::new();
        {
            let reader = RangeReader { file: &file, pos: 0, end: len };
            let mut archive = tar::Archive::new(reader);
            let not_tar = |e: io::Error| anyhow!("not a tar archive (nor a gzip or zstd one): {e}");
            let mut count = 0usize;
            for entry in archive.entries_with_seek().map_err(not_tar)? {
                let entry = entry.map_err(not_tar)?;
                count += 1;
                let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
                let kind = entry.header().entry_type();
                let member = if kind.is_file() || kind == tar::EntryType::Continuous {
                    let (offset, size) = (entry.raw_file_position(), entry.size());
                    if offset.saturating_add(size) > len {
                        bail!("the archive is truncated: `{name}` ends at byte {}, the archive has {len}", offset + size);
                    }
                    Member::File { offset, size }
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let target = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned();
                    // A symlink's target is relative to its directory, a hard link's to the root.
                    let target = if kind.is_symlink() && !target.starts_with('/') {
                        let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir);
                        normalise(&format!("{dir}/{target}"))
                    } else {
                        normalise(&target)
                    };
                    Member::Link(target)
                } else {
                    Member::Other
                };
                members.insert(name, member);
            }
            if count == 0 {
                bail!("not a tar archive (nor a gzip or zstd one): it has no entries");
            }
        }
        Ok(Index { file, members })
    }

    /// The data of `name`, links followed: (offset, size).
    fn locate(&self, name: &str) -> Result<(u64, u64)> {
        let mut current = normalise(name);
        for _ in 0..LINK_HOPS {
            match self.members.get(&current) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => current = target.clone(),
                Some(Member::Other) => bail!("`{name}` is not a regular file in the archive"),
                None if current == normalise(name) => bail!("`{name}` is not in the archive"),
                None => bail!("`{name}` is a link to `{current}`, which is not in the archive"),
            }
        }
        bail!("`{name}`: more than {LINK_HOPS} links in a row (a loop?)")
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The JSON file `name`.
    fn json(&self, name: &str) -> Result<Value> {
        let (offset, size) = self.locate(name)?;
        if size > JSON_MAX {
            bail!("`{name}` is {size} bytes, more than the {JSON_MAX} a manifest or config may have");
        }
        let mut bytes = Vec::with_capacity(size as usize);
        RangeReader { file: &self.file, pos: offset, end: offset + size }
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read `{name}`"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("`{name}` is not valid JSON"))
    }

    /// The first bytes of the member at `offset` (fewer if it is shorter).
    fn head(&self, offset: u64, size: u64) -> io::Result<Vec<u8>> {
        let mut head = vec![0u8; 8.min(size as usize)];
        self.file.read_exact_at(&mut head, offset)?;
        Ok(head)
    }
}

/// A layer as the manifest names it: its member in the archive.
struct ListedLayer {
    member: String,
}

/// What the manifest says: the config member and the layers.
struct Listed {
    format: &'static str,
    config: String,
    layers: Vec<ListedLayer>,
}

/// `sha256:<hex>` (or another algorithm) → `blobs/<alg>/<hex>`, checked.
fn blob_path(digest: &str, at: &str) -> Result<String> {
    let (alg, encoded) = digest.split_once(':').ok_or_else(|| anyhow!("{at}: {digest:?} is not a digest"))?;
    let ok_alg = !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
    let ok_hex = !encoded.is_empty() && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
    if !ok_alg || !ok_hex {
        bail!("{at}: {digest:?} is not a digest");
    }
    Ok(format!("blobs/{alg}/{encoded}"))
}

fn field<'a>(value: &'a Value, key: &str, at: &str) -> Result<&'a Value> {
    value.get(key).ok_or_else(|| anyhow!("{at} has no `{key}`"))
}

fn string<'a>(value: &'a Value, at: &str) -> Result<&'a str> {
    value.as_str().ok_or_else(|| anyhow!("{at}: expected a string, got {value}"))
}

fn list<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>> {
    value.as_array().ok_or_else(|| anyhow!("{at}: expected a list, got {value}"))
}

/// docker's `manifest.json`: its first image, as nixpkgs reads it.
fn docker_manifest(index: &Index) -> Result<Listed> {
    let manifest = index.json("manifest.json")?;
    let first = list(&manifest, "`manifest.json`")?
        .first()
        .ok_or_else(|| anyhow!("`manifest.json` lists no image"))?;
    let config = string(field(first, "Config", "`manifest.json[0]`")?, "`manifest.json[0].Config`")?.to_string();
    let layers = list(field(first, "Layers", "`manifest.json[0]`")?, "`manifest.json[0].Layers`")?
        .iter()
        .enumerate()
        .map(|(i, l)| Ok(ListedLayer { member: string(l, &format!("`manifest.json[0].Layers[{i}]`"))?.to_string() }))
        .collect::<Result<_>>()?;
    Ok(Listed { format: "docker-archive", config, layers })
}

fn is_index(media_type: Option<&str>) -> bool {
    matches!(
        media_type,
        Some("application/vnd.oci.image.index.v1+json" | "application/vnd.docker.distribution.manifest.list.v2+json")
    )
}

/// The OCI layout's image: the first manifest of `index.json`; through a nested index
/// (a multi-platform image), the manifest for `linux/<architecture>`.
fn oci_manifest(index: &Index, architecture: &str) -> Result<Listed> {
    let mut at = "`index.json`".to_string();
    let mut current = index.json("index.json")?;
    for _ in 0..8 {
        let manifests = list(field(&current, "manifests", &at)?, &format!("{at} `manifests`"))?;
        let chosen = if manifests.len() <= 1 {
            manifests.first()
        } else {
            let platform = |m: &Value, key: &str| m.get("platform").and_then(|p| p.get(key)).and_then(Value::as_str).map(str::to_string);
            let fits = |m: &&Value| platform(m, "architecture").as_deref() == Some(architecture) && platform(m, "os").as_deref() != Some("windows");
            // Without platforms (one image tagged several times), the first is nixpkgs' choice.
            manifests.iter().find(fits).or_else(|| manifests.iter().all(|m| m.get("platform").is_none()).then(|| &manifests[0]))
        };
        let Some(chosen) = chosen else {
            let platforms: Vec<String> = manifests
                .iter()
                .map(|m| m.get("platform").map_or("?".to_string(), |p| format!("{}/{}", p["os"].as_str().unwrap_or("?"), p["architecture"].as_str().unwrap_or("?"))))
                .collect();
            bail!("{at} has no image for linux/{architecture} (it has {})", platforms.join(", "));
        };
        let digest = string(field(chosen, "digest", &at)?, &format!("{at} manifest `digest`"))?;
        let path = blob_path(digest, &format!("{at} manifest `digest`"))?;
        let blob = index.json(&path)?;
        let media_type = chosen.get("mediaType").and_then(Value::as_str).or_else(|| blob.get("mediaType").and_then(Value::as_str));
        at = format!("`{path}`");
        if is_index(media_type) || (media_type.is_none() && blob.get("manifests").is_some()) {
            current = blob;
            continue;
        }
        let config = field(&blob, "config", &at)?;
        let config = blob_path(string(field(config, "digest", &at)?, &format!("{at} `config.digest`"))?, &format!("{at} `config.digest`"))?;
        let layers = list(field(&blob, "layers", &at)?, &format!("{at} `layers`"))?
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let key = format!("{at} `layers[{i}].digest`");
                Ok(ListedLayer { member: blob_path(string(field(l, "digest", &key)?, &key)?, &key)? })
            })
            .collect::<Result<_>>()?;
        return Ok(Listed { format: "OCI archive", config, layers });
    }
    bail!("`index.json`: indexes nested more than 8 deep")
}

/// A sha256 diff_id as bytes.
fn parse_diff_id(value: &Value, at: &str) -> Result<[u8; 32]> {
    let text = string(value, at)?;
    let hex_part = text
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .ok_or_else(|| anyhow!("{at}: {text:?} is not a `sha256:<64 hex digits>` diff_id"))?;
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex_part[2 * i..2 * i + 2], 16).map_err(|e| anyhow!("{at}: {e}"))?;
    }
    Ok(out)
}

impl BaseImage {
    /// Reads the base image archive at `path`: its manifest, config and layer list; a
    /// compressed archive or layer is decompressed into a temporary file first (a layer
    /// is then checked against its diff_id at once). `architecture` picks the image out
    /// of a multi-platform OCI index.
    ///
    /// # Errors
    /// The file cannot be read, is not a (plain, gzip or zstd) tar, has neither
    /// `manifest.json` nor `index.json`, names a config or layer it does not hold, has a
    /// malformed config, or as many diff_ids as layers; a compressed layer does not match
    /// its diff_id. Each error names the file inside the archive at fault.
    pub fn open(path: &Path, architecture: &str) -> Result<BaseImage> {
        let source: Arc<Path> = Arc::from(path);
        let file = File::open(path).context("cannot open it")?;
        let meta = file.metadata().context("cannot stat it")?;
        if !meta.is_file() {
            bail!("it is not a regular file");
        }
        let mut head = [0u8; 8];
        let head_len = file.read_at(&mut head, 0).context("cannot read it")?;
        let (file, len) = match compression_of(&head[..head_len]) {
            Err(name) => bail!("it is {name}-compressed; a base image may be plain, gzip or zstd"),
            Ok(Compression::None) => (file, meta.len()),
            Ok(compression) => {
                let mut temp = BufWriter::new(tempfile::tempfile().context("cannot create a temporary file in $TMPDIR")?);
                let (_, len) = decompress(compression, &file, &mut temp)
                    .with_context(|| format!("cannot decompress it ({compression:?}) into a temporary file in $TMPDIR"))?;
                let temp = temp.into_inner().map_err(|e| e.into_error()).context("cannot write a temporary file in $TMPDIR")?;
                (temp, len)
            }
        };
        let index = Index::read(Arc::new(file), len)?;
        let listed = if index.has("manifest.json") {
            docker_manifest(&index)?
        } else if index.has("index.json") {
            oci_manifest(&index, architecture)?
        } else {
            bail!("it has neither `manifest.json` (a docker-archive) nor `index.json` (an OCI archive)");
        };
        let config_at = format!("the base config `{}`", listed.config);
        let config = index.json(&listed.config)?;
        if !config.is_object() {
            bail!("{config_at}: expected an object, got {config}");
        }
        let diff_ids = list(field(field(&config, "rootfs", &config_at)?, "diff_ids", &format!("{config_at} `rootfs`"))?, &format!("{config_at} `rootfs.diff_ids`"))?;
        if diff_ids.len() != listed.layers.len() {
            bail!(
                "{config_at} has {} diff_ids (`rootfs.diff_ids`) but the manifest lists {} layers",
                diff_ids.len(),
                listed.layers.len()
            );
        }
        let mut history = split_history(config.get("history"), listed.layers.len(), &config_at)?.into_iter();
        let of = listed.layers.len();
        // Compressed layers go, decompressed, into one temporary file: (it, its length).
        let mut temp: Option<(Arc<File>, u64)> = None;
        let mut done: HashMap<String, (u64, u64)> = HashMap::new();
        let mut layers = Vec::with_capacity(of);
        for (i, listed_layer) in listed.layers.into_iter().enumerate() {
            let diff_id = parse_diff_id(&diff_ids[i], &format!("{config_at} `rootfs.diff_ids[{i}]`"))?;
            let member = listed_layer.member;
            let (offset, size) = index.locate(&member).with_context(|| format!("layer {} of {of}", i + 1))?;
            let head = index.head(offset, size).with_context(|| format!("cannot read `{member}`"))?;
            let mut layer = BaseLayer {
                archive: source.clone(),
                member: member.clone(),
                index: i,
                of,
                diff_id,
                file: index.file.clone(),
                offset,
                size,
                history: history.next().unwrap_or_default(),
            };
            let compression = compression_of(&head)
                .map_err(|name| anyhow!("{}: it is {name}-compressed; layers may be plain, gzip or zstd", layer.describe()))?;
            if compression != Compression::None {
                // Decompressed once (a layer listed twice, once) and checked now: a bad
                // layer is found before any output.
                let (file, end) = match &mut temp {
                    Some(open) => open,
                    None => temp.insert((Arc::new(tempfile::tempfile().context("cannot create a temporary file in $TMPDIR")?), 0)),
                };
                let (at, len) = match done.get(&member) {
                    Some(&known) => known,
                    None => {
                        let input = RangeReader { file: &index.file, pos: offset, end: offset + size };
                        let mut out = BufWriter::new(&**file);
                        let (sha, len) = decompress(compression, input, &mut out)
                            .and_then(|written| out.flush().map(|()| written))
                            .with_context(|| {
                                format!("cannot decompress {} ({compression:?}) into a temporary file in $TMPDIR", layer.describe())
                            })?;
                        layer.check(&sha)?;
                        let at = *end;
                        *end += len;
                        done.insert(member.clone(), (at, len));
                        (at, len)
                    }
                };
                (layer.file, layer.offset, layer.size) = (file.clone(), at, len);
            }
            layers.push(layer);
        }
        let architecture = config.get("architecture").and_then(Value::as_str).map(str::to_string);
        let image_config = match config.get("config") {
            None | Some(Value::Null) => Value::Null,
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => bail!("{config_at} `config`: expected an object, got {v}"),
        };
        Ok(BaseImage { source, format: listed.format, config: image_config, architecture, layers })
    }

    /// `ours`, the image's `config`, with `Env` merged as nixpkgs merges it: the base's
    /// entries, then ours, one per variable (the name before the first `=`), in the order
    /// each name first appears, with the value of its last entry. Nothing else of the
    /// base's `config` is kept (nixpkgs keeps only `Env` too). When neither has an `Env`,
    /// `ours` is returned unchanged.
    ///
    /// # Errors
    /// An `Env` that is not a list of strings, in the base config or in ours (named).
    pub fn merged_config(&self, ours: &Value) -> Result<Value> {
        let env_of = |config: &Value, at: &str| -> Result<Vec<String>> {
            match config.get("Env") {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| string(v, &format!("{at}.Env[{i}]`")).map(str::to_string))
                    .collect(),
                Some(v) => bail!("{at}.Env`: expected a list of `NAME=value` strings, got {v}"),
            }
        };
        let base = env_of(&self.config, "the base image's `config")
            .with_context(|| format!("base image `{}`", self.source.display()))?;
        let own = env_of(ours, "key `config")?;
        if base.is_empty() && own.is_empty() {
            return Ok(ours.clone());
        }
        let mut order: Vec<&str> = Vec::new();
        let mut value: HashMap<&str, &str> = HashMap::new();
        for entry in base.iter().chain(&own) {
            let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
            if value.insert(name, entry).is_none() {
                order.push(name);
            }
        }
        let env: Vec<Value> = order.iter().map(|n| Value::String(value[n].to_string())).collect();
        let mut merged = match ours {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        merged.insert("Env".to_string(), Value::Array(env));
        Ok(Value::Object(merged))
    }
}

/// The base `history`, split per layer: each layer gets the `empty_layer` entries before
/// it and its own; the entries after the last layer's go with it. Layers the history does
/// not reach get none.
fn split_history(history: Option<&Value>, layers: usize, at: &str) -> Result<Vec<Vec<Value>>> {
    let entries = match history {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => list(v, &format!("{at} `history`"))?,
    };
    let mut out: Vec<Vec<Value>> = Vec::with_capacity(layers);
    let mut pending = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if !entry.is_object() {
            bail!("{at} `history[{i}]`: expected an object, got {entry}");
        }
        pending.push(entry.clone());
        let empty = entry.get("empty_layer").and_then(Value::as_bool).unwrap_or(false);
        if !empty && out.len() < layers {
            out.push(std::mem::take(&mut pending));
        }
    }
    match out.last_mut() {
        Some(last) => last.extend(pending),
        // No entry for any layer: the image would lose them; they go with the first.
        None if layers > 0 && !pending.is_empty() => out.push(pending),
        None => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_normalised_as_extraction_would_see_them() {
        assert_eq!(normalise("./manifest.json"), "manifest.json");
        assert_eq!(normalise("a//b/./c/"), "a/b/c");
        assert_eq!(normalise("blobs/sha256/../../layers/001.tar"), "layers/001.tar");
        assert_eq!(normalise("../x"), "../x");
    }

    #[test]
    fn history_goes_with_the_layers_it_describes() {
        let h = json!([
            {"created_by": "ENV A=1", "empty_layer": true},
            {"created_by": "ADD a"},
            {"created_by": "ADD b"},
            {"created_by": "CMD x", "empty_layer": true},
        ]);
        let split = split_history(Some(&h), 2, "c").unwrap();
        let by: Vec<Vec<&str>> = split.iter().map(|l| l.iter().map(|e| e["created_by"].as_str().unwrap()).collect()).collect();
        assert_eq!(by, [vec!["ENV A=1", "ADD a"], vec!["ADD b", "CMD x"]]);
        // A history shorter than the layers leaves the last ones without.
        assert_eq!(split_history(Some(&json!([{"comment": "a"}])), 3, "c").unwrap().len(), 1);
    }

    #[test]
    fn env_is_merged_base_first_last_value_wins_in_first_seen_order() {
        let base = BaseImage {
            source: Arc::from(Path::new("/b.tar")),
            format: "docker-archive",
            config: json!({"Env": ["PATH=/bin", "A=base", "LANG=C"], "Cmd": ["sh"]}),
            architecture: None,
            layers: Vec::new(),
        };
        let merged = base.merged_config(&json!({"Env": ["B=1", "A=ours", "PATH=/usr/bin"], "User": "1"})).unwrap();
        assert_eq!(merged, json!({"Env": ["PATH=/usr/bin", "A=ours", "LANG=C", "B=1"], "User": "1"}));
        let error = format!("{:#}", base.merged_config(&json!({"Env": ["X=1", 2]})).unwrap_err());
        assert!(error.contains("key `config.Env[1]`: expected a string"), "{error}");
    }

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(compression_of(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip));
        assert_eq!(compression_of(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Ok(Compression::Zstd));
        assert_eq!(compression_of(b"BZh91AY"), Err("bzip2"));
        assert_eq!(compression_of(b"manifest.json"), Ok(Compression::None));
    }
}
