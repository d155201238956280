//! `load docker|podman`: the hybrid archive piped into `docker load` or `podman load`,
//! leaving out the layers the engine already stores.
//!
//! First the engine is asked what it has ([`query`]), through its own CLI, so that
//! whatever the user's CLI reaches (`DOCKER_HOST`, contexts, podman's storage config) is
//! what is asked and what is loaded into:
//! - docker 20.10 with its graph drivers registers a layer under its chain ID and skips
//!   any layer whose chain it has while loading, without opening its file. Its chains are
//!   the prefixes of every image's `RootFS.Layers`, with `ChainID(L0) = DiffID(L0)` and
//!   `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`. So a layer can be left out
//!   only when it and every layer below it are unchanged: a changed layer forces sending
//!   every later one.
//! - docker's containerd image store (`io.containerd.snapshotter.v1` in `docker info`'s
//!   `DriverStatus`) does not skip (containerd#11978): it gets the whole archive.
//! - podman 4.3 reads the archive as an OCI layout and reuses any layer whose
//!   uncompressed digest (diff_id) it stores, whatever lies below it.
//!
//! Then [`EngineLoad`] writes the archive into the engine's `load` on its stdin,
//! omitting the present layers ([`HybridArchive::omit_layer`]), and relays what the
//! engine prints to stderr. The engine's failure is our error, with its message.

use super::hybrid_archive::HybridArchive;
use super::{Destination, FinishedImage, KnownLayer};
use crate::attrs::ImageSpec;
use crate::layer::{hex, LayerDigest};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A container engine whose CLI loads image archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// `docker` (the daemon behind the docker CLI).
    Docker,
    /// `podman` (its local storage).
    Podman,
}

impl Engine {
    /// The engine named `name` (`docker` or `podman`).
    ///
    /// # Errors
    /// Any other name.
    pub fn from_name(name: &str) -> Result<Engine> {
        match name {
            "docker" => Ok(Engine::Docker),
            "podman" => Ok(Engine::Podman),
            other => bail!("unknown engine `{other}`: expected `docker` or `podman`"),
        }
    }

    /// Its name, which is also its command.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// What an engine already stores, as far as leaving layers out goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// docker (graph drivers): the chain ID (`sha256:<hex>`) of every prefix of every
    /// image's layers.
    Chains(HashSet<String>),
    /// podman: the diff_id (`sha256:<hex>`) of every layer of its images.
    DiffIds(HashSet<String>),
    /// docker with the containerd image store, which loads every layer it is sent.
    Nothing,
}

impl Stored {
    /// Per layer, whether it can be left out, given its diff_id when known before reading
    /// it. docker: layer i iff the diff_ids of layers 0..=i are all known and their chain
    /// is stored; podman: iff its diff_id is known and stored.
    pub fn present(&self, diff_ids: &[Option<LayerDigest>]) -> Vec<bool> {
        match self {
            Stored::Nothing => vec![false; diff_ids.len()],
            Stored::DiffIds(set) => diff_ids.iter().map(|d| d.is_some_and(|d| set.contains(&d.diff_id()))).collect(),
            Stored::Chains(set) => {
                let mut chain: Option<String> = None;
                let mut broken = false;
                diff_ids
                    .iter()
                    .map(|d| {
                        // Once a diff_id is unknown, no later chain can be computed.
                        match (broken, d) {
                            (false, Some(d)) => {
                                let next = chain_id(chain.as_deref(), &d.diff_id());
                                let here = set.contains(&next);
                                chain = Some(next);
                                here
                            }
                            _ => {
                                broken = true;
                                false
                            }
                        }
                    })
                    .collect()
            }
        }
    }

