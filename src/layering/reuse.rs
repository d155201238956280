//! Ours: layers that re-ship the fewest bytes when an image is updated.
//!
//! A layer is re-shipped when any path in it changes, and a path changes when anything in
//! its closure changes. So a layer's expected cost is its bytes times the chance that an
//! update touches the union of its members' closures. The layers:
//!
//! - **anchor layers**: the biggest paths (by size class; among equal classes the one with
//!   the bigger closure, which changes more often; then by name) each lead a layer, and
//!   every other path joins the nearest anchor above it (the one with the smallest
//!   closure). A path below an anchor changes only if the anchor changes too, so it adds
//!   no chance of re-shipping, only its (small) bytes.
//! - **app layers**: the apps (the roots, or the paths that only a wrapper root such as a
//!   `buildEnv` references) that are not anchors, in up to a fifth of the layers, by a
//!   hash of their name (adding an app moves no other), each with the paths that only its
//!   apps use. Every big path anchors, so an app shares a layer with no bulk it does not
//!   use, except when the limit leaves fewer layers than big paths.
//! - one **shared** layer for paths that only apps of different app layers use, and the
//!   **wrapper** root alone.
//!
//! Order matters: docker keys a layer by its chain, so it re-pulls a changed layer and
//! every layer above it. `order` stacks them so that the layers with the most bytes per
//! chance of changing go lowest: core libraries and big stable paths at the bottom, apps
//! and the wrapper on top.
//!
//! Every decision comes from the graph's structure, sizes rounded to powers of two and
//! package names (the part of a path after its hash); a hash only breaks ties between
//! equal names. Closure sizes are estimated from hashes of names, so an update that
//! changes hashes leaves every other layer, and the order of the layers below it, as it
//! was. `bench/reuse` measures it against nixpkgs' auto-layer.

use super::{name_of, Input, StoreLayer};
use crate::graph::Graph;
use crate::popularity::tie_break_key;
use std::cmp::{Ordering, Reverse};

/// Number of minimum hashes kept per closure (see [`closure_sketches`]).
const SKETCH: usize = 32;

