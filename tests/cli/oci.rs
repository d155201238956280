//! `nix-layers oci`: OCI image layouts (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`) with
//! gzip, zstd or uncompressed layer blobs, checked with independent readers (the `tar`,
//! `flate2` and `zstd` crates, SHA-256 of every blob).

use crate::determinism::busy_fixture;
use crate::fixture::{files_of, read_tar, sha256_hex, Files, Fixture};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

const FORMATS: [(&str, &str); 3] = [
    ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("none", "application/vnd.oci.image.layer.v1.tar"),
];

/// Runs `oci` with `args` then `dest` on the attrs of `fixture`.
fn oci(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str) {
    let file = fixture.write_attrs("oci.attrs.json", attrs);
    let mut all = vec!["oci", "--attrs", file.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(dest);
    fixture.run_ok(&all);
}

fn decompress(format: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        "gzip" => flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap(),
        "zstd" => zstd::stream::read::Decoder::new(bytes).unwrap().read_to_end(&mut out).unwrap(),
        _ => return bytes.to_vec(),
    };
    out
}

/// Checks a layout's files: `oci-layout`, every blob named by its SHA-256, the index
/// entry tagged `tag`, its manifest, config, layer media types and sizes, and diff_ids =
/// SHA-256 of the decompressed layers. Returns the manifest.
fn check_layout(files: &BTreeMap<String, Vec<u8>>, tag: &str, format: &str, media_type: &str) -> Value {
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (name, data) in files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_hex(data), hex, "blob `{name}` is not named by its digest");
        } else {
            assert!(["oci-layout", "index.json"].contains(&name.as_str()), "unexpected file `{name}`");
        }
    }
    let blob = |descriptor: &Value| -> &Vec<u8> {
        let digest = descriptor["digest"].as_str().unwrap();
        let data = &files[&format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())];
        assert_eq!(descriptor["size"], data.len(), "size of {digest}");
        data
    };
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let tagged: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(tagged.len(), 1, "one manifest tagged `{tag}`: {index}");
    assert_eq!(tagged[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let manifest: Value = serde_json::from_slice(blob(tagged[0])).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config: Value = serde_json::from_slice(blob(&manifest["config"])).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers.len() > 2, "{manifest}");
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|layer| {
            assert_eq!(layer["mediaType"], media_type);
            let tar = decompress(format, blob(layer));
            assert!(!read_tar(&tar).is_empty() || tar.len() == 1024, "a layer is a tar");
            format!("sha256:{}", sha256_hex(&tar))
        })
        .collect();
    assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids));
    if format == "none" {
        assert_eq!(layers.iter().map(|l| &l["digest"]).collect::<Vec<_>>(), diff_ids.iter().collect::<Vec<_>>());
    }
    manifest
}

#[test]
fn oci_dir_is_a_valid_layout_for_each_compression_format() {
    let (fixture, attrs) = busy_fixture();
    for (format, media_type) in FORMATS {
        let dir = fixture.out(&format!("layout-{format}"));
        oci(&fixture, &attrs, &["--compression-format", format], &format!("oci:{}:t1", dir.display()));
        check_layout(&files_of(&dir), "t1", format, media_type);
    }
}

/// The layers' digests and the config's digest named in the manifest tagged `tag`.
fn layer_and_config_digests(dir: &Path, tag: &str, format: &str, media_type: &str) -> (Vec<String>, String) {
    let manifest = check_layout(&files_of(dir), tag, format, media_type);
    let layers = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    (layers, manifest["config"]["digest"].as_str().unwrap().to_string())
}

#[test]
fn compression_level_changes_the_blobs_not_the_image() {
    let (fixture, attrs) = busy_fixture();
    for (format, media_type, levels) in [("gzip", FORMATS[0].1, ["1", "9"]), ("zstd", FORMATS[1].1, ["1", "19"])] {
        // One directory and one layer cache for every level: a blob compressed at one
        // level must not stand in for another's.
        let dir = fixture.out(&format!("levels-{format}"));
        oci(&fixture, &attrs, &["--compression-format", format], &format!("oci:{}:default", dir.display()));
        let (default_layers, config) = layer_and_config_digests(&dir, "default", format, media_type);
        for level in levels {
            for threads in ["1", "2"] {
                let args = ["--compression-format", format, "--compression-level", level, "--threads", threads];
                oci(&fixture, &attrs, &args, &format!("oci:{}:l{level}-t{threads}", dir.display()));
            }
            // check_layout decompresses every layer and checks it against the config's diff_ids.
            let (layers, level_config) = layer_and_config_digests(&dir, &format!("l{level}-t1"), format, media_type);
            assert_eq!(level_config, config, "{format} {level}: the image (its config) does not depend on the level");
            assert!(layers.iter().zip(&default_layers).any(|(a, b)| a != b), "{format} {level}: the default level's blobs were reused");
            let (again, _) = layer_and_config_digests(&dir, &format!("l{level}-t2"), format, media_type);
            assert_eq!(again, layers, "{format} {level}: the blobs depend on the thread count");
        }
    }
}

