//! Which store paths go in which layer: the classic popularity split.
//!
//! With `N = maxLayers − 1` store layers (the last layer is the customisation layer), the
//! `N − 1` most popular paths get a layer each, in popularity order, and every remaining
//! path shares the last store layer. A smaller closure gets one layer per path. No layer
//! is ever empty. Pure: values in, values out.

use crate::attrs::ImageSpec;
use crate::graph::Graph;
use crate::popularity::Ranked;
use crate::store_path::StorePath;
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The layers of an image, in order.
pub struct LayerPlan {
    /// Store layers, each a list of ranked paths in popularity order.
    pub store_layers: Vec<Vec<Ranked>>,
    /// The last layer, if any.
    pub customisation: Option<Customisation>,
}

/// Where the last layer comes from.
#[derive(Clone, Debug)]
pub enum Customisation {
    /// Generated from `contents`, merged as symlinkJoin merges them.
    Contents(Vec<StorePath>),
    /// A prebuilt `layer.tar` inside this store path (extraCommands/fakeRootCommands).
    Prebuilt(StorePath),
}

/// Splits the ranked closure into layers as the module docs say.
///
/// # Errors
/// A `contents` entry or the prebuilt customisation layer is not in the closure graph
/// while store paths are included (its symlinks would dangle in the image).
pub fn plan_layers(spec: &ImageSpec, graph: &Graph, ranked: Vec<Ranked>) -> Result<LayerPlan> {
    if spec.include_store_paths {
        for content in &spec.contents {
            if graph.node(content.as_str()).is_none() {
                bail!("`contents` entry `{content}` is not in the closure graph (key `closure`)");
            }
        }
    }
    let excluded = spec
        .customisation_layer
        .as_ref()
        .and_then(|p| graph.node(p.as_str()));
    let store_paths: Vec<Ranked> = if spec.include_store_paths {
        ranked.into_iter().filter(|r| Some(r.node) != excluded).collect()
    } else {
        Vec::new()
    };
    let customisation = match (&spec.customisation_layer, spec.contents.is_empty()) {
        (Some(prebuilt), _) => Some(Customisation::Prebuilt(prebuilt.clone())),
        (None, false) => Some(Customisation::Contents(dedup(&spec.contents))),
        (None, true) => None,
    };
    let store_layers = split(store_paths, spec.max_layers - 1);
    for (i, layer) in store_layers.iter().enumerate() {
        if layer_nar_size(graph, layer).is_none() {
            bail!(
                "the narSize values of layer {}'s paths (from `{}` on) add up to more than 2^64 − 1 bytes: \
                 they cannot be real sizes (key `closure`)",
                i + 1,
                graph.paths[layer[0].node as usize]
            );
        }
    }
    Ok(LayerPlan { store_layers, customisation })
}

/// One layer per path for the first `available − 1`, the rest together in the last.
fn split(paths: Vec<Ranked>, available: usize) -> Vec<Vec<Ranked>> {
    if paths.len() <= available {
        return paths.into_iter().map(|p| vec![p]).collect();
    }
    let mut layers = Vec::with_capacity(available);
    let mut paths = paths.into_iter();
    for p in paths.by_ref().take(available - 1) {
        layers.push(vec![p]);
    }
    layers.push(paths.collect());
    layers
}

fn dedup(paths: &[StorePath]) -> Vec<StorePath> {
    let mut seen = std::collections::HashSet::new();
    paths.iter().filter(|p| seen.insert(p.as_str())).cloned().collect()
}

impl LayerPlan {
    /// Total number of layers in the image.
    pub fn layer_count(&self) -> usize {
        self.store_layers.len() + usize::from(self.customisation.is_some())
    }

    /// The plan as JSON: `{"layers": [{"layer", "kind", "narSize", "paths": [...]}]}`.
    /// Popularity counts are decimal strings (they exceed any JSON number).
    pub fn to_json(&self, graph: &Graph) -> Value {
        let mut layers: Vec<Value> = self
            .store_layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let paths: Vec<Value> = layer
                    .iter()
                    .map(|r| {
                        json!({
                            "path": graph.paths[r.node as usize],
                            "narSize": graph.nar_sizes[r.node as usize],
                            "popularity": r.popularity.to_string(),
                        })
                    })
                    .collect();
                json!({
                    "layer": i + 1,
                    "kind": "store",
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
        json!({ "layers": layers })
    }

    /// The plan as a table for people.
    pub fn to_table(&self, graph: &Graph) -> String {
        let mut out = String::from("layer  paths  narSize      popularity  store path\n");
        for (i, layer) in self.store_layers.iter().enumerate() {
            for (j, r) in layer.iter().enumerate() {
                let path = graph.paths[r.node as usize].as_str();
                let pop = r.popularity.to_string();
                if j == 0 {
                    let size = human_size(layer_nar_size(graph, layer).unwrap_or(u64::MAX));
                    out.push_str(&format!("{:>5}  {:>5}  {size:>10}  {pop:>10}  {path}\n", i + 1, layer.len()));
                } else {
                    out.push_str(&format!("{:>5}  {:>5}  {:>10}  {pop:>10}  {path}\n", "", "", ""));
                }
            }
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
        out
    }
}

/// The sum of a layer's narSize values; `None` if it overflows (checked when planning,
/// so a [`LayerPlan`] never holds such a layer).
fn layer_nar_size(graph: &Graph, layer: &[Ranked]) -> Option<u64> {
    layer.iter().try_fold(0u64, |sum, r| sum.checked_add(graph.nar_sizes[r.node as usize]))
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
