//! Stream scripts take verbs (issue 10 §6): `./result push …`, `./result oci oci:DIR`,
//! `./result plan`, … run the subcommand on the script's own attrs; `-t NAME:TAG` names the
//! image as nixpkgs' stream script does; `scriptArgs`/`scriptName` make the copyTo*
//! programs of the Nix side; `copy-to` maps skopeo's destinations to our subcommands.

use crate::determinism::busy_fixture;
use crate::fixture::{assert_success, files_of, read_docker_archive, read_tar, Fixture, BIN};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes a stream script of `attrs` to `out/<name>` with `stream-script`; returns its path.
fn script(fixture: &Fixture, attrs: &Value, name: &str) -> PathBuf {
    let mut attrs = attrs.clone();
    attrs["builder"] = json!(BIN);
    attrs["outputs"]["out"] = json!(fixture.out(name).to_str().unwrap());
    let file = fixture.write_attrs(&format!("{name}.attrs.json"), &attrs);
    fixture.run_ok(&["stream-script", "--attrs", file.to_str().unwrap()]);
    fixture.out(name)
}

/// Runs the script itself (the kernel reads its `#!` line) with `args`.
fn run_script(fixture: &Fixture, script: &Path, args: &[&str]) -> Output {
    Command::new(script)
        .args(args)
        .env("NIX_STORE", fixture.store())
        .env_remove("NIX_ATTRS_JSON_FILE")
        .env_remove("NIX_BUILD_TOP")
        .current_dir(fixture.dir.path())
        .output()
        .unwrap()
}

fn run_script_ok(fixture: &Fixture, script: &Path, args: &[&str]) -> Vec<u8> {
    let output = run_script(fixture, script, args);
    assert_success(&output, &[&[script.to_str().unwrap()], args].concat());
    output.stdout
}

/// Fails, with exit status 1 or 2 (clap's usage errors), stderr naming every fragment,
/// nothing on stdout.
fn assert_fails(output: &Output, what: &str, fragments: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what} succeeded; stderr:\n{stderr}");
    assert!(matches!(output.status.code(), Some(1 | 2)), "{what}: exit status {:?}", output.status);
    for fragment in fragments {
        assert!(stderr.contains(fragment), "{what}: stderr lacks {fragment:?}:\n{stderr}");
    }
    assert!(output.stdout.is_empty(), "{what} wrote {} bytes to stdout", output.stdout.len());
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
}

/// The `org.opencontainers.image.ref.name` tags of an OCI layout's index.
fn layout_tags(dir: &Path) -> Vec<String> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_script_runs_the_oci_verb_on_its_own_image() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let by_script = fixture.dir.path().join("by-script");
    let by_hand = fixture.dir.path().join("by-hand");
    let stdout = run_script_ok(&fixture, &script, &["oci", &format!("oci:{}:v1", by_script.display())]);
    assert!(stdout.is_empty(), "`./result oci` wrote to stdout");
    fixture.run_ok(&["oci", "--attrs", script.to_str().unwrap(), &format!("oci:{}:v1", by_hand.display())]);
    assert!(files_of(&by_script) == files_of(&by_hand), "`./result oci oci:DIR` differs from `nix-layers oci --attrs ./result oci:DIR`");
    assert_eq!(layout_tags(&by_script), ["v1"]);

    // Options after the verb are the verb's: zstd blobs, same as by hand.
    let zstd_script = fixture.dir.path().join("zstd-script");
    let zstd_hand = fixture.dir.path().join("zstd-hand");
    run_script_ok(&fixture, &script, &["oci", "--compression-format", "zstd", &format!("oci:{}", zstd_script.display())]);
    fixture.run_ok(&[
        "oci",
        "--attrs",
        script.to_str().unwrap(),
        "--compression-format",
        "zstd",
        &format!("oci:{}", zstd_hand.display()),
    ]);
    assert!(files_of(&zstd_script) == files_of(&zstd_hand));
    assert!(files_of(&zstd_script) != files_of(&by_script), "--compression-format zstd after the verb was ignored");
    // No tag in DEST: the image's own.
    assert_eq!(layout_tags(&zstd_script), ["latest"]);
}

#[test]
fn without_a_verb_the_script_still_writes_the_archive() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let plain = run_script_ok(&fixture, &script, &[]);
    let by_hand = fixture.run_ok(&["stream", "--attrs", script.to_str().unwrap()]);
    assert!(plain == by_hand);
    let threads = run_script_ok(&fixture, &script, &["--threads", "1"]);
    assert!(threads == plain, "`./result --threads 1` differs");
}

