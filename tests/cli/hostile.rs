//! Hostile stores (issue 8 §1, §2). A name swapped after the scan (for a symlink out of the
//! store, a FIFO, another file), a prebuilt `layer.tar` that is not a plain tar inside the
//! root, a `contents` path that is a symlink: each ends with an error naming the path,
//! never with bytes from outside the store in the output, never hanging, and with nothing
//! at the out path.
//!
//! Swaps after the scan are made deterministic without any hook in the binary:
//! `stream --threads 1` produces layers in order and blocks once its bounded queue, its
//! stdout buffer and the pipe are full (a few MiB), so with a 16 MiB file in the first
//! layer and the victim in a later one, the test reads a little, swaps, then reads the
//! rest. `build` runs the same reading code; it is driven through the library (plan and
//! scan, swap, write into an [`AtomicFile`] as `build` does).

use crate::fixture::{dir, file, make_fifo, make_writable, read_docker_archive, read_tar, Fixture};
use nix_layers::cache::LayerCache;
use nix_layers::destination::hybrid_archive::write_archive;
use nix_layers::attrs::Attrs;
use nix_layers::output::AtomicFile;
use nix_layers::pipeline::plan_image;
use serde_json::{json, Value};
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longer than any of these runs takes in a debug build on a busy machine; reaching it
/// means a hang.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The bytes of a file outside the store: they must never appear in an output.
const MARKER: &[u8] = b"OUTSIDE-THE-STORE-0123456789abcdef\n";
/// The victim file's bytes, as long as the marker (so only the swap, not the size, differs).
const VICTIM: &[u8] = b"inside-the-store-0123456789abcdef!\n";

/// Whether `haystack` holds the marker.
fn has_marker(haystack: &[u8]) -> bool {
    haystack.windows(MARKER.len()).any(|w| w == MARKER)
}

/// What is swapped after the scan, before the victim's bytes are read.
#[derive(Clone, Copy, Debug)]
enum Swap {
    /// `etc/data` becomes a symlink to a file outside the store.
    FileToSymlink,
    /// `etc/` becomes a symlink to a directory outside the store holding `data`.
    DirToSymlink,
    /// The store path itself becomes a symlink to an outside copy of its tree.
    StorePathToSymlink,
    /// `etc/data` becomes a FIFO (nobody ever writes to it).
    FileToFifo,
    /// `etc/data` becomes another regular file of the same size.
    FileToOtherFile,
}

/// A closure of two store paths, one per layer: `aa-big` (a 16 MiB file) first, then
/// `zz-victim` holding `etc/data` and an empty directory `etc/empty/`.
struct SwapFixture {
    fixture: Fixture,
    victim: PathBuf,
}

fn swap_fixture() -> SwapFixture {
    assert_eq!(MARKER.len(), VICTIM.len());
    let mut fixture = Fixture::new();
    fixture.add_path("aa-big", &[file("big", &vec![b'x'; 16 << 20], 0o444)], &[]);
    let victim = fixture.add_path("zz-victim", &[file("etc/data", VICTIM, 0o444), dir("etc/empty", 0o555)], &[]);
    SwapFixture { fixture, victim: PathBuf::from(victim) }
}

impl Swap {
    /// Swaps; returns the path the error must name.
    fn apply(self, f: &SwapFixture) -> PathBuf {
        let etc = f.victim.join("etc");
        let data = etc.join("data");
        let temp = etc.join("swap.tmp");
        match self {
            Swap::FileToSymlink => {
                let marker = f.fixture.outside("marker", MARKER);
                make_writable(&etc);
                symlink(marker, &temp).unwrap();
                fs::rename(&temp, &data).unwrap();
                data
            }
            Swap::DirToSymlink => {
                let outside = f.fixture.outside("etc/data", MARKER);
                make_writable(&f.victim);
                make_writable(&etc);
                fs::rename(&etc, f.victim.join("etc.old")).unwrap();
                symlink(outside.parent().unwrap(), &etc).unwrap();
                etc
            }
            Swap::StorePathToSymlink => {
                let outside = f.fixture.outside("victim/etc/data", MARKER);
                make_writable(&f.victim);
                fs::rename(&f.victim, f.victim.with_extension("old")).unwrap();
                symlink(outside.parent().unwrap().parent().unwrap(), &f.victim).unwrap();
                f.victim.clone()
            }
            Swap::FileToFifo => {
                make_writable(&etc);
                make_fifo(&temp);
                fs::rename(&temp, &data).unwrap();
                data
            }
            Swap::FileToOtherFile => {
                make_writable(&etc);
                fs::write(&temp, MARKER).unwrap();
                fs::rename(&temp, &data).unwrap();
                data
            }
        }
    }
}

