//! Writing an image: layers produced in parallel, handed in order to one destination.
//!
//! [`write_image`] drives [`layer::produce_in_order`] and tells a
//! [`Destination`](crate::destination::Destination) about each layer's bytes and digest,
//! then builds the image config once (it needs every diff_id) and lets the destination
//! finish (config, manifests, index). Every destination sees the same calls in the same
//! order; this is the one place where a layer's completion is observed.

use crate::attrs::ImageSpec;
use crate::destination::{Destination, FinishedImage};
use crate::layer::{self, Event, LayerDigest};
use crate::scan::LayerSource;
use crate::plan::human_size;
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// A layer of the image and the history comment that says what it holds.
pub struct ImageLayer {
    /// Where the bytes come from.
    pub source: LayerSource,
    /// `history[].comment`, e.g. `store paths: /nix/store/…-glibc-2.39`.
    pub comment: String,
    /// How many store paths it holds (for the progress line).
    pub paths: usize,
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
}

/// Writes the image to `dest`, producing layers on `threads` workers, and prints a line
/// per finished layer to stderr (a Nix build log's only sign of progress).
///
/// # Errors
/// The image config would be larger than [`CONFIG_MAX`] (checked before any byte is
/// written), reading a store file fails or it changed size, or the destination fails.
pub fn write_image(dest: &mut dyn Destination, spec: &ImageSpec, layers: &[ImageLayer], threads: usize) -> Result<Written> {
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
    let mut digests: Vec<LayerDigest> = Vec::with_capacity(layers.len());
    let source_refs: Vec<&LayerSource> = layers.iter().map(|l| &l.source).collect();
    let mut started = vec![false; layers.len()];
    layer::produce_in_order(&source_refs, threads, |i, event| {
        if !started[i] {
            // Announced first; an empty prebuilt layer sends no chunk but is a layer too.
            started[i] = true;
            dest.begin_layer(i, layers[i].source.size())?;
        }
        match event {
            Event::Chunk(bytes) => dest.layer_chunk(bytes),
            Event::Finished(digest) => {
                dest.end_layer(digest)?;
                let what = match (&layers[i].source, layers[i].paths) {
                    (LayerSource::Base(base), _) => format!("base image layer `{}`", base.member),
                    (_, 1) => "1 path".to_string(),
                    (_, n) => format!("{n} paths"),
                };
                eprintln!("nix-layers: layer {}/{}: {what}, {}", i + 1, layers.len(), human_size(digest.size));
                digests.push(digest);
                Ok(())
            }
        }
    })?;
    let config = image_config(spec, layers, &digests);
    dest.finish(&FinishedImage { spec, config: &config, diff_ids: &digests })?;
    Ok(Written { layers: layers.len(), layer_bytes: digests.iter().map(|d| d.size).sum() })
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
