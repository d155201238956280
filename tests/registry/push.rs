//! `nix-layers push` (the real binary) of a fixture store's image to a real registry:
//! checked by `skopeo copy … oci:` (every digest verified) and against `nix-layers oci`'s
//! blobs; a second push uploads nothing; a changed store path uploads its layer and the
//! config only; wrong credentials fail naming the registry.

use crate::fixture::{file, Fixture, BIN};
use crate::harness::{self, Mode, Registry};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Four store paths in a chain, each its own layer, plus the customisation layer.
fn small_image() -> (Fixture, Value) {
    let mut fixture = Fixture::new();
    let mut previous: Vec<String> = Vec::new();
    for i in 0..4u8 {
        let data: Vec<u8> = (0..20_000u32).map(|n| (n.wrapping_mul(31) ^ u32::from(i)) as u8).collect();
        let refs: Vec<&str> = previous.iter().map(String::as_str).collect();
        let path = fixture.add_path(
            &format!("pkg{i}"),
            &[file("lib/data.bin", &data, 0o444), file("bin/run", format!("#!/bin/sh\necho {i}\n").as_bytes(), 0o555)],
            &refs,
        );
        previous.push(path);
    }
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([previous.last().unwrap()]);
    attrs["maxLayers"] = json!(10);
    (fixture, attrs)
}

/// Runs `nix-layers push --attrs … ARGS DEST`, with no auth file of this machine's user
/// and `$TMPDIR` in the fixture (checked empty afterwards: no temporary file is left).
fn push(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str) -> Output {
    let file = fixture.write_attrs("push.attrs.json", attrs);
    let tmp = fixture.dir.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(BIN)
        .arg("push")
        .arg("--attrs")
        .arg(&file)
        .args(args)
        .arg(dest)
        .env("NIX_STORE", fixture.store())
        .env("TMPDIR", &tmp)
        .env("REGISTRY_AUTH_FILE", fixture.dir.path().join("no-auth.json"))
        .env_remove("NIX_BUILD_CORES")
        .output()
        .unwrap();
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "push left files in $TMPDIR");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn push_ok(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str) -> String {
    let out = push(fixture, attrs, args, dest);
    assert!(out.status.success(), "push {dest} failed:\n{}", stderr(&out));
    stderr(&out)
}

