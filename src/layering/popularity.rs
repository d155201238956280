//! The classic popularity split (nixpkgs' `buildLayeredImage` before 25.11).
//!
//! With `N` store layers available, the `N − 1` most popular paths get a layer each, in
//! popularity order, and every remaining path shares the last store layer. A smaller
//! closure gets one layer per path.

use super::{Input, StoreLayer};
use crate::popularity;

/// The layers, most popular first.
pub fn layers(input: &Input<'_>) -> Vec<StoreLayer> {
    let graph = input.graph;
    let paths: Vec<u32> =
        popularity::rank(graph).into_iter().map(|r| r.node).filter(|&n| !input.excluded[n as usize]).collect();
    let available = input.available.max(1);
    if paths.len() <= available {
        return paths.into_iter().map(|p| StoreLayer { paths: vec![p], reason: "popular".into() }).collect();
    }
    let mut layers: Vec<StoreLayer> = paths[..available - 1]
        .iter()
        .map(|&p| StoreLayer { paths: vec![p], reason: "popular".into() })
        .collect();
    let rest = paths[available - 1..].to_vec();
    let reason = format!("the {} least popular paths", rest.len());
    layers.push(StoreLayer { paths: rest, reason });
    layers
}
