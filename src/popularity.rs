//! References by popularity, byte-identical to nixpkgs' `closure-graph.py`.
//!
//! `closure-graph.py` unfolds the DAG into a tree from its roots (paths no *other* path
//! references) and runs a nested "contest": for the worked example in that script
//! (A→B,G; B→C,E; C→D,E; D→F; E→F) it counts A1 B2 C3 D4 E5 F9 G2.
//! Its count has a closed form. Let `A(w)` be the number of paths from any root to `w`.
//! Then
//!
//! ```text
//! popularity(u) = Σ A(w)  over every w that reaches u (u included)
//! ```
//!
//! because the contest adds, for every root→u path, one for each node of that path that
//! already lies on a path to u. Summing over all ancestors directly is quadratic on deep
//! graphs, so we walk the dominator tree instead: everything that reaches `idom(u)`
//! reaches `u`, and the ancestors of `u` that do not reach `idom(u)` are exactly those
//! found by walking back from `u` without passing `idom(u)`. So
//! `popularity(u) = popularity(idom(u)) + Σ A(w)` over that region only.
//! Counts grow exponentially with the depth of diamonds, so they are big integers: exact
//! at any magnitude, never wrapped, saturated or rounded.
//!
//! Order: higher popularity first; ties ascending by the path with its first
//! `-`-separated chunk moved to the end (`/nix/store/abc-hello-2.10` →
//! `hello-2.10-/nix/store/abc`), compared as code points, as the Python sort does.

use crate::graph::Graph;
use num_bigint::BigUint;
use std::cmp::Reverse;

/// A node and its popularity count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// Graph node.
    pub node: u32,
    /// The count `closure-graph.py` gives it.
    pub popularity: BigUint,
}

/// Every node of `graph`, most popular first, ties by [`tie_break_key`].
pub fn rank(graph: &Graph) -> Vec<Ranked> {
    let popularity = popularity(graph);
    let keys: Vec<String> = graph.paths.iter().map(|p| tie_break_key(p)).collect();
    let mut order: Vec<u32> = (0..graph.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        (Reverse(&popularity[a]), &keys[a]).cmp(&(Reverse(&popularity[b]), &keys[b]))
    });
    let mut popularity: Vec<Option<BigUint>> = popularity.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|node| Ranked {
            node,
            popularity: popularity[node as usize].take().unwrap_or_default(),
        })
        .collect()
}

/// The ranked paths as `closure-graph.py` prints them: one per line, newline-terminated
/// (an empty graph prints a single newline, as Python's `print("")` does).
pub fn render(graph: &Graph, ranked: &[Ranked]) -> String {
    let mut out = String::with_capacity(ranked.len() * 64 + 1);
    for (i, r) in ranked.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(graph.paths[r.node as usize].as_str());
    }
    out.push('\n');
    out
}

/// `closure-graph.py`'s `package_name`: the first `-`-separated chunk moved to the end.
pub fn tie_break_key(path: &str) -> String {
    match path.split_once('-') {
        Some((first, rest)) => format!("{rest}-{first}"),
        None => path.to_string(),
    }
}

/// The popularity count of every node.
fn popularity(graph: &Graph) -> Vec<BigUint> {
    let n = graph.len();
    let paths_from_roots = count_paths_from_roots(graph);
    let idom = DominatorTree::new(graph);
    let mut popularity = vec![BigUint::default(); n];
    // Walk state, reused across nodes: `seen[w] == stamp` marks w as visited for this node.
    let mut seen = vec![u32::MAX; n];
    let mut stack = Vec::new();
    for (stamp, &u) in graph.topo_order.iter().enumerate() {
        let stamp = stamp as u32;
        let stop = idom.parent(u);
        let mut sum = match stop {
            Some(d) => popularity[d as usize].clone(),
            None => BigUint::default(),
        };
        seen[u as usize] = stamp;
        stack.push(u);
        while let Some(w) = stack.pop() {
            sum += &paths_from_roots[w as usize];
            for &p in &graph.parents[w as usize] {
                if Some(p) != stop && seen[p as usize] != stamp {
                    seen[p as usize] = stamp;
                    stack.push(p);
                }
            }
        }
        popularity[u as usize] = sum;
    }
    popularity
}

/// `A(w)`: the number of distinct paths from any root to each node.
fn count_paths_from_roots(graph: &Graph) -> Vec<BigUint> {
    let mut count = vec![BigUint::default(); graph.len()];
    for &v in &graph.topo_order {
        let parents = &graph.parents[v as usize];
        count[v as usize] = if parents.is_empty() {
            BigUint::from(1u8)
        } else {
            parents.iter().map(|&p| &count[p as usize]).sum()
        };
    }
    count
}

/// Immediate dominators from a virtual node above all roots, with binary lifting so that
/// each nearest-common-ancestor query costs O(log n) even on 100,000-deep chains.
struct DominatorTree {
    /// `up[level][v]`: the 2^level-th dominator of v; `virtual_root` above the roots.
    up: Vec<Vec<u32>>,
    depth: Vec<u32>,
    virtual_root: u32,
}