/// Waits for `child`, reading its stdout and stderr to the end; kills it and fails the
/// test if it runs past [`TIMEOUT`].
fn finish(mut child: Child, what: &str) -> (ExitStatus, Vec<u8>, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what} hung: killed after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Runs the binary with `args` under [`TIMEOUT`].
fn run_bounded(fixture: &Fixture, args: &[&str]) -> (ExitStatus, Vec<u8>, String) {
    let child = fixture.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    finish(child, &format!("nix-layers {}", args.join(" ")))
}

/// The outcome every hostile case must have: failure with exit status 1, `named` in the
/// message, no panic, no marker in `output`.
fn assert_refused(status: ExitStatus, output: &[u8], stderr: &str, named: &str) {
    eprint!("stderr of the refused run: {stderr}");
    assert!(!has_marker(output), "bytes from outside the store entered the output; stderr:\n{stderr}");
    assert!(!status.success(), "succeeded; stderr:\n{stderr}");
    assert_eq!(status.code(), Some(1), "exit status of a handled error: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    assert!(stderr.contains(named), "the error does not name `{named}`:\n{stderr}");
}

/// The out directory holds nothing: no output, no temporary file.
fn assert_out_dir_empty(fixture: &Fixture) {
    let left: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind in the out directory: {left:?}");
}

/// `stream --threads 1`, swapping once the first bytes are out (the scan is over then,
/// and the producer is still in the first layer's big file).
fn stream_with_swap(swap: Swap) {
    let f = swap_fixture();
    let attrs = f.fixture.write_attrs("attrs.json", &f.fixture.attrs());
    let mut child = f
        .fixture
        .command(&["stream", "--threads", "1", "--attrs", attrs.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0u8; 4096];
    child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    let named = swap.apply(&f);
    let (status, rest, stderr) = finish(child, &format!("stream after {swap:?}"));
    head.extend_from_slice(&rest);
    assert_refused(status, &head, &stderr, named.to_str().unwrap());
}

/// What `build` does (plan, scan, write into an atomic file), with the swap between the
/// scan and the write; the write runs on a thread so that a hang fails the test.
fn build_with_swap(swap: Swap) {
    let f = swap_fixture();
    let attrs = f.fixture.write_attrs("attrs.json", &f.fixture.attrs());
    let store = f.fixture.store();
    let image = plan_image(&Attrs::read(&attrs).unwrap(), &store).unwrap();
    let layers = image.scan_layers(&store, 2).unwrap();
    let named = swap.apply(&f);
    let target = f.fixture.out("image.tar");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = AtomicFile::create(&target).unwrap();
        let result = match write_archive(out.writer(), &image.spec, &layers, 2, &LayerCache::disabled()) {
            Ok(_) => {
                out.commit(0o444).unwrap();
                Ok(fs::read(&target).unwrap())
            }
            Err(e) => {
                drop(out); // removes the temporary file, before the test looks
                Err(format!("{e:#}"))
            }
        };
        let _ = tx.send(result);
    });
    let result = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("build after {swap:?} hung"));
    match result {
        Ok(image) => panic!("build after {swap:?} succeeded (outside bytes in the image: {})", has_marker(&image)),
        Err(error) => assert!(error.contains(named.to_str().unwrap()), "the error does not name `{}`: {error}", named.display()),
    }
    assert_out_dir_empty(&f.fixture);
}

#[test]
fn stream_refuses_a_file_swapped_for_a_symlink_after_the_scan() {
    stream_with_swap(Swap::FileToSymlink);
}

#[test]
fn stream_refuses_a_directory_swapped_for_a_symlink_after_the_scan() {
    stream_with_swap(Swap::DirToSymlink);
}

#[test]
fn stream_refuses_a_store_path_swapped_for_a_symlink_after_the_scan() {
    stream_with_swap(Swap::StorePathToSymlink);
}

#[test]
fn stream_refuses_a_file_swapped_for_a_fifo_after_the_scan_without_hanging() {
    stream_with_swap(Swap::FileToFifo);
}

#[test]
fn stream_refuses_a_file_swapped_for_another_file_after_the_scan() {
    stream_with_swap(Swap::FileToOtherFile);
}

