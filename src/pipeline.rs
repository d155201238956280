//! The stages run in order, shared by every subcommand: each stops where it needs to.

use crate::archive::ImageLayer;
use crate::attrs::{Attrs, ImageSpec};
use crate::graph::Graph;
use crate::plan::{self, Customisation, LayerPlan};
use crate::nixdb::NixDb;
use crate::scan::{self, LayerSource};
use crate::store_path::StorePath;
use crate::tar_header::Owner;
use anyhow::{Context, Result};

/// A checked spec, its closure graph and the layer plan.
pub struct PlannedImage {
    /// The image attributes.
    pub spec: ImageSpec,
    /// The closure.
    pub graph: Graph,
    /// Each graph node's path, checked to be a store path.
    pub store_paths: Vec<StorePath>,
    /// Which path goes in which layer.
    pub plan: LayerPlan,
    /// The Nix database to add (`includeNixDB`).
    pub nix_db: Option<NixDb>,
}

/// attrs → spec → graph → layering → plan. Reads nothing from disk.
///
/// # Errors
/// Any bad attribute or graph.
pub fn plan_image(attrs: &Attrs, store_dir: &str) -> Result<PlannedImage> {
    let spec = ImageSpec::from_attrs(attrs, store_dir)?;
    let graph = spec.closure(attrs)?;
    // Only real store paths may enter an image: no `..`, nothing outside the store.
    let store_paths = graph
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| StorePath::parse(store_dir, p).with_context(|| format!("key `closure[{i}].path`")))
        .collect::<Result<Vec<_>>>()?;
    let plan = plan::plan_layers(&spec, &graph)?;
    let nix_db = if spec.include_nix_db {
        let graph_json = attrs.list_text("closure").unwrap_or("[]");
        Some(NixDb::from_graph_json(graph_json, &spec.contents, spec.mtime.unix)?)
    } else {
        None
    };
    Ok(PlannedImage { spec, graph, store_paths, plan, nix_db })
}

impl PlannedImage {
    /// The spec alone: once the layers are scanned, the graph and plan (tens of MB for
    /// 100,000 paths) are no longer needed while the image is written.
    pub fn into_spec(self) -> ImageSpec {
        self.spec
    }

    /// Scans every layer's files on disk (metadata only, on `threads` workers) and returns
    /// the image's layers.
    ///
    /// # Errors
    /// A store path or content missing on disk, a special file, a contents conflict.
    pub fn scan_layers(&self, store_dir: &str, threads: usize) -> Result<Vec<ImageLayer>> {
        let spec = &self.spec;
        let owner = Owner {
            uid: spec.uid,
            gid: spec.gid,
            uname: spec.uname.clone(),
            gname: spec.gname.clone(),
            mtime: spec.mtime.unix,
        };
        let mut layers = Vec::with_capacity(self.plan.layer_count());
        let in_plan_order: Vec<&StorePath> =
            self.plan.store_layers.iter().flat_map(|l| &l.paths).map(|&n| &self.store_paths[n as usize]).collect();
        let mut trees = scan::scan_store_paths(&in_plan_order, threads)?.into_iter();
        for store_layer in &self.plan.store_layers {
            let names: Vec<&str> = store_layer.paths.iter().map(|&n| self.store_paths[n as usize].as_str()).collect();
            let nar_hashes: Vec<(&str, Option<&str>)> =
                names.iter().zip(&store_layer.paths).map(|(name, &n)| (*name, self.graph.nar_hashes[n as usize].as_deref())).collect();
            let source = scan::store_layer(store_dir, trees.by_ref().take(store_layer.paths.len()).collect(), owner.clone());
            layers.push(ImageLayer {
                key: source.cache_key(&nar_hashes),
                source,
                comment: list_comment("store paths:", &names),
                paths: names.len(),
            });
        }
        if let Some(customisation) = &self.plan.customisation {
            let (comment, paths) = match customisation {
                Customisation::Contents(c) => {
                    let names: Vec<&str> = c.iter().map(|p| p.as_str()).collect();
                    (list_comment("customisation layer: symlinks to contents", &names), names.len())
                }
                Customisation::Prebuilt(p) => (format!("customisation layer: {p}/layer.tar"), 1),
            };
            let db_files = match &self.nix_db {
                Some(db) => db.files()?,
                None => Vec::new(),
            };
            if self.plan.nix_db_layer {
                layers.push(keyed(scan::customisation_layer(customisation, spec.mtime.unix, Vec::new())?, comment, paths));
                let comment = "Nix database of the closure of contents (includeNixDB)".to_string();
                layers.push(keyed(scan::extra_layer(spec.mtime.unix, db_files)?, comment, 1));
            } else {
                let comment = if db_files.is_empty() { comment } else { format!("{comment}, and the Nix database (includeNixDB)") };
                layers.push(keyed(scan::customisation_layer(customisation, spec.mtime.unix, db_files)?, comment, paths));
            }
        }
        Ok(layers)
    }
}

/// A layer that reads no store file (or only a prebuilt tar), with its cache key.
fn keyed(source: LayerSource, comment: String, paths: usize) -> ImageLayer {
    ImageLayer { key: source.cache_key(&[]), source, comment, paths }
}

/// Longest `history` comment listing paths, in bytes (plus at most a short "and N more").
/// Listing every path made a 100,000-path image's config 6.7 MB, and skopeo refuses
/// configs over 4 MiB; `plan` lists every path of every layer.
pub const COMMENT_MAX: usize = 1024;

/// `prefix` and `names`, space-separated, as many as fit in [`COMMENT_MAX`], then
/// `… and N more`.
fn list_comment(prefix: &str, names: &[&str]) -> String {
    let mut comment = prefix.to_string();
    for (i, name) in names.iter().enumerate() {
        if comment.len() + 1 + name.len() > COMMENT_MAX {
            comment.push_str(&format!(" … and {} more", names.len() - i));
            break;
        }
        comment.push(' ');
        comment.push_str(name);
    }
    comment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_lists_what_fits_and_counts_the_rest() {
        let long = "/nix/store/".to_string() + &"x".repeat(100);
        assert_eq!(list_comment("paths:", &["/a", "/b"]), "paths: /a /b");
        let many = vec![long.as_str(); 1000];
        let comment = list_comment("paths:", &many);
        assert!(comment.len() <= COMMENT_MAX + 20, "{}", comment.len());
        let listed = comment.matches("/nix/store/").count();
        assert!(comment.ends_with(&format!(" … and {} more", 1000 - listed)), "{comment}");
        // A single path longer than the budget is counted, not listed.
        let huge = "y".repeat(2000);
        assert_eq!(list_comment("paths:", &[huge.as_str()]), "paths: … and 1 more");
    }
}
