//! Issue 8 §3/§4: values that used to pass validation and give an image engines refuse
//! (or were silently changed). Each case is an error naming the key, or, for the valid
//! neighbours, an image in the normal form.

use crate::errors::{build_fails, fails, small};
use crate::fixture::{read_docker_archive, read_tar, Fixture};
use serde_json::{json, Value};
use std::fs;

/// The hostile corpus: (key, value, fragments the error must hold).
fn corpus() -> Vec<(&'static str, Value, Vec<String>)> {
    let mut cases: Vec<(&str, Value, Vec<String>)> = Vec::new();
    for bad in [
        "2020-01-01T00:00:60Z",
        "2020-01-01 00:00:00Z",
        "2020-01-01t00:00:00Z",
        "2020-01-01T00:00:00z",
        "2020-01-01T00:00:00+0100",
        "2020-01-01T24:00:00Z",
        "10000-01-01T00:00:00Z",
        "0000-01-01T00:00:00+01:00",
    ] {
        for key in ["created", "mtime"] {
            cases.push((key, json!(bad), vec![format!("`{key}`"), bad.to_string()]));
        }
    }
    for (key, id) in [("uid", 1u64 << 63), ("gid", u64::MAX), ("uid", 4_294_967_295)] {
        cases.push((key, json!(id), vec![format!("`{key}`"), id.to_string(), "4294967294".into()]));
    }
    for bad in ["foo:bar", "has space", "app@sha256", "new\nline", "-app", "a//b"] {
        cases.push(("name", json!(bad), vec!["`name`".into()]));
    }
    let long_tag = "x".repeat(300);
    for (bad, why) in [("a:b", "':'"), ("a/b", "'/'"), ("a b", "' '"), ("a@b", "'@'"), ("a\nb", "'\\n'"), (".x", "start"), (long_tag.as_str(), "300 characters")] {
        cases.push(("tag", json!(bad), vec!["`tag`".into(), why.into()]));
    }
    for key in ["uname", "gname"] {
        cases.push((key, json!("ro\u{0}ot"), vec![format!("`{key}`"), "NUL".into()]));
    }
    cases
}

#[test]
fn hostile_values_are_errors_naming_the_key() {
    for (key, value, fragments) in corpus() {
        let (fixture, mut attrs) = small();
        let fragments: Vec<&str> = fragments.iter().map(String::as_str).collect();
        attrs[key] = value;
        build_fails(&fixture, &attrs, &fragments);
    }
}

/// A list nested deeper than serde_json goes (128 levels), where a value belongs: an
/// error naming the key, never the key dropped and its default used.
#[test]
fn a_list_nested_too_deep_is_an_error_naming_the_key() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for key in ["config", "maxLayers", "contents", "uid", "created", "closure"] {
        let (fixture, mut attrs) = small();
        attrs[key] = json!("PLACEHOLDER");
        let text = serde_json::to_string(&attrs).unwrap().replace("\"PLACEHOLDER\"", &deep);
        raw_fails(&fixture, text.as_bytes(), &[&format!("`{key}`"), "recursion limit"]);
    }
}

#[test]
fn nar_size_sums_that_wrap_are_an_error_naming_the_layer() {
    let (fixture, mut attrs) = small();
    for entry in attrs["closure"].as_array_mut().unwrap() {
        entry["narSize"] = json!(u64::MAX - 1);
    }
    // Two store layers' worth of budget: both paths share the one store layer.
    attrs["maxLayers"] = json!(2);
    build_fails(&fixture, &attrs, &["layer 1", "narSize", "2^64"]);
    let file = fixture.write_attrs("plan.attrs.json", &attrs);
    crate::errors::fails(&fixture, &["plan", "--json", "--attrs", file.to_str().unwrap()], &["layer 1", "narSize"]);
}

/// `build` on an attrs file holding `bytes` fails naming each of `fragments`.
fn raw_fails(fixture: &Fixture, bytes: &[u8], fragments: &[&str]) {
    let file = fixture.dir.path().join("raw.attrs.json");
    fs::write(&file, bytes).unwrap();
    let out = fixture.out("image.tar");
    fails(fixture, &["build", "--attrs", file.to_str().unwrap(), "--out", out.to_str().unwrap()], fragments);
}

