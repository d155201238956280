//! Bad input, one test each: a clear error naming the key, path or value, a nonzero exit,
//! no panic, and nothing left at the out path or beside it.

use crate::fixture::{file, symlink_to, Fixture};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A closure that builds: `hello` refers to `libc`; contents = [hello].
pub(crate) fn small() -> (Fixture, Value) {
    let mut fixture = Fixture::new();
    let libc = fixture.add_path("libc", &[file("lib/libc.so", b"libc\n", 0o444)], &[]);
    let hello = fixture.add_path(
        "hello",
        &[file("bin/hello", b"#!/bin/sh\necho hello\n", 0o555), symlink_to("lib/libc", libc.clone())],
        &[&libc],
    );
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([hello]);
    (fixture, attrs)
}

/// The out directory holds nothing: no output, no temporary file.
pub(crate) fn assert_out_dir_empty(fixture: &Fixture) {
    let left: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind in the out directory: {left:?}");
}

/// Runs `args` and checks the failure; returns stderr.
pub(crate) fn fails(fixture: &Fixture, args: &[&str], fragments: &[&str]) -> String {
    let output = fixture.run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "nix-layers {} succeeded; stderr:\n{stderr}", args.join(" "));
    assert_eq!(output.status.code(), Some(1), "exit status of a handled error: {stderr}");
    assert!(!stderr.contains("panicked"), "nix-layers panicked:\n{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "stderr does not name `{fragment}`:\n{stderr}");
    }
    assert_out_dir_empty(fixture);
    stderr
}

/// `build` on `attrs` fails naming `fragments`, leaving nothing; `stream` and `plan`
/// fail too, and `stream` writes no byte to stdout (it cannot take bytes back).
pub(crate) fn build_fails(fixture: &Fixture, attrs: &Value, fragments: &[&str]) -> String {
    let file = fixture.write_attrs("bad.attrs.json", attrs);
    let file = file.to_str().unwrap();
    let stderr = fails(fixture, &["build", "--attrs", file], fragments);
    let stream = fixture.run(&["stream", "--attrs", file]);
    assert!(!stream.status.success(), "stream accepted what build refused");
    assert!(stream.stdout.is_empty(), "stream wrote {} bytes before failing", stream.stdout.len());
    fails(fixture, &["stream-script", "--attrs", file], fragments);
    stderr
}

#[test]
fn the_baseline_builds() {
    // Every case below breaks this one thing at a time.
    let (fixture, attrs) = small();
    assert!(!fixture.build(&attrs).is_empty());
}

#[test]
fn missing_attrs_file() {
    let (fixture, _) = small();
    let missing = fixture.dir.path().join("no-such.attrs.json");
    let out = fixture.out("image.tar");
    fails(&fixture, &["build", "--attrs", missing.to_str().unwrap(), "--out", out.to_str().unwrap()], &[missing.to_str().unwrap()]);
}

/// `build` on an attrs file holding `bytes` fails, naming the file and each of `expected`.
pub(crate) fn raw_attrs_fail(file_name: &str, bytes: &[u8], expected: &[&str]) {
    let (fixture, _) = small();
    let bad = fixture.dir.path().join(file_name);
    fs::write(&bad, bytes).unwrap();
    let out = fixture.out("image.tar");
    let mut wanted = vec![bad.to_str().unwrap()];
    wanted.extend_from_slice(expected);
    fails(&fixture, &["build", "--attrs", bad.to_str().unwrap(), "--out", out.to_str().unwrap()], &wanted);
}

#[test]
fn malformed_json() {
    raw_attrs_fail("bad.attrs.json", b"{\"name\": \"x\", \"closure\": [", &["not valid JSON"]);
}

#[test]
fn attrs_not_utf8() {
    raw_attrs_fail("latin1.attrs.json", b"{\"name\": \"caf\xe9\"}", &["not valid JSON", "not UTF-8 at byte 13"]);
}

#[test]
fn attrs_not_an_object() {
    raw_attrs_fail("list.attrs.json", b"[{\"name\": \"x\"}]", &["object", "list"]);
}

#[test]
fn missing_closure() {
    let (fixture, mut attrs) = small();
    attrs.as_object_mut().unwrap().remove("closure");
    build_fails(&fixture, &attrs, &["`closure`", "missing"]);
}

#[test]
fn missing_name() {
    let (fixture, mut attrs) = small();
    attrs.as_object_mut().unwrap().remove("name");
    build_fails(&fixture, &attrs, &["`name`", "missing"]);
}

