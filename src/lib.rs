//! nix-layers: layered Docker images from Nix closures, in one pass.
//!
//! The data flows one way, one module per stage:
//! [`attrs`] (`.attrs.json` → checked values) → [`graph`] (the closure as a DAG) →
//! [`layering`] (which path goes in which store layer: one strategy per file, among them
//! [`popularity`], nixpkgs' order exactly) → [`plan`] (the image's layers) →
//! [`scan`] (the files of each layer, sized from metadata) → [`layer`] (tar bytes) →
//! [`archive`] (layers produced and hashed in parallel, handed in order to one
//! [`destination`]: the hybrid docker/OCI archive, an OCI layout) →
//! [`compress`] and [`output`] (gzip/zstd, atomic file output).
//! [`registry`]: a blocking docker/OCI registry client (for `push`, not wired to the CLI yet).
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod archive;
pub mod attrs;
pub mod cache;
pub mod compress;
pub mod destination;
pub mod graph;
pub mod layer;
pub mod layering;
pub mod nixdb;
pub mod nofollow;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod popularity;
pub mod registry;
pub mod reference;
pub mod scan;
pub mod store_path;
pub mod strict_json;
pub mod tar_header;
pub mod time;
pub mod workers;
