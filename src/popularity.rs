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
    let popularity = counts(graph);
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

/// Each node's popularity count, indexed by node.
///
/// Most nodes' regions (see the module docs) are small, and a walk up from the node sums
/// them. A few nodes (a few percent on large closures: core libraries reached from several
/// roots) have regions spanning much of the graph, and their walks would cost O(n) each,
/// O(n²) in all. A walk that exceeds [`WALK_BUDGET`] steps is abandoned, and those heavy
/// nodes are summed 64 at a time by one sweep over the whole graph with a bit per node
/// ([`sweep_regions`]): still proportional to their region sizes, but at the cost of an OR
/// and an add per step instead of a random memory access. Both run on all cores; each sum
/// is exact, so the result does not depend on how the work was shared out.
pub fn counts(graph: &Graph) -> Vec<BigUint> {
    counts_with_budget(graph, WALK_BUDGET)
}

/// [`counts`], with walks abandoned after `budget` steps (tests check that any budget
/// gives the same counts).
fn counts_with_budget(graph: &Graph, budget: usize) -> Vec<BigUint> {
    let n = graph.len();
    let counts = PathCounts::new(graph);
    let idom = DominatorTree::new(graph);
    let parents = FlatParents::new(graph);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.max(1));
    let mut region_sums: Vec<BigUint> = vec![BigUint::default(); n];
    let mut heavy: Vec<u32> = Vec::new();
    let walked = on_workers(threads, n, |u| {
        RegionWalk::with(n, |walk| walk.region_sum(u as u32, idom.parent(u as u32), &parents, &counts, budget))
    });
    for (u, sum) in walked {
        match sum {
            Some(sum) => region_sums[u] = sum,
            None => heavy.push(u as u32),
        }
    }
    heavy.sort_unstable();
    let batches: Vec<&[u32]> = heavy.chunks(SWEEP_WIDTH).collect();
    let children = FlatParents::children_of(graph);
    let swept = on_workers(threads, batches.len(), |b| sweep_regions(graph, &children, &idom, &counts, batches[b]));
    for (_, sums) in swept {
        for (u, sum) in sums {
            region_sums[u as usize] = sum;
        }
    }
    let mut popularity = vec![BigUint::default(); n];
    for &u in &graph.topo_order {
        let above = idom.parent(u).map(|d| popularity[d as usize].clone()).unwrap_or_default();
        popularity[u as usize] = above + &region_sums[u as usize];
    }
    popularity
}

/// Runs `job(i)` for every `i < count` on `threads` scoped workers (items `t`,
/// `t + threads`, …: costly items are spread evenly) and returns `(i, result)` pairs.
/// A worker the OS refuses to start costs time, never a panic.
fn on_workers<T: Send>(threads: usize, count: usize, job: impl Fn(usize) -> T + Sync) -> Vec<(usize, T)> {
    let threads = threads.min(count).max(1);
    let share = |t: usize| (t..count).step_by(threads).map(|i| (i, job(i))).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        // A share whose thread the OS refuses is done here, after the others have started.
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share = &share;
                std::thread::Builder::new().spawn_scoped(scope, move || share(t)).map_err(|_| t)
            })
            .collect();
        let mut done = Vec::with_capacity(count);
        for worker in workers {
            done.extend(match worker {
                // A worker only panics on a bug; re-raise it rather than hide it.
                Ok(handle) => handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                Err(t) => share(t),
            });
        }
        done
    })
}

/// Steps after which a region walk is abandoned and its node summed by a sweep instead.
const WALK_BUDGET: usize = 2048;

/// Targets summed by one sweep: eight 64-bit words (one cache line) of mask per node.
/// Wider masks mean fewer sweeps, and a sweep's cost is mostly its random reads of the
/// children's masks, one cache line each up to this width (measured: 256 and 1024 are
/// slower on the 200,000-path synthetic closure).
const SWEEP_WIDTH: usize = 512;

/// A set of up to [`SWEEP_WIDTH`] targets.
type Mask = [u64; SWEEP_WIDTH / 64];

