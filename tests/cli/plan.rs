//! `nix-layers plan`: the classic popularity split (`layering = "popularity"`), as JSON
//! and as a table.

use crate::fixture::Fixture;
use crate::popularity::worked_example;
use serde_json::{json, Value};

/// The plan JSON for the fixture's attrs with `maxLayers` (None: the default).
fn plan_json(fixture: &Fixture, max_layers: Option<u64>, contents: &[&str]) -> Value {
    let mut attrs = fixture.attrs();
    attrs["layering"] = json!("popularity");
    if let Some(n) = max_layers {
        attrs["maxLayers"] = json!(n);
    }
    attrs["contents"] = json!(contents);
    let path = fixture.write_attrs("plan.attrs.json", &attrs);
    let stdout = fixture.run_ok(&["plan", "--json", "--attrs", path.to_str().unwrap()]);
    serde_json::from_slice(&stdout).unwrap()
}

/// Store layers as lists of (path, popularity).
fn store_layers(plan: &Value) -> Vec<Vec<(String, String)>> {
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "store")
        .map(|l| {
            l["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["path"].as_str().unwrap().to_string(), p["popularity"].as_str().unwrap().to_string()))
                .collect()
        })
        .collect()
}

/// The worked example's paths by letter, split into layers as `split` says.
fn expected_layers(fixture: &Fixture, split: &[&str]) -> Vec<Vec<(String, String)>> {
    let popularity = |n: char| match n {
        'A' => "1",
        'B' | 'G' => "2",
        'C' => "3",
        'D' => "4",
        'E' => "5",
        'F' => "9",
        _ => unreachable!(),
    };
    split
        .iter()
        .map(|layer| {
            layer
                .chars()
                .map(|n| (fixture.store_path(&n.to_string()), popularity(n).to_string()))
                .collect()
        })
        .collect()
}

/// The plan of the worked example with `contents = [A]` (A's closure is the whole graph)
/// and `maxLayers` (None: the default). Checks the customisation layer comes last.
fn worked_plan(max_layers: Option<u64>) -> (Fixture, Value) {
    let mut fixture = Fixture::new();
    let [a, ..] = worked_example(&mut fixture);
    let plan = plan_json(&fixture, max_layers, &[&a]);
    let layers = plan["layers"].as_array().unwrap();
    let last = layers.last().unwrap();
    assert_eq!(last["kind"], "customisation", "{plan:#}");
    assert_eq!(last["layer"].as_u64().unwrap() as usize, layers.len());
    assert_eq!(last["contents"], json!([a]));
    (fixture, plan)
}

#[test]
fn two_layers_put_every_path_in_the_one_store_layer() {
    let (fixture, plan) = worked_plan(Some(2));
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["FEDCBGA"]));
}

#[test]
fn three_layers_give_the_most_popular_its_own() {
    let (fixture, plan) = worked_plan(Some(3));
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["F", "EDCBGA"]));
}

#[test]
fn four_layers_give_the_two_most_popular_their_own() {
    let (fixture, plan) = worked_plan(Some(4));
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["F", "E", "DCBGA"]));
    let numbers: Vec<u64> = plan["layers"].as_array().unwrap().iter().map(|l| l["layer"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

#[test]
fn a_closure_within_budget_gets_one_layer_per_path() {
    // 7 paths: maxLayers 8 is exactly enough, 9 and the default 100 leave room.
    for max_layers in [Some(8), Some(9), None] {
        let (fixture, plan) = worked_plan(max_layers);
        let expected = expected_layers(&fixture, &["F", "E", "D", "C", "B", "G", "A"]);
        assert_eq!(store_layers(&plan), expected, "maxLayers {max_layers:?}");
    }
    // One short: the last two share a layer.
    let (fixture, plan) = worked_plan(Some(7));
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["F", "E", "D", "C", "B", "GA"]));
}

/// Found by this suite: `ImageSpec::from_attrs` looks `closure` up with `attrs.get`, which
/// only sees non-list values (lists live in `attrs.lists`), so without `contents` the
/// closure is dropped and the image has no store layers at all.
#[test]
fn a_closure_without_contents_still_fills_the_store_layers() {
    let mut fixture = Fixture::new();
    worked_example(&mut fixture);
    let plan = plan_json(&fixture, Some(3), &[]);
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["F", "EDCBGA"]));
    assert_eq!(plan["layers"].as_array().unwrap().len(), 2, "no contents, so no customisation layer: {plan:#}");
    // Absent (not just empty) contents: the same.
    let mut attrs = fixture.attrs();
    attrs["layering"] = json!("popularity");
    attrs["maxLayers"] = json!(3);
    let path = fixture.write_attrs("plan.attrs.json", &attrs);
    let stdout = fixture.run_ok(&["plan", "--json", "--attrs", path.to_str().unwrap()]);
    let plan: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(store_layers(&plan), expected_layers(&fixture, &["F", "EDCBGA"]));
}

