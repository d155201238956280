//! The layer cache (`$XDG_CACHE_HOME/nix-layers`): a layer a destination already has is
//! not read at all; `--no-cache`, a store path without narHash, a corrupt entry and a Nix
//! build each make the layers be read again; the image is the same bytes either way.

use crate::determinism::busy_fixture;
use crate::fixture::{file, make_writable, Fixture};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Runs `oci [args] oci:<dir>` on `attrs`; returns stderr.
fn oci_into(fixture: &Fixture, attrs: &Value, dir: &Path, args: &[&str]) -> String {
    let attrs_file = fixture.write_attrs("cache.attrs.json", attrs);
    let dest = format!("oci:{}", dir.display());
    let mut all = vec!["oci", "--attrs", attrs_file.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(&dest);
    let output = fixture.command(&all).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "oci failed: {stderr}");
    stderr
}

fn skipped(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("present, not read")).count()
}

/// Overwrites the first store file named `data.bin` with other bytes of the same size,
/// behind Nix's back: a run that reads it writes another blob.
fn tamper(fixture: &Fixture) {
    let store = Path::new(&fixture.store()).to_path_buf();
    let mut paths: Vec<_> = fs::read_dir(&store).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let target = paths[0].join("lib/data.bin");
    make_writable(&paths[0]);
    make_writable(&paths[0].join("lib"));
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let len = fs::metadata(&target).unwrap().len() as usize;
    fs::write(&target, vec![b'x'; len]).unwrap();
    // Modes back as they were: they are in the tar headers, hence in the cache key.
    fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(paths[0].join("lib"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(&paths[0], fs::Permissions::from_mode(0o555)).unwrap();
}

fn index(dir: &Path) -> Vec<u8> {
    fs::read(dir.join("index.json")).unwrap()
}

#[test]
fn a_second_export_reads_no_layer_and_writes_the_same_image() {
    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    let first = oci_into(&fixture, &attrs, &dir, &[]);
    assert_eq!(skipped(&first), 0, "{first}");
    let layers = first.lines().filter(|l| l.contains(": layer ")).count();
    assert!(layers >= 3, "{first}");
    let before = index(&dir);

    // Every layer's bytes are known and in the layout: none is read, even a changed one.
    tamper(&fixture);
    let second = oci_into(&fixture, &attrs, &dir, &["--threads", "1"]);
    assert_eq!(skipped(&second), layers, "every layer should be skipped:\n{second}");
    assert_eq!(index(&dir), before);

    // --no-cache reads every layer: the tampered file now changes a blob and the image.
    let third = oci_into(&fixture, &attrs, &dir, &["--no-cache"]);
    assert_eq!(skipped(&third), 0, "{third}");
    assert_ne!(index(&dir), before, "--no-cache should have read the changed file");
}

#[test]
fn paths_without_nar_hash_are_always_read() {
    let (fixture, mut attrs) = busy_fixture();
    for entry in attrs["closure"].as_array_mut().unwrap() {
        entry.as_object_mut().unwrap().remove("narHash");
    }
    let dir = fixture.out("layout");
    oci_into(&fixture, &attrs, &dir, &[]);
    let second = oci_into(&fixture, &attrs, &dir, &[]);
    // Only the customisation layer (symlinks, no file read) can be vouched for.
    assert!(skipped(&second) <= 1, "store layers without narHash were skipped:\n{second}");
}

#[test]
fn a_corrupt_cache_costs_a_read_not_a_wrong_image() {
    let (fixture, attrs) = busy_fixture();
    let dir = fixture.out("layout");
    oci_into(&fixture, &attrs, &dir, &[]);
    let before = index(&dir);
    let layers_dir = fixture.cache_dir().join("nix-layers/v1/layers");
    let mut corrupted = 0;
    for entry in fs::read_dir(&layers_dir).unwrap() {
        fs::write(entry.unwrap().path(), b"{\"diff_id\": \"sha256:12").unwrap();
        corrupted += 1;
    }
    assert!(corrupted >= 3);
    let second = oci_into(&fixture, &attrs, &dir, &[]);
    assert_eq!(skipped(&second), 0, "{second}");
    assert_eq!(index(&dir), before);
    // And the entries are whole again: a third run skips everything.
    let third = oci_into(&fixture, &attrs, &dir, &[]);
    assert_eq!(skipped(&third), corrupted, "{third}");
}

#[test]
fn no_cache_inside_a_nix_build() {
    let (fixture, attrs) = busy_fixture();
    let attrs_file = fixture.write_attrs("nix.attrs.json", &attrs);
    let dir = fixture.out("layout");
    let dest = format!("oci:{}", dir.display());
    for _ in 0..2 {
        let output = fixture
            .command(&["oci", "--attrs", attrs_file.to_str().unwrap(), &dest])
            .env("HOME", "/homeless-shelter")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(skipped(&stderr), 0, "{stderr}");
    }
    assert!(!fixture.cache_dir().exists(), "a Nix build wrote the layer cache");
    // `build` never uses it either.
    fixture.build(&attrs);
    assert!(!fixture.cache_dir().exists(), "`build` wrote the layer cache");
}

#[test]
fn stream_records_layers_for_later_runs() {
    let mut fixture = Fixture::new();
    let app = fixture.add_path("app", &[file("bin/app", b"#!/bin/sh\necho hi\n", 0o555)], &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([app]);
    let attrs_file = fixture.write_attrs("stream.attrs.json", &attrs);
    fixture.run_ok(&["stream", attrs_file.to_str().unwrap()]);
    let entries = fs::read_dir(fixture.cache_dir().join("nix-layers/v1/layers")).unwrap().count();
    assert_eq!(entries, 2, "one store layer and the customisation layer");
}