#[test]
fn plan_and_build_are_verbs_too() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let plan = run_script_ok(&fixture, &script, &["plan", "--json"]);
    let by_hand = fixture.run_ok(&["plan", "--json", "--attrs", script.to_str().unwrap()]);
    assert_eq!(String::from_utf8(plan).unwrap(), String::from_utf8(by_hand).unwrap());

    // `--attrs FILE VERB`: the first word after --attrs is the verb, not a file.
    let out = fixture.out("image.tar");
    fixture.run_ok(&["stream", "--attrs", script.to_str().unwrap(), "build", "--out", out.to_str().unwrap()]);
    // The fixture's attrs say `compressor = "none"`: the archive `./result` streams.
    assert!(fs::read(&out).unwrap() == run_script_ok(&fixture, &script, &[]), "`build` through a script differs");
}

#[test]
fn forwarded_threads_give_the_same_layout() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let one = fixture.dir.path().join("one");
    let four = fixture.dir.path().join("four");
    run_script_ok(&fixture, &script, &["--threads", "1", "oci", &format!("oci:{}", one.display())]);
    run_script_ok(&fixture, &script, &["--threads", "4", "oci", &format!("oci:{}", four.display())]);
    assert!(files_of(&one) == files_of(&four));
}

#[test]
fn repo_tag_names_the_image_in_the_archive() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let plain = read_docker_archive(&run_script_ok(&fixture, &script, &[]));
    assert_eq!(plain.manifest[0]["RepoTags"], json!(["test-image:latest"]));
    for (args, repo_tag, tag) in [
        (&["-t", "other/name:v2"][..], "other/name:v2", "v2"),
        (&["--repo-tag", "localhost:5000/app:1.0"][..], "localhost:5000/app:1.0", "1.0"),
        (&["--repo_tag", "x:y"][..], "x:y", "y"),
    ] {
        let bytes = run_script_ok(&fixture, &script, args);
        let image = read_docker_archive(&bytes);
        assert_eq!(image.manifest[0]["RepoTags"], json!([repo_tag]), "{args:?}");
        let index: Value = serde_json::from_slice(&image.files["index.json"]).unwrap();
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(annotations["io.containerd.image.name"], repo_tag, "{args:?}");
        assert_eq!(annotations["org.opencontainers.image.ref.name"], tag, "{args:?}");
        // Only the name changes: the same layers and config.
        assert_eq!(image.manifest[0]["Config"], plain.manifest[0]["Config"]);
        assert_eq!(image.manifest[0]["Layers"], plain.manifest[0]["Layers"]);
    }
    // `stream --attrs` takes it too.
    let bytes = fixture.run_ok(&["stream", "-t", "by/hand:t", "--attrs", script.to_str().unwrap()]);
    assert_eq!(read_docker_archive(&bytes).manifest[0]["RepoTags"], json!(["by/hand:t"]));
}

#[test]
fn bad_repo_tags_are_refused_naming_the_part() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    for (value, fragments) in [
        ("noTag", &["\"noTag\" has no tag", "NAME:TAG"][..]),
        ("app", &["has no tag", "app:latest"][..]),
        ("Upper:v1", &["name \"Upper\"", "'U'"][..]),
        ("app:bad tag", &["tag \"bad tag\"", "' '"][..]),
        ("app:", &["the tag is empty"][..]),
        (":v1", &["the image name is empty"][..]),
        ("a//b:v1", &["empty part"][..]),
        ("app@sha256:0000", &["digest"][..]),
        ("app:.v1", &["must start with"][..]),
    ] {
        let output = run_script(&fixture, &script, &["-t", value]);
        assert_fails(&output, &format!("-t {value:?}"), &[&["--repo-tag"], fragments].concat());
    }
    // Given before a verb that names the image in its destination: an error, not ignored.
    let output = run_script(&fixture, &script, &["-t", "a:b", "oci", "oci:x"]);
    assert_fails(&output, "-t before oci", &["--repo-tag a:b", "`oci`"]);
    assert!(!fixture.dir.path().join("x").exists());
}

#[test]
fn unknown_verbs_and_destinations_are_named() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let output = run_script(&fixture, &script, &["frobnicate", "x"]);
    assert_fails(&output, "unknown verb", &["`frobnicate` is not a verb", "push", "oci", "copy-to"]);
    let output = run_script(&fixture, &script, &["stream-script"]);
    assert_fails(&output, "stream-script as a verb", &["`stream-script` is not a verb"]);
    // A destination given without a verb is not a verb either.
    let output = run_script(&fixture, &script, &["docker://localhost:5000/x"]);
    assert_fails(&output, "a bare destination", &["`docker://localhost:5000/x` is not a verb"]);
    // The verb's own errors come through (clap's, naming the argument).
    let output = run_script(&fixture, &script, &["oci", "--no-such-option", "oci:x"]);
    assert_fails(&output, "an unknown option of the verb", &["--no-such-option"]);
    let output = run_script(&fixture, &script, &["copy-to", "dir:/tmp/x"]);
    assert_fails(&output, "an unknown transport", &["`dir:/tmp/x`", "docker://", "oci:", "docker-daemon:"]);
}

