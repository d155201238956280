//! nixpkgs' experimental `layeringPipeline` (its `flatten-references-graph`).
//! Not implemented yet.

use super::{Input, StoreLayer};
use anyhow::{bail, Result};
use serde_json::Value;

/// The layers the pipeline makes.
///
/// # Errors
/// A malformed pipeline or an unknown function, named.
pub fn layers(_input: &Input<'_>, _pipeline: &Value) -> Result<Vec<StoreLayer>> {
    bail!("key `layeringPipeline`: not supported yet")
}