impl DominatorTree {
    fn new(graph: &Graph) -> DominatorTree {
        let n = graph.len();
        let virtual_root = n as u32;
        let levels = (usize::BITS - n.leading_zeros()).max(1) as usize;
        let mut tree = DominatorTree {
            up: vec![vec![virtual_root; n + 1]; levels],
            depth: vec![0; n + 1],
            virtual_root,
        };
        // In a DAG, idom(v) is the nearest common dominator-tree ancestor of v's parents,
        // and the parents are all settled before v in topological order.
        for &v in &graph.topo_order {
            let idom = graph.parents[v as usize]
                .iter()
                .copied()
                .reduce(|a, b| tree.common_ancestor(a, b))
                .unwrap_or(virtual_root);
            tree.depth[v as usize] = tree.depth[idom as usize] + 1;
            tree.up[0][v as usize] = idom;
            for level in 1..levels {
                let half = tree.up[level - 1][v as usize];
                tree.up[level][v as usize] = tree.up[level - 1][half as usize];
            }
        }
        tree
    }

    /// The immediate dominator of `v`, or `None` for a root.
    fn parent(&self, v: u32) -> Option<u32> {
        Some(self.up[0][v as usize]).filter(|&d| d != self.virtual_root)
    }

    fn common_ancestor(&self, mut a: u32, mut b: u32) -> u32 {
        if self.depth[a as usize] < self.depth[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        let mut rise = self.depth[a as usize] - self.depth[b as usize];
        let mut level = 0;
        while rise > 0 {
            if rise & 1 == 1 {
                a = self.up[level][a as usize];
            }
            rise >>= 1;
            level += 1;
        }
        if a == b {
            return a;
        }
        for level in (0..self.up.len()).rev() {
            let (ua, ub) = (self.up[level][a as usize], self.up[level][b as usize]);
            if ua != ub {
                a = ua;
                b = ub;
            }
        }
        self.up[0][a as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::GraphEntry;

    fn path(name: &str) -> String {
        format!("/nix/store/{}-{name}", "0".repeat(32))
    }

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        let entries: Vec<GraphEntry> = edges
            .iter()
            .map(|(from, to)| GraphEntry {
                path: path(from),
                references: to.iter().map(|t| path(t)).collect(),
                nar_size: 0,
            })
            .collect();
        Graph::new(&entries).unwrap()
    }

    //  A ──> B ──> C ──> D ──> F
    //  │     │     └──> E ──^
    //  │     └─────────^
    //  └──> G
    #[test]
    fn worked_example_of_closure_graph_py() {
        let g = graph(&[
            ("A", &["B", "G"]),
            ("B", &["C", "E"]),
            ("C", &["D", "E"]),
            ("D", &["F"]),
            ("E", &["F"]),
            ("F", &[]),
            ("G", &[]),
        ]);
        let ranked = rank(&g);
        let got: Vec<(String, u32)> = ranked
            .iter()
            .map(|r| {
                let name = g.paths[r.node as usize].rsplit('-').next().unwrap().to_string();
                (name, u32::try_from(&r.popularity).unwrap())
            })
            .collect();
        let want = [("F", 9), ("E", 5), ("D", 4), ("C", 3), ("B", 2), ("G", 2), ("A", 1)];
        let want: Vec<(String, u32)> = want.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn counts_stay_exact_beyond_machine_words() {
        // 150 stacked diamonds double the count at every level: far beyond u128.
        let levels = 150;
        let mut names = Vec::new();
        for i in 0..levels {
            names.push((format!("top{i}"), format!("l{i}"), format!("r{i}")));
        }
        let mut edges: Vec<(String, Vec<String>)> = Vec::new();
        for (i, (top, l, r)) in names.iter().enumerate() {
            edges.push((top.clone(), vec![l.clone(), r.clone()]));
            let next = if i + 1 < levels { names[i + 1].0.clone() } else { "bottom".into() };
            edges.push((l.clone(), vec![next.clone()]));
            edges.push((r.clone(), vec![next]));
        }
        edges.push(("bottom".into(), vec![]));
        let entries: Vec<GraphEntry> = edges
            .iter()
            .map(|(f, t)| GraphEntry { path: path(f), references: t.iter().map(|x| path(x)).collect(), nar_size: 0 })
            .collect();
        let g = Graph::new(&entries).unwrap();
        let ranked = rank(&g);
        assert!(g.paths[ranked[0].node as usize].ends_with("-bottom"));
        assert!(ranked[0].popularity.bits() > 150, "{}", ranked[0].popularity);
    }

    #[test]
    fn tie_break_moves_the_hash_to_the_end() {
        assert_eq!(tie_break_key("/nix/store/abc-hello-2.10"), "hello-2.10-/nix/store/abc");
        assert_eq!(tie_break_key("nodash"), "nodash");
    }
}
