//! `nix-layers layers`: nixpkgs' auto-layer.py vectors byte for byte, and the promises
//! every strategy keeps, checked on generated graphs through the library.

use crate::fixture::{vector_mismatch, Fixture};
use nix_layers::attrs::GraphEntry;
use nix_layers::graph::Graph;
use nix_layers::layering::{self, Input, StoreLayer, Strategy as Layering};
use proptest::prelude::*;
use std::borrow::Cow;
use std::fs;
use std::path::PathBuf;

/// `../shared/data/autolayer`, next to the repository (external truth, never regenerated).
fn vector_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/autolayer");
    assert!(
        dir.is_dir(),
        "the shared autolayer vectors are missing: looked for the directory `{}` \
         (../shared/data/autolayer relative to the repository root)",
        dir.display()
    );
    dir
}

/// Every `NAME.L<k>.expected.json` with its graph `NAME.graph.json` and `k`, sorted.
fn vectors() -> Vec<(String, PathBuf, u64, PathBuf)> {
    let dir = vector_dir();
    let mut found: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_name()?.to_str()?.strip_suffix(".expected.json")?.to_string();
            let (name, limit) = stem.rsplit_once(".L")?;
            let limit: u64 = limit.parse().ok()?;
            Some((stem.clone(), dir.join(format!("{name}.graph.json")), limit, p))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_shared_vector_matches_auto_layer_py() {
    let vectors = vectors();
    assert!(!vectors.is_empty(), "no *.expected.json vectors in `{}`", vector_dir().display());
    let fixture = Fixture::new();
    let mut failures = Vec::new();
    for (name, graph, limit, expected) in &vectors {
        let expected = fs::read(expected).unwrap();
        let max_layers = (limit + 1).to_string();
        let args = ["layers", graph.to_str().unwrap(), "--layering", "autolayer", "--max-layers", &max_layers];
        failures.extend(vector_mismatch(name, &fixture.run(&args), &expected));
    }
    assert!(
        failures.is_empty(),
        "{} of {} autolayer vectors in `{}` fail:\n{}",
        failures.len(),
        vectors.len(),
        vector_dir().display(),
        failures.join("\n")
    );
}

/// An entry of a hand-made graph.
fn entry(path: &str, nar_size: u64, references: &[&str]) -> GraphEntry<'static> {
    GraphEntry {
        path: Cow::Owned(path.to_string()),
        references: references.iter().map(|r| Cow::Owned(r.to_string())).collect(),
        nar_size,
        nar_hash: None,
    }
}

/// The layers as store paths.
fn as_paths(graph: &Graph, layers: &[StoreLayer]) -> Vec<Vec<String>> {
    layers.iter().map(|l| l.paths.iter().map(|&n| graph.paths[n as usize].clone()).collect()).collect()
}

fn autolayer(entries: &[GraphEntry<'_>], available: usize, left_out: &[&str]) -> Vec<Vec<String>> {
    let graph = Graph::new(entries).unwrap();
    let mut excluded = vec![false; graph.len()];
    for path in left_out {
        excluded[graph.node(path).unwrap() as usize] = true;
    }
    let input = Input { graph: &graph, excluded: &excluded, available };
    as_paths(&graph, &layering::store_layers(&Layering::AutoLayer, &input).unwrap())
}

#[test]
fn autolayer_orders_layers_of_equal_closure_size_by_their_first_path_name_then_hash() {
    // Sizes all 0 (unknown): every layer ties. Each root leads its own layer, so the order
    // is by name after the hash: a, b, c (not by hash, not by input order).
    let entries = [
        entry("/nix/store/3333-a", 0, &[]),
        entry("/nix/store/1111-c", 0, &[]),
        entry("/nix/store/2222-b", 0, &[]),
    ];
    let expected = [["/nix/store/3333-a"], ["/nix/store/2222-b"], ["/nix/store/1111-c"]];
    assert_eq!(autolayer(&entries, 3, &[]), expected);
    let mut reversed = entries.to_vec();
    reversed.reverse();
    assert_eq!(autolayer(&reversed, 3, &[]), expected);
}

#[test]
fn autolayer_counts_a_left_out_layer_towards_the_limit_as_auto_layer_py_does() {
    // auto-layer.py splits the whole graph, then drops left-out paths: the big left-out
    // path takes one of the two layers, so its neighbours share the other.
    let entries = [
        entry("/nix/store/aaaa-a", 10, &["/nix/store/bbbb-b"]),
        entry("/nix/store/bbbb-b", 100, &[]),
        entry("/nix/store/cccc-c", 1000, &[]),
    ];
    assert_eq!(autolayer(&entries, 2, &["/nix/store/cccc-c"]), [["/nix/store/aaaa-a", "/nix/store/bbbb-b"]]);
    assert_eq!(autolayer(&entries, 3, &["/nix/store/cccc-c"]), [["/nix/store/bbbb-b"], ["/nix/store/aaaa-a"]]);
}

#[test]
fn autolayer_reasons_name_the_large_paths() {
    // app and tool both use lib; the limit stops before `other` leads a layer.
    let entries = [
        entry("/nix/store/aaaa-root", 1, &["/nix/store/bbbb-app", "/nix/store/cccc-tool", "/nix/store/eeee-other"]),
        entry("/nix/store/eeee-other", 300, &[]),
        entry("/nix/store/bbbb-app", 500, &["/nix/store/dddd-lib"]),
        entry("/nix/store/cccc-tool", 400, &["/nix/store/dddd-lib"]),
        entry("/nix/store/dddd-lib", 10, &[]),
    ];
    let graph = Graph::new(&entries).unwrap();
    let excluded = vec![false; graph.len()];
    let input = Input { graph: &graph, excluded: &excluded, available: 4 };
    let layers = layering::store_layers(&Layering::AutoLayer, &input).unwrap();
    let reasons: Vec<&str> = layers.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "shared by large paths app, tool",
            "large path tool and its dependencies no other large path uses",
            "large path app and its dependencies no other large path uses",
            "paths no large path uses (roots and what only they use)",
        ]
    );
}

