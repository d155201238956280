//! `includeNixDB`: the Nix database of the closure of `contents` in the image (issue 11).

use crate::fixture::{file, read_docker_archive, read_tar, Fixture, TarEntry};
use crate::image::{sample, Sample};
use serde_json::json;
use std::collections::BTreeMap;

/// 2001-02-03T04:05:06Z, the sample's `mtime`.
const MTIME_UNIX: i64 = 981_173_106;

fn with_db(sample: &Sample) -> serde_json::Value {
    let mut attrs = sample.attrs();
    attrs["includeNixDB"] = json!(true);
    attrs
}

fn entries_by_name(layer: &[u8]) -> BTreeMap<String, TarEntry> {
    read_tar(layer).into_iter().map(|e| (e.name.clone(), e)).collect()
}

/// path, hash, registrationTime, narSize.
type PathRow = (String, String, i64, Option<i64>);

/// The ValidPaths rows (path, hash, registrationTime, narSize) and Refs (referrer path,
/// reference path) of a database file's bytes, read with SQLite.
fn read_db(fixture: &Fixture, bytes: &[u8]) -> (Vec<PathRow>, Vec<(String, String)>) {
    let file = fixture.dir.path().join("read.sqlite");
    std::fs::write(&file, bytes).unwrap();
    let db = rusqlite::Connection::open(&file).unwrap();
    let rows = db
        .prepare("select path, hash, registrationTime, narSize from ValidPaths order by id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    let refs = db
        .prepare(
            "select a.path, b.path from Refs join ValidPaths a on a.id = referrer join ValidPaths b on b.id = reference \
             order by a.path, b.path",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    drop(db);
    std::fs::remove_file(&file).unwrap();
    (rows, refs)
}

#[test]
fn the_customisation_layer_carries_the_database_and_gc_roots() {
    let mut sample = sample();
    // A path of the closure that no content refers to (as `config` would add): not registered.
    let other = sample.fixture.add_path("other", &[file("x", b"x", 0o444)], &[]);
    let mut attrs = with_db(&sample);
    attrs["closure"] = sample.fixture.closure();
    let image = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(image.layers.len(), 5, "libc, hello, tools, other, customisation");
    let entries = entries_by_name(image.layers.last().unwrap());
    // The contents' symlinks are still there, next to the database.
    assert_eq!(entries["bin/hello"].link.as_deref(), Some(format!("{}/bin/hello", sample.hello).as_str()));
    for dir in ["nix/", "nix/var/", "nix/var/nix/", "nix/var/nix/db/", "nix/var/nix/gcroots/", "nix/var/nix/gcroots/docker/"] {
        assert_eq!(entries[dir].kind, tar::EntryType::Directory, "{dir}");
    }
    assert_eq!(entries["nix/var/nix/db/schema"].data, b"10");
    for content in [&sample.hello, &sample.tools] {
        let base = content.rsplit('/').next().unwrap();
        let root = &entries[&format!("nix/var/nix/gcroots/docker/{base}")];
        assert_eq!((root.kind, root.link.as_deref()), (tar::EntryType::Symlink, Some(content.as_str())));
    }
    let db = &entries["nix/var/nix/db/db.sqlite"];
    assert_eq!((db.kind, db.mode, db.uid, db.mtime), (tar::EntryType::Regular, 0o644, 0, MTIME_UNIX as u64));
    let (rows, refs) = read_db(&sample.fixture, &db.data);
    let zero_hash = format!("sha256:{}", "0".repeat(64));
    let mut expected: Vec<_> = [(&sample.libc, 1000), (&sample.hello, 2000), (&sample.tools, 3000)]
        .into_iter()
        .map(|(p, size)| (p.clone(), zero_hash.clone(), MTIME_UNIX, Some(size)))
        .collect();
    expected.sort();
    assert_eq!(rows, expected, "the closure of contents, sorted, and not `{other}`");
    let mut expected_refs = vec![
        (sample.hello.clone(), sample.hello.clone()),
        (sample.hello.clone(), sample.libc.clone()),
        (sample.libc.clone(), sample.libc.clone()),
        (sample.tools.clone(), sample.libc.clone()),
        (sample.tools.clone(), sample.tools.clone()),
    ];
    expected_refs.sort();
    assert_eq!(refs, expected_refs, "references, self-references included as Nix keeps them");
}

#[test]
fn two_builds_give_the_same_bytes() {
    let sample = sample();
    let attrs = with_db(&sample);
    let first = sample.fixture.build(&attrs);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a clock in the file would show
    let second = sample.fixture.build(&attrs);
    assert!(first == second, "two builds with includeNixDB differ");
    let without = sample.fixture.build(&sample.attrs());
    assert!(first != without, "includeNixDB changed nothing");
}

#[test]
fn with_a_prebuilt_customisation_layer_the_database_is_one_more_layer() {
    let mut sample = sample();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "etc/motd", &b"hello\n"[..]).unwrap();
    let layer_tar = builder.into_inner().unwrap();
    let custom = sample.fixture.add_path("custom-layer", &[file("layer.tar", &layer_tar, 0o444)], &[&sample.hello]);
    let mut attrs = with_db(&sample);
    attrs["closure"] = sample.fixture.closure();
    attrs["customisationLayer"] = json!(custom);
    attrs["maxLayers"] = json!(4);
    let image = read_docker_archive(&sample.fixture.build(&attrs));
    assert_eq!(image.layers.len(), 4, "maxLayers counts the database layer: 2 store layers, prebuilt, database");
    assert!(image.layers[2] == layer_tar);
    let entries = entries_by_name(&image.layers[3]);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert!(names.contains(&"nix/var/nix/db/db.sqlite") && !names.contains(&"etc/motd"), "{names:?}");
    let (rows, _) = read_db(&sample.fixture, &entries["nix/var/nix/db/db.sqlite"].data);
    assert_eq!(rows.len(), 3, "the closure of contents, not the prebuilt layer's path");

    attrs["maxLayers"] = json!(2);
    let file = sample.fixture.write_attrs("small.json", &attrs);
    let output = sample.fixture.run(&["build", "--attrs", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("maxLayers") && stderr.contains("includeNixDB"), "{stderr}");
}

#[test]
fn a_content_providing_a_database_path_is_a_conflict_naming_it() {
    let mut sample = sample();
    let clash = sample.fixture.add_path("clash", &[file("nix/var/nix/db/schema", b"7", 0o444)], &[]);
    let mut attrs = with_db(&sample);
    attrs["closure"] = sample.fixture.closure();
    attrs["contents"] = json!([sample.hello, clash]);
    let file = sample.fixture.write_attrs("clash.json", &attrs);
    let output = sample.fixture.run(&["build", "--attrs", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("nix-layers: error: includeNixDB: `/nix/var/nix/db/schema`") && stderr.contains(&clash), "{stderr}");
}

#[test]
fn no_contents_gives_an_empty_database() {
    let sample = sample();
    let mut attrs = with_db(&sample);
    attrs["contents"] = json!([]);
    let image = read_docker_archive(&sample.fixture.build(&attrs));
    let entries = entries_by_name(image.layers.last().unwrap());
    assert!(entries.contains_key("nix/var/nix/gcroots/docker/"));
    let (rows, refs) = read_db(&sample.fixture, &entries["nix/var/nix/db/db.sqlite"].data);
    assert!(rows.is_empty() && refs.is_empty());
}

#[test]
fn a_missing_nar_hash_is_named() {
    let sample = sample();
    let mut attrs = with_db(&sample);
    attrs["closure"][0].as_object_mut().unwrap().remove("narHash");
    let file = sample.fixture.write_attrs("nohash.json", &attrs);
    let output = sample.fixture.run(&["build", "--attrs", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("includeNixDB") && stderr.contains(&sample.libc) && stderr.contains("narHash"), "{stderr}");
}
