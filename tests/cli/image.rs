//! `nix-layers build` (compressor none), read back with the `tar` crate.

use crate::fixture::{
    assert_success, dir, file, hard_link, read_docker_archive, read_tar, sha256_hex, symlink_to, DockerArchive, Fixture, TarEntry,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A single path component of 120 bytes (over ustar's 100-byte name field on its own).
const LONG_COMPONENT: &str = "share/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// A file deep in a tree; with the store prefix its tar name is far over 100 bytes.
const DEEP_FILE: &str = "share/doc/hello/a/deeply/nested/tree/with-a-file-name-long-enough-to-need-pax.txt";
const MTIME: &str = "2001-02-03T04:05:06Z";
const MTIME_UNIX: u64 = 981_173_106;
const CREATED: &str = "2024-01-02T03:04:05Z";

/// The sample closure, drawn:
///
/// ```text
/// hello ──> libc <── tools        contents = [hello, tools]
/// ```
/// libc is the most popular (4), then hello and tools (1 each, by name).
pub struct Sample {
    pub fixture: Fixture,
    pub libc: String,
    pub hello: String,
    pub tools: String,
}

pub fn sample() -> Sample {
    let mut fixture = Fixture::new();
    let libc = fixture.add_path(
        "libc",
        &[
            file("lib/libc.so", b"\x7fELF pretend libc\n", 0o444),
            symlink_to("lib/libc.so.6", "libc.so"),
            file("share/empty-file", b"", 0o444),
            dir("share/empty-dir", 0o555),
        ],
        &[],
    );
    let long_target = format!("{}end", "t/".repeat(60));
    let hello = fixture.add_path(
        "hello",
        &[
            file("bin/hello", b"#!/bin/sh\necho hello\n", 0o555),
            hard_link("bin/hi", "bin/hello"),
            symlink_to("bin/dangling", "/nonexistent/dangling/target"),
            symlink_to("lib/libc", libc.clone()),
            symlink_to("share/long-target", long_target),
            file(DEEP_FILE, b"deep\n", 0o444),
            file(LONG_COMPONENT, b"long\n", 0o444),
            file("share/block", &[7u8; 512], 0o644),
        ],
        &[&libc],
    );
    let tools = fixture.add_path(
        "tools",
        &[file("bin/tool", b"#!/bin/sh\necho tool\n", 0o555), file("share/tools/readme", b"read me\n", 0o444)],
        &[&libc],
    );
    Sample { fixture, libc, hello, tools }
}

impl Sample {
    /// Image attrs with every option set to a value other than its default.
    pub fn attrs(&self) -> Value {
        let mut attrs = self.fixture.attrs();
        let extra = json!({
            "name": "Test-Image",
            "tag": "v1",
            "contents": [self.hello, self.tools],
            "config": { "Cmd": ["/bin/hello"], "Env": ["PATH=/bin", "LANG=C.UTF-8"], "WorkingDir": "/", "ExposedPorts": { "80/tcp": {} } },
            "created": CREATED,
            "mtime": MTIME,
            "uid": 1000,
            "gid": 100,
            "uname": "alice",
            "gname": "users",
            "architecture": "arm64",
        });
        for (k, v) in extra.as_object().unwrap() {
            attrs[k] = v.clone();
        }
        attrs
    }
}

/// What one tar entry should be: (name, kind, mode, link target, data).
type Expected = (String, tar::EntryType, u32, Option<String>, Vec<u8>);

/// The entries a store layer holding `paths` should have, from the disk: the store dir's
/// components, then each path depth first, sorted by name. (name, kind, mode, link, data)
fn expected_store_layer(store: &str, paths: &[&str]) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    for component in store.split('/').filter(|c| !c.is_empty()) {
        prefix.push_str(component);
        prefix.push('/');
        out.push((prefix.clone(), tar::EntryType::Directory, 0o755, None, Vec::new()));
    }
    fn walk(path: &Path, out: &mut Vec<Expected>) {
        let meta = fs::symlink_metadata(path).unwrap();
        let name = path.to_str().unwrap()[1..].to_string();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).unwrap().to_str().unwrap().to_string();
            out.push((name, tar::EntryType::Symlink, mode, Some(target), Vec::new()));
        } else if meta.is_dir() {
            out.push((name + "/", tar::EntryType::Directory, mode, None, Vec::new()));
            let mut children: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
            children.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
            for child in children {
                walk(&child, out);
            }
        } else {
            out.push((name, tar::EntryType::Regular, mode, None, fs::read(path).unwrap()));
        }
    }
    for path in paths {
        walk(Path::new(path), &mut out);
    }
    out
}