/// The layers, bottom first.
pub fn layers(input: &Input<'_>) -> Vec<StoreLayer> {
    let graph = input.graph;
    let excluded = input.excluded;
    let included: Vec<u32> = input.included().collect();
    if included.is_empty() {
        return Vec::new();
    }
    let available = input.available.max(1);
    let keys: Vec<String> = graph.paths.iter().map(|p| tie_break_key(p)).collect();
    let by_name = |a: u32, b: u32| keys[a as usize].cmp(&keys[b as usize]);
    let sketches = closure_sketches(graph);
    let closure: Vec<u64> = sketches.iter().map(|s| estimate(s)).collect();
    let size_class: Vec<u32> = graph.nar_sizes.iter().map(|&s| 64 - s.leading_zeros()).collect();
    let in_parents = |v: u32| graph.parents[v as usize].iter().copied().filter(|&p| !excluded[p as usize]);

    // Apps: the roots, or what only a wrapper root references.
    let roots: Vec<u32> = included.iter().copied().filter(|&v| in_parents(v).next().is_none()).collect();
    let fan_out = |v: u32| graph.children[v as usize].iter().filter(|&&c| !excluded[c as usize]).count();
    let widest = included.iter().map(|&v| fan_out(v)).max().unwrap_or(0);
    let wrapper = match roots[..] {
        [root] if fan_out(root) >= 2 && fan_out(root) == widest => Some(root),
        _ => None,
    };
    let mut kind = vec![Kind::Other; graph.len()];
    match wrapper {
        Some(w) => {
            kind[w as usize] = Kind::Wrapper;
            for &c in &graph.children[w as usize] {
                if !excluded[c as usize] && in_parents(c).all(|p| p == w) {
                    kind[c as usize] = Kind::App;
                }
            }
        }
        None => roots.iter().for_each(|&r| kind[r as usize] = Kind::App),
    }

    let is_app: Vec<bool> = kind.iter().map(|&k| k == Kind::App).collect();

    // Budget: up to a fifth of the layers for app buckets, the shared and wrapper layers,
    // and as many anchors as fit beside them (an app that anchors needs no bucket).
    let mut candidates: Vec<u32> = included.iter().copied().filter(|&v| Some(v) != wrapper).collect();
    // Anchors: the biggest paths; among equal size classes the one with the bigger closure
    // (it changes more often, so it is the costlier one to share a layer with).
    let closure_class = |v: u32| 64 - closure[v as usize].leading_zeros();
    candidates.sort_unstable_by(|&a, &b| {
        Reverse((size_class[a as usize], closure_class(a)))
            .cmp(&Reverse((size_class[b as usize], closure_class(b))))
            .then(by_name(a, b))
    });
    let wanted_buckets = (available / 5).max(1);
    // Besides: the wrapper's layer, and the shared one when there are two app layers or more.
    let besides = |buckets: usize| buckets + usize::from(buckets >= 2) + usize::from(wrapper.is_some());
    let mut loose_apps = kind.iter().filter(|&&k| k == Kind::App).count();
    let mut anchors = 0;
    if included.len() <= available {
        anchors = candidates.len();
        loose_apps = 0;
    } else {
        for &v in &candidates {
            let loose_after = loose_apps - usize::from(kind[v as usize] == Kind::App);
            if anchors + 1 + besides(loose_after.min(wanted_buckets)) > available {
                break;
            }
            anchors += 1;
            loose_apps = loose_after;
        }
    }
    for &v in &candidates[..anchors] {
        kind[v as usize] = Kind::Anchor;
    }
    let buckets = loose_apps.min(wanted_buckets);

    // Parents first: each path joins its nearest anchor, else the bucket of the apps above it.
    let nearer = |a: u32, b: u32| closure[a as usize].cmp(&closure[b as usize]).then(by_name(a, b));
    let mut anchor_of: Vec<Option<u32>> = vec![None; graph.len()];
    let mut bucket_of: Vec<Reach> = vec![Reach::None; graph.len()];
    for &v in &graph.topo_order {
        let vi = v as usize;
        if excluded[vi] {
            continue;
        }
        match kind[vi] {
            Kind::Anchor => anchor_of[vi] = Some(v),
            Kind::App => bucket_of[vi] = Reach::One(bucket(&graph.paths[vi], buckets)),
            Kind::Wrapper => {}
            Kind::Other => {
                for p in in_parents(v) {
                    let from_parent = match kind[p as usize] {
                        Kind::Anchor => Some(p),
                        _ => anchor_of[p as usize],
                    };
                    if let Some(a) = from_parent {
                        anchor_of[vi] = Some(match anchor_of[vi] {
                            Some(b) if nearer(b, a) != Ordering::Greater => b,
                            _ => a,
                        });
                    }
                    bucket_of[vi] = bucket_of[vi].join(bucket_of[p as usize]);
                }
            }
        }
    }

    // Collect the layers.
    let mut anchor_layers: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut slot = vec![usize::MAX; graph.len()];
    for &v in &candidates {
        if kind[v as usize] == Kind::Anchor {
            slot[v as usize] = anchor_layers.len();
            anchor_layers.push((v, Vec::new()));
        }
    }
    let mut bucket_layers: Vec<Vec<u32>> = vec![Vec::new(); buckets];
    let mut shared = Vec::new();
    let mut wrapper_layer = Vec::new();
    for &v in &included {
        let vi = v as usize;
        match (kind[vi], anchor_of[vi], bucket_of[vi]) {
            (Kind::Wrapper, ..) => wrapper_layer.push(v),
            (_, Some(a), _) => anchor_layers[slot[a as usize]].1.push(v),
            (_, None, Reach::One(b)) => bucket_layers[b].push(v),
            _ => shared.push(v),
        }
    }

    let mut unordered: Vec<(u32, StoreLayer)> = Vec::new();
    for (anchor, paths) in anchor_layers {
        let name = &graph.paths[anchor as usize];
        let reason = match paths.len() {
            1 => format!("big path {name}"),
            n => format!("big path {name} and {} paths below it that no nearer big path uses", n - 1),
        };
        unordered.push((anchor, StoreLayer { paths, reason }));
    }
    if let Some(&first) = shared.iter().min_by(|&&a, &&b| by_name(a, b)) {
        let reason = format!("{} small paths shared by apps of different app layers", shared.len());
        unordered.push((first, StoreLayer { paths: shared, reason }));
    }
    for paths in bucket_layers.into_iter().filter(|b| !b.is_empty()) {
        let mut apps: Vec<u32> = paths.iter().copied().filter(|&p| is_app[p as usize]).collect();
        apps.sort_by(|&a, &b| by_name(a, b));
        let names: Vec<&str> = apps.iter().map(|&p| name_of(&graph.paths[p as usize])).collect();
        let reason = format!("apps {} and what only they use", names.join(", "));
        unordered.push((apps[0], StoreLayer { paths, reason }));
    }
    if let Some(w) = wrapper {
        unordered.push((w, StoreLayer { paths: wrapper_layer, reason: "the wrapper root".into() }));
    }
    // The budget above leaves room for every layer but with the smallest limits.
    unordered.sort_by(|a, b| by_name(a.0, b.0));
    while unordered.len() > available {
        let (_, extra) = unordered.pop().unwrap_or_else(|| unreachable!());
        let (_, into) = unordered.last_mut().unwrap_or_else(|| unreachable!());
        into.paths.extend(extra.paths);
        into.reason = format!("{}; and {} (layer limit)", into.reason, extra.reason);
    }
    // Ties in the order: the smaller closure lower. A path's closure is the same in every
    // image that holds it, so images from one package set tend to share their bottom.
    let tie = |a: u32, b: u32| closure[a as usize].cmp(&closure[b as usize]).then(by_name(a, b));
    let mut out = order(input, &is_app, unordered, &tie);
    for layer in &mut out {
        layer.paths.sort_by(|&a, &b| by_name(a, b));
    }
    out
}

