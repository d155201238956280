//! nixpkgs' `auto-layer.py` (the default of `buildLayeredImage` since nixpkgs 25.11).
//! Not implemented yet.

use super::{Input, StoreLayer};

/// The layers.
pub fn layers(input: &Input<'_>) -> Vec<StoreLayer> {
    super::popularity::layers(input)
}