// ---- Promises of every strategy, on generated graphs -------------------------------------

/// splitmix64: a small deterministic generator, so that a case is a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The kinds of closure the promises are checked on.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Node i refers to later nodes at random.
    RandomDag { nodes: usize, density: u64 },
    /// A chain of diamonds: each top refers to two sides that both refer to the next top.
    Diamonds { count: usize },
    /// One small wrapper root over one app over a random library DAG.
    WrapperRoot { libraries: usize },
    /// Thousands of roots over a few shared libraries.
    ManyRoots { roots: usize, libraries: usize },
}

/// Edges (`refs[i]` = nodes i refers to) of `shape`; nodes with smaller numbers are users.
fn edges(shape: Shape, rng: &mut Rng) -> Vec<Vec<usize>> {
    match shape {
        Shape::RandomDag { nodes, density } => (0..nodes)
            .map(|i| (i + 1..nodes).filter(|_| rng.next() % 1000 < density).collect())
            .collect(),
        Shape::Diamonds { count } => {
            // Node 3k is a top, 3k+1 and 3k+2 its sides, 3(k+1) the next top.
            let mut refs = vec![Vec::new(); 3 * count + 1];
            for k in 0..count {
                let top = 3 * k;
                refs[top] = vec![top + 1, top + 2];
                refs[top + 1] = vec![top + 3];
                refs[top + 2] = vec![top + 3];
            }
            refs
        }
        Shape::WrapperRoot { libraries } => {
            let n = libraries + 2;
            let mut refs = vec![vec![1], (2..n).collect::<Vec<_>>()];
            refs.extend((2..n).map(|i| (i + 1..n).filter(|_| rng.chance(10)).collect()));
            refs
        }
        Shape::ManyRoots { roots, libraries } => {
            let n = roots + libraries;
            let mut refs: Vec<Vec<usize>> =
                (0..roots).map(|_| (0..rng.below(4)).map(|_| roots + rng.below(libraries)).collect()).collect();
            refs.extend((roots..n).map(|i| (i + 1..n).filter(|_| rng.chance(20)).collect()));
            refs
        }
    }
}

const PACKAGES: [&str; 6] = ["glibc-2.39", "lib", "app", "python3-3.11", "a-b", "zlib"];

/// A store path for node `i`: a hash from the generator, a name that often repeats.
fn store_path(i: usize, rng: &mut Rng) -> String {
    let hash: String = (0..32).map(|_| char::from(b"0123456789abcdfghijklmnpqrsvwxyz"[rng.below(32)])).collect();
    format!("/nix/store/{hash}-{}{}", PACKAGES[i % PACKAGES.len()], i % 7)
}

/// The entries of a graph of `shape`, with sizes that often tie (and are sometimes 0).
fn generate(shape: Shape, seed: u64) -> Vec<GraphEntry<'static>> {
    let mut rng = Rng(seed);
    let refs = edges(shape, &mut rng);
    let paths: Vec<String> = (0..refs.len()).map(|i| store_path(i, &mut rng)).collect();
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let nar_size = match rng.below(5) {
                0 => 0,
                1 => 4096,
                2 => 1 << 20,
                _ => rng.next() % 1_000_000_000,
            };
            let mut references: Vec<Cow<'static, str>> = r.iter().map(|&j| Cow::Owned(paths[j].clone())).collect();
            if rng.chance(50) {
                references.push(Cow::Owned(paths[i].clone())); // Nix lists self-references
            }
            GraphEntry { path: Cow::Owned(paths[i].clone()), references, nar_size, nar_hash: None }
        })
        .collect()
}

