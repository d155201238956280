//! Ours: layers that re-ship the fewest bytes when an image is updated.
//! Not implemented yet.

use super::{Input, StoreLayer};

/// The layers.
pub fn layers(input: &Input<'_>) -> Vec<StoreLayer> {
    super::autolayer::layers(input)
}