/// Regression (held before issue 8 too, since nothing is read from it): an empty directory
/// swapped for a symlink to a full one after the scan is written as scanned, a directory
/// with nothing in it.
#[test]
fn stream_writes_an_empty_directory_swapped_after_the_scan_as_scanned() {
    let f = swap_fixture();
    let attrs = f.fixture.write_attrs("attrs.json", &f.fixture.attrs());
    let mut child = f
        .fixture
        .command(&["stream", "--threads", "1", "--attrs", attrs.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0u8; 4096];
    child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    let empty = f.victim.join("etc/empty");
    let outside = f.fixture.outside("full/secret", MARKER);
    make_writable(&f.victim.join("etc"));
    fs::remove_dir(&empty).unwrap();
    symlink(outside.parent().unwrap(), &empty).unwrap();
    let (status, rest, stderr) = finish(child, "stream after swapping an empty directory");
    assert!(status.success(), "{stderr}");
    head.extend_from_slice(&rest);
    let image = read_docker_archive(&head);
    assert!(!has_marker(&image.layers.concat()));
    let names: Vec<String> = read_tar(&image.layers[1]).into_iter().map(|e| e.name).collect();
    let victim = f.victim.to_str().unwrap().trim_start_matches('/');
    assert_eq!(names[names.len() - 2..], [format!("{victim}/etc/data"), format!("{victim}/etc/empty/")], "{names:?}");
    assert!(!names.iter().any(|n| n.contains("secret")), "{names:?}");
}

#[test]
fn build_refuses_a_file_swapped_for_a_symlink_after_the_scan() {
    build_with_swap(Swap::FileToSymlink);
}

#[test]
fn build_refuses_a_directory_swapped_for_a_symlink_after_the_scan() {
    build_with_swap(Swap::DirToSymlink);
}

#[test]
fn build_refuses_a_store_path_swapped_for_a_symlink_after_the_scan() {
    build_with_swap(Swap::StorePathToSymlink);
}

#[test]
fn build_refuses_a_file_swapped_for_a_fifo_after_the_scan_without_hanging() {
    build_with_swap(Swap::FileToFifo);
}

#[test]
fn build_refuses_a_file_swapped_for_another_file_after_the_scan() {
    build_with_swap(Swap::FileToOtherFile);
}

// §2: the prebuilt customisation layer.

/// One tar header block (ustar magic) for `name` with `data`, then the data padded.
fn tar_entry(name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len().next_multiple_of(512), 0);
    bytes
}

/// A PAX extended header setting `path`.
fn pax_path(path: &[u8]) -> Vec<u8> {
    // "<len> path=<value>\n", where <len> counts its own digits.
    let body = [b" path=", path, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    let record = [len.to_string().as_bytes(), &body].concat();
    tar_entry(b"././@PaxHeader", tar::EntryType::XHeader, b"", &record)
}

/// A GNU long-name entry for `path`.
fn gnu_long_name(path: &[u8]) -> Vec<u8> {
    tar_entry(b"././@LongLink", tar::EntryType::GNULongName, b"", &[path, b"\0"].concat())
}

/// A tar of `entries` with its end blocks.
fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = entries.concat();
    bytes.extend_from_slice(&[0; 1024]);
    bytes
}

/// A fixture with `hello` and a store path `custom-layer` whose `layer.tar` is made by
/// `make`; attrs using it as `customisationLayer`. Returns the `layer.tar` path too.
fn prebuilt(make: impl FnOnce(&Fixture, &Path)) -> (Fixture, Value, String) {
    let mut fixture = Fixture::new();
    let hello = fixture.add_path("hello", &[file("bin/hello", b"hello\n", 0o555)], &[]);
    let custom = fixture.add_path("custom-layer", &[], &[&hello]);
    make_writable(Path::new(&custom));
    let layer_tar = format!("{custom}/layer.tar");
    make(&fixture, Path::new(&layer_tar));
    let mut attrs = fixture.attrs();
    attrs["customisationLayer"] = json!(custom);
    (fixture, attrs, layer_tar)
}

/// `build` and `stream` both refuse `attrs`, naming `fragments`, within the timeout, and
/// leave nothing behind and no marker in the output.
fn build_and_stream_refuse(fixture: &Fixture, attrs: &Value, fragments: &[&str]) {
    let file = fixture.write_attrs("bad.attrs.json", attrs);
    for command in ["build", "stream"] {
        let (status, stdout, stderr) = run_bounded(fixture, &[command, "--attrs", file.to_str().unwrap()]);
        for fragment in fragments {
            assert_refused(status, &stdout, &stderr, fragment);
        }
        assert!(stdout.is_empty(), "{command} wrote {} bytes before failing", stdout.len());
        assert_out_dir_empty(fixture);
    }
}

#[test]
fn a_prebuilt_layer_tar_that_is_a_fifo_is_refused_without_hanging() {
    let (fixture, attrs, layer_tar) = prebuilt(|_, path| make_fifo(path));
    build_and_stream_refuse(&fixture, &attrs, &[&layer_tar, "fifo"]);
}