    /// How many chains or diff_ids are known (for tests and messages).
    pub fn len(&self) -> usize {
        match self {
            Stored::Chains(s) | Stored::DiffIds(s) => s.len(),
            Stored::Nothing => 0,
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The chain ID of a layer `diff_id` (`sha256:<hex>`) on top of the chain `parent`
/// (none for the bottom layer), as docker's layer store computes it.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(parent) => format!("sha256:{}", hex(&Sha256::digest(format!("{parent} {diff_id}")))),
    }
}

/// The chain IDs of every prefix of `diff_ids` (an image's `RootFS.Layers`), in order.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(chains.last().map(String::as_str), diff_id);
        chains.push(next);
    }
    chains
}

/// Images inspected per `image inspect` call: keeps the command line short.
const INSPECT_BATCH: usize = 100;

/// Asks `engine` (through its CLI) which layers it stores.
///
/// # Errors
/// The engine is not installed, its daemon is not running, or it answers something
/// unreadable: the error names the engine, the command and its message.
pub fn query(engine: Engine) -> Result<Stored> {
    let (list, inspect_format) = match engine {
        Engine::Docker => {
            // Also the first contact: a daemon that is down fails here, before any work.
            let status = run(engine, &["info", "--format", "{{json .DriverStatus}}"])?;
            if status.contains("io.containerd.snapshotter.v1") {
                return Ok(Stored::Nothing);
            }
            (run(engine, &["image", "ls", "--all", "--quiet", "--no-trunc"])?, "{{json .RootFS.Layers}}")
        }
        Engine::Podman => {
            (run(engine, &["image", "ls", "--all", "--quiet", "--no-trunc"])?, "{{json .RootFS.Layers}}")
        }
    };
    // An image with several tags is listed once per tag.
    let ids: BTreeSet<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut known = HashSet::new();
    for batch in ids.chunks(INSPECT_BATCH) {
        let mut args = vec!["image", "inspect", "--format", inspect_format];
        args.extend_from_slice(batch);
        let text = run(engine, &args)?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // An image without layers (`FROM scratch` with nothing added) prints `null`.
            let layers: Option<Vec<String>> = serde_json::from_str(line).with_context(|| {
                format!("`{} image inspect` printed `{line}`, not the list of an image's layers", engine.name())
            })?;
            let layers = layers.unwrap_or_default();
            match engine {
                Engine::Docker => known.extend(chain_ids(&layers)),
                Engine::Podman => known.extend(layers),
            }
        }
    }
    Ok(match engine {
        Engine::Docker => Stored::Chains(known),
        Engine::Podman => Stored::DiffIds(known),
    })
}

/// `engine args…`, its stdout.
fn run(engine: Engine, args: &[&str]) -> Result<String> {
    // Without the list of image IDs an `image inspect` may carry.
    let shown = match args.len() {
        0..=5 => format!("{} {}", engine.name(), args.join(" ")),
        _ => format!("{} {} …", engine.name(), args[..4].join(" ")),
    };
    let output = Command::new(engine.name())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(engine, e))?;
    if !output.status.success() {
        bail!(
            "cannot ask {} which layers it has: `{shown}` failed ({}): {}",
            engine.name(),
            output.status,
            message(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).map_err(|_| anyhow!("`{shown}` printed something that is not UTF-8"))
}

/// The error for an engine that cannot be started.
fn spawn_error(engine: Engine, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        anyhow!("{0} is not installed: `{0}` is not on PATH", engine.name())
    } else {
        anyhow!("cannot run `{}`: {e}", engine.name())
    }
}

/// An engine's stderr as one message: its last lines (the error comes last), trimmed.
fn message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "no message".to_string();
    }
    lines[lines.len().saturating_sub(5)..].join("; ")
}

/// What a load sent and left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Layers written into the archive.
    pub sent: usize,
    /// Layers left out, the engine having them.
    pub present: usize,
}

/// The most bytes of an engine's stderr kept for the error message.
const STDERR_KEPT: usize = 8 << 10;