/// The region sums of up to [`SWEEP_WIDTH`] `targets`, by one sweep of the graph from the
/// leaves up: bit `i` of `reaches[x]` says that `x` reaches `targets[i]` without passing
/// through its immediate dominator, i.e. that `x` is in its region.
fn sweep_regions(
    graph: &Graph,
    children: &FlatParents,
    idom: &DominatorTree,
    counts: &PathCounts,
    targets: &[u32],
) -> Vec<(u32, BigUint)> {
    let empty: Mask = Default::default();
    // The targets' own bits and their dominators' stop bits, found through `slot` (node →
    // 1 + index in `marked`) rather than a hash map: the sweep asks for every node.
    let mut slot = vec![0u32; graph.len()];
    let mut marked: Vec<(Mask, Mask)> = Vec::new();
    let mut mark = |node: u32, bit: usize, stop: bool| {
        if slot[node as usize] == 0 {
            marked.push((empty, empty));
            slot[node as usize] = marked.len() as u32;
        }
        let (own, stops) = &mut marked[slot[node as usize] as usize - 1];
        let mask = if stop { stops } else { own };
        mask[bit / 64] |= 1 << (bit % 64);
    };
    for (bit, &t) in targets.iter().enumerate() {
        mark(t, bit, false);
        if let Some(d) = idom.parent(t) {
            mark(d, bit, true);
        }
    }
    let mut reaches: Vec<Mask> = vec![empty; graph.len()];
    // Sums by set of targets reached: far fewer sets than nodes (the heavy targets are
    // core paths with much the same users), so each node costs one add, not one per bit.
    // Runs of nodes with the same set are summed before the map is touched.
    let mut by_mask: std::collections::HashMap<Mask, Sum, MaskHash> = std::collections::HashMap::default();
    let (mut run_bits, mut run_sum) = (empty, Sum::default());
    // Children before parents: the reverse of the topological order.
    for &x in graph.topo_order.iter().rev() {
        let (own, stop) = match slot[x as usize] {
            0 => (empty, empty),
            i => marked[i as usize - 1],
        };
        let mut bits = own;
        for &c in children.of(x) {
            for (word, child) in bits.iter_mut().zip(&reaches[c as usize]) {
                *word |= child;
            }
        }
        // A target's immediate dominator is outside its region, and so is everything
        // that reaches the target only through it.
        for (word, stop) in bits.iter_mut().zip(&stop) {
            *word &= !stop;
        }
        reaches[x as usize] = bits;
        if bits != run_bits {
            if run_bits != empty {
                by_mask.entry(run_bits).or_default().add(std::mem::take(&mut run_sum));
            }
            (run_bits, run_sum) = (bits, Sum::default());
        }
        if bits != empty {
            counts.add_to(&mut run_sum, x);
        }
    }
    if run_bits != empty {
        by_mask.entry(run_bits).or_default().add(run_sum);
    }
    let mut sums: Vec<BigUint> = targets.iter().map(|_| BigUint::default()).collect();
    for (bits, sum) in by_mask {
        let sum = sum.into_big();
        for (w, mut word) in bits.into_iter().enumerate() {
            while word != 0 {
                sums[w * 64 + word.trailing_zeros() as usize] += &sum;
                word &= word - 1;
            }
        }
    }
    targets.iter().copied().zip(sums).collect()
}

/// Hashes a mask with a multiply per word: the sweep looks up a mask per node, and
/// SipHash (std's default, made for untrusted keys) would be most of its cost. Masks are
/// made from the graph, not chosen by anyone, and a poor spread costs time, never results.
#[derive(Default, Clone, Copy)]
struct MaskHash;

impl std::hash::BuildHasher for MaskHash {
    type Hasher = MaskHasher;
    fn build_hasher(&self) -> MaskHasher {
        MaskHasher(0)
    }
}

/// The hasher of [`MaskHash`].
struct MaskHasher(u64);

