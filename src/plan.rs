//! The image's layers: store layers from the chosen [`layering`](crate::layering)
//! strategy, then the customisation layer. Pure: values in, values out.

use crate::attrs::ImageSpec;
use crate::graph::Graph;
use crate::layering::{self, Input, StoreLayer, Strategy};
use crate::popularity;
use crate::store_path::StorePath;
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The layers of an image, in order.
pub struct LayerPlan {
    /// The strategy that made the store layers.
    pub strategy: Strategy,
    /// Store layers, bottom first.
    pub store_layers: Vec<StoreLayer>,
    /// The last layer, if any.
    pub customisation: Option<Customisation>,
    /// Whether the Nix database (`includeNixDB`) is a layer of its own, after a prebuilt
    /// customisation layer (a generated one holds it).
    pub nix_db_layer: bool,
}

/// Where the last layer comes from.
#[derive(Clone, Debug)]
pub enum Customisation {
    /// Generated from `contents`, merged as symlinkJoin merges them.
    Contents(Vec<StorePath>),
    /// A prebuilt `layer.tar` inside this store path (extraCommands/fakeRootCommands).
    Prebuilt(StorePath),
}

/// Splits the closure into layers: `maxLayers − 1` store layers at most (one is kept for
/// the customisation layer), then the customisation layer.
///
/// # Errors
/// A `contents` entry or the prebuilt customisation layer is not in the closure graph
/// while store paths are included (its symlinks would dangle in the image), or a bad
/// `layeringPipeline`.
pub fn plan_layers(spec: &ImageSpec, graph: &Graph) -> Result<LayerPlan> {
    if spec.include_store_paths {
        for content in &spec.contents {
            if graph.node(content.as_str()).is_none() {
                bail!("`contents` entry `{content}` is not in the closure graph (key `closure`)");
            }
        }
    }
    let nix_db_layer = spec.include_nix_db && spec.customisation_layer.is_some();
    let store_layers = if spec.include_store_paths {
        // The prebuilt customisation layer is a store path of the closure, but it is the
        // last layer, never a store layer (nixpkgs' ignore list).
        let mut excluded = vec![false; graph.len()];
        if let Some(node) = spec.customisation_layer.as_ref().and_then(|p| graph.node(p.as_str())) {
            excluded[node as usize] = true;
        }
        // A Nix database next to a prebuilt customisation layer is one more layer.
        let reserved = 1 + usize::from(nix_db_layer);
        if spec.max_layers <= reserved {
            bail!(
                "key `maxLayers`: {} leaves no layer for store paths: with includeNixDB and a prebuilt customisation \
                 layer (extraCommands/fakeRootCommands), the Nix database is a layer of its own; use at least 3",
                spec.max_layers
            );
        }
        let input = Input { graph, excluded: &excluded, available: spec.max_layers - reserved };
        layering::store_layers(&spec.layering, &input)?
    } else {
        Vec::new()
    };
    let customisation = match (&spec.customisation_layer, spec.contents.is_empty()) {
        (Some(prebuilt), _) => Some(Customisation::Prebuilt(prebuilt.clone())),
        (None, false) => Some(Customisation::Contents(dedup(&spec.contents))),
        // The Nix database goes into the customisation layer, even with no contents.
        (None, true) if spec.include_nix_db => Some(Customisation::Contents(Vec::new())),
        (None, true) => None,
    };
    for (i, layer) in store_layers.iter().enumerate() {
        if layer_nar_size(graph, layer).is_none() {
            bail!(
                "the narSize values of layer {}'s paths (from `{}` on) add up to more than 2^64 − 1 bytes: \
                 they cannot be real sizes (key `closure`)",
                i + 1,
                graph.paths[layer.paths[0] as usize]
            );
        }
    }
    Ok(LayerPlan { strategy: spec.layering.clone(), store_layers, customisation, nix_db_layer })
}

fn dedup(paths: &[StorePath]) -> Vec<StorePath> {
    let mut seen = std::collections::HashSet::new();
    paths.iter().filter(|p| seen.insert(p.as_str())).cloned().collect()
}

impl LayerPlan {
    /// Total number of layers in the image.
    pub fn layer_count(&self) -> usize {
        self.store_layers.len() + usize::from(self.customisation.is_some()) + usize::from(self.nix_db_layer)
    }

