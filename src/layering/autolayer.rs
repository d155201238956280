//! nixpkgs' `auto-layer.py` (`dockerAutoLayer`, the default of `buildLayeredImage` since
//! nixpkgs 25.11): the same layers for the same graph and limit.
//!
//! # The algorithm
//!
//! Paths are taken one by one as *primaries*, largest narSize first. After each step every
//! path belongs to the layer named by its **set of nearest primaries**: the primaries that
//! reach it (a primary reaches itself) through no other primary. So a primary leads its own
//! layer together with the dependencies only it leads to; dependencies reached from several
//! primaries share a layer per set of primaries; paths no primary reaches (roots and what
//! only they use) share one layer. Steps continue while the number of distinct sets stays
//! within the limit; the step that would exceed it is undone and the split before it is
//! the result (later, smaller paths are not tried). Layers with only left-out paths count
//! towards the limit but are not printed, as in `auto-layer.py`.
//!
//! # Ties
//!
//! - Paths of equal narSize become primaries in descending path order. `auto-layer.py` takes
//!   the last one of the graph file's order, and Nix writes the graph sorted by path; here
//!   the graph's input order does not matter.
//! - A layer's paths are sorted by the name after the first `-` of the path, then by what
//!   comes before it (the hash), as `auto-layer.py` sorts them.
//! - Layers are ordered by the narSize of their closure, smallest first. Among layers of
//!   **equal closure size** (where `auto-layer.py`'s order depends on Python's hash seed),
//!   the layer whose first path sorts first comes first (the same name-then-hash key).
//!
//! # Cost
//!
//! The nearest-primary sets only change for the new primary's dependencies, and in the same
//! way for all dependencies that had the same set: each step walks the new primary's
//! dependencies and users once and rewrites each distinct set once. Every step adds a
//! layer that never goes away (the primary's own), so there are at most `limit + 1` steps:
//! O(limit × (paths + references)) in all, instead of copying the whole split every step.
//! Closure sizes of the layers come from one pass in topological order per 64 layers.

use super::{Input, StoreLayer};
use std::collections::HashMap;

/// The layers, in order of closure size.
pub fn layers(input: &Input<'_>) -> Vec<StoreLayer> {
    let graph = input.graph;
    if graph.is_empty() {
        return Vec::new();
    }
    let keys: Vec<(&str, &str)> = graph.paths.iter().map(|p| sort_key(p)).collect();
    let split = nearest_primaries(input);

    // Group the nodes by their set of nearest primaries, one group per layer.
    let mut group_of_set: HashMap<u32, usize> = HashMap::new();
    let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
    for node in 0..graph.len() as u32 {
        let set = split.layer_of[node as usize];
        let group = *group_of_set.entry(set).or_insert_with(|| {
            groups.push((set, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(node);
    }
    for (_, paths) in &mut groups {
        paths.sort_unstable_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
    }
    let group_of_node: Vec<u32> = {
        let mut of = vec![0u32; graph.len()];
        for (g, (_, paths)) in groups.iter().enumerate() {
            for &p in paths {
                of[p as usize] = g as u32;
            }
        }
        of
    };
    let closure_sizes = closure_sizes(input, &group_of_node, groups.len());

    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let first = |g: usize| keys[groups[g].1[0] as usize];
        closure_sizes[a].cmp(&closure_sizes[b]).then_with(|| first(a).cmp(&first(b)))
    });
    order
        .into_iter()
        .filter_map(|g| {
            let (set, paths) = &groups[g];
            let paths: Vec<u32> = paths.iter().copied().filter(|&p| !input.excluded[p as usize]).collect();
            if paths.is_empty() {
                return None;
            }
            Some(StoreLayer { paths, reason: reason(input, &split.sets.sets[*set as usize]) })
        })
        .collect()
}

/// `auto-layer.py`'s sort key of a path: the part after the first `-` (the name), then the
/// part before it (the hash). A path without `-` sorts as a name with an empty hash.
fn sort_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => (path, ""),
    }
}

/// The name a person recognises: the last component without its hash.
fn reason(input: &Input<'_>, primaries: &[u32]) -> String {
    let name = |node: u32| super::name_of(&input.graph.paths[node as usize]);
    match primaries {
        [] => "paths no large path uses (roots and what only they use)".into(),
        [one] => format!("large path {} and its dependencies no other large path uses", name(*one)),
        many => {
            let mut names: Vec<&str> = many.iter().map(|&p| name(p)).collect();
            names.sort_unstable();
            let shown = names.len().min(3);
            let mut text = format!("shared by large paths {}", names[..shown].join(", "));
            if names.len() > shown {
                text.push_str(&format!(" and {} more", names.len() - shown));
            }
            text
        }
    }
}

/// Distinct sets of primaries, each numbered once. Set 0 is the empty set.
struct SetTable {
    /// The primaries of each set, sorted by node.
    sets: Vec<Vec<u32>>,
    index: HashMap<Vec<u32>, u32>,
}

impl SetTable {
    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&id) = self.index.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.index.insert(set, id);
        id
    }
}

/// The final split: each node's set of nearest primaries.
struct Split {
    sets: SetTable,
    /// Per node, its set (an index into `sets`).
    layer_of: Vec<u32>,
}

