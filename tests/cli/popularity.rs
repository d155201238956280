//! `nix-layers popularity`: the shared vectors, byte for byte, and the builder mode.

use crate::fixture::{vector_mismatch, Fixture};
use serde_json::{json, Value};
use std::fs;
use std::path::PathBuf;

/// `../shared/data/popularity`, next to the repository (external truth, never regenerated).
fn vector_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/popularity");
    assert!(
        dir.is_dir(),
        "the shared popularity vectors are missing: looked for the directory `{}` \
         (../shared/data/popularity relative to the repository root)",
        dir.display()
    );
    dir
}

/// Every `NAME.attrs.json` with its `NAME.expected`, sorted by name.
fn vectors() -> Vec<(String, PathBuf, PathBuf)> {
    let dir = vector_dir();
    let mut found: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".attrs.json")?.to_string();
            let expected = dir.join(format!("{name}.expected"));
            Some((name, p, expected))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_shared_vector_matches_closure_graph_py() {
    let vectors = vectors();
    assert!(!vectors.is_empty(), "no *.attrs.json vectors in `{}`", vector_dir().display());
    let fixture = Fixture::new();
    let mut failures = Vec::new();
    for (name, attrs, expected) in &vectors {
        let Ok(expected) = fs::read(expected) else {
            failures.push(format!("{name}: `{}` is missing", expected.display()));
            continue;
        };
        failures.extend(vector_mismatch(name, &fixture.run(&["popularity", attrs.to_str().unwrap(), "graph"]), &expected));
    }
    assert!(
        failures.is_empty(),
        "{} of {} popularity vectors fail:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

/// The worked example of closure-graph.py, drawn:
///
/// ```text
/// A ─┬─> B ─┬─> C ─┬─> D ──> F
///    │      │      └─> E ──> F
///    │      └────────> E
///    └─> G
/// ```
/// A→B,G; B→C,E; C→D,E; D→F; E→F gives A1 B2 C3 D4 E5 F9 G2, printed F E D C B G A.
pub fn worked_example(fixture: &mut Fixture) -> [String; 7] {
    let p = |f: &Fixture, n: &str| f.store_path(n);
    let [a, b, c, d, e, f, g] = ["A", "B", "C", "D", "E", "F", "G"].map(|n| p(fixture, n));
    // Listed in an order unrelated to the answer, as Nix lists them (by path).
    fixture.add_entry(&a, &[&b, &g]);
    fixture.add_entry(&b, &[&c, &e]);
    fixture.add_entry(&c, &[&d, &e]);
    fixture.add_entry(&d, &[&f]);
    fixture.add_entry(&e, &[&f]);
    fixture.add_entry(&f, &[]);
    fixture.add_entry(&g, &[]);
    [a, b, c, d, e, f, g]
}

#[test]
fn worked_example_prints_f_e_d_c_b_g_a() {
    let mut fixture = Fixture::new();
    let [a, b, c, d, e, f, g] = worked_example(&mut fixture);
    let file = fixture.write_attrs("graph.json", &json!({ "graph": fixture.closure() }));
    let stdout = fixture.run_ok(&["popularity", file.to_str().unwrap()]);
    let expected = [f, e, d, c, b, g, a].map(|p| p + "\n").concat();
    assert_eq!(String::from_utf8(stdout).unwrap(), expected);
}

#[test]
fn another_key_is_read_when_given() {
    let mut fixture = Fixture::new();
    let [a, b, ..] = worked_example(&mut fixture);
    let closure = fixture.closure();
    let file = fixture.write_attrs("graph.json", &json!({ "graph": [], "other": closure }));
    let stdout = String::from_utf8(fixture.run_ok(&["popularity", file.to_str().unwrap(), "other"])).unwrap();
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(stdout.ends_with(&format!("{b}\n{}\n{a}\n", fixture.store_path("G"))), "{stdout}");
}

#[test]
fn a_bare_list_file_is_read_as_the_graph() {
    let mut fixture = Fixture::new();
    let [a, b, c, d, e, f, g] = worked_example(&mut fixture);
    let file = fixture.write_attrs("list.json", &fixture.closure());
    let stdout = fixture.run_ok(&["popularity", file.to_str().unwrap()]);
    assert_eq!(String::from_utf8(stdout).unwrap(), [f, e, d, c, b, g, a].map(|p| p + "\n").concat());
}

#[test]
fn escaped_json_strings_read_like_plain_ones() {
    // Nix never escapes `/` in a path, but JSON allows it, and a string with escapes
    // cannot be borrowed from the file's text: both forms must give the same order.
    let mut fixture = Fixture::new();
    let [a, b, c, d, e, f, g] = worked_example(&mut fixture);
    let plain = serde_json::to_string(&json!({ "graph": fixture.closure() })).unwrap();
    let escaped = fixture.dir.path().join("escaped.json");
    fs::write(&escaped, plain.replace('/', "\\/")).unwrap();
    assert!(!fs::read_to_string(&escaped).unwrap().contains("\"/"), "every path is escaped");
    let stdout = fixture.run_ok(&["popularity", escaped.to_str().unwrap()]);
    assert_eq!(String::from_utf8(stdout).unwrap(), [f, e, d, c, b, g, a].map(|p| p + "\n").concat());
}

/// The builder attrs for the `seed-example` vector: its graph and an `outputs.out`.
fn builder_attrs(fixture: &Fixture, out: &str) -> (Value, Vec<u8>) {
    let dir = vector_dir();
    let vector: Value = serde_json::from_slice(&fs::read(dir.join("seed-example.attrs.json")).unwrap()).unwrap();
    let expected = fs::read(dir.join("seed-example.expected")).unwrap();
    let attrs = json!({
        "graph": vector["graph"],
        "outputs": { "out": fixture.out(out).to_str().unwrap() },
        "builder": crate::fixture::BIN,
        "args": ["popularity"],
    });
    (attrs, expected)
}

#[test]
fn builder_mode_writes_the_list_to_outputs_out() {
    let fixture = Fixture::new();
    let (attrs, expected) = builder_attrs(&fixture, "list");
    let file = fixture.write_attrs("attrs.json", &attrs);
    let stdout = fixture.run_ok(&["popularity", "--attrs", file.to_str().unwrap()]);
    assert!(stdout.is_empty(), "the builder mode printed to stdout: {:?}", String::from_utf8_lossy(&stdout));
    assert_eq!(fs::read(fixture.out("list")).unwrap(), expected);
    let leftovers: Vec<_> = fs::read_dir(fixture.out_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["list"], "only the output may be in its directory");
}

#[test]
fn attrs_file_lookup_order() {
    let fixture = Fixture::new();
    let top = fixture.dir.path().join("build-top");
    fs::create_dir(&top).unwrap();
    let cwd_attrs = builder_attrs(&fixture, "from-cwd");
    let top_attrs = builder_attrs(&fixture, "from-build-top");
    let var_attrs = builder_attrs(&fixture, "from-variable");
    let expected = cwd_attrs.1.clone();
    fs::write(fixture.dir.path().join(".attrs.json"), serde_json::to_vec(&cwd_attrs.0).unwrap()).unwrap();
    fs::write(top.join(".attrs.json"), serde_json::to_vec(&top_attrs.0).unwrap()).unwrap();
    let var_file = fixture.write_attrs("named.attrs.json", &var_attrs.0);
    let missing = fixture.dir.path().join("host/path/that/does/not/exist/.attrs.json");

    let run = |vars: &[(&str, &PathBuf)]| {
        let mut cmd = fixture.command(&["popularity"]);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap();
        crate::fixture::assert_success(&output, &["popularity"]);
        let written: Vec<String> = fs::read_dir(fixture.out_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(written.len(), 1, "{written:?}");
        let bytes = fs::read(fixture.out(&written[0])).unwrap();
        assert_eq!(bytes, expected);
        fs::remove_file(fixture.out(&written[0])).unwrap();
        written[0].clone()
    };
    // $NIX_ATTRS_JSON_FILE wins when it exists.
    assert_eq!(run(&[("NIX_ATTRS_JSON_FILE", &var_file), ("NIX_BUILD_TOP", &top)]), "from-variable");
    // Inside Nix 2.8's sandbox it names a host path that does not exist: $NIX_BUILD_TOP next.
    assert_eq!(run(&[("NIX_ATTRS_JSON_FILE", &missing), ("NIX_BUILD_TOP", &top)]), "from-build-top");
    // Neither: ./.attrs.json in the working directory.
    assert_eq!(run(&[("NIX_ATTRS_JSON_FILE", &missing)]), "from-cwd");
    assert_eq!(run(&[]), "from-cwd");
}

#[test]
fn no_attrs_file_anywhere_lists_where_it_looked() {
    let fixture = Fixture::new();
    let missing = fixture.dir.path().join("nowhere/.attrs.json");
    let top = fixture.dir.path().join("empty-top");
    fs::create_dir(&top).unwrap();
    let output = fixture
        .command(&["popularity"])
        .env("NIX_ATTRS_JSON_FILE", &missing)
        .env("NIX_BUILD_TOP", &top)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    for place in [missing.to_str().unwrap(), top.join(".attrs.json").to_str().unwrap(), ".attrs.json"] {
        assert!(stderr.contains(place), "stderr does not name `{place}`:\n{stderr}");
    }
    assert_eq!(fs::read_dir(fixture.out_dir()).unwrap().count(), 0);
}
