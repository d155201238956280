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

/// `nix-layers push --attrs … ARGS DEST`, with no auth file of this machine's user, its own
/// layer cache (`$XDG_CACHE_HOME` in the fixture) and `$TMPDIR` in the fixture. Under
/// `strace` when `trace` names the file for its output.
fn push_command(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str, trace: Option<&Path>) -> Command {
    let file = fixture.write_attrs("push.attrs.json", attrs);
    fs::create_dir_all(tmp_dir(fixture)).unwrap();
    let mut cmd = match trace {
        Some(trace) => {
            harness::require("strace", "strace");
            let mut cmd = Command::new("strace");
            // -y: descriptors with their paths, so that an `openat(dirfd, "name")` relative
            // to a store directory shows the directory. -ff: one file per thread, so that
            // no call is split into `<unfinished …>` and `<… resumed>` lines.
            cmd.args(["-ff", "-y", "-qq", "-e", "trace=open,openat,openat2", "-o"]).arg(trace).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    cmd.arg("push")
        .arg("--attrs")
        .arg(&file)
        .args(args)
        .arg(dest)
        .env("NIX_STORE", fixture.store())
        .env("TMPDIR", tmp_dir(fixture))
        .env("XDG_CACHE_HOME", fixture.cache_dir())
        .env("REGISTRY_AUTH_FILE", fixture.dir.path().join("no-auth.json"))
        .env_remove("NIX_BUILD_CORES")
        .env_remove("NIX_BUILD_TOP")
        .env_remove("NIX_ATTRS_JSON_FILE")
        .stdin(std::process::Stdio::null());
    cmd
}

fn tmp_dir(fixture: &Fixture) -> std::path::PathBuf {
    fixture.dir.path().join("tmp")
}

/// Runs a push (checking afterwards that `$TMPDIR` is empty: no temporary file is left).
fn push(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str) -> Output {
    let out = push_command(fixture, attrs, args, dest, None).output().unwrap();
    assert_eq!(fs::read_dir(tmp_dir(fixture)).unwrap().count(), 0, "push left files in $TMPDIR");
    out
}

/// A successful push under `strace`: its stderr, and the store files it opened to read
/// (successful opens, not of a directory, of a path in the fixture's store), one trace
/// line each.
fn push_traced(fixture: &Fixture, attrs: &Value, args: &[&str], dest: &str, label: &str) -> (String, Vec<String>) {
    let traces = fixture.dir.path().join(format!("strace-{label}"));
    fs::create_dir(&traces).unwrap();
    let out = push_command(fixture, attrs, args, dest, Some(&traces.join("t"))).output().unwrap();
    assert!(out.status.success(), "push {dest} ({label}) failed:\n{}", stderr(&out));
    let store = format!("{}/", fixture.store());
    let mut opened = Vec::new();
    for trace in fs::read_dir(&traces).unwrap() {
        let text = fs::read_to_string(trace.unwrap().path()).unwrap();
        opened.extend(
            text.lines()
                .filter(|l| l.contains(&store) && !l.contains("O_DIRECTORY") && !l.contains("O_PATH") && !l.contains("= -1 "))
                .map(str::to_string),
        );
    }
    assert!(fs::read_dir(&traces).unwrap().count() > 1, "strace -ff wrote one file per thread");
    (stderr(&out), opened)
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

/// Gives `path`'s closure entry another narHash, as a changed store path has.
fn change_nar_hash(attrs: &mut Value, path: &str) {
    let entry = attrs["closure"].as_array_mut().unwrap().iter_mut().find(|e| e["path"] == path).unwrap();
    entry["narHash"] = json!(format!("sha256:{}", "1".repeat(52)));
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
    // One line per layer: the push's own, not also the archive writer's.
    assert_eq!(count(&log, "layer 3/5"), 1, "{log}");
    assert_eq!(registry.upload_requests(), 3 * 6, "POST, PATCH, PUT per blob");
    let pulled = skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled-1");
    let first = oci_blobs(&fixture, &attrs, "oci-1");
    assert_eq!(pulled, first, "the pushed image is the `oci` image");

    // Again: every blob present, zero upload requests, the tag re-put.
    let log = push_ok(&fixture, &attrs, &insecure, &dest);
    assert_eq!(count(&log, ": present, "), 6, "{log}");
    assert_eq!(count(&log, "layer 3/5"), 1, "one line per skipped layer:\n{log}");
    assert!(log.contains("0 uploaded, 6 already present, 0 mounted, 0 B sent"), "{log}");
    assert_eq!(registry.upload_requests(), 3 * 6, "a re-push uploads nothing");

    // An app-only update: one file of one store path changed (and, as Nix would say, its
    // narHash). Only that path's files are read; its layer and the config are uploaded.
    let pkg2 = fixture.store_path("pkg2");
    let changed = Path::new(&pkg2).join("bin/run");
    fs::set_permissions(&changed, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&changed, "#!/bin/sh\necho two\n").unwrap();
    fs::set_permissions(&changed, fs::Permissions::from_mode(0o555)).unwrap();
    let mut attrs = attrs;
    change_nar_hash(&mut attrs, &pkg2);
    let dest2 = format!("docker://{}/t/img:v2", registry.host());
    let (log, opened) = push_traced(&fixture, &attrs, &insecure, &dest2, "update");
    assert!(log.contains("2 uploaded, 4 already present"), "{log}");
    assert_eq!(registry.upload_requests(), 3 * 8);
    assert!(!opened.is_empty(), "the changed path's files are read");
    let outside: Vec<&String> = opened.iter().filter(|l| !l.contains(&format!("{pkg2}/")) && !l.contains(&format!("{pkg2}>"))).collect();
    assert!(outside.is_empty(), "only the changed path's files are read, but also:\n{outside:#?}");
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
fn push_at_another_gzip_level_sends_other_blobs_of_the_same_image() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let insecure = ["--tls-verify=false"];
    push_ok(&fixture, &attrs, &insecure, &format!("docker://{}/t/default", registry.host()));
    // Same layer cache: the default level's blobs, known for these layers, must not be
    // taken for level 9's.
    let log = push_ok(&fixture, &attrs, &["--tls-verify=false", "--compression-level", "9"], &format!("docker://{}/t/nine", registry.host()));
    assert_eq!(count(&log, "/5: uploaded, "), 5, "level 9's layer blobs are new:\n{log}");
    let pulled = skopeo_blobs(&fixture, &format!("docker://{}/t/nine:latest", registry.host()), &["--src-tls-verify=false"], "pulled-9");
    let file = fixture.write_attrs("oci.attrs.json", &attrs);
    let dir = fixture.dir.path().join("oci-9");
    fixture.run_ok(&["oci", "--compression-level", "9", "--attrs", file.to_str().unwrap(), &format!("oci:{}", dir.display())]);
    assert_eq!(pulled, blobs(&dir), "the push at level 9 is `oci --compression-level 9`'s image");
    assert_ne!(pulled, oci_blobs(&fixture, &attrs, "oci-default"));
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

#[test]
fn repush_reads_no_store_file_unless_no_cache() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let dest = format!("docker://{}/t/img:v1", registry.host());
    let insecure = ["--tls-verify=false"];

    // Cold: every layer read (the trace sees it), every blob uploaded.
    let (log, opened) = push_traced(&fixture, &attrs, &insecure, &dest, "cold");
    assert!(log.contains("6 uploaded, 0 already present"), "{log}");
    assert!(opened.iter().any(|l| l.contains("data.bin")), "the trace shows the store files read: {opened:#?}");
    let uploads = registry.upload_requests();

    // Again, same cache: the layers the cache knows are HEADed and skipped, not one store
    // file is opened (the scan only stats), and nothing is uploaded.
    let (log, opened) = push_traced(&fixture, &attrs, &insecure, &dest, "again");
    assert!(log.contains("0 uploaded, 6 already present, 0 mounted, 0 B sent"), "{log}");
    assert_eq!(count(&log, ": present, "), 6, "{log}");
    assert!(opened.is_empty(), "a re-push read store files:\n{opened:#?}");
    assert_eq!(registry.upload_requests(), uploads, "a re-push uploads nothing");

    // --no-cache: every layer is read and compressed again, and the HEADs still find them.
    let (log, opened) = push_traced(&fixture, &attrs, &["--tls-verify=false", "--no-cache"], &dest, "no-cache");
    assert!(log.contains("0 uploaded, 6 already present"), "{log}");
    assert!(opened.iter().any(|l| l.contains("data.bin")), "--no-cache reads the layers: {opened:#?}");
    assert_eq!(registry.upload_requests(), uploads);
    assert_eq!(skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled"), oci_blobs(&fixture, &attrs, "oci"));
}

#[test]
fn push_to_another_repository_mounts_every_blob() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let insecure = ["--tls-verify=false"];
    push_ok(&fixture, &attrs, &insecure, &format!("docker://{}/t/a:v1", registry.host()));
    let uploads = registry.upload_requests();
    assert_eq!(registry.mount_requests(), 0);

    // The cache says repository t/a has every layer: they are mounted into t/b, and so is
    // the config (tried where the layers came from); no byte is sent.
    let dest = format!("docker://{}/t/b:v1", registry.host());
    let log = push_ok(&fixture, &attrs, &insecure, &dest);
    assert!(log.contains("0 uploaded, 0 already present, 6 mounted, 0 B sent"), "{log}");
    assert_eq!(count(&log, ": mounted, "), 6, "{log}");
    assert_eq!(registry.mount_requests(), 6, "{}", registry.log_text());
    assert_eq!(registry.upload_requests() - registry.mount_requests(), uploads, "no upload but the mounts");
    assert_eq!(skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled"), oci_blobs(&fixture, &attrs, "oci"));
}

#[test]
fn registry_killed_mid_push_fails_naming_it_and_a_later_push_completes() {
    let registry = Registry::start(Mode::Plain);
    let mut fixture = Fixture::new();
    // 64 MiB that do not compress (xorshift): its upload lasts long enough to be cut.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..64usize << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let data = fixture.add_path("data", &[file("share/big.bin", &big, 0o444)], &[]);
    drop(big);
    let data_ref = data.clone();
    let app = fixture.add_path("app", &[file("bin/app", b"#!/bin/sh\necho app\n", 0o555)], &[&data_ref]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([app]);
    let dest = format!("docker://{}/t/big:v1", registry.host());
    let args = ["--tls-verify=false"];

    // Killed (SIGKILL, as a crash) once the first upload request is in its log.
    let mut child = push_command(&fixture, &attrs, &args, &dest, None)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while registry.upload_requests() == 0 {
        assert!(std::time::Instant::now() < deadline, "no upload request in 120 s:\n{}", registry.log_text());
        assert!(child.try_wait().unwrap().is_none(), "the push ended before any upload");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    registry.stop();
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    for part in ["nix-layers: error: registry", registry.host().as_str(), "repository t/big"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    assert_eq!(fs::read_dir(tmp_dir(&fixture)).unwrap().count(), 0, "push left files in $TMPDIR");

    // Restarted on the same storage: the tag was never put (the manifest goes last), and a
    // later push completes the image.
    registry.spawn();
    harness::require("skopeo", "skopeo");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(&dest)
        .env("REGISTRY_AUTH_FILE", fixture.dir.path().join("no-auth.json"))
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "the failed push left a tag: {}", String::from_utf8_lossy(&inspect.stdout));
    let log = push_ok(&fixture, &attrs, &args, &dest);
    assert!(log.contains("nix-layers: pushed"), "{log}");
    assert_eq!(skopeo_blobs(&fixture, &dest, &["--src-tls-verify=false"], "pulled"), oci_blobs(&fixture, &attrs, "oci"));
}

#[test]
fn on_a_terminal_progress_is_one_live_line() {
    let registry = Registry::start(Mode::Plain);
    let (fixture, attrs) = small_image();
    let dest = format!("docker://{}/t/tty:v1", registry.host());
    harness::require("script", "bsdutils");
    // `script` runs the push with a pseudo-terminal as stdin, stdout and stderr.
    let cmd = push_command(&fixture, &attrs, &["--tls-verify=false"], &dest, None);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', r"'\''"));
    let mut line: Vec<String> = cmd.get_envs().filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, quote(v?)))).collect();
    line.insert(0, "env".into());
    for (k, v) in cmd.get_envs() {
        if v.is_none() {
            line.insert(1, format!("-u {}", k.to_str().unwrap()));
        }
    }
    line.push(quote(cmd.get_program()));
    line.extend(cmd.get_args().map(quote));
    let out = Command::new("script").args(["-qec", &line.join(" "), "/dev/null"]).stdin(std::process::Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("layers 0/5 (0 present, 0 mounted)") && text.contains(" sent ("), "no live line: {text}");
    assert!(!text.contains(": uploaded, "), "per-blob lines on a terminal: {text}");
    assert!(text.contains("6 uploaded, 0 already present, 0 mounted"), "{text}");
}