/// The layers, bottom first, in the order that re-pulls the fewest bytes under docker.
///
/// Docker keys a layer by its chain (it and every layer below it), so after an update it
/// re-pulls everything from the lowest changed layer up. When a path changes, so do the
/// layers holding it or any of its users: its "reach". Weighing each path by the chance
/// that an update starts there (an app update at an app, a library update at a path with
/// users and references; both classes equally likely), the expected re-pull is the sum,
/// over positions, of the layer's bytes times the chance that something at or below it
/// changed. It is built bottom up, greedily: next comes the layer that adds the least
/// chance per byte (Smith's rule, with the chance that layers already placed do not
/// cover). Ratios are compared in half powers of two; ties go to a layer whose
/// references are all placed, then to the smaller closure of its leader, then by name, so
/// that a small size change rarely reorders layers. (Making every layer wait for the
/// layers it references, not only on ties, re-pulled up to 20% more in `bench/reuse`.)
fn order(
    input: &Input<'_>,
    is_app: &[bool],
    layers: Vec<(u32, StoreLayer)>,
    tie: &dyn Fn(u32, u32) -> Ordering,
) -> Vec<StoreLayer> {
    let graph = input.graph;
    let excluded = input.excluded;
    let words = layers.len().div_ceil(64).max(1);
    let mut layer_of = vec![usize::MAX; graph.len()];
    for (i, (_, layer)) in layers.iter().enumerate() {
        for &p in &layer.paths {
            layer_of[p as usize] = i;
        }
    }
    // reach[v]: bit set of the layers that change when v changes.
    let mut reach = vec![0u64; graph.len() * words];
    let mut own = vec![0u64; words];
    for &v in &graph.topo_order {
        let v = v as usize;
        own.iter_mut().for_each(|o| *o = 0);
        if layer_of[v] != usize::MAX {
            own[layer_of[v] / 64] |= 1 << (layer_of[v] % 64);
        }
        for &p in &graph.parents[v] {
            let from = &reach[p as usize * words..(p as usize + 1) * words];
            own.iter_mut().zip(from).for_each(|(o, r)| *o |= r);
        }
        reach[v * words..(v + 1) * words].copy_from_slice(&own);
    }
    // Integer weights, so that sums do not depend on the input order: an app weighs the
    // number of libraries, a library the number of apps (each class sums to the same).
    let has_included = |list: &[u32]| list.iter().any(|&x| !excluded[x as usize]);
    let lib: Vec<bool> = (0..graph.len())
        .map(|v| !excluded[v] && !is_app[v] && has_included(&graph.parents[v]) && has_included(&graph.children[v]))
        .collect();
    let apps = is_app.iter().filter(|&&a| a).count() as u128;
    let libs = lib.iter().filter(|&&l| l).count() as u128;
    let mut groups: std::collections::BTreeMap<&[u64], u128> = std::collections::BTreeMap::new();
    for v in 0..graph.len() {
        let weight = if is_app[v] { libs.max(1) } else if lib[v] { apps.max(1) } else { 0 };
        if weight > 0 {
            *groups.entry(&reach[v * words..(v + 1) * words]).or_default() += weight;
        }
    }
    let mut open: Vec<(&[u64], u128)> = groups.into_iter().collect();
    // Saturating: narSize comes from the input, and a hostile one must not wrap the order.
    let bytes: Vec<u64> = layers
        .iter()
        .map(|(_, l)| l.paths.iter().fold(0u64, |sum, &p| sum.saturating_add(graph.nar_sizes[p as usize])))
        .collect();
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
    for (i, (_, layer)) in layers.iter().enumerate() {
        let mut refs: Vec<usize> = layer
            .paths
            .iter()
            .flat_map(|&p| &graph.children[p as usize])
            .map(|&c| layer_of[c as usize])
            .filter(|&j| j != i && j != usize::MAX)
            .collect();
        refs.sort_unstable();
        refs.dedup();
        needs[i] = refs;
    }
    let mut placed = vec![false; layers.len()];
    let mut slots: Vec<Option<StoreLayer>> = Vec::with_capacity(layers.len());
    let leaders: Vec<u32> = layers.iter().map(|(leader, _)| *leader).collect();
    slots.extend(layers.into_iter().map(|(_, layer)| Some(layer)));
    let mut out = Vec::with_capacity(slots.len());
    let mut added = vec![0u128; slots.len()];
    for _ in 0..slots.len() {
        added.iter_mut().for_each(|a| *a = 0);
        for (set, weight) in &open {
            for (w, &word) in set.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    added[w * 64 + bits.trailing_zeros() as usize] += weight;
                    bits &= bits - 1;
                }
            }
        }
        let class = |i: usize| -> i64 {
            if added[i] == 0 {
                i64::MIN
            } else {
                (2.0 * ((added[i] as f64).log2() - (bytes[i].max(1) as f64).log2())).floor() as i64
            }
        };
        // On ties, a layer waits for the layers it references: a dependency that changes
        // changes its users too, so below them it costs nothing more and spares them its
        // bytes when only they change.
        let waits = |i: usize| needs[i].iter().any(|&j| !placed[j]);
        let next = (0..slots.len())
            .filter(|&i| !placed[i])
            .min_by(|&a, &b| {
                (class(a), waits(a)).cmp(&(class(b), waits(b))).then(tie(leaders[a], leaders[b]))
            })
            .unwrap_or_else(|| unreachable!());
        placed[next] = true;
        open.retain(|(set, _)| set[next / 64] & (1 << (next % 64)) == 0);
        out.push(slots[next].take().unwrap_or_else(|| unreachable!()));
    }
    out
}

