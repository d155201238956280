//! Any bytes as an attributes file: parsed, checked as an image spec and planned without
//! a panic, a hang or unbounded memory. Errors are the expected outcome for most inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nix_layers::attrs::Attrs;
use nix_layers::pipeline::plan_image;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(attrs) = Attrs::parse(data.to_vec(), Path::new("fuzz.json")) {
        let _ = plan_image(&attrs, "/nix/store");
        let _ = attrs.to_json();
    }
});
