//! nixpkgs' `layeringPipeline`: through `nix-layers layers --pipeline` and through an image
//! build with `layeringPipeline` in the attrs.

use crate::fixture::{file, read_docker_archive, read_tar, Fixture};
use serde_json::{json, Value};
use std::fs;

/// nixpkgs' `flatten_references_graph_test.py` graph (NixOS/nixpkgs,
/// pkgs/build-support/flatten-references-graph/src/flatten_references_graph/): A→C, B→C,
/// B→D, narSizes 2, 4, 6, 8, as a bare list of path entries.
fn nixpkgs_test_graph() -> Value {
    json!([
        {"path": "A", "narSize": 2, "references": ["A", "C"]},
        {"path": "B", "narSize": 4, "references": ["C", "D"]},
        {"path": "C", "narSize": 6, "references": ["C"]},
        {"path": "D", "narSize": 8, "references": ["D"]},
    ])
}

/// Writes `name` in the fixture directory; returns its path as a string.
fn write(fixture: &Fixture, name: &str, text: &str) -> String {
    let path = fixture.dir.path().join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `nix-layers layers GRAPH --pipeline PIPELINE [--ignore IGNORE]`'s stdout.
fn layers(fixture: &Fixture, graph: &Value, pipeline: &Value, ignore: &[&str]) -> String {
    let graph = write(fixture, "graph.json", &graph.to_string());
    let pipeline = write(fixture, "pipeline.json", &pipeline.to_string());
    let mut args = vec!["layers", &graph, "--pipeline", &pipeline];
    let ignore = write(fixture, "ignore", &ignore.iter().map(|p| format!("{p}\n")).collect::<String>());
    args.extend(["--ignore", &ignore]);
    String::from_utf8(fixture.run_ok(&args)).unwrap()
}

#[test]
fn the_layers_of_nixpkgs_own_test() {
    // flatten_references_graph_test.py: expected layers, with exclude_paths as --ignore.
    let fixture = Fixture::new();
    let graph = nixpkgs_test_graph();
    let split = json!([["split_paths", ["B"]]]);
    assert_eq!(layers(&fixture, &graph, &split, &[]), "[[\"B\", \"D\"], [\"C\"], [\"A\"]]\n");
    let nested = json!([["split_paths", ["B"]], ["over", "main", ["subcomponent_in", ["B"]]]]);
    assert_eq!(layers(&fixture, &graph, &nested, &[]), "[[\"B\"], [\"D\"], [\"C\"], [\"A\"]]\n");
    assert_eq!(layers(&fixture, &graph, &split, &["A"]), "[[\"B\", \"C\", \"D\"]]\n");
    assert_eq!(layers(&fixture, &graph, &split, &["D"]), "[[\"B\"], [\"C\"], [\"A\"]]\n");
}

#[test]
fn the_2024_default_pipeline_gives_the_popularity_layers() {
    let fixture = Fixture::new();
    let graph = nixpkgs_test_graph();
    let graph_file = write(&fixture, "graph.json", &graph.to_string());
    for n in 2..7u64 {
        let pipeline = json!([["popularity_contest"], ["limit_layers", n - 1]]);
        let classic = fixture.run_ok(&["layers", &graph_file, "--layering", "popularity", "--max-layers", &n.to_string()]);
        assert_eq!(layers(&fixture, &graph, &pipeline, &[]).as_bytes(), classic, "maxLayers {n}");
    }
}

/// Three store paths: `app` and `tool` both use `libc`; contents = [app, tool].
fn three_paths() -> (Fixture, Value, [String; 3]) {
    let mut fixture = Fixture::new();
    let libc = fixture.add_path("libc", &[file("lib/libc.so", b"libc\n", 0o444)], &[]);
    let app = fixture.add_path("app", &[file("bin/app", b"app\n", 0o555)], &[&libc]);
    let tool = fixture.add_path("tool", &[file("bin/tool", b"tool\n", 0o555)], &[&libc]);
    let mut attrs = fixture.attrs();
    attrs["contents"] = json!([app, tool]);
    (fixture, attrs, [libc, app, tool])
}

/// The store layers of `plan --json` as (paths, reason).
fn planned(fixture: &Fixture, attrs: &Value) -> Vec<(Vec<String>, String)> {
    let file = fixture.write_attrs("plan.attrs.json", attrs);
    let plan: Value = serde_json::from_slice(&fixture.run_ok(&["plan", "--json", "--attrs", file.to_str().unwrap()])).unwrap();
    assert_eq!(plan["layering"], "layeringPipeline");
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "store")
        .map(|l| {
            let paths = l["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap().to_string()).collect();
            (paths, l["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn an_image_built_with_a_pipeline_has_its_layers() {
    // The shape of nixpkgs' documented use: one package's closure apart, the rest by
    // popularity.
    let (fixture, mut attrs, [libc, app, tool]) = three_paths();
    attrs["layeringPipeline"] = json!([
        ["subcomponent_out", [tool]],
        ["over", "rest", ["pipe", [["popularity_contest"], ["limit_layers", 100]]]]
    ]);
    assert_eq!(
        planned(&fixture, &attrs),
        vec![
            // narSize order: the fixture gives later paths bigger narSizes.
            (vec![libc.clone(), tool.clone()], "subcomponent_out main".to_string()),
            (vec![app.clone()], "subcomponent_out rest › popularity_contest #1".to_string()),
        ]
    );
    let image = read_docker_archive(&fixture.build(&attrs));
    assert_eq!(image.layers.len(), 3, "two store layers and the customisation layer");
    let names = |layer: &[u8]| -> Vec<String> { read_tar(layer).into_iter().map(|e| e.name).collect() };
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let first = names(&image.layers[0]);
    assert!(first.iter().any(|n| *n == format!("{}/lib/libc.so", rel(&libc))), "{first:?}");
    assert!(first.iter().any(|n| *n == format!("{}/bin/tool", rel(&tool))), "{first:?}");
    assert!(!first.iter().any(|n| n.contains("-app")), "{first:?}");
    let second = names(&image.layers[1]);
    assert!(second.iter().any(|n| *n == format!("{}/bin/app", rel(&app))), "{second:?}");
}

#[test]
fn a_pipeline_ignores_max_layers_as_in_nixpkgs() {
    // nixpkgs ignores maxLayers when a pipeline is given: three store layers here, with
    // maxLayers = 2.
    let (fixture, mut attrs, _) = three_paths();
    attrs["maxLayers"] = json!(2);
    attrs["layeringPipeline"] = json!([["split_every", 1]]);
    assert_eq!(planned(&fixture, &attrs).len(), 3);
}

/// `args` fail with exit 1, no panic, and every fragment in stderr.
fn fails(fixture: &Fixture, args: &[&str], fragments: &[&str]) {
    let output = fixture.run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "nix-layers {}: {stderr}", args.join(" "));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    for fragment in fragments {
        assert!(stderr.contains(fragment), "stderr does not say `{fragment}`:\n{stderr}");
    }
}

#[test]
fn a_bad_pipeline_file_is_named() {
    let fixture = Fixture::new();
    let graph = write(&fixture, "graph.json", &nixpkgs_test_graph().to_string());
    let cases: [(&str, &[&str]); 5] = [
        (r#"[["popularity_contest"], ["frobnicate", 3]]"#, &["layeringPipeline[1]: unknown function \"frobnicate\""]),
        (r#"[["popularity_contest"], ["split_every", "x"]]"#, &["layeringPipeline[1] (split_every): expected a positive integer, got \"x\""]),
        (r#"[["popularity_contest"], ["split_paths", ["B"]]]"#, &["layeringPipeline[1] (split_paths): expects a graph"]),
        (r#"{"pipeline": []}"#, &["layeringPipeline: expected a list of steps"]),
        (r#"[["popularity_contest"]"#, &["the pipeline", "is not valid JSON"]),
    ];
    for (text, fragments) in cases {
        let pipeline = write(&fixture, "bad.json", text);
        fails(&fixture, &["layers", &graph, "--pipeline", &pipeline], fragments);
    }
    let missing = fixture.dir.path().join("missing.json");
    fails(&fixture, &["layers", &graph, "--pipeline", missing.to_str().unwrap()], &["cannot read the pipeline"]);
}

#[test]
fn a_bad_layering_pipeline_attr_fails_the_build_naming_the_step() {
    let (fixture, mut attrs, _) = three_paths();
    let out = fixture.out("image.tar");
    let cases = [
        (json!([["popularity_contest"], ["limit_layer", 10]]), "layeringPipeline[1]: unknown function \"limit_layer\""),
        (
            json!([["subcomponent_out", []], ["over", "rest", ["pipe", [["split_every", 0]]]]]),
            "layeringPipeline[1][2][1][0] (split_every): expected a positive integer, got 0",
        ),
    ];
    for (pipeline, fragment) in cases {
        attrs["layeringPipeline"] = pipeline;
        let file = fixture.write_attrs("bad.attrs.json", &attrs);
        let file = file.to_str().unwrap();
        fails(&fixture, &["build", "--attrs", file], &[fragment]);
        assert!(!out.exists(), "a failed build left {}", out.display());
        fails(&fixture, &["plan", "--attrs", file], &[fragment]);
    }
}