#[test]
fn max_layers_as_a_string() {
    let (fixture, mut attrs) = small();
    attrs["maxLayers"] = json!("3");
    build_fails(&fixture, &attrs, &["`maxLayers`", "\"3\""]);
}

#[test]
fn contents_as_a_number() {
    let (fixture, mut attrs) = small();
    attrs["contents"] = json!(5);
    build_fails(&fixture, &attrs, &["`contents`", "5"]);
}

/// Found by this suite: `Attrs::parse` keeps every list-valued key in `attrs.lists`, and
/// `Attrs::get` looks only in `attrs.map`, so a list given for a non-list key reads as
/// absent and silently takes its default (here `config` becomes `{}`).
#[test]
fn config_as_a_list() {
    let (fixture, mut attrs) = small();
    attrs["config"] = json!(["Cmd", "/bin/sh"]);
    build_fails(&fixture, &attrs, &["`config`", "Cmd"]);
}

/// The same bug for every scalar key: each of these builds today with the default value.
#[test]
fn lists_for_scalar_keys() {
    for (key, value) in [
        ("maxLayers", json!([1])),
        ("compressor", json!(["bzip2"])),
        ("uid", json!([-1])),
        ("includeStorePaths", json!([false])),
        ("created", json!(["yesterday"])),
    ] {
        let (fixture, mut attrs) = small();
        attrs[key] = value;
        build_fails(&fixture, &attrs, &[&format!("`{key}`")]);
    }
}

#[test]
fn negative_uid() {
    let (fixture, mut attrs) = small();
    attrs["uid"] = json!(-1);
    build_fails(&fixture, &attrs, &["`uid`", "-1"]);
}

#[test]
fn include_store_paths_as_a_string() {
    let (fixture, mut attrs) = small();
    attrs["includeStorePaths"] = json!("yes");
    build_fails(&fixture, &attrs, &["`includeStorePaths`", "yes"]);
}

#[test]
fn created_not_rfc3339() {
    let (fixture, mut attrs) = small();
    attrs["created"] = json!("yesterday");
    build_fails(&fixture, &attrs, &["`created`", "yesterday"]);
}

#[test]
fn reference_cycle_names_its_paths() {
    let (mut fixture, _) = small();
    let x = fixture.store_path("cycle-x");
    let y = fixture.store_path("cycle-y");
    fixture.add_entry(&x, &[&y]);
    fixture.add_entry(&y, &[&x]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &["cycle", &x, &y]);
}

#[test]
fn reference_absent_from_the_graph_names_both() {
    let (mut fixture, _) = small();
    let ghost = fixture.store_path("not-in-graph");
    let referrer = fixture.store_path("referrer");
    fixture.add_entry(&referrer, &[&ghost]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &[&referrer, &ghost, "not in the closure graph"]);
}

#[test]
fn graph_path_outside_the_store_dir() {
    let (mut fixture, _) = small();
    let outside = format!("{}/elsewhere/{}-evil", fixture.dir.path().display(), crate::fixture::hash_for("evil"));
    fixture.add_entry(&outside, &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &[&outside, "store directory"]);
}

#[test]
fn graph_path_with_dot_dot() {
    let nested = format!("/{}-x/../../etc", crate::fixture::hash_for("x"));
    for escape in ["/../etc", nested.as_str(), "/.."] {
        let (mut fixture, _) = small();
        let path = format!("{}{escape}", fixture.store());
        fixture.add_entry(&path, &[]);
        let mut attrs = fixture.attrs();
        attrs["contents"] = json!([fixture.store_path("hello")]);
        build_fails(&fixture, &attrs, &[&path]);
    }
}

#[test]
fn contents_entry_with_dot_dot() {
    let (fixture, mut attrs) = small();
    let path = format!("{}/../store/{}-hello", fixture.store(), crate::fixture::hash_for("hello"));
    attrs["contents"] = json!([path]);
    build_fails(&fixture, &attrs, &["`contents[0]`", &path]);
}

#[test]
fn store_path_missing_on_disk() {
    let (mut fixture, _) = small();
    let ghost = fixture.store_path("ghost");
    fixture.add_entry(&ghost, &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &[&ghost, "missing"]);
}

