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
///
/// The walks of different nodes are independent (they read `A` and the graph only), so
/// they run on all cores; each node's region sum is exact, so the result does not depend
/// on how the nodes were shared out.
fn popularity(graph: &Graph) -> Vec<BigUint> {
    let n = graph.len();
    let counts = PathCounts::new(graph);
    let idom = DominatorTree::new(graph);
    let parents = FlatParents::new(graph);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.max(1));
    let mut region_sums: Vec<BigUint> = vec![BigUint::default(); n];
    let (counts, idom, parents) = (&counts, &idom, &parents);
    let share = move |t: usize| {
        // Nodes t, t+threads, …: costly nodes are spread evenly.
        let mut walk = RegionWalk::new(n);
        (t..n)
            .step_by(threads)
            .map(|u| (u, walk.region_sum(u as u32, idom.parent(u as u32), parents, counts)))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        // A share whose thread the OS refuses is done here, after the others start.
        let workers: Vec<_> =
            (0..threads).map(|t| std::thread::Builder::new().spawn_scoped(scope, move || share(t)).map_err(|_| t)).collect();
        for worker in workers {
            let sums = match worker {
                // A worker only panics on a bug; re-raise it rather than hide it.
                Ok(handle) => handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                Err(t) => share(t),
            };
            for (u, sum) in sums {
                region_sums[u] = sum;
            }
        }
    });
    let mut popularity = vec![BigUint::default(); n];
    for &u in &graph.topo_order {
        let above = idom.parent(u).map(|d| popularity[d as usize].clone()).unwrap_or_default();
        popularity[u as usize] = above + &region_sums[u as usize];
    }
    popularity
}

/// `A(w)`: the number of distinct paths from any root to each node. Kept as `u128` while
/// it fits (nearly always), as a big integer beyond.
struct PathCounts {
    small: Vec<u128>,
    /// Nodes whose count exceeds `u128`; `small` holds `BIG` for them.
    big: std::collections::HashMap<u32, BigUint>,
}

const BIG: u128 = u128::MAX;

impl PathCounts {
    fn new(graph: &Graph) -> PathCounts {
        let mut counts = PathCounts { small: vec![0; graph.len()], big: Default::default() };
        for &v in &graph.topo_order {
            let parents = &graph.parents[v as usize];
            let mut sum = Sum::default();
            if parents.is_empty() {
                sum.add_small(1);
            }
            for &p in parents {
                counts.add_to(&mut sum, p);
            }
            match sum.small_value() {
                Some(small) if small != BIG => counts.small[v as usize] = small,
                _ => {
                    counts.small[v as usize] = BIG;
                    counts.big.insert(v, sum.into_big());
                }
            }
        }
        counts
    }

    fn add_to(&self, sum: &mut Sum, w: u32) {
        match self.small[w as usize] {
            BIG => sum.big += &self.big[&w],
            small => sum.add_small(small),
        }
    }
}

/// An exact running sum: a `u128` that spills into a big integer on overflow.
#[derive(Default)]
struct Sum {
    small: u128,
    big: BigUint,
}

impl Sum {
    fn add_small(&mut self, x: u128) {
        match self.small.checked_add(x) {
            Some(s) => self.small = s,
            None => {
                self.big += self.small;
                self.small = x;
            }
        }
    }

    fn small_value(&self) -> Option<u128> {
        (self.big.bits() == 0).then_some(self.small)
    }

    fn into_big(self) -> BigUint {
        self.big + self.small
    }
}

/// Parents in one flat array (`parents[start[v]..start[v+1]]`): the walks below touch
/// them millions of times, and one allocation keeps them together in cache.
struct FlatParents {
    start: Vec<u32>,
    parents: Vec<u32>,
}

impl FlatParents {
    fn new(graph: &Graph) -> FlatParents {
        let mut start = Vec::with_capacity(graph.len() + 1);
        let mut parents = Vec::new();
        for p in &graph.parents {
            start.push(parents.len() as u32);
            parents.extend_from_slice(p);
        }
        start.push(parents.len() as u32);
        FlatParents { start, parents }
    }

    fn of(&self, v: u32) -> &[u32] {
        &self.parents[self.start[v as usize] as usize..self.start[v as usize + 1] as usize]
    }
}

/// Walk state reused across nodes: `seen[w] == stamp` marks w as visited in this walk.
struct RegionWalk {
    seen: Vec<u32>,
    stamp: u32,
    stack: Vec<u32>,
}

impl RegionWalk {
    fn new(n: usize) -> RegionWalk {
        RegionWalk { seen: vec![0; n], stamp: 0, stack: Vec::new() }
    }

    /// Σ A(w) over the nodes that reach `u` without passing `stop` (its immediate
    /// dominator): the ancestors of `u` that `stop` does not already account for.
    fn region_sum(&mut self, u: u32, stop: Option<u32>, parents: &FlatParents, counts: &PathCounts) -> BigUint {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut sum = Sum::default();
        self.seen[u as usize] = stamp;
        self.stack.push(u);
        while let Some(w) = self.stack.pop() {
            counts.add_to(&mut sum, w);
            for &p in parents.of(w) {
                if Some(p) != stop && self.seen[p as usize] != stamp {
                    self.seen[p as usize] = stamp;
                    self.stack.push(p);
                }
            }
        }
        sum.into_big()
    }
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
    use std::borrow::Cow;

    fn path(name: &str) -> Cow<'static, str> {
        format!("/nix/store/{}-{name}", "0".repeat(32)).into()
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