fn summary(entries: &[TarEntry]) -> Vec<Expected> {
    entries.iter().map(|e| (e.name.clone(), e.kind, e.mode, e.link.clone(), e.data.clone())).collect()
}

fn build_sample(sample: &Sample, attrs: &Value) -> DockerArchive {
    read_docker_archive(&sample.fixture.build(attrs))
}

#[test]
fn manifest_names_the_config_the_tag_and_every_layer() {
    let sample = sample();
    let image = build_sample(&sample, &sample.attrs());
    let manifest = image.manifest.as_array().unwrap();
    assert_eq!(manifest.len(), 1);
    assert_eq!(manifest[0]["RepoTags"], json!(["test-image:v1"]), "name lowercased, tag as given");
    assert_eq!(image.config_name, format!("blobs/sha256/{}", sha256_hex(&image.files[&image.config_name])));
    let layers: Vec<&str> = manifest[0]["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(layers, ["layers/001.tar", "layers/002.tar", "layers/003.tar", "layers/004.tar"], "libc, hello, tools, customisation");
    // Nothing else in the archive than the two views of the image: no plan, no helper file.
    let oci = oci_view(&image.files);
    let mut expected: Vec<String> = ["blobs/", "blobs/sha256/", "layers/", "index.json", "manifest.json", "oci-layout"].map(String::from).to_vec();
    expected.extend(layers.iter().map(|l| l.to_string()));
    expected.extend(oci.iter().map(|blob| format!("blobs/sha256/{}", &blob[7..])));
    expected.sort();
    expected.dedup();
    let names: Vec<&str> = image.files.keys().map(String::as_str).collect();
    assert_eq!(names, expected);
}

/// Checks the OCI view of a hybrid archive against its docker view: `oci-layout`,
/// `index.json` (tag annotations), the manifest, the config (the docker view's config) and
/// each layer blob, a symlink to the docker view's layer whose digest and size match.
/// Returns every blob digest the OCI view names.
fn oci_view(entries: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    assert_eq!(entries["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let docker: Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let index: Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let entry = &index["manifests"].as_array().unwrap()[..];
    assert_eq!(entry.len(), 1);
    let repo_tag = docker[0]["RepoTags"][0].as_str().unwrap();
    assert_eq!(entry[0]["annotations"]["io.containerd.image.name"], repo_tag);
    assert_eq!(entry[0]["annotations"]["org.opencontainers.image.ref.name"], repo_tag.rsplit_once(':').unwrap().1);
    let blob = |digest: &str| &entries[&format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())];
    let manifest_digest = entry[0]["digest"].as_str().unwrap();
    let manifest_bytes = blob(manifest_digest);
    assert_eq!(format!("sha256:{}", sha256_hex(manifest_bytes)), manifest_digest);
    assert_eq!(entry[0]["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(blob(config_digest), &entries[docker[0]["Config"].as_str().unwrap()], "one config for both views");
    let mut digests = vec![manifest_digest.to_string(), config_digest.to_string()];
    for (layer, name) in manifest["layers"].as_array().unwrap().iter().zip(docker[0]["Layers"].as_array().unwrap()) {
        let data = &entries[name.as_str().unwrap()];
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(layer["digest"], format!("sha256:{}", sha256_hex(data)));
        assert_eq!(layer["size"], data.len());
        digests.push(layer["digest"].as_str().unwrap().to_string());
    }
    digests
}

#[test]
fn the_oci_view_links_every_layer_blob_to_the_docker_views_layer() {
    let sample = sample();
    let bytes = sample.fixture.build(&sample.attrs());
    let entries = read_tar(&bytes);
    let files: BTreeMap<String, Vec<u8>> = entries.iter().map(|e| (e.name.clone(), e.data.clone())).collect();
    oci_view(&files);
    let docker: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    for name in docker[0]["Layers"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let link = entries.iter().find(|e| e.name == format!("blobs/sha256/{}", sha256_hex(&files[name]))).unwrap();
        assert_eq!(link.kind, tar::EntryType::Symlink, "{link:?}");
        assert_eq!(link.link.as_deref(), Some(format!("../../{name}").as_str()));
        let position = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
        assert!(position(name) < position(&link.name), "each layer's bytes, then its link");
    }
    // Written once: the archive is the layer bytes plus a few KB of headers and JSON.
    let layer_bytes: usize = docker[0]["Layers"].as_array().unwrap().iter().map(|n| files[n.as_str().unwrap()].len()).sum();
    assert!(bytes.len() < layer_bytes + 20 * 1024, "{} bytes for {layer_bytes} bytes of layers", bytes.len());
}

#[test]
fn config_has_the_given_fields_diff_ids_and_one_history_entry_per_layer() {
    let sample = sample();
    let attrs = sample.attrs();
    let image = build_sample(&sample, &attrs);
    let config = &image.config;
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], CREATED);
    assert_eq!(config["config"], attrs["config"], "the Docker config object, as given");
    assert_eq!(config["rootfs"]["type"], "layers");
    let diff_ids: Vec<String> = image.layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect();
    assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), image.layers.len());
    let all = [&sample.libc, &sample.hello, &sample.tools];
    for (entry, holds) in history.iter().zip([&sample.libc, &sample.hello, &sample.tools]) {
        let comment = entry["comment"].as_str().unwrap();
        assert_eq!(entry["created"], CREATED);
        for path in all {
            assert_eq!(comment.contains(path.as_str()), path == holds, "comment `{comment}` vs {path}");
        }
    }
    let last = history[3]["comment"].as_str().unwrap();
    assert!(last.contains(&sample.hello) && last.contains(&sample.tools), "{last}");
}

