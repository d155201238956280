//! Store paths: `<storeDir>/<32 nix-base32 chars>-<name>`.
//!
//! The few helpers Nix tooling needs, kept here because `nix-compat` on crates.io is an
//! empty placeholder. A [`StorePath`] is always well formed: it was checked on the way in.

use anyhow::{bail, Result};
use std::fmt;

/// Nix's base-32 alphabet (no `e`, `o`, `t`, `u`).
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
/// Length of the hash part of a store path.
pub const HASH_LEN: usize = 32;
/// Longest name Nix accepts after the hash and dash.
const MAX_NAME_LEN: usize = 211;

/// The store directory: `$NIX_STORE`, else `/nix/store`.
pub fn store_dir_from_env() -> String {
    match std::env::var("NIX_STORE") {
        Ok(dir) if !dir.is_empty() => dir.trim_end_matches('/').to_string(),
        _ => "/nix/store".to_string(),
    }
}

/// A checked store path (the top-level entry only, never a file inside it).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    full: String,
    /// Byte offset where `<hash>-<name>` starts in `full`.
    base_start: usize,
}

impl StorePath {
    /// Parses `path`, which must be `<store_dir>/<hash>-<name>` with a valid hash and name.
    ///
    /// # Errors
    /// Names the path and what is wrong with it: outside the store, a nested path,
    /// `..`, a bad hash character or a bad name character.
    pub fn parse(store_dir: &str, path: &str) -> Result<StorePath> {
        let Some(base) = path
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            bail!("`{path}` is not in the store directory `{store_dir}`");
        };
        if base.contains('/') {
            bail!("`{path}` is not a top-level store path (it has `/` after `{store_dir}/`)");
        }
        if base.len() < HASH_LEN + 2 || base.as_bytes()[HASH_LEN] != b'-' {
            bail!("`{path}` is not a store path: expected `{store_dir}/<32-character hash>-<name>`");
        }
        let (hash, name) = (&base[..HASH_LEN], &base[HASH_LEN + 1..]);
        if let Some(c) = hash.bytes().find(|c| !NIX_BASE32.contains(c)) {
            bail!("`{path}` has `{}` in its hash part, which is not a nix-base32 character", c as char);
        }
        check_name(name).map_err(|why| anyhow::anyhow!("`{path}` has an invalid name: {why}"))?;
        Ok(StorePath {
            base_start: path.len() - base.len(),
            full: path.to_string(),
        })
    }

    /// The whole path, e.g. `/nix/store/abc…-hello-2.12`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `<hash>-<name>`, the last component.
    pub fn base_name(&self) -> &str {
        &self.full[self.base_start..]
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..HASH_LEN]
    }

    /// The name after the hash and dash.
    pub fn name(&self) -> &str {
        &self.base_name()[HASH_LEN + 1..]
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.full)
    }
}

/// Checks a store path name as Nix does: `[A-Za-z0-9+-._?=]`, at most 211 bytes, and not
/// starting with `.` (which rules out `.` and `..`).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.starts_with('.') {
        return Err("it starts with `.`".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        Some(c) => Err(format!("`{c}` is not allowed in a store path name")),
        None => Ok(()),
    }
}

/// The hash part of an output path given as a string (used for the default tag).
pub fn hash_part_of(store_dir: &str, path: &str) -> Result<String> {
    Ok(StorePath::parse(store_dir, path)?.hash_part().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-hello-2.12";

    #[test]
    fn splits_hash_and_name() {
        let p = StorePath::parse("/nix/store", P).unwrap();
        assert_eq!(p.hash_part(), "0l1v2mjy9ivhn9njfz2szzh7whr0vj02");
        assert_eq!(p.name(), "hello-2.12");
        assert_eq!(p.base_name(), "0l1v2mjy9ivhn9njfz2szzh7whr0vj02-hello-2.12");
        assert_eq!(p.as_str(), P);
    }

    #[test]
    fn rejects_what_nix_rejects() {
        let bad = [
            "/tmp/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-hello",
            "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-hello/bin",
            "/nix/store/../etc/passwd",
            "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj0e-hello",
            "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-",
            "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-..",
            "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-a b",
            "/nix/store/short-hello",
        ];
        for path in bad {
            assert!(StorePath::parse("/nix/store", path).is_err(), "{path} was accepted");
        }
    }

    #[test]
    fn honours_another_store_dir() {
        let p = StorePath::parse("/tmp/s", "/tmp/s/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-x").unwrap();
        assert_eq!(p.name(), "x");
        assert!(StorePath::parse("/tmp/s", P).is_err());
    }
}
