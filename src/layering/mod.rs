//! Which store paths go in which store layer: one file per strategy.
//!
//! Every strategy takes the checked closure graph, the nodes to leave out (the prebuilt
//! customisation layer, which is its own last layer) and the number of store layers
//! available, and returns the store layers bottom first. Every strategy keeps the same
//! promises: each path that is not left out is in exactly one layer, no layer is empty,
//! and the result depends only on the graph (not on its input order or the thread count).
//!
//! - [`popularity`]: the classic split of nixpkgs' `buildLayeredImage` before 25.11.
//! - [`autolayer`]: nixpkgs' `auto-layer.py`, its default since 25.11.
//! - [`reuse`]: ours, made to re-ship the fewest bytes when an image is updated.
//! - [`pipeline`]: nixpkgs' experimental `layeringPipeline`.

pub mod autolayer;
pub mod pipeline;
pub mod popularity;
pub mod reuse;

use crate::graph::Graph;
use anyhow::{bail, Result};
use serde_json::Value;

/// How store paths are split into layers (`layering`, `layeringPipeline`).
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// The classic popularity split.
    Popularity,
    /// nixpkgs' size-based auto-layer.
    AutoLayer,
    /// Ours: layers by how likely an update touches them.
    Reuse,
    /// A nixpkgs `layeringPipeline`, as JSON (a list of `[function, args…]`).
    Pipeline(Value),
}

/// The strategy used when `layering` is not given.
pub const DEFAULT: Strategy = Strategy::AutoLayer;

/// The largest `maxLayers` accepted. Engines mount about 125 layers at most (overlay's
/// limit), so more is never useful, and it bounds the work of autolayer
/// (O(layers × graph)) and reuse (O(layers³ / 64)) on a huge closure.
pub const MAX_LAYERS: u64 = 1000;

/// The names `layering` accepts.
pub const NAMES: [&str; 3] = ["popularity", "autolayer", "reuse"];

impl Strategy {
    /// The strategy called `name` (one of [`NAMES`]).
    ///
    /// # Errors
    /// Any other name.
    pub fn from_name(name: &str) -> Result<Strategy> {
        Ok(match name {
            "popularity" => Strategy::Popularity,
            "autolayer" => Strategy::AutoLayer,
            "reuse" => Strategy::Reuse,
            other => bail!("unknown layering {other:?}; use one of \"popularity\", \"autolayer\", \"reuse\""),
        })
    }

    /// A short name, as `plan` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Popularity => "popularity",
            Strategy::AutoLayer => "autolayer",
            Strategy::Reuse => "reuse",
            Strategy::Pipeline(_) => "layeringPipeline",
        }
    }
}

/// A store path's name without its directory and hash (`/nix/store/abc…-glibc-2.39` →
/// `glibc-2.39`): what layer reasons print, and what reuse decides by (names survive an
/// update; hashes do not).
pub fn name_of(path: &str) -> &str {
    let base = path.rsplit_once('/').map_or(path, |(_, base)| base);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// One store layer: its paths, in the order they are written, and why it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLayer {
    /// Graph nodes, in the order their trees are written into the layer.
    pub paths: Vec<u32>,
    /// Why these paths are together, for people (`plan`): e.g. "largest path X and what
    /// only it uses", "shared by A, B", "roots".
    pub reason: String,
}

/// What every strategy is given.
pub struct Input<'a> {
    /// The closure.
    pub graph: &'a Graph,
    /// Per node: true if it must not be in any store layer.
    pub excluded: &'a [bool],
    /// How many store layers there may be (≥ 1).
    pub available: usize,
}

impl Input<'_> {
    /// The nodes that go into store layers.
    pub fn included(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.graph.len() as u32).filter(|&n| !self.excluded[n as usize])
    }
}

/// Splits the closure into store layers with `strategy`.
///
/// # Errors
/// A bad `layeringPipeline`.
pub fn store_layers(strategy: &Strategy, input: &Input<'_>) -> Result<Vec<StoreLayer>> {
    let layers = match strategy {
        Strategy::Popularity => popularity::layers(input),
        Strategy::AutoLayer => autolayer::layers(input),
        Strategy::Reuse => reuse::layers(input),
        Strategy::Pipeline(pipeline) => pipeline::layers(input, pipeline)?,
    };
    debug_assert!(layers.iter().all(|l| !l.paths.is_empty()), "{} made an empty layer", strategy.name());
    Ok(layers)
}

/// The store paths of `layers` as a JSON list of lists, printed as Python's `json.dumps`
/// prints it (`", "` between items), the shape `auto-layer.py` prints.
pub fn to_json_text(graph: &Graph, layers: &[StoreLayer]) -> String {
    let mut out = String::from("[");
    for (i, layer) in layers.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('[');
        for (j, &node) in layer.paths.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            // serde_json escapes as json.dumps does for store paths (ASCII); a non-ASCII
            // path would differ (json.dumps escapes it as \uXXXX), which Nix never makes.
            out.push_str(&serde_json::to_string(&graph.paths[node as usize]).unwrap_or_default());
        }
        out.push(']');
    }
    out.push_str("]\n");
    out
}
