//! A fake Nix store in a temporary directory, attrs files for it, and the real binary.
//!
//! Store paths are `<tmp>/store/<hash>-<name>` where the hash encodes the name's bytes in
//! nix-base32 (two characters per byte, padded with `0`). The alphabet is in ASCII order, so
//! hashes sort like names: popularity ties come out in name order whatever the temporary
//! directory is called (the tie key is the path with its first `-`-separated chunk moved
//! to the end, and a `-` in the directory would otherwise make the hash decide).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// Nix's base-32 alphabet.
pub const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nix-layers");

/// One thing inside a store path.
pub enum Item {
    /// A regular file: relative path, contents, mode.
    File(&'static str, Vec<u8>, u32),
    /// A directory (parents are created as needed) with its final mode.
    Dir(&'static str, u32),
    /// A symlink: relative path, target (not followed, may dangle or be absolute).
    Symlink(&'static str, String),
    /// A hard link: new relative path, existing relative path.
    HardLink(&'static str, &'static str),
}

/// A regular file.
pub fn file(rel: &'static str, data: &[u8], mode: u32) -> Item {
    Item::File(rel, data.to_vec(), mode)
}

/// A directory.
pub fn dir(rel: &'static str, mode: u32) -> Item {
    Item::Dir(rel, mode)
}

/// A symlink.
pub fn symlink_to(rel: &'static str, target: impl Into<String>) -> Item {
    Item::Symlink(rel, target.into())
}

/// A hard link to an earlier file.
pub fn hard_link(rel: &'static str, existing: &'static str) -> Item {
    Item::HardLink(rel, existing)
}

/// A graph entry of the fixture's closure.
struct Entry {
    path: String,
    references: Vec<String>,
    nar_size: u64,
}

/// A temporary directory holding `store/` (the fake `$NIX_STORE`) and `out/` (where
/// outputs go, and nothing else).
pub struct Fixture {
    pub dir: TempDir,
    entries: Vec<Entry>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("nixlayers")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        fs::create_dir(dir.path().join("store")).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        Fixture { dir, entries: Vec::new() }
    }

    /// The store directory, as `$NIX_STORE`.
    pub fn store(&self) -> String {
        self.dir.path().join("store").to_str().unwrap().to_string()
    }

    /// The directory outputs are written to.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The layer cache directory the binary uses (`$XDG_CACHE_HOME`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `out/<name>`.
    pub fn out(&self, name: &str) -> PathBuf {
        self.out_dir().join(name)
    }

    /// The store path `name` gets (not created).
    pub fn store_path(&self, name: &str) -> String {
        format!("{}/{}-{name}", self.store(), hash_for(name))
    }

    /// Creates the store path `name` holding `items` (directories end up 0555, like the
    /// store), and adds it to the closure with `refs` (plus itself, as Nix lists it).
    pub fn add_path(&mut self, name: &str, items: &[Item], refs: &[&str]) -> String {
        let path = self.store_path(name);
        assert!(!Path::new(&path).exists(), "fixture: two store paths would be `{path}`");
        let root = PathBuf::from(&path);
        fs::create_dir(&root).unwrap();
        let mut dir_modes = vec![(root.clone(), 0o555)];
        for item in items {
            match item {
                Item::File(rel, data, mode) => {
                    let at = root.join(rel);
                    fs::create_dir_all(at.parent().unwrap()).unwrap();
                    fs::write(&at, data).unwrap();
                    fs::set_permissions(&at, fs::Permissions::from_mode(*mode)).unwrap();
                }
                Item::Dir(rel, mode) => {
                    fs::create_dir_all(root.join(rel)).unwrap();
                    dir_modes.push((root.join(rel), *mode));
                }
                Item::Symlink(rel, target) => {
                    let at = root.join(rel);
                    fs::create_dir_all(at.parent().unwrap()).unwrap();
                    symlink(target, &at).unwrap();
                }
                Item::HardLink(rel, existing) => {
                    let at = root.join(rel);
                    fs::create_dir_all(at.parent().unwrap()).unwrap();
                    fs::hard_link(root.join(existing), &at).unwrap();
                }
            }
        }
        // Every directory read-only, as in the store; deepest first so we can still walk.
        for d in walk_dirs(&root) {
            if !dir_modes.iter().any(|(p, _)| *p == d) {
                dir_modes.push((d, 0o555));
            }
        }
        dir_modes.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (d, mode) in dir_modes {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
        }
        self.add_entry(&path, refs);
        path
    }

    /// Creates the store path `name` as a symlink to `target` (nothing else) and adds it
    /// to the closure with `refs`.
    pub fn add_symlink_path(&mut self, name: &str, target: &Path, refs: &[&str]) -> String {
        let path = self.store_path(name);
        symlink(target, &path).unwrap();
        self.add_entry(&path, refs);
        path
    }

    /// Creates `<tmp>/outside/<rel>` holding `data`: a file outside the store, whose bytes
    /// must never enter an image.
    pub fn outside(&self, rel: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.path().join("outside").join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        path
    }

    /// Adds a closure entry without creating anything on disk.
    pub fn add_entry(&mut self, path: &str, refs: &[&str]) {
        let mut references = vec![path.to_string()];
        references.extend(refs.iter().map(|r| r.to_string()));
        let nar_size = 1000 * (self.entries.len() as u64 + 1);
        self.entries.push(Entry { path: path.to_string(), references, nar_size });
    }

    /// The closure as `exportReferencesGraph` writes it.
    pub fn closure(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    json!({
                        "closureSize": e.nar_size * 2,
                        "narHash": format!("sha256:{}", "0".repeat(52)),
                        "narSize": e.nar_size,
                        "path": e.path,
                        "references": e.references,
                    })
                })
                .collect(),
        )
    }

    /// Image attrs over the whole closure: compressor none, a fixed tag, `out/image.tar`,
    /// plus the keys Nix itself adds.
    pub fn attrs(&self) -> Value {
        json!({
            "name": "test-image",
            "tag": "latest",
            "compressor": "none",
            "closure": self.closure(),
            "outputs": { "out": self.out("image.tar").to_str().unwrap() },
            "builder": BIN,
            "system": "x86_64-linux",
        })
    }

    /// Writes `attrs` to `<tmp>/<name>` and returns its path.
    pub fn write_attrs(&self, name: &str, attrs: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, serde_json::to_vec_pretty(attrs).unwrap()).unwrap();
        path
    }

    /// A command for the binary with `$NIX_STORE` set, the attrs lookup variables cleared
    /// and the fixture directory as the working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("NIX_STORE", self.store())
            .env_remove("NIX_ATTRS_JSON_FILE")
            .env_remove("NIX_BUILD_TOP")
            .env_remove("NIX_BUILD_CORES")
            // Each fixture its own layer cache: tests neither share nor touch the user's.
            .env("XDG_CACHE_HOME", self.cache_dir())
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs the binary (see [`Fixture::command`]).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs the binary and insists it succeeds; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> Vec<u8> {
        let output = self.run(args);
        assert_success(&output, args);
        output.stdout
    }

    /// Writes `attrs`, runs `build --attrs` on it and returns the bytes at `out/image.tar`.
    pub fn build(&self, attrs: &Value) -> Vec<u8> {
        let file = self.write_attrs("build.attrs.json", attrs);
        let out = attrs["outputs"]["out"].as_str().unwrap();
        self.run_ok(&["build", "--attrs", file.to_str().unwrap()]);
        let bytes = fs::read(out).unwrap();
        fs::remove_file(out).unwrap();
        bytes
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Read-only directories cannot be emptied without root: make them writable again.
        for d in walk_dirs(self.dir.path()) {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o755));
        }
    }
}