#[test]
fn store_layers_hold_each_path_tree_in_order_as_on_disk() {
    let sample = sample();
    let image = build_sample(&sample, &sample.attrs());
    let store = sample.fixture.store();
    for (layer, path) in image.layers.iter().zip([&sample.libc, &sample.hello, &sample.tools]) {
        let entries = read_tar(layer);
        assert_eq!(summary(&entries), expected_store_layer(&store, &[path]), "layer of {path}");
        for e in &entries {
            assert_eq!((e.uid, e.gid, e.uname.as_str(), e.gname.as_str()), (1000, 100, "alice", "users"), "{}", e.name);
            assert_eq!(e.mtime, MTIME_UNIX, "{}", e.name);
        }
    }
}

#[test]
fn store_layer_tar_conventions() {
    let sample = sample();
    let image = build_sample(&sample, &sample.attrs());
    let hello = read_tar(&image.layers[1]);
    let by_name: BTreeMap<&str, &TarEntry> = hello.iter().map(|e| (e.name.as_str(), e)).collect();
    let h = &sample.hello[1..];
    // The store directory's components come first, as 0755 directories.
    let components = sample.fixture.store().split('/').filter(|c| !c.is_empty()).count();
    assert!(hello[..components].iter().all(|e| e.kind == tar::EntryType::Directory && e.mode == 0o755));
    assert_eq!(hello[components].name, format!("{h}/"));
    assert_eq!(hello[components].mode, 0o555, "store directories keep their mode");
    // Hard links are regular files with their full data.
    for name in ["bin/hello", "bin/hi"] {
        let e = by_name[format!("{h}/{name}").as_str()];
        assert_eq!(e.kind, tar::EntryType::Regular, "{name}");
        assert_eq!(e.mode, 0o555, "{name}");
        assert_eq!(e.data, b"#!/bin/sh\necho hello\n", "{name}");
    }
    // Symlinks are kept, never followed: absolute, dangling and long targets alike.
    let link = |name: &str| by_name[format!("{h}/{name}").as_str()];
    assert_eq!(link("lib/libc").kind, tar::EntryType::Symlink);
    assert_eq!(link("lib/libc").link.as_deref(), Some(sample.libc.as_str()));
    assert_eq!(link("bin/dangling").link.as_deref(), Some("/nonexistent/dangling/target"));
    let long_target = link("share/long-target").link.clone().unwrap();
    assert!(long_target.len() > 100 && long_target.ends_with("t/end"), "{long_target}");
    // Long names read back whole.
    assert_eq!(link(DEEP_FILE).data, b"deep\n");
    assert!(link(DEEP_FILE).name.len() > 100);
    assert_eq!(link(LONG_COMPONENT).data, b"long\n");
    assert_eq!(link("share/block").mode, 0o644);
    // The libc layer: empty file, empty directory, relative symlink.
    let libc = read_tar(&image.layers[0]);
    let l = &sample.libc[1..];
    let by_name: BTreeMap<&str, &TarEntry> = libc.iter().map(|e| (e.name.as_str(), e)).collect();
    let empty = by_name[format!("{l}/share/empty-file").as_str()];
    assert_eq!((empty.kind, empty.data.len(), empty.mode), (tar::EntryType::Regular, 0, 0o444));
    let empty_dir = by_name[format!("{l}/share/empty-dir/").as_str()];
    assert_eq!((empty_dir.kind, empty_dir.mode), (tar::EntryType::Directory, 0o555));
    assert_eq!(by_name[format!("{l}/lib/libc.so.6").as_str()].link.as_deref(), Some("libc.so"));
}