#[test]
fn a_prebuilt_layer_tar_that_is_a_symlink_out_of_the_store_is_not_followed() {
    // The target is a valid tar, so only following the link would let it through.
    let outside_tar = tar_of(&[tar_entry(b"etc/secret", tar::EntryType::Regular, b"", MARKER)]);
    let (fixture, attrs, layer_tar) = prebuilt(|fixture, path| {
        symlink(fixture.outside("layer.tar", &outside_tar), path).unwrap();
    });
    build_and_stream_refuse(&fixture, &attrs, &[&layer_tar, "symlink"]);
}

#[test]
fn a_prebuilt_layer_tar_that_is_not_a_tar_is_refused() {
    for (case, bytes) in [
        ("short text", b"myhost\n".to_vec()),
        ("text over a block", b"this is not a tar archive\n".repeat(40)),
    ] {
        let (fixture, attrs, layer_tar) = prebuilt(|_, path| fs::write(path, &bytes).unwrap());
        eprintln!("case: {case}");
        build_and_stream_refuse(&fixture, &attrs, &[&layer_tar, "not a valid tar"]);
    }
}

#[test]
fn prebuilt_layer_tar_entries_leaving_the_root_are_refused_naming_them() {
    let long_escape = [b"a/".repeat(60).as_slice(), b"../".repeat(70).as_slice(), b"etc/evil"].concat();
    let ok = tar_entry(b"etc/motd", tar::EntryType::Regular, b"", b"hi\n");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("dot-dot", tar_entry(b"../../etc/evil", tar::EntryType::Regular, b"", b"x"), "../../etc/evil".into()),
        ("absolute", tar_entry(b"/etc/evil", tar::EntryType::Regular, b"", b"x"), "/etc/evil".into()),
        ("inner dot-dot", tar_entry(b"etc/../../evil", tar::EntryType::Directory, b"", b""), "etc/../../evil".into()),
        (
            "PAX long name",
            [pax_path(&long_escape), tar_entry(b"short", tar::EntryType::Regular, b"", b"x")].concat(),
            String::from_utf8(long_escape.clone()).unwrap(),
        ),
        (
            "GNU long name",
            [gnu_long_name(&long_escape), tar_entry(b"short", tar::EntryType::Regular, b"", b"x")].concat(),
            String::from_utf8(long_escape.clone()).unwrap(),
        ),
        ("hard link target", tar_entry(b"etc/pw", tar::EntryType::Link, b"../../etc/passwd", b""), "../../etc/passwd".into()),
    ];
    for (case, entry, named) in cases {
        eprintln!("case: {case}");
        let bytes = tar_of(&[ok.clone(), entry]);
        let (fixture, attrs, layer_tar) = prebuilt(|_, path| fs::write(path, &bytes).unwrap());
        build_and_stream_refuse(&fixture, &attrs, &[&layer_tar, &named]);
    }
}

// §2: `contents` and store paths that are symlinks.

#[test]
fn a_contents_entry_that_is_a_symlink_out_of_the_store_is_refused() {
    let mut fixture = Fixture::new();
    let outside = fixture.outside("default/useradd", MARKER);
    let content = fixture.add_symlink_path("evil-content", outside.parent().unwrap(), &[]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([content]);
    let file = fixture.write_attrs("attrs.json", &attrs);
    let (status, stdout, stderr) = run_bounded(&fixture, &["build", "--attrs", file.to_str().unwrap()]);
    assert_refused(status, &stdout, &stderr, &content);
    assert!(stderr.contains("symlink"), "{stderr}");
    assert_out_dir_empty(&fixture);
}

/// Regression (held before issue 8 too): a store path that is a symlink is one symlink
/// entry in its layer, never followed.
#[test]
fn a_store_path_that_is_a_symlink_is_one_symlink_entry() {
    let mut fixture = Fixture::new();
    let outside = fixture.outside("dir/secret", MARKER);
    let linked = fixture.add_symlink_path("linked", outside.parent().unwrap(), &[]);
    let image = read_docker_archive(&fixture.build(&fixture.attrs()));
    assert!(!has_marker(&image.layers.concat()));
    let entries = read_tar(&image.layers[0]);
    let mine: Vec<_> = entries.iter().filter(|e| e.name.contains("linked")).collect();
    assert_eq!(mine.len(), 1, "{entries:?}");
    assert_eq!(mine[0].kind, tar::EntryType::Symlink);
    assert_eq!(mine[0].name, linked.trim_start_matches('/'));
    assert_eq!(mine[0].link.as_deref(), outside.parent().unwrap().to_str());
}