/// The blob names in an OCI layout.
fn blobs(layout: &Path) -> BTreeSet<String> {
    fs::read_dir(layout.join("blobs/sha256")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// `skopeo copy` of `image` into a new layout (verifying every digest); its blob names.
fn skopeo_blobs(fixture: &Fixture, image: &str, src_args: &[&str], label: &str) -> BTreeSet<String> {
    harness::require("skopeo", "skopeo");
    let dest = fixture.dir.path().join(label);
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet"]).args(src_args).arg(image).arg(format!("oci:{}:x", dest.display()));
    cmd.env("REGISTRY_AUTH_FILE", fixture.dir.path().join("no-auth.json"));
    harness::run(&mut cmd);
    blobs(&dest)
}

/// The blob names `nix-layers oci` writes for `attrs` (what the push must have sent).
fn oci_blobs(fixture: &Fixture, attrs: &Value, label: &str) -> BTreeSet<String> {
    let file = fixture.write_attrs("oci.attrs.json", attrs);
    let dest = fixture.dir.path().join(label);
    fixture.run_ok(&["oci", "--attrs", file.to_str().unwrap(), &format!("oci:{}", dest.display())]);
    blobs(&dest)
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn push_verify_repush_nothing_then_only_the_changed_layer() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let dest = format!("docker://{}/t/img:v1", registry.host());
    let insecure = ["--tls-verify=false"];

    // Cold: every layer and the config uploaded; the registry holds what `oci` writes.
    let log = push_ok(&fixture, &attrs, &insecure, &dest);
    let layers = count(&log, ": uploaded, ") - 1; // minus the config
    assert_eq!(layers, 5, "4 store layers and the customisation layer:\n{log}");
    assert!(log.contains("layer 5/5: uploaded"), "{log}");
    assert!(log.contains("6 uploaded, 0 already present"), "{log}");
    assert_eq!(registry.upload_requests(), 3 * 6, "POST, PATCH, PUT per blob");
    let pulled = skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled-1");
    let first = oci_blobs(&fixture, &attrs, "oci-1");
    assert_eq!(pulled, first, "the pushed image is the `oci` image");

    // Again: every blob present, zero upload requests, the tag re-put.
    let log = push_ok(&fixture, &attrs, &insecure, &dest);
    assert_eq!(count(&log, ": present, "), 6, "{log}");
    assert!(log.contains("0 uploaded, 6 already present, 0 mounted, 0 B sent"), "{log}");
    assert_eq!(registry.upload_requests(), 3 * 6, "a re-push uploads nothing");

    // One file of one store path changed: its layer and the config are uploaded, nothing else.
    let changed = Path::new(&fixture.store_path("pkg2")).join("bin/run");
    fs::set_permissions(&changed, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&changed, "#!/bin/sh\necho two\n").unwrap();
    fs::set_permissions(&changed, fs::Permissions::from_mode(0o555)).unwrap();
    let dest2 = format!("docker://{}/t/img:v2", registry.host());
    let log = push_ok(&fixture, &attrs, &insecure, &dest2);
    assert!(log.contains("2 uploaded, 4 already present"), "{log}");
    assert_eq!(registry.upload_requests(), 3 * 8);
    let pulled = skopeo_blobs(&fixture, &dest2, &["--src-tls-verify=false"], "pulled-2");
    assert_eq!(pulled, oci_blobs(&fixture, &attrs, "oci-2"));
    // The old tag still names the old image.
    assert_eq!(skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled-3"), first);
}

#[test]
fn push_zstd_without_tag_uses_the_image_tag() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let log = push_ok(&fixture, &attrs, &["--tls-verify=false", "--compression-format", "zstd", "--threads", "2"], &format!("docker://{}/t/z", registry.host()));
    assert!(log.contains("6 uploaded"), "{log}");
    // The fixture's tag is `latest`.
    let pulled = skopeo_blobs(&fixture, &format!("docker://{}/t/z:latest", registry.host()), &["--src-tls-verify=false"], "pulled");
    let file = fixture.write_attrs("oci.attrs.json", &attrs);
    let dir = fixture.dir.path().join("oci-zstd");
    fixture.run_ok(&["oci", "--compression-format", "zstd", "--attrs", file.to_str().unwrap(), &format!("oci:{}", dir.display())]);
    assert_eq!(pulled, blobs(&dir));
}

#[test]
fn push_with_basic_auth_and_wrong_credentials() {
    let registry = Registry::start(Mode::Basic { user: "user", password: "pw" });
    let (fixture, attrs) = small_image();
    let dest = format!("docker://{}/t/img:v1", registry.host());

    let out = push(&fixture, &attrs, &["--tls-verify=false", "--creds", "user:nope"], &dest);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    for part in ["nix-layers: error: registry", registry.host().as_str(), "repository t/img", "401"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    assert_eq!(registry.upload_requests(), 0);

    // The right ones, from an auth file.
    let authfile = fixture.dir.path().join("auth.json");
    let entry = harness::base64(b"user:pw", false);
    fs::write(&authfile, format!(r#"{{"auths":{{"{}":{{"auth":"{entry}"}}}}}}"#, registry.host())).unwrap();
    let log = push_ok(&fixture, &attrs, &["--tls-verify=false", "--authfile", authfile.to_str().unwrap()], &dest);
    assert!(log.contains("6 uploaded"), "{log}");
    skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false", "--src-creds", "user:pw"], "pulled");
}

#[test]
fn push_over_tls_needs_the_ca_or_tls_verify_false() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::self_signed(dir.path(), "tls", false);
    let certs = dir.path().join("certs");
    fs::create_dir(&certs).unwrap();
    fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let registry = Registry::start(Mode::Tls { cert, key, client_ca: None });
    let (fixture, attrs) = small_image();
    let dest = format!("docker://{}/t/img:v1", registry.host());

    let out = push(&fixture, &attrs, &[], &dest);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&registry.host()) && stderr(&out).contains("--cert-dir"), "{}", stderr(&out));
    let log = push_ok(&fixture, &attrs, &["--cert-dir", certs.to_str().unwrap()], &dest);
    assert!(log.contains("6 uploaded"), "{log}");
    let log = push_ok(&fixture, &attrs, &["--tls-verify=false"], &dest);
    assert!(log.contains("0 uploaded, 6 already present"), "{log}");
}

#[test]
fn push_refuses_bad_references_before_reading_the_store() {
    let (fixture, attrs) = small_image();
    let digest = format!("sha256:{}", "a".repeat(64));
    for (dest, expected) in [
        ("ubuntu:1", "docker://"),
        ("docker://ubuntu/x", "not a registry host"),
        (&*format!("docker://localhost:1/t/x@{digest}"), "push takes a tag, not a digest"),
    ] {
        let out = push(&fixture, &attrs, &["--tls-verify=false"], dest);
        assert_eq!(out.status.code(), Some(1), "{dest}");
        assert!(stderr(&out).contains("nix-layers: error: ") && stderr(&out).contains(expected), "{dest}: {}", stderr(&out));
    }
    // Nothing listens: the error names the registry.
    let port = harness::free_port();
    let out = push(&fixture, &attrs, &["--tls-verify=false"], &format!("docker://127.0.0.1:{port}/t/x:v1"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("registry 127.0.0.1:{port}")), "{}", stderr(&out));
}