/// Takes primaries largest first while the layer count stays within the limit.
fn nearest_primaries(input: &Input<'_>) -> Split {
    let graph = input.graph;
    let n = graph.len();
    let limit = input.available.max(1);
    let mut sets = SetTable { sets: vec![Vec::new()], index: HashMap::from([(Vec::new(), 0)]) };
    let mut layer_of = vec![0u32; n];
    // Nodes per set; a set is a layer while it has nodes.
    let mut members: Vec<usize> = vec![n];
    let mut layer_count = 1usize;

    // Candidates in ascending (narSize, path): the largest is taken first, and among equal
    // sizes the greatest path, as auto-layer.py pops from a list sorted stably by narSize
    // over the graph in path order.
    let mut candidates: Vec<u32> = (0..n as u32).collect();
    candidates.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        graph.nar_sizes[a].cmp(&graph.nar_sizes[b]).then_with(|| graph.paths[a].cmp(&graph.paths[b]))
    });

    // Visit marks: `below[v] == step` if v is a dependency of this step's primary,
    // `above[v] == step` if v uses it.
    let mut below = vec![0u32; n];
    let mut above = vec![0u32; n];
    let mut deps: Vec<u32> = Vec::new();
    let mut stack: Vec<u32> = Vec::new();

    for (step, &primary) in candidates.iter().rev().enumerate() {
        let step = step as u32 + 1;
        deps.clear();
        walk(primary, &graph.children, &mut below, step, &mut stack, Some(&mut deps));
        walk(primary, &graph.parents, &mut above, step, &mut stack, None);

        // How each set changes for the primary's dependencies: users of the primary are no
        // longer nearest (the primary is nearer), and the primary joins unless one of its
        // own dependencies already is a nearest primary.
        let mut rewrite: HashMap<u32, (u32, usize)> = HashMap::new();
        for &dep in &deps {
            let old = layer_of[dep as usize];
            let entry = rewrite.entry(old).or_insert_with(|| {
                let old_set = &sets.sets[old as usize];
                let mut new_set: Vec<u32> = old_set.iter().copied().filter(|&q| above[q as usize] != step).collect();
                if !new_set.iter().any(|&q| below[q as usize] == step) {
                    let at = new_set.binary_search(&primary).unwrap_or_else(|at| at);
                    new_set.insert(at, primary);
                }
                (sets.intern(new_set), 0)
            });
            entry.1 += 1;
        }
        let own = sets.intern(vec![primary]);
        members.resize(sets.sets.len(), 0);

        // The change in node count per set, then the layer count it gives.
        let mut delta: HashMap<u32, isize> = HashMap::new();
        for (&old, &(new, moved)) in &rewrite {
            if old != new {
                *delta.entry(old).or_default() -= moved as isize;
                *delta.entry(new).or_default() += moved as isize;
            }
        }
        *delta.entry(layer_of[primary as usize]).or_default() -= 1;
        *delta.entry(own).or_default() += 1;
        let mut count = layer_count;
        for (&set, &change) in &delta {
            let before = members[set as usize];
            let after = before.checked_add_signed(change).unwrap_or(0);
            match (before, after) {
                (0, a) if a > 0 => count += 1,
                (b, 0) if b > 0 => count -= 1,
                _ => {}
            }
        }
        if count > limit {
            break; // this step is undone: the split so far is the result
        }
        for (&set, &change) in &delta {
            members[set as usize] = members[set as usize].checked_add_signed(change).unwrap_or(0);
        }
        for &dep in &deps {
            layer_of[dep as usize] = rewrite[&layer_of[dep as usize]].0;
        }
        layer_of[primary as usize] = own;
        layer_count = count;
    }
    Split { sets, layer_of }
}

/// Marks with `step` every node reachable from `start` along `edges` (not `start` itself
/// unless on a cycle, which a checked graph has none of), collecting them in `found`.
fn walk(start: u32, edges: &[Vec<u32>], mark: &mut [u32], step: u32, stack: &mut Vec<u32>, mut found: Option<&mut Vec<u32>>) {
    mark[start as usize] = step;
    stack.clear();
    stack.push(start);
    while let Some(v) = stack.pop() {
        for &next in &edges[v as usize] {
            if mark[next as usize] != step {
                mark[next as usize] = step;
                if let Some(found) = found.as_deref_mut() {
                    found.push(next);
                }
                stack.push(next);
            }
        }
    }
}

/// Per group, the narSize of the closure of its nodes: bits "reached from group g" flow
/// from users to dependencies in topological order, 64 groups per pass.
fn closure_sizes(input: &Input<'_>, group_of_node: &[u32], groups: usize) -> Vec<u128> {
    let graph = input.graph;
    let mut sizes = vec![0u128; groups]; // u128: a sum of u64 sizes cannot overflow it
    let mut reached = vec![0u64; graph.len()];
    for first in (0..groups).step_by(64) {
        reached.iter_mut().for_each(|r| *r = 0);
        for &v in &graph.topo_order {
            let v = v as usize;
            let group = group_of_node[v] as usize;
            if (first..first + 64).contains(&group) {
                reached[v] |= 1 << (group - first);
            }
            let bits = reached[v];
            if bits == 0 {
                continue;
            }
            for &c in &graph.children[v] {
                reached[c as usize] |= bits;
            }
            let mut rest = bits;
            while rest != 0 {
                let bit = rest.trailing_zeros() as usize;
                sizes[first + bit] += u128::from(graph.nar_sizes[v]);
                rest &= rest - 1;
            }
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::sort_key;
    use std::cmp::Ordering;

    #[test]
    fn sort_key_is_name_then_hash() {
        let a = sort_key("/nix/store/zzz-aaa");
        let b = sort_key("/nix/store/aaa-bbb");
        assert_eq!(a.cmp(&b), Ordering::Less);
        assert_eq!(sort_key("nodash"), ("nodash", ""));
    }
}