/// What a path is to the layering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Leads its own layer.
    Anchor,
    /// A root, or a path only the wrapper uses.
    App,
    /// A single root that references the most paths (a `buildEnv`).
    Wrapper,
    /// Joins a layer above.
    Other,
}

/// Which app buckets reach a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    None,
    One(usize),
    Many,
}

impl Reach {
    fn join(self, other: Reach) -> Reach {
        match (self, other) {
            (Reach::None, x) | (x, Reach::None) => x,
            (Reach::One(a), Reach::One(b)) if a == b => Reach::One(a),
            _ => Reach::Many,
        }
    }
}

/// The app bucket of a path: a hash of its name, so adding an app moves no other app.
fn bucket(path: &str, buckets: usize) -> usize {
    (mix(fnv(name_of(path).as_bytes())) % buckets as u64) as usize
}


/// Each path's closure (itself included) as the [`SKETCH`] smallest hashes of the names
/// in it, from which [`estimate`] tells its size (exact for closures that small).
/// Exact counts would need a bit set per path, 1.25 GB at 100,000 paths. Names, not
/// store hashes, are hashed, so an update that changes hashes keeps every estimate.
fn closure_sketches(graph: &Graph) -> Vec<Vec<u64>> {
    let n = graph.len();
    let own: Vec<u64> = graph.paths.iter().map(|p| mix(fnv(name_of(p).as_bytes()))).collect();
    let mut sketches: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut merged = Vec::with_capacity(SKETCH);
    for &v in graph.topo_order.iter().rev() {
        let mut sketch = vec![own[v as usize]];
        for &c in &graph.children[v as usize] {
            merge(&sketch, &sketches[c as usize], &mut merged);
            std::mem::swap(&mut sketch, &mut merged);
        }
        sketches[v as usize] = sketch;
    }
    sketches
}