#[test]
fn a_compression_level_out_of_range_is_refused_before_anything_is_written() {
    let (fixture, attrs) = busy_fixture();
    let file = fixture.write_attrs("oci.attrs.json", &attrs);
    for (format, level, expected) in [
        ("gzip", "0", "gzip levels are 1 to 9"),
        ("gzip", "10", "gzip levels are 1 to 9"),
        ("zstd", "20", "zstd levels are 1 to 19"),
        ("none", "1", "uncompressed layers have no level"),
    ] {
        let dir = fixture.out(&format!("refused-{format}-{level}"));
        let dest = format!("oci:{}", dir.display());
        let out = fixture.run(&["oci", "--attrs", file.to_str().unwrap(), "--compression-format", format, "--compression-level", level, &dest]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format} {level}: {stderr}");
        assert!(stderr.contains(&format!("--compression-level {level}: {expected}")), "{format} {level}: {stderr}");
        assert!(!dir.exists(), "{format} {level}: the layout was created");
    }
}

#[test]
fn the_tag_defaults_to_the_images_and_the_config_is_the_archives() {
    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    oci(&fixture, &attrs, &[], &format!("oci:{}", dir.display()));
    let manifest = check_layout(&files_of(&dir), "latest", "gzip", FORMATS[0].1);
    let archive = crate::fixture::read_docker_archive(&fixture.build(&attrs));
    assert_eq!(
        manifest["config"]["digest"],
        format!("sha256:{}", sha256_hex(&archive.files[&archive.config_name])),
        "the same config, hence the same image id, whatever the destination"
    );
}

#[test]
fn oci_output_is_reproducible_across_runs_and_thread_counts() {
    let (fixture, attrs) = busy_fixture();
    for (format, _) in FORMATS {
        // (threads, the directory's files, the archive's bytes) of each run
        let mut seen: Vec<(String, Files, Vec<u8>)> = Vec::new();
        for (run, threads) in ["1", "2", "8", "8"].iter().enumerate() {
            let dir = fixture.out(&format!("{format}-{run}"));
            let file = fixture.out(&format!("{format}-{run}.tar"));
            let args = ["--compression-format", format, "--threads", threads];
            oci(&fixture, &attrs, &args, &format!("oci:{}:x", dir.display()));
            oci(&fixture, &attrs, &args, &format!("oci-archive:{}:x", file.display()));
            seen.push((threads.to_string(), files_of(&dir), fs::read(&file).unwrap()));
        }
        for (threads, files, archive) in &seen[1..] {
            assert!(*files == seen[0].1, "{format}: oci:DIR differs between --threads 1 and {threads}");
            assert!(*archive == seen[0].2, "{format}: oci-archive differs between --threads 1 and {threads}");
        }
    }
}

#[test]
fn oci_archive_holds_the_same_layout_as_oci_dir() {
    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    let file = fixture.out("image.oci.tar");
    oci(&fixture, &attrs, &["--compression-format", "zstd"], &format!("oci:{}:t", dir.display()));
    oci(&fixture, &attrs, &["--compression-format", "zstd"], &format!("oci-archive:{}:t", file.display()));
    let entries = read_tar(&fs::read(&file).unwrap());
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(&names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
    assert_eq!(names.last(), Some(&"index.json"), "the index last");
    let in_tar: BTreeMap<String, Vec<u8>> =
        entries.into_iter().filter(|e| e.kind == tar::EntryType::Regular).map(|e| (e.name, e.data)).collect();
    assert!(in_tar == files_of(&dir), "the archive's files are the directory's");
    let leftovers: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary directory left: {leftovers:?}");
}

#[test]
fn a_second_tag_in_the_same_layout_keeps_the_first_and_a_same_tag_replaces_it() {
    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    let dest = |tag: &str| format!("oci:{}:{tag}", dir.display());
    oci(&fixture, &attrs, &[], &dest("one"));
    let mut other = attrs.clone();
    other["config"] = json!({ "Env": ["CHANGED=1"] });
    oci(&fixture, &other, &["--compression-format", "none"], &dest("two"));
    let files = files_of(&dir);
    let one = check_layout(&files, "one", "gzip", FORMATS[0].1);
    let two = check_layout(&files, "two", "none", FORMATS[2].1);
    assert_ne!(one["config"], two["config"]);
    // Writing `one` again with another config replaces its entry; `two` stays.
    oci(&fixture, &other, &[], &dest("one"));
    let files = files_of(&dir);
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let tags: Vec<&str> =
        index["manifests"].as_array().unwrap().iter().map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap()).collect();
    assert_eq!(tags, ["two", "one"]);
    assert_eq!(check_layout(&files, "one", "gzip", FORMATS[0].1)["config"], two["config"]);
}

