//! The docker-archive (what `docker save` writes): layer tars, image config, manifest.
//!
//! Write order: `layers/NNN.tar` for each layer (uncompressed, sizes known up front so
//! they go straight into the archive while being hashed), then `<sha256>.json` (the image
//! config, which needs the diff_ids), then `manifest.json`. Layer file names need not be
//! digests: consumers find layers through `manifest.json`.

use crate::attrs::ImageSpec;
use crate::layer::{self, hex, Event, LayerDigest};
use crate::scan::LayerSource;
use crate::tar_header::{self, Header, Kind, Owner};
use crate::plan::human_size;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;

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

/// What [`write_docker_archive`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Number of layers.
    pub layers: usize,
    /// Their uncompressed bytes, together.
    pub layer_bytes: u64,
}

/// Writes the whole archive to `out`, producing layers on `threads` workers, and prints a
/// line per finished layer to stderr (a Nix build log's only sign of progress).
///
/// # Errors
/// The image config would be larger than [`CONFIG_MAX`] (checked before any byte is
/// written), reading a store file fails or it changed size, or writing to `out` fails.
pub fn write_docker_archive(out: &mut impl Write, spec: &ImageSpec, layers: &[ImageLayer], threads: usize) -> Result<Written> {
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
    let owner = Owner { uid: 0, gid: 0, uname: String::new(), gname: String::new(), mtime: spec.mtime.unix };
    let names: Vec<String> = (1..=layers.len()).map(|i| format!("layers/{i:03}.tar")).collect();
    let mut digests: Vec<LayerDigest> = Vec::with_capacity(layers.len());
    let source_refs: Vec<&LayerSource> = layers.iter().map(|l| &l.source).collect();
    let mut started = vec![false; layers.len()];
    layer::produce_in_order(&source_refs, threads, |i, event| {
        if !started[i] {
            // The header first; an empty prebuilt layer sends no chunk but needs it too.
            started[i] = true;
            file_header(&names[i], layers[i].source.size(), &owner).write_to(out)?;
        }
        match event {
            Event::Chunk(bytes) => out.write_all(bytes).context("cannot write the image"),
            Event::Finished(digest) => {
                out.write_all(&tar_header::ZEROS[..tar_header::padding(digest.size)])?;
                let what = match layers[i].paths {
                    1 => "1 path".to_string(),
                    n => format!("{n} paths"),
                };
                eprintln!("nix-layers: layer {}/{}: {what}, {}", i + 1, layers.len(), human_size(digest.size));
                digests.push(digest);
                Ok(())
            }
        }
    })?;
    let config = image_config(spec, layers, &digests);
    let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
    write_file(out, &config_name, &config, &owner)?;
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [spec.repo_tag()],
        "Layers": names,
    }]))?;
    write_file(out, "manifest.json", &manifest, &owner)?;
    out.write_all(&tar_header::ZEROS)?;
    out.write_all(&tar_header::ZEROS)?;
    out.flush().context("cannot write the image")?;
    Ok(Written { layers: layers.len(), layer_bytes: digests.iter().map(|d| d.size).sum() })
}

/// The image config: `created`, `architecture`, `os`, `config` as given, `rootfs` and one
/// `history` entry per layer. Keys are sorted (serde_json's map), so bytes are stable.
fn image_config(spec: &ImageSpec, layers: &[ImageLayer], digests: &[LayerDigest]) -> Vec<u8> {
    let history: Vec<Value> = layers
        .iter()
        .map(|l| json!({ "created": spec.created.text, "created_by": "nix-layers", "comment": l.comment }))
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

fn file_header<'a>(name: &'a str, size: u64, owner: &'a Owner) -> Header<'a> {
    Header { name: name.as_bytes(), kind: Kind::File, mode: 0o644, size, link: b"", owner }
}

fn write_file(out: &mut impl Write, name: &str, data: &[u8], owner: &Owner) -> Result<()> {
    file_header(name, data.len() as u64, owner).write_to(out)?;
    out.write_all(data)?;
    out.write_all(&tar_header::ZEROS[..tar_header::padding(data.len() as u64)])?;
    Ok(())
}