    /// Popularity counts by node, shown for the popularity strategy only (computing them
    /// is the costly part of that strategy, and they explain nothing in the others).
    fn popularity_counts(&self, graph: &Graph) -> Option<Vec<String>> {
        (self.strategy == Strategy::Popularity)
            .then(|| popularity::counts(graph).into_iter().map(|c| c.to_string()).collect())
    }

    /// The plan as JSON: `{"layering", "layers": [{"layer", "kind", "reason", "narSize",
    /// "paths": [{"path", "narSize", "popularity"?}]}]}`. Popularity counts (popularity
    /// layering only) are decimal strings: they exceed any JSON number.
    pub fn to_json(&self, graph: &Graph) -> Value {
        let counts = self.popularity_counts(graph);
        let mut layers: Vec<Value> = self
            .store_layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let paths: Vec<Value> = layer
                    .paths
                    .iter()
                    .map(|&node| {
                        let mut entry = json!({
                            "path": graph.paths[node as usize],
                            "narSize": graph.nar_sizes[node as usize],
                        });
                        if let Some(counts) = &counts {
                            entry["popularity"] = json!(counts[node as usize]);
                        }
                        entry
                    })
                    .collect();
                json!({
                    "layer": i + 1,
                    "kind": "store",
                    "reason": layer.reason,
                    "narSize": layer_nar_size(graph, layer).unwrap_or(u64::MAX),
                    "paths": paths,
                })
            })
            .collect();
        if let Some(c) = &self.customisation {
            let (kind, paths): (&str, Vec<&str>) = match c {
                Customisation::Contents(contents) => ("contents", contents.iter().map(StorePath::as_str).collect()),
                Customisation::Prebuilt(p) => ("prebuilt", vec![p.as_str()]),
            };
            layers.push(json!({
                "layer": layers.len() + 1,
                "kind": "customisation",
                "source": kind,
                "contents": paths,
            }));
        }
        if self.nix_db_layer {
            layers.push(json!({ "layer": layers.len() + 1, "kind": "nix-db" }));
        }
        json!({ "layering": self.strategy.name(), "layers": layers })
    }

    /// The plan as a table for people.
    pub fn to_table(&self, graph: &Graph) -> String {
        let counts = self.popularity_counts(graph);
        let mut out = format!("layering: {}\n", self.strategy.name());
        out.push_str("layer  paths  narSize      popularity  store path\n");
        for (i, layer) in self.store_layers.iter().enumerate() {
            for (j, &node) in layer.paths.iter().enumerate() {
                let path = graph.paths[node as usize].as_str();
                let pop = counts.as_ref().map_or("-", |c| c[node as usize].as_str());
                if j == 0 {
                    let size = human_size(layer_nar_size(graph, layer).unwrap_or(u64::MAX));
                    out.push_str(&format!("{:>5}  {:>5}  {size:>10}  {pop:>10}  {path}\n", i + 1, layer.paths.len()));
                } else {
                    out.push_str(&format!("{:>5}  {:>5}  {:>10}  {pop:>10}  {path}\n", "", "", ""));
                }
            }
            out.push_str(&format!("{:>5}  why: {}\n", "", layer.reason));
        }
        if let Some(c) = &self.customisation {
            let what = match c {
                Customisation::Contents(contents) => {
                    let names: Vec<&str> = contents.iter().map(StorePath::as_str).collect();
                    format!("customisation layer: symlinks from {}", names.join(", "))
                }
                Customisation::Prebuilt(p) => format!("customisation layer: {p}/layer.tar"),
            };
            out.push_str(&format!("{:>5}  {what}\n", self.store_layers.len() + 1));
        }
        if self.nix_db_layer {
            out.push_str(&format!("{:>5}  Nix database of the closure of contents (includeNixDB)\n", self.layer_count()));
        }
        out
    }
}

/// The sum of a layer's narSize values; `None` if it overflows (checked when planning,
/// so a [`LayerPlan`] never holds such a layer).
fn layer_nar_size(graph: &Graph, layer: &StoreLayer) -> Option<u64> {
    layer.paths.iter().try_fold(0u64, |sum, &node| sum.checked_add(graph.nar_sizes[node as usize]))
}

/// `bytes` for people: `512 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
