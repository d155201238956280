//! `load docker|podman`: the archive that leaves out present layers, and the errors a
//! user meets before anything is loaded (a bad engine name, an engine not installed, a
//! docker daemon not running). Loading into real engines is tests/e2e/load.sh.

use crate::errors::small;
use crate::fixture::{read_docker_archive, read_tar, Fixture};
use nix_layers::attrs::Attrs;
use nix_layers::destination::engine_load::{query, Engine, EngineLoad, Stored};
use nix_layers::destination::hybrid_archive::{write_archive, HybridArchive};
use nix_layers::destination::{Destination, FinishedImage};
use nix_layers::layer::LayerDigest;
use nix_layers::pipeline::plan_image;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;

/// Runs `nix-layers load ARGS… --attrs` on the small image with `PATH` = `path` (and
/// `DOCKER_HOST` = `docker_host`).
fn load(fixture: &Fixture, attrs: &Value, args: &[&str], path: &str, docker_host: Option<&str>) -> Output {
    let attrs = fixture.write_attrs("load.attrs.json", attrs);
    let mut all = vec!["load"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--attrs", attrs.to_str().unwrap()]);
    let mut command = fixture.command(&all);
    command.env("PATH", path);
    match docker_host {
        Some(host) => command.env("DOCKER_HOST", host),
        None => command.env_remove("DOCKER_HOST"),
    };
    command.output().unwrap()
}

/// Fails with exit status 1 and a message holding `fragments`, without a panic.
fn assert_fails(output: &Output, fragments: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "stderr does not say `{fragment}`:\n{stderr}");
    }
    assert!(output.stdout.is_empty(), "stdout is for data; load has none");
    stderr
}