/// The number of distinct names a sketch stands for.
fn estimate(sketch: &[u64]) -> u64 {
    if sketch.len() < SKETCH {
        sketch.len() as u64
    } else {
        let kth = sketch[SKETCH - 1] as f64 / u64::MAX as f64;
        ((SKETCH - 1) as f64 / kth).round() as u64
    }
}

/// The [`SKETCH`] smallest distinct values of two sorted lists, into `out`.
fn merge(a: &[u64], b: &[u64], out: &mut Vec<u64>) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while out.len() < SKETCH && (i < a.len() || j < b.len()) {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => unreachable!(),
        };
        out.push(next);
    }
}

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: spreads FNV's bits so that the smallest values are uniform.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::GraphEntry;
    use std::borrow::Cow;
    use std::collections::BTreeSet;

    /// A store path for `name` whose hash part depends on `name` and `salt`.
    fn store_path(name: &str, salt: u64) -> String {
        const BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut h = mix(fnv(name.as_bytes()) ^ salt);
        let hash: String = (0..32)
            .map(|i| {
                if i % 12 == 0 {
                    h = mix(h.wrapping_add(i));
                }
                BASE32[(h >> ((i % 12) * 5) & 31) as usize] as char
            })
            .collect();
        format!("/nix/store/{hash}-{name}")
    }

    /// A closure like a distribution's: core libraries, libraries on top of them, apps
    /// (roots) each with a private dependency, sizes spread over powers of two; with
    /// `wrapper`, one root that references every app (a `buildEnv`).
    struct Spec {
        libs: usize,
        apps: usize,
        wrapper: bool,
        seed: u64,
    }

    /// (name, narSize, references by name), in generation order.
    fn closure(spec: &Spec) -> Vec<(String, u64, Vec<String>)> {
        let mut state = spec.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below.max(1)
        };
        let mut out: Vec<(String, u64, Vec<String>)> = vec![
            ("glibc-2.39".into(), 30 << 20, vec![]),
            ("zlib-1.3".into(), 200 << 10, vec!["glibc-2.39".into()]),
            ("openssl-3.0".into(), 6 << 20, vec!["glibc-2.39".into(), "zlib-1.3".into()]),
        ];
        for i in 0..spec.libs {
            let mut refs = vec!["glibc-2.39".to_string()];
            for _ in 0..1 + next(3) {
                refs.push(out[next(out.len() as u64) as usize].0.clone());
            }
            let size = 1u64 << (12 + next(14));
            out.push((format!("lib{i}-1.0"), size + next(size), refs));
        }
        let libs_end = out.len() as u64;
        let mut apps = Vec::new();
        for i in 0..spec.apps {
            let private = format!("app{i}-data-1.0");
            out.push((private.clone(), 1 << (16 + next(12)), vec![]));
            let mut refs = vec![private, "glibc-2.39".into()];
            for _ in 0..1 + next(4) {
                refs.push(out[next(libs_end) as usize].0.clone());
            }
            let name = format!("app{i}-1.0");
            out.push((name.clone(), 1 << (14 + next(10)), refs));
            apps.push(name);
        }
        if spec.wrapper {
            out.push(("system-path".into(), 1 << 12, apps));
        }
        out
    }

    fn graph_of(nodes: &[(String, u64, Vec<String>)], salt: &dyn Fn(&str) -> u64) -> Graph {
        let path = |name: &str| -> Cow<'static, str> { store_path(name, salt(name)).into() };
        let entries: Vec<GraphEntry> = nodes
            .iter()
            .map(|(name, size, refs)| GraphEntry {
                path: path(name),
                references: refs.iter().map(|r| path(r)).chain([path(name)]).collect(),
                nar_size: *size,
                nar_hash: None,
            })
            .collect();
        Graph::new(&entries).unwrap()
    }

    fn lay_out(graph: &Graph, available: usize) -> Vec<StoreLayer> {
        let excluded = vec![false; graph.len()];
        layers(&Input { graph, excluded: &excluded, available })
    }

    /// Each layer as the set of its paths' names.
    fn named(graph: &Graph, layers: &[StoreLayer]) -> Vec<BTreeSet<String>> {
        layers.iter().map(|l| l.paths.iter().map(|&p| graph.paths[p as usize].clone()).collect()).collect()
    }

    fn check_partition(graph: &Graph, layers: &[StoreLayer], available: usize) {
        assert!(layers.len() <= available, "{} layers, {available} available", layers.len());
        assert!(layers.iter().all(|l| !l.paths.is_empty() && !l.reason.is_empty()));
        let mut seen = vec![false; graph.len()];
        for &p in layers.iter().flat_map(|l| &l.paths) {
            assert!(!std::mem::replace(&mut seen[p as usize], true), "{} twice", graph.paths[p as usize]);
        }
        assert!(seen.iter().all(|&s| s), "a path is in no layer");
    }

    #[test]
    fn every_path_once_within_the_limit_whatever_the_input_order() {
        for wrapper in [false, true] {
            let nodes = closure(&Spec { libs: 60, apps: 15, wrapper, seed: 3 });
            let graph = graph_of(&nodes, &|_| 0);
            let mut reversed = nodes.clone();
            reversed.reverse();
            let graph_reversed = graph_of(&reversed, &|_| 0);
            for available in 1..=40 {
                let layers = lay_out(&graph, available);
                check_partition(&graph, &layers, available);
                assert_eq!(named(&graph, &layers), named(&graph_reversed, &lay_out(&graph_reversed, available)));
            }
        }
    }

    #[test]
    fn a_wrapper_root_is_alone_and_apps_share_no_bulk_they_do_not_use() {
        let mut nodes: Vec<(String, u64, Vec<String>)> = vec![("glibc-2.39".into(), 30 << 20, vec![])];
        let mut apps = Vec::new();
        for i in 0..6 {
            let bulk = format!("bulk{i}-1.0");
            nodes.push((bulk.clone(), 256 << 20, vec!["glibc-2.39".into()]));
            nodes.push((format!("app{i}-1.0"), 100 << 10, vec![bulk, "glibc-2.39".into()]));
            apps.push(format!("app{i}-1.0"));
        }
        for wrapper in [false, true] {
            let mut nodes = nodes.clone();
            if wrapper {
                nodes.push(("system-path".into(), 4 << 10, apps.clone()));
            }
            let graph = graph_of(&nodes, &|_| 0);
            let layers = lay_out(&graph, 10);
            check_partition(&graph, &layers, 10);
            for layer in &layers {
                let names: Vec<&str> = layer.paths.iter().map(|&p| name_of(&graph.paths[p as usize])).collect();
                if names.contains(&"system-path") {
                    assert_eq!(names, ["system-path"], "{}", layer.reason);
                }
                for app in names.iter().filter(|n| n.starts_with("app")) {
                    let own = app.replace("app", "bulk");
                    for bulk in names.iter().filter(|n| n.starts_with("bulk")) {
                        assert_eq!(*bulk, own, "{app} shares a layer with {bulk}: {}", layer.reason);
                    }
                }
            }
        }
    }

    #[test]
    fn a_core_library_is_below_its_users() {
        for (wrapper, available) in [(false, 25), (false, 100), (true, 25), (true, 100)] {
            let nodes = closure(&Spec { libs: 150, apps: 40, wrapper, seed: 11 });
            let graph = graph_of(&nodes, &|_| 0);
            let layers = lay_out(&graph, available);
            let position = |p: u32| layers.iter().position(|l| l.paths.contains(&p)).unwrap();
            let glibc = graph.node(&store_path("glibc-2.39", 0)).unwrap();
            for &user in &graph.parents[glibc as usize] {
                if position(user) != position(glibc) {
                    assert!(
                        position(glibc) < position(user),
                        "glibc in layer {}, its user {} in layer {} (limit {available})",
                        position(glibc),
                        graph.paths[user as usize],
                        position(user)
                    );
                }
            }
        }
    }

    #[test]
    fn a_new_hash_for_one_app_changes_no_other_layer() {
        for (wrapper, available) in [(false, 25), (false, 100), (true, 25), (true, 100)] {
            let nodes = closure(&Spec { libs: 300, apps: 60, wrapper, seed: 5 });
            let before = graph_of(&nodes, &|_| 0);
            let old = named(&before, &lay_out(&before, available));
            for app in (0..60).map(|i| format!("app{i}-1.0")) {
                let app = app.as_str();
                let changed: Vec<&str> = if wrapper { vec![app, "system-path"] } else { vec![app] };
                let after = graph_of(&nodes, &|name| u64::from(changed.contains(&name)));
                let new = named(&after, &lay_out(&after, available));
                let untouched = |layers: &[BTreeSet<String>]| -> Vec<BTreeSet<String>> {
                    let touched = |l: &BTreeSet<String>| l.iter().any(|p| changed.contains(&name_of(p)));
                    layers.iter().filter(|l| !touched(l)).cloned().collect()
                };
                // Same layers, in the same order.
                assert_eq!(untouched(&old), untouched(&new), "{app}, limit {available}");
            }
        }
    }

    #[test]
    fn the_layers_do_not_depend_on_hashes() {
        let names = |graph: &Graph, layers: &[StoreLayer]| -> Vec<BTreeSet<String>> {
            let of = |l: &StoreLayer| l.paths.iter().map(|&p| name_of(&graph.paths[p as usize]).to_string()).collect();
            layers.iter().map(of).collect()
        };
        for wrapper in [false, true] {
            let nodes = closure(&Spec { libs: 300, apps: 60, wrapper, seed: 9 });
            let one = graph_of(&nodes, &|_| 1);
            let two = graph_of(&nodes, &|_| 2);
            for available in [2, 10, 25, 100] {
                assert_eq!(names(&one, &lay_out(&one, available)), names(&two, &lay_out(&two, available)));
            }
        }
    }

    #[test]
    fn a_hundred_thousand_paths() {
        let nodes = closure(&Spec { libs: 80_000, apps: 10_000, wrapper: true, seed: 1 });
        let graph = graph_of(&nodes, &|_| 0);
        assert!(graph.len() > 100_000);
        check_partition(&graph, &lay_out(&graph, 99), 99);
    }
}
