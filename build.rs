//! Passes the version of the deflate library (from Cargo.lock) to the code: the layer cache
//! keys compressed blobs on it, since another version may compress differently.

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let version = locked_version(&lock, "libdeflate-sys").unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=NIX_LAYERS_LIBDEFLATE_SYS_VERSION={version}");
}

/// The `version` line after `name = "<krate>"` in Cargo.lock.
fn locked_version(lock: &str, krate: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{krate}\"") {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}