impl std::hash::Hasher for MaskHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(29) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
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

    /// Adds another running sum.
    fn add(&mut self, other: Sum) {
        self.big += other.big;
        self.add_small(other.small);
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
        FlatParents::flatten(&graph.parents)
    }

    /// The children of every node, flat in the same way.
    fn children_of(graph: &Graph) -> FlatParents {
        FlatParents::flatten(&graph.children)
    }

    fn flatten(lists: &[Vec<u32>]) -> FlatParents {
        let mut start = Vec::with_capacity(lists.len() + 1);
        let mut flat = Vec::new();
        for list in lists {
            start.push(flat.len() as u32);
            flat.extend_from_slice(list);
        }
        start.push(flat.len() as u32);
        FlatParents { start, parents: flat }
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

thread_local! {
    static WALK: std::cell::RefCell<Option<RegionWalk>> = const { std::cell::RefCell::new(None) };
}

impl RegionWalk {
    /// Runs `f` with this thread's walk state for a graph of `n` nodes.
    fn with<T>(n: usize, f: impl FnOnce(&mut RegionWalk) -> T) -> T {
        WALK.with(|cell| {
            let mut slot = cell.borrow_mut();
            let walk = match slot.as_mut() {
                Some(walk) if walk.seen.len() == n => walk,
                _ => slot.insert(RegionWalk { seen: vec![0; n], stamp: 0, stack: Vec::new() }),
            };
            f(walk)
        })
    }

    /// Σ A(w) over the nodes that reach `u` without passing `stop` (its immediate
    /// dominator): the ancestors of `u` that `stop` does not already account for. `None`
    /// when that region has more than `budget` nodes.
    fn region_sum(
        &mut self,
        u: u32,
        stop: Option<u32>,
        parents: &FlatParents,
        counts: &PathCounts,
        budget: usize,
    ) -> Option<BigUint> {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // The stamps wrapped: old marks could look current.
            self.seen.fill(0);
            self.stamp = 1;
        }
        let stamp = self.stamp;
        let mut sum = Sum::default();
        self.seen[u as usize] = stamp;
        self.stack.clear();
        self.stack.push(u);
        let mut steps = 0;
        while let Some(w) = self.stack.pop() {
            steps += 1;
            if steps > budget {
                return None;
            }
            counts.add_to(&mut sum, w);
            for &p in parents.of(w) {
                if Some(p) != stop && self.seen[p as usize] != stamp {
                    self.seen[p as usize] = stamp;
                    self.stack.push(p);
                }
            }
        }
        Some(sum.into_big())
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
                nar_hash: None,
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
            .map(|(f, t)| GraphEntry { path: path(f), references: t.iter().map(|x| path(x)).collect(), nar_size: 0, nar_hash: None })
            .collect();
        let g = Graph::new(&entries).unwrap();
        let ranked = rank(&g);
        assert!(g.paths[ranked[0].node as usize].ends_with("-bottom"));
        assert!(ranked[0].popularity.bits() > 150, "{}", ranked[0].popularity);
    }

    /// A DAG of `n` nodes, each referencing up to 6 later ones, from a fixed-seed LCG;
    /// a few wide "wrapper" roots, as image closures have.
    fn random_dag(n: usize, seed: u64) -> Graph {
        let mut state = seed;
        let mut next = move |bound: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % bound.max(1)
        };
        let names: Vec<String> = (0..n).map(|i| format!("n{i:05}")).collect();
        let edges: Vec<(String, Vec<String>)> = (0..n)
            .map(|i| {
                let fan = if i % 97 == 0 { 40 } else { next(7) };
                let refs = (0..fan).filter(|_| i + 1 < n).map(|_| names[i + 1 + next(n - i - 1)].clone()).collect();
                (names[i].clone(), refs)
            })
            .collect();
        let entries: Vec<GraphEntry> = edges
            .iter()
            .map(|(f, t)| GraphEntry { path: path(f), references: t.iter().map(|x| path(x)).collect(), nar_size: 0, nar_hash: None })
            .collect();
        Graph::new(&entries).unwrap()
    }

    #[test]
    fn sweeps_and_walks_give_the_same_counts() {
        // Budget 0 sums every node by sweeps, usize::MAX by walks alone.
        for seed in 1..=6 {
            let g = random_dag(300 + 150 * seed as usize, seed);
            assert_eq!(counts_with_budget(&g, 0), counts_with_budget(&g, usize::MAX), "seed {seed}");
            assert_eq!(counts_with_budget(&g, 3), counts_with_budget(&g, usize::MAX), "seed {seed}, budget 3");
        }
    }

    #[test]
    fn sweeps_stay_exact_beyond_machine_words() {
        let mut edges: Vec<(String, Vec<String>)> = Vec::new();
        for i in 0..140 {
            let next = format!("top{}", i + 1);
            edges.push((format!("top{i}"), vec![format!("l{i}"), format!("r{i}")]));
            edges.push((format!("l{i}"), vec![next.clone()]));
            edges.push((format!("r{i}"), vec![next]));
        }
        edges.push(("top140".into(), vec![]));
        let entries: Vec<GraphEntry> = edges
            .iter()
            .map(|(f, t)| GraphEntry { path: path(f), references: t.iter().map(|x| path(x)).collect(), nar_size: 0, nar_hash: None })
            .collect();
        let g = Graph::new(&entries).unwrap();
        let by_walks = counts_with_budget(&g, usize::MAX);
        assert!(by_walks.iter().any(|c| c.bits() > 128));
        assert_eq!(counts_with_budget(&g, 0), by_walks);
    }

    #[test]
    fn tie_break_moves_the_hash_to_the_end() {
        assert_eq!(tie_break_key("/nix/store/abc-hello-2.10"), "hello-2.10-/nix/store/abc");
        assert_eq!(tie_break_key("nodash"), "nodash");
    }
}
