//! The image's layers: the base image's (`fromImage`), store layers from the chosen
//! [`layering`](crate::layering) strategy, then the customisation layer. Pure: values in,
//! values out.

use crate::attrs::ImageSpec;
use crate::base_image::BaseImage;
use crate::layer::hex;
use crate::graph::Graph;
use crate::layering::{self, Input, StoreLayer, Strategy};
use crate::popularity;
use crate::store_path::StorePath;
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The layers of an image, in order.
pub struct LayerPlan {
    /// The base image's layers (`fromImage`), first in the image.
    pub base_layers: Vec<BasePlanned>,
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

/// A layer of the base image, as the plan shows it.
#[derive(Clone, Debug)]
pub struct BasePlanned {
    /// The base archive.
    pub archive: String,
    /// The layer's name in it.
    pub member: String,
    /// Its diff_id, `sha256:<hex>`.
    pub diff_id: String,
    /// Its uncompressed size.
    pub size: u64,
}

/// Where the last layer comes from.
#[derive(Clone, Debug)]
pub enum Customisation {
    /// Generated from `contents`, merged as symlinkJoin merges them.
    Contents(Vec<StorePath>),
    /// A prebuilt `layer.tar` inside this store path (extraCommands/fakeRootCommands).
    Prebuilt(StorePath),
}

/// Splits the closure into layers: the base image's layers first, then
/// `maxLayers − 1 − base layers` store layers at most (one is kept for the customisation
/// layer, as in nixpkgs), then the customisation layer.
///
/// # Errors
/// `maxLayers` leaves no layer for store paths once the base image's are counted.
/// A `contents` entry or the prebuilt customisation layer is not in the closure graph
/// while store paths are included (its symlinks would dangle in the image), or a bad
/// `layeringPipeline`.
pub fn plan_layers(spec: &ImageSpec, graph: &Graph, base: Option<&BaseImage>) -> Result<LayerPlan> {
    let base_layers: Vec<BasePlanned> = base
        .map(|b| {
            b.layers
                .iter()
                .map(|l| BasePlanned {
                    archive: b.source.display().to_string(),
                    member: l.member.clone(),
                    diff_id: format!("sha256:{}", hex(&l.diff_id)),
                    size: l.size,
                })
                .collect()
        })
        .unwrap_or_default();
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
        // nixpkgs counts the base layers in maxLayers, but not under a layeringPipeline,
        // which alone decides how many store layers there are.
        let base_count = if matches!(spec.layering, Strategy::Pipeline(_)) { 0 } else { base_layers.len() };
        if base_count > 0 && spec.max_layers < reserved + base_count + 1 {
            let kept = if nix_db_layer {
                "2 are kept for the customisation layer and the Nix database (includeNixDB next to extraCommands/fakeRootCommands)"
            } else {
                "1 is kept for the customisation layer"
            };
            bail!(
                "key `maxLayers`: {} leaves no layer for store paths: the base image (`fromImage`) has {base_count} layers and {kept}, \
                 so {} are left; use at least {}",
                spec.max_layers,
                spec.max_layers.saturating_sub(base_count + reserved),
                base_count + reserved + 1
            );
        }
        if spec.max_layers <= reserved {
            bail!(
                "key `maxLayers`: {} leaves no layer for store paths: with includeNixDB and a prebuilt customisation \
                 layer (extraCommands/fakeRootCommands), the Nix database is a layer of its own; use at least 3",
                spec.max_layers
            );
        }
        let input = Input { graph, excluded: &excluded, available: spec.max_layers - reserved - base_count };
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
    Ok(LayerPlan { base_layers, strategy: spec.layering.clone(), store_layers, customisation, nix_db_layer })
}

fn dedup(paths: &[StorePath]) -> Vec<StorePath> {
    let mut seen = std::collections::HashSet::new();
    paths.iter().filter(|p| seen.insert(p.as_str())).cloned().collect()
}

impl LayerPlan {
    /// Total number of layers in the image.
    pub fn layer_count(&self) -> usize {
        self.base_layers.len() + self.store_layers.len() + usize::from(self.customisation.is_some()) + usize::from(self.nix_db_layer)
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
            .base_layers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                json!({ "layer": i + 1, "kind": "base", "archive": b.archive, "member": b.member, "diff_id": b.diff_id, "size": b.size })
            })
            .collect();
        let first_store = layers.len();
        layers.extend(self.store_layers.iter().enumerate().map(|(i, layer)| {
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
                    "layer": first_store + i + 1,
                    "kind": "store",
                    "reason": layer.reason,
                    "narSize": layer_nar_size(graph, layer).unwrap_or(u64::MAX),
                    "paths": paths,
                })
            }));
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
        for (i, b) in self.base_layers.iter().enumerate() {
            out.push_str(&format!("{:>5}  base image layer `{}` of `{}`, {}, {}\n", i + 1, b.member, b.archive, human_size(b.size), b.diff_id));
        }
        let first_store = self.base_layers.len();
        for (i, layer) in self.store_layers.iter().enumerate() {
            for (j, &node) in layer.paths.iter().enumerate() {
                let path = graph.paths[node as usize].as_str();
                let pop = counts.as_ref().map_or("-", |c| c[node as usize].as_str());
                if j == 0 {
                    let size = human_size(layer_nar_size(graph, layer).unwrap_or(u64::MAX));
                    out.push_str(&format!("{:>5}  {:>5}  {size:>10}  {pop:>10}  {path}\n", first_store + i + 1, layer.paths.len()));
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
            out.push_str(&format!("{:>5}  {what}\n", first_store + self.store_layers.len() + 1));
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