/// The layers of `entries` by `strategy`, as paths with their reasons.
fn run(strategy: &Layering, entries: &[GraphEntry<'_>], left_out: &[String], available: usize) -> Vec<(Vec<String>, String)> {
    let graph = Graph::new(entries).unwrap();
    let mut excluded = vec![false; graph.len()];
    for path in left_out {
        excluded[graph.node(path).unwrap() as usize] = true;
    }
    let input = Input { graph: &graph, excluded: &excluded, available };
    let layers = layering::store_layers(strategy, &input).unwrap();
    as_paths(&graph, &layers).into_iter().zip(layers.into_iter().map(|l| l.reason)).collect()
}

/// Checks every promise of every strategy in [`layering::NAMES`] on one graph.
fn check_promises(shape: Shape, seed: u64, max_layers: usize, leave_out: bool) -> Result<(), TestCaseError> {
    let entries = generate(shape, seed);
    let mut rng = Rng(seed ^ 0x5eed);
    let left_out: Vec<String> =
        if leave_out { vec![entries[rng.below(entries.len())].path.to_string()] } else { Vec::new() };
    let available = max_layers - 1;
    // The same graph in another input order, references shuffled too.
    let mut shuffled = entries.clone();
    rng.shuffle(&mut shuffled);
    for e in &mut shuffled {
        rng.shuffle(&mut e.references);
    }
    for name in layering::NAMES {
        let strategy = Layering::from_name(name).unwrap();
        let layers = run(&strategy, &entries, &left_out, available);
        let mut seen: Vec<&str> = layers.iter().flat_map(|(paths, _)| paths.iter().map(String::as_str)).collect();
        let total = seen.len();
        seen.sort_unstable();
        seen.dedup();
        let mut wanted: Vec<&str> =
            entries.iter().map(|e| e.path.as_ref()).filter(|p| !left_out.iter().any(|l| l == p)).collect();
        wanted.sort_unstable();
        prop_assert_eq!(total, seen.len(), "{}: a path is in two layers", name);
        prop_assert_eq!(&seen, &wanted, "{}: the layers do not hold exactly the paths not left out", name);
        prop_assert!(layers.iter().all(|(paths, _)| !paths.is_empty()), "{}: an empty layer", name);
        prop_assert!(layers.len() <= available, "{}: {} layers, {} available", name, layers.len(), available);
        prop_assert_eq!(&run(&strategy, &entries, &left_out, available), &layers, "{}: not deterministic", name);
        prop_assert_eq!(
            &run(&strategy, &shuffled, &left_out, available),
            &layers,
            "{}: depends on the graph's input order",
            name
        );
    }
    Ok(())
}

fn small_shapes() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (1usize..120, 0u64..200).prop_map(|(nodes, density)| Shape::RandomDag { nodes, density }),
        (1usize..40).prop_map(|count| Shape::Diamonds { count }),
        (0usize..80).prop_map(|libraries| Shape::WrapperRoot { libraries }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_strategy_keeps_its_promises(
        shape in small_shapes(),
        seed in any::<u64>(),
        max_layers in 2usize..=200,
        leave_out in any::<bool>(),
    ) {
        check_promises(shape, seed, max_layers, leave_out)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_strategy_keeps_its_promises_with_thousands_of_roots(
        roots in 1000usize..3000,
        libraries in 1usize..40,
        seed in any::<u64>(),
        max_layers in 2usize..=200,
    ) {
        check_promises(Shape::ManyRoots { roots, libraries }, seed, max_layers, true)?;
    }
}

// ---- autolayer against a plain, slow reading of auto-layer.py's algorithm ------------------

/// The autolayer split computed the obvious way: every step copies the whole split and
/// recomputes closures from scratch (quadratic, fine for small graphs). Sorting and the
/// tie rule are the documented ones.
fn plain_autolayer(entries: &[GraphEntry<'_>], available: usize, left_out: &[String]) -> Vec<Vec<String>> {
    use std::collections::{BTreeSet, HashMap, HashSet};
    let refs: HashMap<&str, BTreeSet<&str>> = entries
        .iter()
        .map(|e| (e.path.as_ref(), e.references.iter().map(|r| r.as_ref()).filter(|r| *r != e.path).collect()))
        .collect();
    let size: HashMap<&str, u64> = entries.iter().map(|e| (e.path.as_ref(), e.nar_size)).collect();
    let mut users: HashMap<&str, BTreeSet<&str>> = refs.keys().map(|&p| (p, BTreeSet::new())).collect();
    for (&p, rs) in &refs {
        for &r in rs {
            users.get_mut(r).unwrap().insert(p);
        }
    }
    let reach = |start: &str, edges: &HashMap<&str, BTreeSet<&str>>| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(p) = todo.pop() {
            for &next in &edges[p.as_str()] {
                if seen.insert(next.to_string()) {
                    todo.push(next.to_string());
                }
            }
        }
        seen
    };
    let mut by_size: Vec<&str> = refs.keys().copied().collect();
    by_size.sort_by(|a, b| (size[a], a).cmp(&(size[b], b)));
    let mut split: HashMap<&str, BTreeSet<&str>> = refs.keys().map(|&p| (p, BTreeSet::new())).collect();
    while let Some(primary) = by_size.pop() {
        let mut next = split.clone();
        next.insert(primary, BTreeSet::from([primary]));
        let deps = reach(primary, &refs);
        let above = reach(primary, &users);
        for dep in &deps {
            let set = next.get_mut(dep.as_str()).unwrap();
            set.retain(|q| !above.contains(*q));
            if !set.iter().any(|q| deps.contains(*q)) {
                set.insert(primary);
            }
        }
        if next.values().collect::<HashSet<_>>().len() > available.max(1) {
            break;
        }
        split = next;
    }
    let key = |p: &str| -> (String, String) {
        let (hash, name) = p.split_once('-').unwrap();
        (name.to_string(), hash.to_string())
    };
    let mut layers: HashMap<&BTreeSet<&str>, Vec<&str>> = HashMap::new();
    for (&p, set) in &split {
        layers.entry(set).or_default().push(p);
    }
    let mut layers: Vec<(u64, Vec<&str>)> = layers
        .into_values()
        .map(|mut paths| {
            paths.sort_by_key(|p| key(p));
            let mut closure: BTreeSet<String> = paths.iter().map(|p| p.to_string()).collect();
            for p in &paths {
                closure.extend(reach(p, &refs));
            }
            (closure.iter().map(|p| size[p.as_str()]).sum(), paths)
        })
        .collect();
    layers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1[0]).cmp(&key(b.1[0]))));
    layers
        .into_iter()
        .map(|(_, paths)| paths.into_iter().filter(|p| !left_out.iter().any(|l| l == p)).map(String::from).collect())
        .filter(|l: &Vec<String>| !l.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn autolayer_equals_the_plain_reading_of_auto_layer_py(
        shape in prop_oneof![
            (1usize..60, 0u64..300).prop_map(|(nodes, density)| Shape::RandomDag { nodes, density }),
            (1usize..15).prop_map(|count| Shape::Diamonds { count }),
            (0usize..40).prop_map(|libraries| Shape::WrapperRoot { libraries }),
            (1usize..60, 1usize..10).prop_map(|(roots, libraries)| Shape::ManyRoots { roots, libraries }),
        ],
        seed in any::<u64>(),
        max_layers in 2usize..80,
        leave_out in any::<bool>(),
    ) {
        let entries = generate(shape, seed);
        let left_out: Vec<String> =
            if leave_out { vec![entries[Rng(seed).below(entries.len())].path.to_string()] } else { Vec::new() };
        let graph = Graph::new(&entries).unwrap();
        let mut excluded = vec![false; graph.len()];
        for path in &left_out {
            excluded[graph.node(path).unwrap() as usize] = true;
        }
        let input = Input { graph: &graph, excluded: &excluded, available: max_layers - 1 };
        let fast = as_paths(&graph, &layering::store_layers(&Layering::AutoLayer, &input).unwrap());
        prop_assert_eq!(fast, plain_autolayer(&entries, max_layers - 1, &left_out));
    }
}