/// Every directory under `root` (not following symlinks), `root` included.
fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(read) = fs::read_dir(&dirs[i]) {
            for child in read.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(child.path());
                }
            }
        }
        i += 1;
    }
    dirs
}

/// Makes the (read-only, store-like) directory `dir` writable, to swap things in it.
pub fn make_writable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Creates a FIFO at `path`.
pub fn make_fifo(path: &Path) {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
}

/// The 32-character hash of the fixture path `name` (order-preserving; see module docs).
pub fn hash_for(name: &str) -> String {
    let mut hash = String::with_capacity(32);
    for &b in name.as_bytes().iter().take(16) {
        hash.push(NIX32[usize::from(b / 32)] as char);
        hash.push(NIX32[usize::from(b % 32)] as char);
    }
    while hash.len() < 32 {
        hash.push('0');
    }
    hash
}

/// Panics with the command, exit status and stderr unless it succeeded.
pub fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "nix-layers {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One entry of a tar archive, as the `tar` crate reads it.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub name: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// Every entry of `bytes`, read with the `tar` crate (an implementation independent of
/// ours), PAX long names and link targets resolved.
pub fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap());
        let header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push(TarEntry {
            name,
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            uname: header.username().unwrap().unwrap_or_default().to_string(),
            gname: header.groupname().unwrap().unwrap_or_default().to_string(),
            mtime: header.mtime().unwrap(),
            link,
            data,
        });
    }
    out
}

/// A docker-archive read back: its files by name.
pub struct DockerArchive {
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
    pub manifest: Value,
    pub config_name: String,
    pub config: Value,
    /// Layer tars in manifest order.
    pub layers: Vec<Vec<u8>>,
}

/// Reads a docker-archive (uncompressed) and its manifest, config and layers.
pub fn read_docker_archive(bytes: &[u8]) -> DockerArchive {
    let files: std::collections::BTreeMap<String, Vec<u8>> =
        read_tar(bytes).into_iter().map(|e| (e.name, e.data)).collect();
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let config: Value = serde_json::from_slice(&files[&config_name]).unwrap();
    let layers = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| files[l.as_str().unwrap()].clone())
        .collect();
    DockerArchive { files, manifest, config_name, config, layers }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a vector's run failed (`None` when it printed exactly `expected`): the exit status
/// and stderr, or where the output first differs.
pub fn vector_mismatch(name: &str, output: &Output, expected: &[u8]) -> Option<String> {
    if !output.status.success() {
        return Some(format!("{name}: exit {}: {}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    (output.stdout != expected).then(|| {
        let diff = first_difference(&String::from_utf8_lossy(expected), &String::from_utf8_lossy(&output.stdout));
        format!("{name}: output differs at {diff}")
    })
}

/// The first line where `expected` and `actual` differ, for failure messages.
pub fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.lines(), actual.lines());
    for line in 1.. {
        match (e.next(), a.next()) {
            (None, None) => return "the lines agree; the bytes differ (line endings?)".into(),
            (x, y) if x == y => continue,
            (x, y) => return format!("line {line}:\n  expected: {x:?}\n  actual:   {y:?}"),
        }
    }
    unreachable!()
}

/// Files by relative path.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Every file below `dir`, by relative path.
pub fn files_of(dir: &Path) -> Files {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}