#[test]
fn layer_nar_size_is_the_sum_of_its_paths() {
    let (_fixture, plan) = worked_plan(Some(3));
    for layer in plan["layers"].as_array().unwrap().iter().filter(|l| l["kind"] == "store") {
        let sum: u64 = layer["paths"].as_array().unwrap().iter().map(|p| p["narSize"].as_u64().unwrap()).sum();
        assert!(sum > 0);
        assert_eq!(layer["narSize"].as_u64().unwrap(), sum, "{layer:#}");
    }
}

#[test]
fn the_table_lists_every_path_once_with_its_layer_and_popularity() {
    let mut fixture = Fixture::new();
    let [a, b, c, d, e, f, g] = worked_example(&mut fixture);
    let mut attrs = fixture.attrs();
    attrs["layering"] = json!("popularity");
    attrs["maxLayers"] = json!(4);
    attrs["contents"] = json!([a]);
    let path = fixture.write_attrs("plan.attrs.json", &attrs);
    let table = String::from_utf8(fixture.run_ok(&["plan", "--attrs", path.to_str().unwrap()])).unwrap();
    let (rows, last): (Vec<&str>, Vec<&str>) =
        table.lines().filter(|l| l.contains(&fixture.store())).partition(|l| !l.contains("customisation"));
    assert_eq!(last.len(), 1, "one customisation row\n{table}");
    assert!(last[0].trim_start().starts_with('4') && last[0].ends_with(a.as_str()), "{table}");
    assert_eq!(rows.len(), 7, "{table}");
    // Popularity order, one row per path, each row with that path's count.
    for (row, (path, count)) in rows.iter().zip([(&f, "9"), (&e, "5"), (&d, "4"), (&c, "3"), (&b, "2"), (&g, "2"), (&a, "1")]) {
        assert!(row.ends_with(path.as_str()), "row `{row}` should be {path}\n{table}");
        let words: Vec<&str> = row.split_whitespace().collect();
        assert!(words.contains(&count), "row `{row}` should show popularity {count}\n{table}");
    }
    // Rows starting a layer carry its number.
    for (row, layer) in [(rows[0], "1"), (rows[1], "2"), (rows[2], "3")] {
        assert_eq!(row.split_whitespace().next(), Some(layer), "{table}");
    }
}

#[test]
fn plan_reads_nothing_from_disk_but_build_does() {
    // The worked example's paths do not exist; plan still works, build must not.
    let (fixture, plan) = worked_plan(None);
    assert_eq!(store_layers(&plan).len(), 7);
    let mut attrs = fixture.attrs();
    attrs["layering"] = json!("popularity");
    attrs["contents"] = json!([fixture.store_path("A")]);
    let attrs = fixture.write_attrs("build.attrs.json", &attrs);
    let output = fixture.run(&["build", "--attrs", attrs.to_str().unwrap()]);
    assert!(!output.status.success());
}

#[test]
fn popularity_counts_beyond_u64_are_exact_decimal_strings() {
    // 70 diamonds in a row: the bottom path is reached by 2^70 paths from the root.
    let mut fixture = Fixture::new();
    let names: Vec<String> = (0..=70).map(|i| format!("n{i:03}")).collect();
    let mut previous: Option<String> = None;
    for (i, name) in names.iter().enumerate().rev() {
        let bottom = previous.clone();
        let refs_owned: Vec<String> = if let Some(next) = bottom {
            let left = fixture.store_path(&format!("l{i:03}"));
            let right = fixture.store_path(&format!("r{i:03}"));
            fixture.add_entry(&left, &[&next]);
            fixture.add_entry(&right, &[&next]);
            vec![left, right]
        } else {
            Vec::new()
        };
        let refs: Vec<&str> = refs_owned.iter().map(String::as_str).collect();
        let path = fixture.store_path(name);
        fixture.add_entry(&path, &refs);
        previous = Some(path);
    }
    let plan = plan_json(&fixture, None, &[&fixture.store_path("n000")]);
    let top = &store_layers(&plan)[0][0];
    assert_eq!(top.0, fixture.store_path("n070"), "the bottom of the diamonds is the most popular");
    let count: num_bigint::BigUint = top.1.parse().unwrap();
    assert!(count > num_bigint::BigUint::from(u64::MAX), "count {count} should exceed 2^64");
}