/// The hybrid archive being written into `ENGINE load`.
pub struct EngineLoad {
    engine: Engine,
    child: Child,
    archive: Option<HybridArchive<BufWriter<ChildStdin>>>,
    /// The threads relaying the engine's stdout and stderr to ours.
    relays: Vec<JoinHandle<()>>,
    /// The end of its stderr.
    stderr: Arc<Mutex<Vec<u8>>>,
    stored: Stored,
    stats: LoadStats,
}

impl EngineLoad {
    /// Starts `ENGINE load`, reading the archive of `spec` from its stdin; `stored` is
    /// what [`query`] found.
    ///
    /// # Errors
    /// The engine cannot be started, or the archive's first bytes cannot be written.
    pub fn start(engine: Engine, stored: Stored, spec: &ImageSpec) -> Result<EngineLoad> {
        let mut child = Command::new(engine.name())
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(engine, e))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut relays = Vec::new();
        if let Some(out) = child.stdout.take() {
            relays.push(relay(engine, out, None));
        }
        if let Some(err) = child.stderr.take() {
            relays.push(relay(engine, err, Some(Arc::clone(&stderr))));
        }
        let stdin = child.stdin.take().context("internal error: the engine's stdin is not a pipe")?;
        let mut load = EngineLoad { engine, child, archive: None, relays, stderr, stored, stats: LoadStats::default() };
        match HybridArchive::start(BufWriter::with_capacity(1 << 20, stdin), spec) {
            Ok(archive) => load.archive = Some(archive),
            // `end` of an error is an error (ours, or the engine's if it stopped reading).
            Err(e) => return Err(load.end::<()>(Err(e)).err().unwrap_or_else(|| anyhow!("the archive could not be started"))),
        }
        Ok(load)
    }

    /// What the engine stores, as [`query`] found it.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Layer `index`, whose diff_id and size are `digest`, is present in the engine: it
    /// is left out of the archive but listed in its manifests and config.
    ///
    /// # Errors
    /// None today; a `Result` for the [`Destination`] hook that calls it.
    pub fn omit_layer(&mut self, index: usize, digest: LayerDigest) -> Result<()> {
        self.archive()?.omit_layer(index, digest);
        self.stats.present += 1;
        Ok(())
    }

    fn archive(&mut self) -> Result<&mut HybridArchive<BufWriter<ChildStdin>>> {
        self.archive.as_mut().context("internal error: the archive was already closed")
    }

    /// Closes the engine's stdin and waits for it. `written` is how writing the archive
    /// went: on success, the engine's failure is the error; on a write error because the
    /// engine stopped reading, the engine's failure (with its message) is the error
    /// rather than the broken pipe; any other error of ours is ours, the engine having
    /// been given a truncated archive (which it refuses, loading nothing).
    ///
    /// # Errors
    /// As above.
    pub fn end<T>(mut self, written: Result<T>) -> Result<(T, LoadStats)> {
        // Closing stdin (dropping the archive and its writer) ends the engine's input.
        let flushed = match self.archive.take() {
            Some(archive) => archive.into_inner().into_inner().map(drop).map_err(|e| anyhow::Error::new(e.into_error())),
            None => Ok(()),
        };
        let status = self.child.wait();
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
        let engine = self.engine.name();
        let failed = |status: ExitStatus| {
            let stderr = self.stderr.lock().map(|s| message(&s)).unwrap_or_default();
            anyhow!("`{engine} load` failed ({status}): {stderr}")
        };
        let status = status.with_context(|| format!("cannot wait for `{engine} load`"))?;
        let written = written.and_then(|w| flushed.map(|()| w));
        match written {
            Ok(w) if status.success() => Ok((w, self.stats)),
            Ok(_) => Err(failed(status)),
            Err(e) if is_broken_pipe(&e) => {
                if status.success() {
                    Err(e.context(format!("`{engine} load` stopped reading the image before its end")))
                } else {
                    Err(failed(status))
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `e` was caused by writing to a pipe nobody reads any more.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

/// A thread copying the lines of `from` to our stderr as `ENGINE load: LINE`, keeping
/// the last [`STDERR_KEPT`] bytes in `keep`.
fn relay(engine: Engine, from: impl Read + Send + 'static, keep: Option<Arc<Mutex<Vec<u8>>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(from);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            eprintln!("nix-layers: {} load: {}", engine.name(), String::from_utf8_lossy(&line).trim_end());
            if let Some(keep) = &keep {
                if let Ok(mut kept) = keep.lock() {
                    kept.extend_from_slice(&line);
                    kept.push(b'\n');
                    let excess = kept.len().saturating_sub(STDERR_KEPT);
                    kept.drain(..excess);
                }
            }
        }
    })
}

impl Destination for EngineLoad {
    /// A layer is present when the cache knows its diff_id and the engine has it (for
    /// docker: the chain up to it); see [`Stored::present`].
    fn present(&mut self, layers: &[KnownLayer]) -> Result<Vec<bool>> {
        let diff_ids: Vec<Option<LayerDigest>> = layers.iter().map(|l| l.diff_id).collect();
        Ok(self.stored.present(&diff_ids))
    }

    fn skip_layer(&mut self, index: usize, known: &KnownLayer) -> Result<()> {
        let digest = known
            .diff_id
            .with_context(|| format!("internal error: layer {} skipped without a known diff_id", index + 1))?;
        self.omit_layer(index, digest)
    }

    fn begin_layer(&mut self, index: usize, tar_size: u64) -> Result<()> {
        self.archive()?.begin_layer(index, tar_size)
    }

    fn layer_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.archive()?.layer_chunk(bytes)
    }

    fn end_layer(&mut self, digest: LayerDigest) -> Result<()> {
        self.stats.sent += 1;
        self.archive()?.end_layer(digest)
    }

    fn finish(&mut self, image: &FinishedImage<'_>) -> Result<()> {
        self.archive()?.finish(image)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn digest(n: u8) -> LayerDigest {
        LayerDigest { sha256: [n; 32], size: u64::from(n) * 1000 }
    }

    #[test]
    fn chain_ids_follow_dockers_layer_store() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b]);
        assert_eq!(chains[0], a, "the bottom layer's chain ID is its diff_id");
        // `printf '%s %s' "$A" "$B" | sha256sum`
        assert_eq!(chains[1], "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
    }

    #[test]
    fn docker_omits_a_layer_only_when_its_whole_chain_is_stored() {
        let layers: Vec<String> = (1..=4).map(|n| digest(n).diff_id()).collect();
        // The engine has an image of layers 1, 2, 3.
        let stored = Stored::Chains(chain_ids(&layers[..3]).into_iter().collect());
        let all: Vec<Option<LayerDigest>> = (1..=4).map(|n| Some(digest(n))).collect();
        assert_eq!(stored.present(&all), [true, true, true, false]);
        // Layer 2 changed: 3 is the same layer, but on another chain, so it is sent.
        let changed = vec![Some(digest(1)), Some(digest(9)), Some(digest(3)), Some(digest(4))];
        assert_eq!(stored.present(&changed), [true, false, false, false]);
        // An unknown diff_id (not cached) hides every chain above it.
        let unknown = vec![Some(digest(1)), None, Some(digest(3))];
        assert_eq!(stored.present(&unknown), [true, false, false]);
    }

    #[test]
    fn podman_omits_any_stored_diff_id() {
        let stored = Stored::DiffIds([digest(3).diff_id()].into_iter().collect());
        let layers = vec![Some(digest(1)), None, Some(digest(3))];
        assert_eq!(stored.present(&layers), [false, false, true]);
    }

    #[test]
    fn the_containerd_store_gets_every_layer() {
        assert_eq!(Stored::Nothing.present(&[Some(digest(1))]), [false]);
    }
}