#[test]
fn help_lists_the_verbs() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let output = run_script(&fixture, &script, &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for fragment in ["./result push docker://", "./result oci oci:DIR", "./result load docker|podman", "-t, --repo-tag <NAME:TAG>", "Verbs: build, oci, push, copy-to, load, plan"] {
        assert!(help.contains(fragment), "`./result --help` lacks {fragment:?}:\n{help}");
    }
    // After a verb, --help is the verb's.
    let output = run_script(&fixture, &script, &["push", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--creds <USER:PASS>"), "`./result push --help`:\n{help}");
}

#[test]
fn copy_to_maps_skopeo_destinations() {
    let (fixture, attrs) = busy_fixture();
    let script = script(&fixture, &attrs, "stream-image");
    let by_copy = fixture.dir.path().join("by-copy");
    let by_oci = fixture.dir.path().join("by-oci");
    run_script_ok(&fixture, &script, &["copy-to", &format!("oci:{}:t", by_copy.display()), "--compression-format", "none"]);
    run_script_ok(&fixture, &script, &["oci", "--compression-format", "none", &format!("oci:{}:t", by_oci.display())]);
    assert!(files_of(&by_copy) == files_of(&by_oci));
    let archive = fixture.dir.path().join("image.oci.tar");
    fixture.run_ok(&["copy-to", "--attrs", script.to_str().unwrap(), &format!("oci-archive:{}", archive.display())]);
    let names: Vec<String> = read_tar(&fs::read(&archive).unwrap()).into_iter().map(|e| e.name).collect();
    assert!(names.iter().any(|n| n == "index.json"), "oci-archive: {names:?}");
    // docker://: push, whose own checks run (a digest is refused before any connection).
    let output = run_script(&fixture, &script, &["copy-to", "docker://localhost:5000/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"]);
    assert_fails(&output, "copy-to docker://…@digest", &["push takes a tag, not a digest"]);
}

/// A script with `scriptArgs` and `scriptName`: what copyToRegistry and friends are.
fn preset_script(fixture: &Fixture, attrs: &Value, name: &str, args: &[&str]) -> PathBuf {
    let mut attrs = attrs.clone();
    attrs["scriptName"] = json!(name);
    attrs["scriptArgs"] = json!(args);
    let dir = script(fixture, &attrs, "copy");
    dir.join("bin").join(name)
}

#[test]
fn script_args_come_before_the_users() {
    let (fixture, attrs) = busy_fixture();
    let dest = fixture.dir.path().join("preset");
    let program = preset_script(&fixture, &attrs, "copy-to-oci", &["oci", &format!("oci:{}:preset", dest.display())]);
    let mode = fs::metadata(&program).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o555, "the program is executable");
    let entries: Vec<_> = fs::read_dir(fixture.out("copy")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["bin"], "$out holds bin/ only");
    run_script_ok(&fixture, &program, &["--compression-format", "zstd"]);
    let by_hand = fixture.dir.path().join("by-hand");
    fixture.run_ok(&[
        "oci",
        "--compression-format",
        "zstd",
        "--attrs",
        program.to_str().unwrap(),
        &format!("oci:{}:preset", by_hand.display()),
    ]);
    assert!(files_of(&dest) == files_of(&by_hand), "preset args + the user's differ from the same command by hand");

    // copyTo: `copy-to` alone, DEST from the user.
    let copy_to = preset_script(&fixture, &attrs, "copy-to", &["copy-to"]);
    let dest = fixture.dir.path().join("copy-to");
    run_script_ok(&fixture, &copy_to, &[&format!("oci:{}", dest.display())]);
    assert_eq!(layout_tags(&dest), ["latest"]);
    // Missing DEST: copy-to's own usage error.
    let output = run_script(&fixture, &copy_to, &[]);
    assert_fails(&output, "copy-to without DEST", &["<DEST>"]);
}

#[test]
fn stream_script_refuses_bad_preset_keys() {
    let (fixture, attrs) = busy_fixture();
    for (key, value, fragments) in [
        ("scriptArgs", json!(["teleport", "x"]), &["key `scriptArgs`", "\"teleport\" is not a verb"][..]),
        ("scriptArgs", json!("push"), &["key `scriptArgs`", "expected a list of strings"][..]),
        ("scriptArgs", json!(["push", 1]), &["key `scriptArgs`", "expected a list of strings"][..]),
        ("scriptName", json!("a/b"), &["key `scriptName`", "\"a/b\" is not a file name"][..]),
        ("scriptName", json!(".."), &["key `scriptName`"][..]),
        ("scriptName", json!(7), &["key `scriptName`", "expected a file name"][..]),
    ] {
        let mut attrs = attrs.clone();
        attrs[key] = value.clone();
        attrs["builder"] = json!(BIN);
        attrs["outputs"]["out"] = json!(fixture.out("bad").to_str().unwrap());
        let file = fixture.write_attrs("bad.attrs.json", &attrs);
        let output = fixture.run(&["stream-script", "--attrs", file.to_str().unwrap()]);
        assert_fails(&output, &format!("{key} = {value}"), fragments);
        assert!(!fixture.out("bad").exists(), "{key} = {value}: an output was left");
    }
}
