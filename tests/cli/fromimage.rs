//! `fromImage`: a base image archive whose layers come first (issue 11, item 1).
//!
//! Base archives are built here, with the `tar`, `flate2` and `zstd` crates: docker-archives
//! (as `docker save` and skopeo write them) plain, gzip and zstd, with plain or compressed
//! layers; OCI archives with gzip and zstd layer blobs; and our own images, so that an image
//! is layered on an image layered on an image.

use crate::fixture::{read_docker_archive, read_tar, sha256_hex, Fixture};
use crate::image::{sample, Sample};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A layer tar holding `files` (name, data): regular files, fixed headers.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The three layers of the test base: `base/one`, `base/two`, `etc/base-release`.
fn base_layers() -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[("base/one", b"layer one\n")]),
        layer_tar(&[("base/two", b"layer two\n"), ("base/more", &[9u8; 3000])]),
        layer_tar(&[("etc/base-release", b"base 1.0\n")]),
    ]
}

/// A base config for `layers` (one diff_id each, in order), with a Dockerfile-like history
/// (an `empty_layer` entry first) and an `Env`, a `Cmd` and a `WorkingDir`.
fn base_config(layers: &[Vec<u8>]) -> Value {
    let mut history = vec![json!({"created": "2020-01-01T00:00:00Z", "created_by": "ENV PATH=/base/bin", "empty_layer": true})];
    history.extend((0..layers.len()).map(|i| json!({"created": "2020-01-01T00:00:00Z", "created_by": format!("ADD layer {i}")})));
    json!({
        "architecture": "arm64",
        "os": "linux",
        "created": "2020-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/base/bin", "LANG=C", "FROM_BASE=yes"],
            "Cmd": ["/base/cmd"],
            "WorkingDir": "/base",
        },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect::<Vec<_>>() },
        "history": history,
    })
}

/// A tar of `files` (name, data), in order.
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A docker-archive as `docker save` (before 25) writes it: `<id>/layer.tar` per layer,
/// `<config digest>.json`, `manifest.json`. `members[i]` is the bytes stored for layer
/// `i` (maybe compressed); `listed` are the manifest's layers, by index into `members`.
fn docker_archive(config: &Value, members: &[Vec<u8>], listed: &[usize]) -> Vec<u8> {
    let config_bytes = serde_json::to_vec(config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config_bytes));
    let name = |i: usize| format!("{:064x}/layer.tar", i + 1);
    let mut files: Vec<(String, Vec<u8>)> = members.iter().enumerate().map(|(i, m)| (name(i), m.clone())).collect();
    files.push((config_name.clone(), config_bytes));
    let manifest = json!([{ "Config": config_name, "RepoTags": ["base:latest"], "Layers": listed.iter().map(|&i| name(i)).collect::<Vec<_>>() }]);
    files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
    tar_of(&files)
}