#[test]
fn of_several_missing_store_paths_the_first_in_plan_order_is_named_whatever_the_threads() {
    let (mut fixture, _) = small();
    let ghosts: Vec<String> = (1..=6).map(|i| fixture.store_path(&format!("ghost{i}"))).collect();
    for ghost in &ghosts {
        fixture.add_entry(ghost, &[]);
    }
    let file = fixture.write_attrs("bad.attrs.json", &fixture.attrs());
    let file = file.to_str().unwrap();
    let one = fails(&fixture, &["build", "--attrs", file, "--threads", "1"], &["missing"]);
    let named: Vec<&String> = ghosts.iter().filter(|g| one.contains(g.as_str())).collect();
    assert_eq!(named.len(), 1, "the error names one missing path: {one}");
    for threads in ["2", "4", "16"] {
        let many = fails(&fixture, &["build", "--attrs", file, "--threads", threads], &["missing"]);
        assert_eq!(many, one, "--threads {threads} names another path than --threads 1");
    }
}

#[test]
fn special_file_in_a_store_path() {
    let (mut fixture, _) = small();
    let pipes = fixture.add_path("pipes", &[file("bin/tool", b"tool\n", 0o555)], &[]);
    let bin = Path::new(&pipes).join("bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = bin.join("a-fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o555)).unwrap();
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &[fifo.to_str().unwrap(), "fifo"]);
}

#[test]
fn max_layers_one() {
    let (fixture, mut attrs) = small();
    attrs["maxLayers"] = json!(1);
    build_fails(&fixture, &attrs, &["`maxLayers`", "1", "at least 2"]);
}

#[test]
fn max_layers_zero() {
    let (fixture, mut attrs) = small();
    attrs["maxLayers"] = json!(0);
    build_fails(&fixture, &attrs, &["`maxLayers`", "0", "at least 2"]);
}

#[test]
fn unknown_compressor() {
    let (fixture, mut attrs) = small();
    attrs["compressor"] = json!("bzip2");
    build_fails(&fixture, &attrs, &["`compressor`", "bzip2"]);
}

