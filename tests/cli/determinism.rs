//! Same input, same bytes: across runs, thread counts, `stream` vs `build`, compressors;
//! and `stream-script`, whose output streams the same image when executed.

use crate::fixture::{file, Fixture, BIN};
use serde_json::{json, Value};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

/// Pseudo-random bytes from a fixed seed (xorshift), so gzip cannot shrink them to nothing.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Twelve paths in a chain of references, several over a 1 MiB chunk (layer chunks and
/// gzip members are 1 MiB), so that layers really are produced by several workers and the
/// archive spans several gzip members.
pub fn busy_fixture() -> (Fixture, Value) {
    let mut fixture = Fixture::new();
    let mut previous: Vec<String> = Vec::new();
    for i in 0..12u64 {
        let size = if i % 3 == 0 { 1_300_000 + 4099 * i as usize } else { 10_000 + i as usize };
        let name = format!("pkg{i:02}");
        let refs: Vec<&str> = previous.iter().map(String::as_str).collect();
        let path = fixture.add_path(
            &name,
            &[
                file("lib/data.bin", &noise(size, i + 1), 0o444),
                file("bin/run", format!("#!/bin/sh\necho {i}\n").as_bytes(), 0o555),
            ],
            &refs,
        );
        previous.push(path);
    }
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([previous.last().unwrap()]);
    attrs["maxLayers"] = json!(8);
    (fixture, attrs)
}

/// `build --threads N` with `compressor`, to `out/<label>`; returns the bytes.
fn build_with(fixture: &Fixture, attrs: &Value, compressor: &str, threads: usize) -> Vec<u8> {
    let mut attrs = attrs.clone();
    attrs["compressor"] = json!(compressor);
    let file = fixture.write_attrs(&format!("{compressor}.attrs.json"), &attrs);
    let out = fixture.out(&format!("{compressor}-{threads}"));
    let threads = threads.to_string();
    fixture.run_ok(&["build", "--threads", &threads, "--attrs", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let bytes = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    bytes
}

#[test]
fn every_compressor_gives_the_same_bytes_for_any_thread_count_and_run() {
    let (fixture, attrs) = busy_fixture();
    for compressor in ["none", "gz", "zstd"] {
        let one = build_with(&fixture, &attrs, compressor, 1);
        let four = build_with(&fixture, &attrs, compressor, 4);
        let again = build_with(&fixture, &attrs, compressor, 4);
        let many = build_with(&fixture, &attrs, compressor, 13);
        assert!(one == four, "{compressor}: --threads 1 and --threads 4 differ");
        assert!(four == again, "{compressor}: two runs differ");
        assert!(one == many, "{compressor}: --threads 1 and --threads 13 differ");
    }
}

#[test]
fn gz_and_zstd_decompress_to_the_uncompressed_archive() {
    let (fixture, attrs) = busy_fixture();
    let plain = build_with(&fixture, &attrs, "none", 4);
    assert!(plain.len() > 5_000_000, "the fixture should span several chunks and gzip members");
    let gz = build_with(&fixture, &attrs, "gz", 4);
    let mut unpacked = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut unpacked).unwrap();
    assert!(unpacked == plain, "gunzip(gz) differs from the none output");
    let zst = build_with(&fixture, &attrs, "zstd", 4);
    let unpacked = zstd::decode_all(&zst[..]).unwrap();
    assert!(unpacked == plain, "unzstd(zstd) differs from the none output");
    // The gz default: no `compressor` key at all gives the gz bytes.
    let mut default_attrs = attrs.clone();
    default_attrs.as_object_mut().unwrap().remove("compressor");
    let file = fixture.write_attrs("default.attrs.json", &default_attrs);
    let out = fixture.out("default");
    fixture.run_ok(&["build", "--threads", "2", "--attrs", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(fs::read(&out).unwrap() == gz, "the default compressor is not gz");
}

#[test]
fn stream_writes_the_uncompressed_build_output_for_any_thread_count() {
    let (fixture, attrs) = busy_fixture();
    let plain = build_with(&fixture, &attrs, "none", 2);
    // `compressor` is for build only: stream ignores it (gz here).
    let mut gz_attrs = attrs.clone();
    gz_attrs["compressor"] = json!("gz");
    let file = fixture.write_attrs("stream.attrs.json", &gz_attrs);
    for threads in ["1", "3"] {
        let streamed = fixture.run_ok(&["stream", "--threads", threads, "--attrs", file.to_str().unwrap()]);
        assert!(streamed == plain, "stream --threads {threads} differs from build with compressor none");
    }
    let positional = fixture.run_ok(&["stream", file.to_str().unwrap()]);
    assert!(positional == plain, "stream FILE differs from stream --attrs FILE");
    assert_eq!(fs::read_dir(fixture.out_dir()).unwrap().count(), 0, "stream wrote a file");
}

#[test]
fn stream_script_is_an_executable_that_streams_the_image() {
    let (fixture, mut attrs) = busy_fixture();
    attrs["builder"] = json!(BIN);
    attrs["outputs"]["out"] = json!(fixture.out("stream-image").to_str().unwrap());
    let file = fixture.write_attrs("script.attrs.json", &attrs);
    let stdout = fixture.run_ok(&["stream-script", "--attrs", file.to_str().unwrap()]);
    assert!(stdout.is_empty());
    let script = fixture.out("stream-image");
    let mode = fs::metadata(&script).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o555, "stream-script output mode");
    let text = fs::read(&script).unwrap();
    let shebang = format!("#!{BIN} stream\n");
    assert!(text.starts_with(shebang.as_bytes()), "starts with {:?}", String::from_utf8_lossy(&text[..80.min(text.len())]));
    let names: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["stream-image"], "only the script in its directory");

    let streamed = fixture.run_ok(&["stream", "--attrs", file.to_str().unwrap()]);
    let run = std::process::Command::new(&script).env("NIX_STORE", fixture.store()).output().unwrap();
    crate::fixture::assert_success(&run, &[script.to_str().unwrap()]);
    assert!(run.stdout == streamed, "running the script differs from `nix-layers stream`");
}

#[test]
fn stream_script_fixes_a_null_tag_from_its_own_output_path() {
    // Once the script runs elsewhere its out path is gone: the tag must already be in it.
    let (fixture, mut attrs) = busy_fixture();
    let out = fixture.store_path("stream-image");
    attrs["tag"] = Value::Null;
    attrs["outputs"]["out"] = json!(out);
    let file = fixture.write_attrs("script.attrs.json", &attrs);
    fixture.run_ok(&["stream-script", "--attrs", file.to_str().unwrap()]);
    let run = std::process::Command::new(&out).env("NIX_STORE", fixture.store()).output().unwrap();
    crate::fixture::assert_success(&run, &[&out]);
    let image = crate::fixture::read_docker_archive(&run.stdout);
    let tag = format!("test-image:{}", crate::fixture::hash_for("stream-image"));
    assert_eq!(image.manifest[0]["RepoTags"], json!([tag]));
}