/// An OCI archive (`oci-archive:`): `oci-layout`, `index.json`, blobs. `blobs[i]` is
/// (media type, stored bytes) of layer `i`.
fn oci_archive(config: &Value, blobs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let blob = |bytes: &[u8]| (format!("blobs/sha256/{}", sha256_hex(bytes)), bytes.to_vec());
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(bytes)), "size": bytes.len()});
    let config_bytes = serde_json::to_vec(config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config_bytes),
        "layers": blobs.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let mut index_entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest_bytes);
    index_entry["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let index = json!({"schemaVersion": 2, "manifests": [index_entry]});
    let mut files = vec![("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())];
    files.extend(blobs.iter().map(|(_, b)| blob(b)));
    files.push(blob(&config_bytes));
    files.push(blob(&manifest_bytes));
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    tar_of(&files)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// Writes `bytes` as `<fixture>/<name>` and returns its path.
fn put(fixture: &Fixture, name: &str, bytes: &[u8]) -> PathBuf {
    let path = fixture.dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// The sample's attrs on the base image at `base`.
fn on(sample: &Sample, base: &Path) -> Value {
    let mut attrs = sample.attrs();
    attrs["fromImage"] = json!(base.to_str().unwrap());
    attrs
}

/// The image's own layers (not the base's) when built without a base.
fn own_layers(sample: &Sample) -> Vec<Vec<u8>> {
    read_docker_archive(&sample.fixture.build(&sample.attrs())).layers
}

/// Runs `args` and insists it fails; returns stderr.
fn fails(fixture: &Fixture, args: &[&str]) -> String {
    let output = fixture.run(args);
    assert!(!output.status.success(), "nix-layers {} should fail", args.join(" "));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_docker_archive_plain_gzip_or_zstd_gives_the_same_image_its_layers_first_byte_for_byte() {
    let sample = sample();
    let layers = base_layers();
    let config = base_config(&layers);
    let plain = docker_archive(&config, &layers, &[0, 1, 2]);
    let own = own_layers(&sample);
    let mut images = Vec::new();
    // Named to mislead: the compression is told by content.
    for (name, bytes) in [("base.tar.gz", plain.clone()), ("base.tar", gzip(&plain)), ("base.tgz", zstd(&plain))] {
        let base = put(&sample.fixture, name, &bytes);
        let image = sample.fixture.build(&on(&sample, &base));
        let archive = read_docker_archive(&image);
        assert_eq!(archive.layers.len(), 3 + own.len(), "{name}");
        assert_eq!(archive.layers[..3], layers[..], "{name}: the base layers come first, unchanged");
        assert_eq!(archive.layers[3..], own[..], "{name}: then the image's own");
        let diff_ids: Vec<String> = archive.layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect();
        assert_eq!(archive.config["rootfs"]["diff_ids"], json!(diff_ids), "{name}");
        images.push(image);
    }
    assert!(images.windows(2).all(|w| w[0] == w[1]), "the base's compression does not change the image");
}

#[test]
fn the_base_history_is_kept_then_ours_and_only_env_is_inherited() {
    let sample = sample();
    let layers = base_layers();
    let config = base_config(&layers);
    let base = put(&sample.fixture, "base.tar", &docker_archive(&config, &layers, &[0, 1, 2]));
    let archive = read_docker_archive(&sample.fixture.build(&on(&sample, &base)));
    let history = archive.config["history"].as_array().unwrap();
    // 4 base entries (one empty_layer) + one per own layer.
    assert_eq!(history[..4], config["history"].as_array().unwrap()[..], "the base's history entries, as they were");
    let non_empty = history.iter().filter(|h| h["empty_layer"] != json!(true)).count();
    assert_eq!(non_empty, archive.layers.len(), "one non-empty history entry per layer");
    assert!(history[4]["comment"].as_str().unwrap().starts_with("store paths:"), "{}", history[4]);
    // Sample Env: PATH=/bin, LANG=C.UTF-8. Base first, one per variable, last value wins.
    assert_eq!(archive.config["config"]["Env"], json!(["PATH=/bin", "LANG=C.UTF-8", "FROM_BASE=yes"]));
    // As nixpkgs: the base's Cmd and WorkingDir are not inherited; ours stay.
    assert_eq!(archive.config["config"]["Cmd"], json!(["/bin/hello"]));
    assert_eq!(archive.config["config"]["WorkingDir"], json!("/"));
    // An image without Env of its own gets the base's.
    let mut attrs = on(&sample, &base);
    attrs["config"] = json!({"User": "1"});
    let archive = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(archive.config["config"], json!({"User": "1", "Env": ["PATH=/base/bin", "LANG=C", "FROM_BASE=yes"]}));
}

#[test]
fn an_oci_archive_with_gzip_and_zstd_layers_gives_the_same_image_as_the_docker_archive() {
    let sample = sample();
    let layers = base_layers();
    let config = base_config(&layers);
    let docker = put(&sample.fixture, "docker.tar", &docker_archive(&config, &layers, &[0, 1, 2]));
    let blobs = [
        ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&layers[0])),
        ("application/vnd.oci.image.layer.v1.tar+zstd", zstd(&layers[1])),
        ("application/vnd.oci.image.layer.v1.tar", layers[2].clone()),
    ];
    let oci = put(&sample.fixture, "oci.tar", &oci_archive(&config, &blobs));
    let from_docker = sample.fixture.build(&on(&sample, &docker));
    let from_oci = sample.fixture.build(&on(&sample, &oci));
    assert_eq!(read_docker_archive(&from_oci).layers[..3], layers[..]);
    assert_eq!(from_oci, from_docker, "same base, same image, whatever the archive format");
    // Compressed layers inside a docker-archive too (skopeo can write them), and the whole
    // gzip-compressed on top.
    let docker_gz_layers = put(
        &sample.fixture,
        "docker-gz-layers.tar",
        &gzip(&docker_archive(&config, &[zstd(&layers[0]), gzip(&layers[1]), layers[2].clone()], &[0, 1, 2])),
    );
    assert_eq!(sample.fixture.build(&on(&sample, &docker_gz_layers)), from_docker);
}

#[test]
fn an_image_layered_on_an_image_layered_on_an_image_keeps_every_layer_and_history_entry() {
    let sample = sample();
    let layers = base_layers();
    let first = put(&sample.fixture, "first.tar", &docker_archive(&base_config(&layers), &layers, &[0, 1, 2]));
    // Ours as a base: the hybrid archive (blob symlinks), gzip-compressed as `build` writes it.
    let mut attrs = on(&sample, &first);
    attrs["compressor"] = json!("gz");
    attrs["tag"] = json!("second");
    let second_bytes = sample.fixture.build(&attrs);
    let second = put(&sample.fixture, "second.tar.gz", &second_bytes);
    let second_image = read_docker_archive(&gunzip(&second_bytes));
    let mut attrs = on(&sample, &second);
    attrs["tag"] = json!("third");
    attrs["config"]["Env"] = json!(["LANG=third", "NEW=1"]);
    let third = read_docker_archive(&sample.fixture.build(&attrs));
    let own = own_layers(&sample);
    assert_eq!(third.layers.len(), 3 + 2 * own.len());
    assert_eq!(third.layers[..3 + own.len()], second_image.layers[..], "the second image's layers, base's included");
    assert_eq!(third.layers[3 + own.len()..], own[..]);
    let history = third.config["history"].as_array().unwrap();
    assert_eq!(history[..second_image.config["history"].as_array().unwrap().len()], second_image.config["history"].as_array().unwrap()[..]);
    assert_eq!(third.config["config"]["Env"], json!(["PATH=/bin", "LANG=third", "FROM_BASE=yes", "NEW=1"]));
    // As an OCI archive, read through index.json (the hybrid's blobs are links to its layers).
    let oci_dir = sample.fixture.out("second-oci.tar");
    let attrs_file = sample.fixture.write_attrs("second.attrs.json", &on(&sample, &first));
    sample.fixture.run_ok(&["oci", "--attrs", attrs_file.to_str().unwrap(), "--compression-format", "zstd", &format!("oci-archive:{}", oci_dir.display())]);
    let mut attrs = on(&sample, &oci_dir);
    attrs["tag"] = json!("third");
    attrs["config"]["Env"] = json!(["LANG=third", "NEW=1"]);
    let third_from_oci = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(third_from_oci.layers, third.layers);
}

#[test]
fn repeated_base_layers_are_copied_each_time_nixpkgs_214434() {
    let sample = sample();
    let layers = base_layers();
    // The same member listed twice, and the same bytes under a second name.
    let members = vec![layers[0].clone(), layers[1].clone(), layers[0].clone()];
    let listed_layers = vec![layers[0].clone(), layers[1].clone(), layers[0].clone(), layers[0].clone()];
    let config = base_config(&listed_layers);
    let base = put(&sample.fixture, "repeated.tar", &docker_archive(&config, &members, &[0, 1, 0, 2]));
    let image = sample.fixture.build(&on(&sample, &base));
    let archive = read_docker_archive(&image);
    assert_eq!(archive.layers[..4], listed_layers[..]);
    // One blob link for the repeated diff_id; the manifest lists it each time.
    let blob = format!("blobs/sha256/{}", sha256_hex(&layers[0]));
    assert_eq!(read_tar(&image).iter().filter(|e| e.name == blob).count(), 1);
    let index: Value = serde_json::from_slice(&archive.files["index.json"]).unwrap();
    let manifest_blob = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "blobs/sha256/");
    let manifest: Value = serde_json::from_slice(&archive.files[&manifest_blob]).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), archive.layers.len());
    // The OCI layout writer and a zstd-compressed repeated layer, too.
    let base = put(&sample.fixture, "repeated-zstd.tar", &docker_archive(&config, &[zstd(&layers[0]), layers[1].clone(), layers[0].clone()], &[0, 1, 0, 2]));
    assert_eq!(sample.fixture.build(&on(&sample, &base)), image);
    let attrs = sample.fixture.write_attrs("oci.attrs.json", &on(&sample, &base));
    let dir = sample.fixture.out("layout");
    sample.fixture.run_ok(&["oci", "--attrs", attrs.to_str().unwrap(), "--compression-format", "none", &format!("oci:{}", dir.display())]);
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest_blob = index["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
    let manifest: Value = serde_json::from_slice(&fs::read(dir.join("blobs").join(manifest_blob)).unwrap()).unwrap();
    let digests: Vec<&str> = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(digests[0], digests[2]);
    assert_eq!(digests[0], digests[3]);
    assert_eq!(fs::read(dir.join("blobs/sha256").join(sha256_hex(&layers[0]))).unwrap(), layers[0]);
}

#[test]
fn a_corrupt_base_layer_is_an_error_naming_it_and_both_digests() {
    let sample = sample();
    let layers = base_layers();
    let config = base_config(&layers);
    let mut bad = layers[1].clone();
    bad[1600] ^= 1; // in `base/more`'s data: still a tar, same size, different bytes
    let expected = sha256_hex(&layers[1]);
    let actual = sha256_hex(&bad);
    let out = sample.fixture.out("image.tar");
    for (name, member) in [("corrupt.tar", bad.clone()), ("corrupt-gz-layer.tar", gzip(&bad))] {
        let base = put(&sample.fixture, name, &docker_archive(&config, &[layers[0].clone(), member, layers[2].clone()], &[0, 1, 2]));
        let attrs = sample.fixture.write_attrs("corrupt.attrs.json", &on(&sample, &base));
        let error = fails(&sample.fixture, &["build", "--attrs", attrs.to_str().unwrap()]);
        let member = format!("{:064x}/layer.tar", 2);
        for needle in [
            "layer 2 of 3 of the base image".to_string(),
            format!("`{member}` in the archive"),
            format!("`rootfs.diff_ids[1]` is sha256:{expected}"),
            format!("its bytes hash to sha256:{actual}"),
            base.display().to_string(),
        ] {
            assert!(error.contains(&needle), "{name}: `{needle}` not in: {error}");
        }
        assert!(!out.exists(), "{name}: no image is left at the out path");
        assert_eq!(fs::read_dir(sample.fixture.out_dir()).unwrap().count(), 0, "{name}: no temporary file left");
        // `stream` fails too (its stdout already has the layer: the exit status says it is bad).
        let output = sample.fixture.run(&["stream", "--attrs", attrs.to_str().unwrap()]);
        assert!(!output.status.success(), "{name}: stream must fail");
        assert!(String::from_utf8_lossy(&output.stderr).contains(&actual), "{name}");
    }
}

#[test]
fn max_layers_counts_the_base_layers_as_nixpkgs_does() {
    let sample = sample();
    let layers = base_layers();
    let base = put(&sample.fixture, "base.tar", &docker_archive(&base_config(&layers), &layers, &[0, 1, 2]));
    let mut attrs = on(&sample, &base);
    attrs["maxLayers"] = json!(4);
    let file = sample.fixture.write_attrs("small.attrs.json", &attrs);
    let error = fails(&sample.fixture, &["build", "--attrs", file.to_str().unwrap()]);
    for needle in ["key `maxLayers`: 4 leaves no layer for store paths", "the base image (`fromImage`) has 3 layers", "so 0 are left", "use at least 5"] {
        assert!(error.contains(needle), "`{needle}` not in: {error}");
    }
    // 3 base layers + 1 store layer (all of the closure) + the customisation layer: 5.
    attrs["maxLayers"] = json!(5);
    let archive = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(archive.layers.len(), 5);
    attrs["maxLayers"] = json!(6);
    assert_eq!(read_docker_archive(&sample.fixture.build(&attrs)).layers.len(), 6);
    // `plan` shows the base layers first.
    let plan: Value = serde_json::from_slice(&sample.fixture.run_ok(&["plan", "--json", "--attrs", sample.fixture.write_attrs("p.json", &attrs).to_str().unwrap()])).unwrap();
    let kinds: Vec<&str> = plan["layers"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["base", "base", "base", "store", "store", "customisation"]);
    assert_eq!(plan["layers"][1]["diff_id"], json!(format!("sha256:{}", sha256_hex(&layers[1]))));
    assert_eq!(plan["layers"][3]["layer"], json!(4));
}

#[test]
fn the_image_is_the_same_at_any_thread_count_and_stream_writes_what_build_writes() {
    let sample = sample();
    let layers = base_layers();
    let base = put(&sample.fixture, "base.tar.zst", &zstd(&docker_archive(&base_config(&layers), &layers, &[0, 1, 2])));
    let attrs = sample.fixture.write_attrs("det.attrs.json", &on(&sample, &base));
    let attrs = attrs.to_str().unwrap();
    let one = sample.fixture.run_ok(&["stream", "--threads", "1", "--attrs", attrs]);
    let many = sample.fixture.run_ok(&["stream", "--threads", "4", "--attrs", attrs]);
    assert_eq!(one, many);
    sample.fixture.run_ok(&["build", "--threads", "3", "--attrs", attrs]);
    assert_eq!(fs::read(sample.fixture.out("image.tar")).unwrap(), one);
}

#[test]
fn bad_base_archives_are_errors_naming_what_is_wrong() {
    let sample = sample();
    let layers = base_layers();
    let config = base_config(&layers);
    let good = docker_archive(&config, &layers, &[0, 1, 2]);
    let mut few_ids = config.clone();
    few_ids["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    let mut bad_id = config.clone();
    bad_id["rootfs"]["diff_ids"][0] = json!("sha256:xyz");
    let missing_member = {
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let manifest = json!([{"Config": "c.json", "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar"]}]);
        tar_of(&[("c.json".into(), config_bytes), ("a/layer.tar".into(), layers[0].clone()), ("manifest.json".into(), serde_json::to_vec(&manifest).unwrap())])
    };
    let xz = [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &good[..100]].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-a-tar", b"hello, this is not an archive".repeat(40), "not a tar archive (nor a gzip or zstd one)"),
        ("no-manifest", tar_of(&[("hello".into(), b"x".to_vec())]), "neither `manifest.json` (a docker-archive) nor `index.json`"),
        ("xz", xz, "it is xz-compressed"),
        ("missing-layer", missing_member, "layer 2 of 3: `b/layer.tar` is not in the archive"),
        ("few-diff-ids", docker_archive(&few_ids, &layers, &[0, 1, 2]), "has 2 diff_ids (`rootfs.diff_ids`) but the manifest lists 3 layers"),
        ("bad-diff-id", docker_archive(&bad_id, &layers, &[0, 1, 2]), "`rootfs.diff_ids[0]`: \"sha256:xyz\" is not a `sha256:<64 hex digits>` diff_id"),
        ("truncated", good[..good.len() / 2].to_vec(), "base image"),
    ];
    for (name, bytes, needle) in cases {
        let base = put(&sample.fixture, name, &bytes);
        let attrs = sample.fixture.write_attrs("bad.attrs.json", &on(&sample, &base));
        let error = fails(&sample.fixture, &["build", "--attrs", attrs.to_str().unwrap()]);
        assert!(error.contains(needle), "{name}: `{needle}` not in: {error}");
        assert!(error.contains(&format!("key `fromImage`: base image `{}`", base.display())), "{name}: {error}");
        assert!(!error.contains("panicked"), "{name}: {error}");
    }
    let mut attrs = on(&sample, Path::new("/nonexistent/base.tar"));
    let file = sample.fixture.write_attrs("missing.attrs.json", &attrs);
    let error = fails(&sample.fixture, &["build", "--attrs", file.to_str().unwrap()]);
    assert!(error.contains("base image `/nonexistent/base.tar`: cannot open it"), "{error}");
    attrs["fromImage"] = json!(42);
    let file = sample.fixture.write_attrs("number.attrs.json", &attrs);
    let error = fails(&sample.fixture, &["build", "--attrs", file.to_str().unwrap()]);
    assert!(error.contains("key `fromImage`: expected a string, got 42"), "{error}");
}

#[test]
fn a_base_with_store_paths_left_out_still_gives_its_layers() {
    // includeStorePaths = false with fromImage: base layers, then the customisation layer.
    let sample = sample();
    let layers = base_layers();
    let base = put(&sample.fixture, "base.tar", &docker_archive(&base_config(&layers), &layers, &[0, 1, 2]));
    let mut attrs = on(&sample, &base);
    attrs["includeStorePaths"] = json!(false);
    let archive = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(archive.layers.len(), 4);
    assert_eq!(archive.layers[..3], layers[..]);
}