#[test]
fn duplicate_keys_are_errors_naming_the_key() {
    let (fixture, attrs) = small();
    let text = serde_json::to_string(&attrs).unwrap();
    let body = &text[1..];
    raw_fails(&fixture, format!("{{\"uid\": 0, \"uid\": 1000, {body}").as_bytes(), &["`uid` appears twice"]);
    raw_fails(
        &fixture,
        format!("{{\"config\": {{\"Env\": [], \"Env\": [\"A=1\"]}}, {body}").as_bytes(),
        &["`config`", "`Env` appears twice"],
    );
    raw_fails(
        &fixture,
        format!("{{\"outputs\": {{\"out\": \"/a\", \"out\": \"/b\"}}, {}", body.replace("\"outputs\":", "\"ignored-outputs\":")).as_bytes(),
        &["`outputs`", "`out` appears twice"],
    );
    let entry = attrs["closure"][0].clone();
    let path = entry["path"].as_str().unwrap();
    let dup_entry = format!(
        "{{\"path\": \"{path}\", \"references\": [], \"references\": {}, \"narSize\": 1}}",
        serde_json::to_string(&entry["references"]).unwrap()
    );
    let mut closure = attrs["closure"].as_array().unwrap().iter().skip(1).map(|e| e.to_string()).collect::<Vec<_>>();
    closure.insert(0, dup_entry);
    let replaced = body.replace(&serde_json::to_string(&attrs["closure"]).unwrap(), &format!("[{}]", closure.join(",")));
    raw_fails(&fixture, format!("{{{replaced}").as_bytes(), &["`closure`", "duplicate field `references`"]);
}

#[test]
fn a_valid_offset_time_is_written_in_utc() {
    let (fixture, mut attrs) = small();
    attrs["created"] = json!("2020-01-01T00:00:00+01:00");
    attrs["mtime"] = json!("2020-01-01T00:00:00.500-00:30");
    let image = read_docker_archive(&fixture.build(&attrs));
    assert_eq!(image.config["created"], "2019-12-31T23:00:00Z");
    for entry in image.config["history"].as_array().unwrap() {
        assert_eq!(entry["created"], "2019-12-31T23:00:00Z");
    }
    // 2020-01-01T00:30:00.5Z, rounded down to whole seconds.
    for layer in &image.layers {
        for entry in read_tar(layer) {
            assert_eq!(entry.mtime, 1_577_838_600, "{}", entry.name);
        }
    }
}

#[test]
fn a_registry_host_name_and_the_largest_id_are_accepted() {
    let (fixture, mut attrs) = small();
    attrs["name"] = json!("localhost:5000/Team/App");
    attrs["tag"] = json!("v1.2_3-rc.1");
    attrs["uid"] = json!(4_294_967_294u64);
    attrs["gid"] = json!(4_294_967_294u64);
    let image = read_docker_archive(&fixture.build(&attrs));
    assert_eq!(image.manifest[0]["RepoTags"], json!(["localhost:5000/team/app:v1.2_3-rc.1"]));
    let entries = read_tar(&image.layers[0]);
    assert!(entries.iter().all(|e| e.uid == 4_294_967_294 && e.gid == 4_294_967_294));
}

/// A 100,000-path closure: the config stays far below the 4 MiB that skopeo reads, the
/// big last layer's comment lists what fits and counts the rest. The store is on tmpfs
/// when there is one: 100,000 directories on a busy disk take minutes to make and remove.
#[test]
fn a_huge_closure_keeps_the_config_small() {
    const PATHS: usize = 100_000;
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = tempfile::Builder::new().prefix("nixlayers-huge").tempdir_in(base).unwrap();
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    let store = store.to_str().unwrap().to_string();
    let paths: Vec<String> =
        (0..PATHS).map(|i| format!("{store}/{}-p{i}", crate::fixture::hash_for(&format!("p{i:06}")))).collect();
    let mut closure = Vec::with_capacity(PATHS);
    for (i, path) in paths.iter().enumerate() {
        fs::create_dir(path).unwrap();
        // The first path refers to every other one.
        let references: &[String] = if i == 0 { &paths } else { std::slice::from_ref(path) };
        closure.push(json!({ "path": path, "references": references, "narSize": 100 }));
    }
    let out = dir.path().join("image.tar");
    let attrs = json!({
        "name": "huge", "tag": "latest", "compressor": "none",
        "closure": closure, "outputs": { "out": out.to_str().unwrap() },
    });
    let attrs_file = dir.path().join("attrs.json");
    fs::write(&attrs_file, serde_json::to_vec(&attrs).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let output = std::process::Command::new(crate::fixture::BIN)
        .args(["build", "--attrs", attrs_file.to_str().unwrap()])
        .env("NIX_STORE", &store)
        .output()
        .unwrap();
    crate::fixture::assert_success(&output, &["build"]);
    eprintln!("100,000 paths built in {:.1} s", started.elapsed().as_secs_f64());
    let image = read_docker_archive(&fs::read(&out).unwrap());
    let config_len = image.files[&image.config_name].len();
    assert!(config_len < 256 << 10, "the config is {config_len} bytes");
    let history = image.config["history"].as_array().unwrap();
    assert_eq!(history.len(), 99);
    let last = history.last().unwrap()["comment"].as_str().unwrap();
    let listed = last.matches(&store).count();
    assert!(listed > 0 && last.ends_with(&format!(" … and {} more", PATHS - 98 - listed)), "{last}");
}
