//! The closure graph: store paths and their references, checked and indexed.
//!
//! Self-references are dropped (Nix lists them; they mean nothing for ordering), duplicate
//! references collapse, and a reference to a path absent from the graph, a duplicate entry
//! or a cycle is an error. What comes out is a DAG with a topological order.
//! Paths are kept as given (closure-graph.py accepts any string); the image pipeline
//! checks that each is a real store path before anything is read from disk.

use crate::attrs::GraphEntry;
use anyhow::{bail, Result};
use std::collections::HashMap;

/// A checked closure graph. Node `i` is `paths[i]`; nodes are in the input's order.
#[derive(Default)]
pub struct Graph {
    /// The store path of each node.
    pub paths: Vec<String>,
    /// narSize of each node.
    pub nar_sizes: Vec<u64>,
    /// narHash of each node, when the graph has it (the layer cache's proof of content).
    pub nar_hashes: Vec<Option<Box<str>>>,
    /// References of each node, without itself, sorted, without duplicates.
    pub children: Vec<Vec<u32>>,
    /// Nodes that reference each node (the reverse of `children`), sorted.
    pub parents: Vec<Vec<u32>>,
    /// Every node, each after all nodes that reference it.
    pub topo_order: Vec<u32>,
    /// Every node, sorted by path: the index that [`Graph::node`] searches.
    by_path: Vec<u32>,
}

impl Graph {
    /// Checks `entries` and builds the graph.
    ///
    /// # Errors
    /// A path listed twice, a reference to a path not in the graph (naming both), or a
    /// reference cycle (naming its paths).
    pub fn new(entries: &[GraphEntry]) -> Result<Graph> {
        // Borrows the entries' paths while references are resolved; the graph keeps one
        // copy of each path (100,000 paths are tens of MB of strings).
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if index.insert(&entry.path, i as u32).is_some() {
                bail!("closure graph lists `{}` twice", entry.path);
            }
        }
        let mut children = Vec::with_capacity(entries.len());
        let mut parents = vec![Vec::new(); entries.len()];
        for (i, entry) in entries.iter().enumerate() {
            let mut refs = Vec::with_capacity(entry.references.len());
            for reference in &entry.references {
                let Some(&j) = index.get(reference.as_ref()) else {
                    bail!(
                        "`{}` refers to `{reference}`, which is not in the closure graph",
                        entry.path
                    );
                };
                if j as usize != i {
                    refs.push(j);
                }
            }
            refs.sort_unstable();
            refs.dedup();
            for &j in &refs {
                parents[j as usize].push(i as u32);
            }
            children.push(refs);
        }
        drop(index);
        let paths: Vec<String> = entries.iter().map(|e| e.path.to_string()).collect();
        let topo_order = topological_order(&paths, &children, &parents)?;
        let mut by_path: Vec<u32> = (0..paths.len() as u32).collect();
        by_path.sort_unstable_by(|&a, &b| paths[a as usize].cmp(&paths[b as usize]));
        Ok(Graph {
            paths,
            nar_sizes: entries.iter().map(|e| e.nar_size).collect(),
            nar_hashes: entries.iter().map(|e| e.nar_hash.as_deref().map(Box::from)).collect(),
            children,
            parents,
            topo_order,
            by_path,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The node of `path`, if it is in the graph.
    pub fn node(&self, path: &str) -> Option<u32> {
        let paths = &self.paths;
        let found = self.by_path.binary_search_by(|&v| paths[v as usize].as_str().cmp(path));
        found.ok().map(|i| self.by_path[i])
    }
}

/// Kahn's algorithm from the roots; leftover nodes lie on or behind a cycle.
fn topological_order(paths: &[String], children: &[Vec<u32>], parents: &[Vec<u32>]) -> Result<Vec<u32>> {
    let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut order: Vec<u32> = (0..paths.len() as u32).filter(|&v| pending[v as usize] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let v = order[next] as usize;
        next += 1;
        for &c in &children[v] {
            pending[c as usize] -= 1;
            if pending[c as usize] == 0 {
                order.push(c);
            }
        }
    }
    if order.len() < paths.len() {
        let cycle = find_cycle(children, &pending);
        let names: Vec<&str> = cycle.iter().map(|&v| paths[v as usize].as_str()).collect();
        bail!("the closure graph has a reference cycle: {}", names.join(" -> "));
    }
    Ok(order)
}

/// Walks unfinished nodes (those with `pending > 0`, every one of which has an unfinished
/// parent) backwards until a node repeats, and returns that cycle in reference order.
fn find_cycle(children: &[Vec<u32>], pending: &[usize]) -> Vec<u32> {
    let n = children.len();
    let mut unfinished_parent = vec![u32::MAX; n];
    for (p, refs) in children.iter().enumerate() {
        if pending[p] == 0 {
            continue;
        }
        for &c in refs {
            if pending[c as usize] > 0 {
                unfinished_parent[c as usize] = p as u32;
            }
        }
    }
    let Some(start) = (0..n).find(|&v| pending[v] > 0) else {
        return Vec::new();
    };
    let mut seen_at = vec![usize::MAX; n];
    let mut walk = Vec::new();
    let mut v = start;
    while seen_at[v] == usize::MAX {
        seen_at[v] = walk.len();
        walk.push(v as u32);
        v = unfinished_parent[v] as usize;
    }
    let mut cycle = walk[seen_at[v]..].to_vec();
    cycle.reverse();
    cycle.push(cycle[0]);
    cycle
}