#[test]
fn conflicting_contents_name_both() {
    let (mut fixture, _) = small();
    let one = fixture.add_path("one", &[file("bin/same", b"1\n", 0o555), file("bin/only-one", b"1\n", 0o555)], &[]);
    let two = fixture.add_path("two", &[file("bin/same", b"2\n", 0o555)], &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([one, two]);
    build_fails(&fixture, &attrs, &["conflict", "bin/same", &one, &two]);
}

#[test]
fn contents_entry_not_in_the_closure() {
    let (fixture, mut attrs) = small();
    let stray = fixture.store_path("stray");
    fs::create_dir(&stray).unwrap();
    attrs["contents"] = json!([fixture.store_path("hello"), stray]);
    build_fails(&fixture, &attrs, &[&stray, "closure"]);
}

#[test]
fn malformed_nar_hash() {
    let (fixture, mut attrs) = small();
    attrs["closure"][1]["narHash"] = json!("sha256:not-a-hash");
    let hello = fixture.store_path("hello");
    build_fails(&fixture, &attrs, &["narHash", "sha256:not-a-hash", &hello]);
}

#[test]
fn path_listed_twice() {
    let (mut fixture, _) = small();
    let libc = fixture.store_path("libc");
    fixture.add_entry(&libc, &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([fixture.store_path("hello")]);
    build_fails(&fixture, &attrs, &[&libc, "twice"]);
}

#[test]
fn popularity_key_missing() {
    let (fixture, attrs) = small();
    let file = fixture.write_attrs("graph.json", &json!({ "closure": attrs["closure"] }));
    fails(&fixture, &["popularity", file.to_str().unwrap(), "nokey"], &["`nokey`", "missing"]);
    // Builder mode reads `graph`, which is missing too; outputs.out must stay empty.
    let builder = fixture.write_attrs("builder.json", &json!({
        "closure": attrs["closure"],
        "outputs": { "out": fixture.out("list").to_str().unwrap() },
    }));
    fails(&fixture, &["popularity", "--attrs", builder.to_str().unwrap()], &["`graph`"]);
}

#[test]
fn popularity_graph_with_a_cycle() {
    let (mut fixture, _) = small();
    let x = fixture.store_path("cycle-x");
    let y = fixture.store_path("cycle-y");
    fixture.add_entry(&x, &[&y]);
    fixture.add_entry(&y, &[&x]);
    let builder = fixture.write_attrs("builder.json", &json!({
        "graph": fixture.closure(),
        "outputs": { "out": fixture.out("list").to_str().unwrap() },
    }));
    fails(&fixture, &["popularity", "--attrs", builder.to_str().unwrap()], &["cycle", &x, &y]);
}

/// §7, a file that changes size while read: the tar header already promised its size.
/// Through the library, so that the change lands between scan and write.
mod changed_size {
    use super::*;
    use nix_layers::cache::LayerCache;
    use nix_layers::destination::hybrid_archive::write_archive;
    use nix_layers::attrs::Attrs;
    use nix_layers::output::AtomicFile;
    use nix_layers::pipeline::plan_image;
    use std::io::Write;

    /// Plans and scans the small image, runs `change` on `bin/hello`, then writes.
    fn write_after(change: impl FnOnce(&Path)) -> (Fixture, String, String) {
        let (fixture, attrs) = small();
        let file = fixture.write_attrs("attrs.json", &attrs);
        let store = fixture.store();
        let image = plan_image(&Attrs::read(&file).unwrap(), &store).unwrap();
        let layers = image.scan_layers(&store, 2).unwrap();
        let target = format!("{}/bin/hello", fixture.store_path("hello"));
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        change(Path::new(&target));
        // Into an atomic file, as `build` does: nothing may be left when it fails.
        let mut out = AtomicFile::create(&fixture.out("image.tar")).unwrap();
        let error = write_archive(out.writer(), &image.spec, &layers, 2, &LayerCache::disabled()).unwrap_err();
        drop(out);
        assert_out_dir_empty(&fixture);
        (fixture, target, format!("{error:#}"))
    }

    #[test]
    fn a_file_that_grew_is_an_error_naming_it() {
        let (_fixture, target, error) = write_after(|path| {
            fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"more bytes\n").unwrap();
        });
        assert!(error.contains(&target) && error.contains("changed size"), "{error}");
    }

    #[test]
    fn a_file_that_shrank_is_an_error_naming_it() {
        let (_fixture, target, error) = write_after(|path| {
            fs::OpenOptions::new().write(true).open(path).unwrap().set_len(3).unwrap();
        });
        assert!(error.contains(&target) && error.contains("changed size"), "{error}");
    }

    #[test]
    fn an_unchanged_file_writes_what_build_writes() {
        let (fixture, attrs) = small();
        let file = fixture.write_attrs("attrs.json", &attrs);
        let store = fixture.store();
        let image = plan_image(&Attrs::read(&file).unwrap(), &store).unwrap();
        let layers = image.scan_layers(&store, 2).unwrap();
        let mut bytes = Vec::new();
        write_archive(&mut bytes, &image.spec, &layers, 2, &LayerCache::disabled()).unwrap();
        assert!(bytes == fixture.build(&attrs), "the library and the binary disagree");
    }
}

#[test]
fn no_output_path() {
    let (fixture, mut attrs) = small();
    attrs.as_object_mut().unwrap().remove("outputs");
    let file = fixture.write_attrs("bad.attrs.json", &attrs);
    let stderr = fails(&fixture, &["build", "--attrs", file.to_str().unwrap()], &["--out", "outputs.out"]);
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    let left: Vec<_> = fs::read_dir(fixture.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "only store/, out/ and the attrs file: {left:?}");
}

#[test]
fn stdout_closed_early_is_not_a_panic() {
    // `nix-layers stream | head -c 1000`: the reader goes away mid-image.
    let (mut fixture, mut attrs) = small();
    // Far more than a pipe holds, so the writer is still writing when the reader leaves.
    fixture.add_path("big", &[file("lib/big", &vec![1u8; 8 << 20], 0o444)], &[]);
    attrs["closure"] = fixture.closure();
    let file = fixture.write_attrs("attrs.json", &attrs);
    let mut child = fixture
        .command(&["stream", "--attrs", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1000];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!output.status.success(), "a truncated stream must not report success");
}

#[test]
fn output_directory_missing() {
    let (fixture, attrs) = small();
    let file = fixture.write_attrs("attrs.json", &attrs);
    let target = fixture.dir.path().join("no-such-dir/image.tar");
    fails(&fixture, &["build", "--attrs", file.to_str().unwrap(), "--out", target.to_str().unwrap()], &[target.to_str().unwrap()]);
    assert!(!target.parent().unwrap().exists());
}

#[test]
fn negative_nar_size() {
    let (fixture, mut attrs) = small();
    attrs["closure"][0]["narSize"] = json!(-5);
    build_fails(&fixture, &attrs, &["closure[0].narSize", "-5", &fixture.store_path("libc")]);
}