/// The directory holding `program` on this machine's PATH.
fn dir_of(program: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join(program).is_file())
        .unwrap_or_else(|| panic!("`{program}` is not installed here: tests/run.sh installs it"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_unknown_engine_is_refused_naming_the_choices() {
    let (fixture, attrs) = small();
    let output = load(&fixture, &attrs, &["containerd"], "/usr/bin:/bin", None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
    for fragment in ["containerd", "docker", "podman"] {
        assert!(stderr.contains(fragment), "stderr does not say `{fragment}`:\n{stderr}");
    }
}

#[test]
fn an_engine_not_installed_is_named() {
    let (fixture, attrs) = small();
    // An empty directory as PATH: neither CLI can be found.
    let empty = fixture.dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    for engine in ["docker", "podman"] {
        let output = load(&fixture, &attrs, &[engine], empty.to_str().unwrap(), None);
        assert_fails(&output, &[&format!("{engine} is not installed"), "PATH"]);
    }
}

#[test]
fn a_docker_daemon_not_running_is_named() {
    let (fixture, attrs) = small();
    let socket = fixture.dir.path().join("no-daemon.sock");
    let host = format!("unix://{}", socket.display());
    let output = load(&fixture, &attrs, &["docker"], &dir_of("docker"), Some(&host));
    // docker's own words name the socket it could not reach.
    assert_fails(&output, &["cannot ask docker which layers it has", "docker info", &socket.display().to_string()]);
}

#[test]
fn podman_with_unusable_storage_is_named() {
    let (fixture, attrs) = small();
    // A storage configuration whose graph root lies below a regular file.
    let blocker = fixture.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let conf = fixture.dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n", blocker.display()),
    )
    .unwrap();
    let attrs = fixture.write_attrs("load.attrs.json", &attrs);
    let output = fixture
        .command(&["load", "podman", "--attrs", attrs.to_str().unwrap()])
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", dir_of("podman")))
        .output()
        .unwrap();
    assert_fails(&output, &["cannot ask podman which layers it has", "podman image ls", "not-a-dir"]);
}

/// Files of an archive by name: data, or `-> target` for a symlink.
fn entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    read_tar(bytes)
        .into_iter()
        .map(|e| {
            let data = match e.link {
                Some(target) if e.kind == tar::EntryType::Symlink => format!("-> {target}").into_bytes(),
                _ => e.data,
            };
            (e.name, data)
        })
        .collect()
}

/// The small image, planned and scanned, its archive as `stream` writes it, and its
/// layers' diff_ids.
struct Written {
    fixture: Fixture,
    image: nix_layers::pipeline::PlannedImage,
    full: Vec<u8>,
    archive: crate::fixture::DockerArchive,
    diff_ids: Vec<LayerDigest>,
}

fn written() -> Written {
    let (fixture, attrs) = small();
    let file = fixture.write_attrs("attrs.json", &attrs);
    let store = fixture.store();
    let image = plan_image(&Attrs::read(&file).unwrap(), &store).unwrap();
    let layers = image.scan_layers(&store, 2).unwrap();
    let mut full = Vec::new();
    write_archive(&mut full, &image.spec, &layers, 2, &nix_layers::cache::LayerCache::disabled()).unwrap();
    let archive = read_docker_archive(&full);
    assert!(archive.layers.len() >= 2, "the fixture has a store layer and the customisation layer");
    let diff_ids = archive
        .layers
        .iter()
        .map(|tar| {
            let hex = crate::fixture::sha256_hex(tar);
            let mut sha256 = [0u8; 32];
            for (i, byte) in sha256.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            LayerDigest { sha256, size: tar.len() as u64 }
        })
        .collect();
    Written { fixture, image, full, archive, diff_ids }
}

/// A destination that can leave a layer out.
trait Omits: Destination {
    fn omit(&mut self, index: usize, digest: LayerDigest);
}

impl<W: std::io::Write> Omits for HybridArchive<W> {
    fn omit(&mut self, index: usize, digest: LayerDigest) {
        self.omit_layer(index, digest);
    }
}

impl Omits for EngineLoad {
    fn omit(&mut self, index: usize, digest: LayerDigest) {
        self.omit_layer(index, digest).unwrap();
    }
}

/// Writes the image of `w` into `dest`, leaving out layer i when `omit[i]`; returns what
/// `finish` returned.
fn write_omitting(dest: &mut impl Omits, w: &Written, omit: &[bool]) -> anyhow::Result<()> {
    for (i, tar) in w.archive.layers.iter().enumerate() {
        if omit[i] {
            dest.omit(i, w.diff_ids[i]);
        } else {
            dest.begin_layer(i, tar.len() as u64)?;
            dest.layer_chunk(tar)?;
            dest.end_layer(w.diff_ids[i])?;
        }
    }
    let config = &w.archive.files[&w.archive.config_name];
    dest.finish(&FinishedImage { spec: &w.image.spec, config, diff_ids: &w.diff_ids })
}

#[test]
fn an_omitted_layer_is_listed_but_neither_its_tar_nor_its_blob_is_written() {
    let w = written();
    // The same image, the first layer left out.
    let mut omitting = Vec::new();
    let mut dest = HybridArchive::start(&mut omitting, &w.image.spec).unwrap();
    let mut omit = vec![false; w.diff_ids.len()];
    omit[0] = true;
    write_omitting(&mut dest, &w, &omit).unwrap();

    let mut expected = entries(&w.full);
    let omitted_blob = format!("blobs/sha256/{}", w.diff_ids[0].diff_id().strip_prefix("sha256:").unwrap());
    assert_eq!(expected.remove("layers/001.tar").map(|t| t.len() as u64), Some(w.diff_ids[0].size));
    assert_eq!(expected.remove(&omitted_blob), Some(b"-> ../../layers/001.tar".to_vec()));
    // Everything else is the same bytes: manifest.json and the OCI manifest still list
    // the layer (with its size), the config its diff_id.
    assert!(entries(&omitting) == expected, "the omitting archive differs beyond the omitted layer");
    let manifest = read_docker_archive_manifest(&omitting);
    assert_eq!(manifest[0]["Layers"][0], "layers/001.tar");
}

/// Real podman, in a private store: it refuses an archive without a layer it lacks (our
/// error quoting its own), then, once it has the image, takes the archive without the
/// layers `query` reports, and the image it stores has every layer.
#[test]
fn podman_loads_an_archive_without_the_layers_it_stores() {
    let w = written();
    let dir = w.fixture.dir.path();
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/podman-root\"\nrunroot = \"{0}/podman-run\"\n", dir.display()),
    )
    .unwrap();
    // The podman that EngineLoad runs inherits this process's environment; no other
    // test runs podman without its own CONTAINERS_STORAGE_CONF.
    std::env::set_var("CONTAINERS_STORAGE_CONF", &conf);
    let n = w.diff_ids.len();
    let all_known: Vec<Option<LayerDigest>> = w.diff_ids.iter().copied().map(Some).collect();

    let stored = query(Engine::Podman).unwrap();
    assert!(stored.is_empty(), "a new store has no layers: {stored:?}");
    assert_eq!(stored.present(&all_known), vec![false; n]);

    // A layer podman does not have, left out: its load fails, and the error says so.
    let mut omit = vec![false; n];
    omit[0] = true;
    let mut load = EngineLoad::start(Engine::Podman, stored, &w.image.spec).unwrap();
    let finished = write_omitting(&mut load, &w, &omit);
    let error = format!("{:#}", load.end(finished).unwrap_err());
    // podman's own words: `reading blob sha256:<the omitted layer>: … no such file`.
    let missing = format!("reading blob {}", w.diff_ids[0].diff_id());
    assert!(error.contains("`podman load` failed") && error.contains(&missing), "{error}");

    // The whole image, then the same image with every layer left out.
    let mut load = EngineLoad::start(Engine::Podman, Stored::Nothing, &w.image.spec).unwrap();
    let finished = write_omitting(&mut load, &w, &vec![false; n]);
    let ((), stats) = load.end(finished).unwrap();
    assert_eq!((stats.sent, stats.present), (n, 0));
    let stored = query(Engine::Podman).unwrap();
    assert_eq!(stored.present(&all_known), vec![true; n], "podman stores every layer: {stored:?}");
    let mut load = EngineLoad::start(Engine::Podman, stored, &w.image.spec).unwrap();
    let finished = write_omitting(&mut load, &w, &vec![true; n]);
    let ((), stats) = load.end(finished).unwrap();
    assert_eq!((stats.sent, stats.present), (0, n));

    let inspect = std::process::Command::new("podman")
        .args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", "test-image:latest"])
        .output()
        .unwrap();
    let layers: Vec<String> = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(layers, w.diff_ids.iter().map(LayerDigest::diff_id).collect::<Vec<_>>());
}

fn read_docker_archive_manifest(bytes: &[u8]) -> Value {
    let files = entries(bytes);
    serde_json::from_slice(&files["manifest.json"]).unwrap()
}