#[test]
fn bad_destinations_are_refused_naming_them() {
    let (fixture, attrs) = busy_fixture();
    let file = fixture.write_attrs("oci.attrs.json", &attrs);
    let not_layout = fixture.out("mine");
    fs::create_dir(&not_layout).unwrap();
    fs::write(not_layout.join("notes.txt"), "keep").unwrap();
    let cases = [
        ("docker://example.com/x".to_string(), "unknown transport `docker:`"),
        ("oci:".to_string(), "names no path"),
        (format!("oci:{}:", fixture.out("d").display()), "the tag `` is empty"),
        ("just-a-dir".to_string(), "is not `oci:DIR[:TAG]`"),
        (format!("oci:{}", not_layout.display()), "is not empty and is not an OCI layout"),
    ];
    for (dest, message) in cases {
        let output = fixture.run(&["oci", "--attrs", file.to_str().unwrap(), &dest]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{dest}: {stderr}");
        assert!(stderr.starts_with("nix-layers: error: ") && stderr.contains(message), "{dest}: {stderr}");
    }
    assert_eq!(files_of(&not_layout).len(), 1, "a directory that is not a layout is left alone");
}

/// A store file that grows between scan and write fails the run; the layout keeps its
/// index as it was (no tag to missing blobs), no temporary file is left, and an
/// `oci-archive` leaves nothing at all.
#[test]
fn a_failed_write_never_leaves_a_broken_index_or_temporary_files() {
    use nix_layers::archive::write_image;
    use nix_layers::cache::LayerCache;
    use nix_layers::attrs::{Attrs, Compressor};
    use nix_layers::compress::Compression;
    use nix_layers::destination::oci_layout::{OciArchive, OciLayout};
    use nix_layers::pipeline::plan_image;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    oci(&fixture, &attrs, &[], &format!("oci:{}:one", dir.display()));
    let before = files_of(&dir);
    let file = fixture.write_attrs("lib.attrs.json", &attrs);
    let store = fixture.store();
    let image = plan_image(&Attrs::read(&file).unwrap(), &store).unwrap();
    let layers = image.scan_layers(&store, 2).unwrap();
    // The last store path's file: its layer comes late, after other blobs are written.
    let target = format!("{}/bin/run", fixture.store_path("pkg11"));
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    fs::OpenOptions::new().append(true).open(&target).unwrap().write_all(b"more\n").unwrap();

    let mut layout = OciLayout::open(&dir, "two", Compression::default_for(Compressor::Gz), 2, LayerCache::disabled()).unwrap();
    let error = format!("{:#}", write_image(&mut layout, &image.spec, &layers, 2, &LayerCache::disabled()).unwrap_err());
    drop(layout);
    assert!(error.contains(&target) && error.contains("changed size"), "{error}");
    let after = files_of(&dir);
    assert!(after["index.json"] == before["index.json"], "the index is untouched");
    for name in after.keys() {
        assert!(name == "oci-layout" || name == "index.json" || name.strip_prefix("blobs/sha256/").is_some_and(|h| h.len() == 64), "left: {name}");
    }

    let archive = fixture.out("image.oci.tar");
    let mut destination = OciArchive::create(&archive, "two", Compression::default_for(Compressor::Zstd), 2, LayerCache::disabled()).unwrap();
    assert!(write_image(&mut destination, &image.spec, &layers, 2, &LayerCache::disabled()).is_err());
    drop(destination);
    let left: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["layout"], "nothing left of the archive");
}