#[test]
fn fewer_layers_put_the_less_popular_paths_together_in_plan_order() {
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["layering"] = json!("popularity");
    attrs["maxLayers"] = json!(3);
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.layers.len(), 3);
    let store = sample.fixture.store();
    assert_eq!(summary(&read_tar(&image.layers[0])), expected_store_layer(&store, &[&sample.libc]));
    assert_eq!(summary(&read_tar(&image.layers[1])), expected_store_layer(&store, &[&sample.hello, &sample.tools]));
    let comment = image.config["history"][1]["comment"].as_str().unwrap();
    assert!(comment.contains(&sample.hello) && comment.contains(&sample.tools) && !comment.contains(&sample.libc));
}

/// What merging `contents` symlinkJoin-style gives, from the disk: directories recreated,
/// everything else a symlink to its store path.
fn expected_customisation(contents: &[&str]) -> BTreeMap<String, Option<String>> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Option<String>>) {
        for child in fs::read_dir(root.join(rel)).unwrap() {
            let child = child.unwrap();
            let name = format!("{rel}{}", child.file_name().to_str().unwrap());
            if child.file_type().unwrap().is_dir() {
                out.insert(format!("{name}/"), None);
                walk(root, &format!("{name}/"), out);
            } else {
                out.insert(name, Some(child.path().to_str().unwrap().to_string()));
            }
        }
    }
    let mut out = BTreeMap::new();
    for content in contents {
        walk(Path::new(content), "", &mut out);
    }
    out
}

#[test]
fn customisation_layer_merges_contents_into_symlinks() {
    let sample = sample();
    let image = build_sample(&sample, &sample.attrs());
    let entries = read_tar(&image.layers[3]);
    let mut seen = BTreeMap::new();
    for e in &entries {
        assert!(seen.insert(e.name.clone(), e.link.clone()).is_none(), "`{}` is in the layer twice", e.name);
        match e.kind {
            tar::EntryType::Directory => assert_eq!(e.mode, 0o755, "{}", e.name),
            tar::EntryType::Symlink => {}
            other => panic!("`{}` is a {other:?}; the customisation layer holds only dirs and symlinks", e.name),
        }
        assert_eq!((e.uid, e.gid), (0, 0), "{}", e.name);
        assert_eq!(e.mtime, MTIME_UNIX, "{}", e.name);
    }
    assert_eq!(seen, expected_customisation(&[&sample.hello, &sample.tools]));
    // Spelled out for the shared `bin/`: one directory, links from both contents.
    assert_eq!(seen["bin/"], None);
    assert_eq!(seen["bin/hello"], Some(format!("{}/bin/hello", sample.hello)));
    assert_eq!(seen["bin/tool"], Some(format!("{}/bin/tool", sample.tools)));
    // Directories come before what they hold.
    let position = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
    assert!(position("bin/") < position("bin/hello") && position("bin/") < position("bin/tool"));
}

#[test]
fn a_null_tag_is_the_hash_part_of_the_output_path() {
    let sample = sample();
    let mut attrs = sample.attrs();
    let out = sample.fixture.store_path("test-image.tar");
    attrs["tag"] = Value::Null;
    attrs["outputs"]["out"] = json!(out);
    let image = build_sample(&sample, &attrs);
    let hash = crate::fixture::hash_for("test-image.tar");
    assert_eq!(image.manifest[0]["RepoTags"], json!([format!("test-image:{hash}")]));
}

#[test]
fn image_name_wins_over_the_derivation_name() {
    // Under structured attrs `name` is the derivation's file name; the Nix functions pass
    // the image's own name as `imageName`.
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["name"] = json!("layered-image.tar.gz");
    attrs["imageName"] = json!("Layered-Image");
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.manifest[0]["RepoTags"], json!(["layered-image:v1"]));
}