#[test]
fn layering_and_a_pipeline_together_are_refused_naming_both() {
    let (fixture, mut attrs) = crate::errors::small();
    attrs["layering"] = serde_json::json!("reuse");
    attrs["layeringPipeline"] = serde_json::json!([["popularity_contest"]]);
    crate::errors::build_fails(&fixture, &attrs, &["`layering`", "`layeringPipeline`", "both"]);
}

#[test]
fn an_unknown_layering_is_refused_naming_it() {
    let (fixture, mut attrs) = crate::errors::small();
    attrs["layering"] = serde_json::json!("fastest");
    crate::errors::build_fails(&fixture, &attrs, &["`layering`", "\"fastest\"", "autolayer"]);
}

#[test]
fn max_layers_above_the_bound_is_refused_naming_the_key() {
    let (fixture, mut attrs) = crate::errors::small();
    attrs["maxLayers"] = serde_json::json!(layering::MAX_LAYERS + 1);
    crate::errors::build_fails(&fixture, &attrs, &["`maxLayers`", "1001", "125 layers"]);
    attrs["maxLayers"] = serde_json::json!(layering::MAX_LAYERS);
    let file = fixture.write_attrs("ok.attrs.json", &attrs);
    fixture.run_ok(&["plan", "--attrs", file.to_str().unwrap()]);
}
