//! The `nix-layers` binary, run on real files in a fake store: one integration test binary.
//!
//! Modules follow the sections: popularity order (§3), the layer plan (§6), the
//! image structure (§4), determinism and streaming (§5, §6), bad input (§7), hostile stores
//! (issue 8), layering strategies and nixpkgs' layeringPipeline (issue 9).
#![allow(clippy::unwrap_used)]

mod cache;
mod determinism;
mod errors;
mod fixture;
mod fromimage;
mod hostile;
mod hostile_values;
mod image;
mod layering;
mod load;
mod nixdb;
mod oci;
mod pipeline;
mod plan;
mod popularity;
mod resources;
mod verbs;