#[test]
fn include_store_paths_false_gives_only_the_customisation_layer() {
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["includeStorePaths"] = json!(false);
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.layers.len(), 1);
    let store_top = sample.fixture.store().split('/').find(|c| !c.is_empty()).unwrap().to_string() + "/";
    let entries = read_tar(&image.layers[0]);
    assert!(entries.iter().all(|e| !e.name.starts_with(&store_top)), "a store entry in {entries:?}");
    assert_eq!(image.config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
}

#[test]
fn defaults_give_root_owned_entries_at_one_second_past_the_epoch() {
    let sample = sample();
    let mut attrs = sample.fixture.attrs();
    attrs["contents"] = json!([sample.hello]);
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.config["created"], "1970-01-01T00:00:01Z");
    assert_eq!(image.config["architecture"], "amd64");
    assert_eq!(image.config["config"], json!({}));
    assert_eq!(image.manifest[0]["RepoTags"], json!(["test-image:latest"]));
    for layer in &image.layers {
        for e in read_tar(layer) {
            assert_eq!((e.uid, e.gid, e.uname.as_str(), e.gname.as_str(), e.mtime), (0, 0, "root", "root", 1), "{}", e.name);
        }
    }
}

#[test]
fn now_is_accepted_for_created_and_mtime() {
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["created"] = json!("now");
    attrs["mtime"] = json!("now");
    let unix_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let before = unix_now();
    let image = build_sample(&sample, &attrs);
    let after = unix_now();
    let created = image.config["created"].as_str().unwrap();
    let created_unix = rfc3339_utc_to_unix(created);
    assert!((before..=after).contains(&created_unix), "created {created} is not between {before} and {after}");
    for e in read_tar(&image.layers[0]) {
        assert!((before..=after).contains(&e.mtime), "mtime {} of {}", e.mtime, e.name);
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds (days from civil, proleptic Gregorian).
fn rfc3339_utc_to_unix(text: &str) -> u64 {
    assert!(text.len() == 20 && text.ends_with('Z'), "not YYYY-MM-DDTHH:MM:SSZ: {text}");
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

#[test]
fn the_civil_date_helper_agrees_with_date() {
    // `date -u -d 2001-02-03T04:05:06Z +%s`
    assert_eq!(rfc3339_utc_to_unix(MTIME), MTIME_UNIX);
    assert_eq!(rfc3339_utc_to_unix(CREATED), 1_704_164_645);
}

#[test]
fn build_writes_a_read_only_file_and_nothing_else() {
    let sample = sample();
    let file = sample.fixture.write_attrs("a.json", &sample.attrs());
    sample.fixture.run_ok(&["build", "--attrs", file.to_str().unwrap()]);
    let names: Vec<_> = fs::read_dir(sample.fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["image.tar"]);
    let mode = fs::metadata(sample.fixture.out("image.tar")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o444);
}

#[test]
fn a_prebuilt_customisation_layer_is_copied_last_and_its_path_stays_out() {
    let mut sample = sample();
    // A layer.tar as extraCommands would leave it, made with the tar crate.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(6);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_cksum();
    builder.append_data(&mut header, "etc/motd", &b"hello\n"[..]).unwrap();
    let layer_tar = builder.into_inner().unwrap();
    let custom = sample.fixture.add_path("custom-layer", &[file("layer.tar", &layer_tar, 0o444)], &[&sample.hello]);
    let mut attrs = sample.attrs();
    attrs["closure"] = sample.fixture.closure();
    attrs["customisationLayer"] = json!(custom);
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.layers.len(), 4, "libc, hello, tools and the prebuilt layer");
    assert!(image.layers[3] == layer_tar, "the prebuilt layer.tar is copied byte for byte");
    for layer in &image.layers[..3] {
        for e in read_tar(layer) {
            assert!(!e.name.contains("custom-layer"), "the customisation layer's own path entered a store layer: {}", e.name);
        }
    }
}

#[test]
fn duplicate_contents_are_merged_once_without_a_conflict() {
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["contents"] = json!([sample.hello, sample.tools, sample.hello]);
    let image = build_sample(&sample, &attrs);
    let names: Vec<String> = read_tar(&image.layers[3]).into_iter().map(|e| e.name).collect();
    let expected: Vec<String> = expected_customisation(&[&sample.hello, &sample.tools]).into_keys().collect();
    assert_eq!(names, expected);
}

#[test]
fn graph_entries_as_nix_writes_them_are_accepted() {
    // SRI and hex narHash forms, and keys we do not read (`ca`, `deriver`).
    let sample = sample();
    let mut attrs = sample.attrs();
    attrs["closure"][0]["narHash"] = json!(format!("sha256-{}=", "A".repeat(43)));
    attrs["closure"][1]["narHash"] = json!(format!("sha256:{}", "0123456789abcdef".repeat(4)));
    attrs["closure"][2]["ca"] = json!("fixed:r:sha256:0000");
    attrs["closure"][2]["deriver"] = json!("/nix/store/x.drv");
    attrs["closure"][2]["signatures"] = json!([]);
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.layers.len(), 4);
}

#[test]
fn single_file_and_symlink_store_paths() {
    // writeText-style paths are a file; some are a bare symlink. Both are entries of their own.
    let mut fixture = Fixture::new();
    let script = fixture.store_path("script.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o555)).unwrap();
    fixture.add_entry(&script, &[]);
    let link = fixture.store_path("link");
    std::os::unix::fs::symlink(&script, &link).unwrap();
    fixture.add_entry(&link, &[&script]);
    let top = fixture.add_path("top", &[symlink_to("bin/run", script.clone())], &[&script, &link]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([top]);
    let image = read_docker_archive(&fixture.build(&attrs));
    let store = fixture.store();
    let all: Vec<TarEntry> = image.layers[..3].iter().flat_map(|l| read_tar(l)).collect();
    let find = |p: &str| all.iter().find(|e| e.name == p[1..]).unwrap_or_else(|| panic!("{p} is in no layer"));
    assert_eq!(find(&script).kind, tar::EntryType::Regular);
    assert_eq!(find(&script).mode, 0o555);
    assert_eq!(find(&script).data, b"#!/bin/sh\necho hi\n");
    assert_eq!(find(&link).kind, tar::EntryType::Symlink);
    assert_eq!(find(&link).link.as_deref(), Some(script.as_str()));
    for (layer, path) in image.layers[..3].iter().zip([&script, &link, &top]) {
        assert_eq!(summary(&read_tar(layer)), expected_store_layer(&store, &[path]), "{path}");
    }
}

#[test]
fn variant_goes_into_the_config_only_when_given() {
    let sample = sample();
    let mut attrs = sample.attrs();
    let image = build_sample(&sample, &attrs);
    assert!(image.config.get("variant").is_none(), "no variant key by default: {}", image.config);
    attrs["variant"] = json!("");
    let image = build_sample(&sample, &attrs);
    assert!(image.config.get("variant").is_none(), "an empty variant is left out: {}", image.config);
    attrs["variant"] = json!("v7");
    let image = build_sample(&sample, &attrs);
    assert_eq!(image.config["variant"], "v7");
    attrs["variant"] = json!(7);
    let file = sample.fixture.write_attrs("bad-variant.json", &attrs);
    let output = sample.fixture.run(&["build", "--attrs", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("variant"), "{stderr}");
}

#[test]
fn debug_prints_the_plan_to_stderr_in_build_and_stream_script() {
    let sample = sample();
    let mut attrs = sample.attrs();
    for command in ["build", "stream-script"] {
        attrs["debug"] = json!(false);
        let file = sample.fixture.write_attrs("debug.json", &attrs);
        let quiet = sample.fixture.run(&[command, "--attrs", file.to_str().unwrap()]);
        assert_success(&quiet, &[command]);
        // Progress lines only, no plan.
        let quiet_err = String::from_utf8_lossy(&quiet.stderr);
        assert!(!quiet_err.contains("debug") && !quiet_err.contains("layering:"), "{command}: {quiet_err}");
        fs::remove_file(attrs["outputs"]["out"].as_str().unwrap()).unwrap();
        attrs["debug"] = json!(true);
        let file = sample.fixture.write_attrs("debug.json", &attrs);
        let loud = sample.fixture.run(&[command, "--attrs", file.to_str().unwrap()]);
        assert_success(&loud, &[command]);
        let plan = sample.fixture.run_ok(&["plan", "--attrs", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&loud.stderr);
        // The plan first, then (build only) the progress lines.
        let expected = format!("nix-layers: debug: layer plan\n{}", String::from_utf8_lossy(&plan));
        assert!(stderr.starts_with(&expected), "{command}: {stderr}");
        fs::remove_file(attrs["outputs"]["out"].as_str().unwrap()).unwrap();
    }
}
