//! Writing an image: layers produced in parallel, handed in order to one destination.
//!
//! [`write_image`] drives [`layer::produce_in_order`] and tells a
//! [`Destination`](crate::destination::Destination) about each layer's bytes and digest,
//! then builds the image config once (it needs every diff_id) and lets the destination
//! finish (config, manifests, index). Every destination sees the same calls in the same
//! order; this is the one place where a layer's completion is observed.

use crate::attrs::ImageSpec;
use crate::cache::{LayerCache, LayerKey};
use crate::destination::{Destination, FinishedImage, KnownLayer};
use crate::layer::{self, Event, LayerDigest};
use crate::scan::LayerSource;
use crate::plan::human_size;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A layer of the image and the history comment that says what it holds.
pub struct ImageLayer {
    /// Where the bytes come from.
    pub source: LayerSource,
    /// `history[].comment`, e.g. `store paths: /nix/store/…-glibc-2.39`.
    pub comment: String,
    /// How many store paths it holds (for the progress line).
    pub paths: usize,
    /// Its layer cache key, when its bytes can be identified without reading them.
    pub key: Option<LayerKey>,
}

/// The largest image config containers/image (podman, skopeo) reads: 4 MiB.
pub const CONFIG_MAX: usize = 4 << 20;

/// What [`write_image`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Number of layers.
    pub layers: usize,
    /// Their uncompressed bytes, together.
    pub layer_bytes: u64,
    /// Layers the destination already had, not read.
    pub skipped: usize,
}

/// Writes the image to `dest`, producing layers on `threads` workers, and prints a line
/// per finished layer to stderr (a Nix build log's only sign of progress), unless the
/// destination shows its own.
///
/// First the destination is told what `cache` knows of each layer; the layers it already
/// has are not read at all. Every layer produced has its diff_id recorded in `cache`.
///
/// # Errors
/// The image config would be larger than [`CONFIG_MAX`] (checked before any byte is
/// written), reading a store file fails or it changed size, or the destination fails.
pub fn write_image(
    dest: &mut dyn Destination,
    spec: &ImageSpec,
    layers: &[ImageLayer],
    threads: usize,
    cache: &LayerCache,
) -> Result<Written> {
    // Diff IDs all have the same length, so placeholders give the config's final size.
    let placeholders = vec![LayerDigest { sha256: [0; 32], size: 0 }; layers.len()];
    let config_len = image_config(spec, layers, &placeholders).len();
    if config_len > CONFIG_MAX {
        bail!(
            "the image config would be {config_len} bytes, more than the {CONFIG_MAX} podman and skopeo read: \
             it holds `config` and one history entry for each of the {} layers; lower `maxLayers` or shrink `config`",
            layers.len()
        );
    }
    let known: Vec<KnownLayer> =
        layers
            .iter()
            .map(|l| KnownLayer { key: l.key, diff_id: l.source.known_diff_id().or_else(|| l.key.and_then(|k| cache.diff_id(&k))) })
            .collect();
    let present = dest.present(&known)?;
    if present.len() != layers.len() || present.iter().zip(&known).any(|(&p, k)| p && k.diff_id.is_none()) {
        bail!("internal error: the destination reported a layer present whose diff_id is unknown");
    }
    // The layers to read, by image index; the others are skipped in their turn.
    let produced: Vec<usize> = (0..layers.len()).filter(|&i| !present[i]).collect();
    let quiet = dest.shows_progress();
    let mut digests: Vec<LayerDigest> = Vec::with_capacity(layers.len());
    let skip_until = |end: usize, digests: &mut Vec<LayerDigest>, dest: &mut dyn Destination| -> Result<()> {
        while digests.len() < end {
            let i = digests.len();
            let known = &known[i];
            let digest = known.diff_id.context("internal error: a skipped layer without a diff_id")?;
            dest.skip_layer(i, known)?;
            if !quiet {
                eprintln!("nix-layers: layer {}/{}: {}, {}, present, not read", i + 1, layers.len(), what(&layers[i]), human_size(digest.size));
            }
            digests.push(digest);
        }
        Ok(())
    };
    let source_refs: Vec<&LayerSource> = produced.iter().map(|&i| &layers[i].source).collect();
    let mut started = vec![false; produced.len()];
    layer::produce_in_order(&source_refs, threads, |j, event| {
        let i = produced[j];
        if !started[j] {
            // Announced first; an empty prebuilt layer sends no chunk but is a layer too.
            started[j] = true;
            skip_until(i, &mut digests, dest)?;
            dest.begin_layer(i, layers[i].source.size())?;
        }
        match event {
            Event::Chunk(bytes) => dest.layer_chunk(bytes),
            Event::Finished(digest) => {
                // Recorded first: a destination records its blob against this diff_id.
                if let Some(key) = &layers[i].key {
                    cache.record_diff_id(key, digest);
                }
                dest.end_layer(digest)?;
                if !quiet {
                    eprintln!("nix-layers: layer {}/{}: {}, {}", i + 1, layers.len(), what(&layers[i]), human_size(digest.size));
                }
                digests.push(digest);
                Ok(())
            }
        }
    })?;
    skip_until(layers.len(), &mut digests, dest)?;
    let config = image_config(spec, layers, &digests);
    dest.finish(&FinishedImage { spec, config: &config, diff_ids: &digests })?;
    Ok(Written {
        layers: layers.len(),
        layer_bytes: digests.iter().map(|d| d.size).sum(),
        skipped: layers.len() - produced.len(),
    })
}

/// `1 path`, `N paths` or `base image layer `NAME``.
fn what(layer: &ImageLayer) -> String {
    match (&layer.source, layer.paths) {
        (LayerSource::Base(base), _) => format!("base image layer `{}`", base.member),
        (_, 1) => "1 path".to_string(),
        (_, n) => format!("{n} paths"),
    }
}

/// The image config: `created`, `architecture`, `os`, `config` as given (with a base
/// image's `Env` merged in, see [`crate::base_image`]), `rootfs` and one `history` entry
/// per layer (a base image's layers keep the base's entries instead). Keys are sorted (serde_json's map), so bytes are stable.
/// The same bytes go into every destination: the image id (the config's digest) does not
/// depend on where the image is written.
fn image_config(spec: &ImageSpec, layers: &[ImageLayer], digests: &[LayerDigest]) -> Vec<u8> {
    // A base image's layers keep the base's own history entries (`empty_layer` ones included).
    let history: Vec<Value> = layers
        .iter()
        .flat_map(|l| match &l.source {
            LayerSource::Base(base) if !base.history.is_empty() => base.history.clone(),
            _ => vec![json!({ "created": spec.created.text, "created_by": "nix-layers", "comment": l.comment })],
        })
        .collect();
    let mut config = json!({
        "created": spec.created.text,
        "architecture": spec.architecture,
        "os": "linux",
        "config": spec.config,
        "rootfs": { "type": "layers", "diff_ids": digests.iter().map(LayerDigest::diff_id).collect::<Vec<_>>() },
        "history": history,
    });
    if !spec.variant.is_empty() { config["variant"] = json!(spec.variant); } // OCI image config `variant`
    serde_json::to_vec(&config).unwrap_or_default()
}
