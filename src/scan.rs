//! The files of each planned layer, read from metadata only (no file contents yet).
//!
//! Everything that can be wrong on disk is found here, before the first output byte: a
//! missing store path, a special file. Since every entry's size is known, so is every
//! layer's, which is what lets layers go straight into the archive in one pass.
//!
//! Store-layer order: the entries of the store directory itself (`nix/`, `nix/store/`),
//! then each store path in plan order, depth first, a directory before its contents,
//! siblings sorted by name bytes. Symlinks are recorded, never followed.

use crate::plan::Customisation;
use crate::store_path::StorePath;
use crate::tar_header::{self, Header, Kind, Owner};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One tar entry. Data of a [`Kind::File`] entry is read from `/` + `name` when written.
/// A closure can have hundreds of thousands: names are boxed slices, sized exactly.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Tar name: relative, directories end with `/`. For store files it is the absolute
    /// path without its leading `/`.
    pub name: Box<[u8]>,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Data size (files only).
    pub size: u64,
    /// Symlink target (symlinks only).
    pub link: Box<[u8]>,
}

impl Entry {
    /// The tar header of this entry.
    pub fn header<'a>(&'a self, owner: &'a Owner) -> Header<'a> {
        Header { name: &self.name, kind: self.kind, mode: self.mode, size: self.size, link: &self.link, owner }
    }

    /// Where a file entry's data is on disk.
    pub fn source(&self) -> PathBuf {
        let mut path = b"/".to_vec();
        path.extend_from_slice(&self.name);
        PathBuf::from(std::ffi::OsString::from_vec(path))
    }
}

/// Where a layer's bytes come from.
pub enum LayerSource {
    /// A tar we write from these entries.
    Entries {
        /// Entries in archive order.
        entries: Vec<Entry>,
        /// Owner and mtime of every entry.
        owner: Owner,
    },
    /// A finished tar copied as it is (a prebuilt customisation layer).
    Prebuilt {
        /// The `layer.tar` file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

impl LayerSource {
    /// Exact size of the layer tar in bytes.
    pub fn size(&self) -> u64 {
        match self {
            LayerSource::Entries { entries, owner } => {
                entries.iter().map(|e| e.header(owner).entry_len()).sum::<u64>() + tar_header::END_LEN
            }
            LayerSource::Prebuilt { size, .. } => *size,
        }
    }

    /// Number of files whose data the layer reads.
    pub fn file_count(&self) -> usize {
        match self {
            LayerSource::Entries { entries, .. } => entries.iter().filter(|e| e.kind == Kind::File).count(),
            LayerSource::Prebuilt { .. } => 1,
        }
    }
}

/// The entries of a store layer: the store directory's own entries, then each tree of
/// `trees` (from [`scan_store_paths`]) in order.
pub fn store_layer(store_dir: &str, trees: Vec<Vec<Entry>>, owner: Owner) -> LayerSource {
    let components: Vec<&str> = store_dir.split('/').filter(|c| !c.is_empty()).collect();
    // Sized once: a layer of 100,000 paths would otherwise be copied as it grows.
    let mut entries = Vec::with_capacity(components.len() + trees.iter().map(Vec::len).sum::<usize>());
    let mut prefix = Vec::new();
    for component in components {
        prefix.extend_from_slice(component.as_bytes());
        prefix.push(b'/');
        entries.push(Entry { name: prefix.clone().into(), kind: Kind::Directory, mode: 0o755, size: 0, link: Box::default() });
    }
    for tree in trees {
        entries.extend(tree);
    }
    LayerSource::Entries { entries, owner }
}

/// Each store path's tree of entries, in the order of `paths`, scanned on `threads`
/// workers (a closure of many small paths is mostly directory listing and `stat`).
///
/// # Errors
/// A store path missing on disk, an unreadable directory, or a special file: the error
/// of the first such path in `paths`, whatever the thread count.
pub fn scan_store_paths(paths: &[&StorePath], threads: usize) -> Result<Vec<Vec<Entry>>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let scan_one = |path: &StorePath| -> Result<Vec<Entry>> {
        let on_disk = Path::new(path.as_str());
        let meta = fs::symlink_metadata(on_disk)
            .with_context(|| format!("store path `{path}` is missing on disk or unreadable"))?;
        let mut entries = Vec::new();
        scan_tree(on_disk, meta, &mut entries)?;
        entries.shrink_to_fit();
        Ok(entries)
    };
    let worker = || {
        let mut done = Vec::new();
        // Paths are taken in increasing order and no new one after a failure,
        // so every path before the first failing one is scanned too.
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else { break };
            let result = scan_one(path);
            failed.fetch_or(result.is_err(), Ordering::Relaxed);
            done.push((i, result));
        }
        done
    };
    let mut results: Vec<(usize, Result<Vec<Entry>>)> = std::thread::scope(|scope| {
        let workers = crate::workers::spawn_scoped(scope, threads.clamp(1, paths.len().max(1)), &worker)?;
        anyhow::Ok(workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect())
    })?;
    results.sort_by_key(|(i, _)| *i);
    let trees: Vec<Vec<Entry>> = results.into_iter().map(|(_, r)| r).collect::<Result<_>>()?;
    if trees.len() != paths.len() {
        bail!("internal error: {} of {} store paths were scanned", trees.len(), paths.len());
    }
    Ok(trees)
}

fn scan_tree(path: &Path, meta: fs::Metadata, entries: &mut Vec<Entry>) -> Result<()> {
    let name = &path.as_os_str().as_bytes()[1..];
    let mode = meta.permissions().mode() & 0o7777;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(path).with_context(|| format!("cannot read symlink `{}`", path.display()))?;
        let link = target.into_os_string().into_vec().into();
        entries.push(Entry { name: name.into(), kind: Kind::Symlink, mode: 0o777, size: 0, link });
    } else if file_type.is_file() {
        entries.push(Entry { name: name.into(), kind: Kind::File, mode, size: meta.len(), link: Box::default() });
    } else if file_type.is_dir() {
        let dir_name = [name, b"/"].concat().into();
        entries.push(Entry { name: dir_name, kind: Kind::Directory, mode, size: 0, link: Box::default() });
        for (child, child_meta) in sorted_children(path)? {
            scan_tree(&child, child_meta, entries)?;
        }
    } else {
        bail!("`{}` is a {}; store paths hold only files, directories and symlinks", path.display(), special_kind(&file_type));
    }
    Ok(())
}

fn sorted_children(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let read = |e: std::io::Error| anyhow::Error::new(e).context(format!("cannot list directory `{}`", dir.display()));
    let mut children = Vec::new();
    for item in fs::read_dir(dir).map_err(read)? {
        let item = item.map_err(read)?;
        let path = item.path();
        // Relative to the open directory (no path walk), and like lstat: links not followed.
        let meta = item.metadata().with_context(|| format!("cannot stat `{}`", path.display()))?;
        children.push((path, meta));
    }
    children.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(children)
}

fn special_kind(file_type: &fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "device file"
    } else {
        "special file"
    }
}

/// The customisation layer: `contents` merged at `/` the way symlinkJoin merges them, or
/// a prebuilt `layer.tar`.
///
/// Directories present in several contents are merged recursively; every file and
/// symlink becomes a symlink to its path in the store. Entries are owned by root (as in
/// nixpkgs, where `uid`/`gid` apply to store layers only).
///
/// # Errors
/// A content that is not a directory, or two contents providing the same path (both named).
pub fn customisation_layer(customisation: &Customisation, mtime: i64) -> Result<LayerSource> {
    let contents = match customisation {
        Customisation::Prebuilt(dir) => {
            let path = Path::new(dir.as_str()).join("layer.tar");
            let meta = fs::metadata(&path)
                .with_context(|| format!("prebuilt customisation layer `{}` is missing or unreadable", path.display()))?;
            return Ok(LayerSource::Prebuilt { path, size: meta.len() });
        }
        Customisation::Contents(contents) => contents,
    };
    let mut root = BTreeMap::new();
    for (index, content) in contents.iter().enumerate() {
        let top = Path::new(content.as_str());
        let meta = fs::metadata(top).with_context(|| format!("`contents` entry `{content}` is missing on disk"))?;
        if !meta.is_dir() {
            bail!("`contents` entry `{content}` is not a directory; contents are merged into `/` like symlinkJoin");
        }
        merge_into(&mut root, top, Path::new(""), index, contents)?;
    }
    let mut entries = Vec::new();
    flatten(&root, Vec::new(), &mut entries);
    let owner = Owner { uid: 0, gid: 0, uname: "root".into(), gname: "root".into(), mtime };
    Ok(LayerSource::Entries { entries, owner })
}

/// A node of the merged tree; `from` is the index of the content that provided it.
enum Node {
    Dir { children: BTreeMap<Vec<u8>, Node>, from: usize },
    Link { target: Vec<u8>, from: usize },
}

fn merge_into(
    tree: &mut BTreeMap<Vec<u8>, Node>,
    content_root: &Path,
    rel: &Path,
    index: usize,
    contents: &[StorePath],
) -> Result<()> {
    for (child, meta) in sorted_children(&content_root.join(rel))? {
        let name = child.file_name().unwrap_or_default().as_bytes().to_vec();
        let child_rel = rel.join(child.file_name().unwrap_or_default());
        let conflict = |other: usize| {
            anyhow::anyhow!(
                "`contents` conflict: `/{}` is provided by both `{}` and `{}`",
                child_rel.display(),
                contents[other],
                contents[index]
            )
        };
        match tree.get_mut(&name) {
            // `meta` is from lstat: a symlink to a directory is a link, not a directory.
            Some(Node::Dir { children, .. }) if meta.is_dir() => {
                merge_into(children, content_root, &child_rel, index, contents)?;
            }
            Some(Node::Dir { from, .. } | Node::Link { from, .. }) => return Err(conflict(*from)),
            None if meta.is_dir() => {
                let mut children = BTreeMap::new();
                merge_into(&mut children, content_root, &child_rel, index, contents)?;
                tree.insert(name, Node::Dir { children, from: index });
            }
            None => {
                tree.insert(name, Node::Link { target: child.into_os_string().into_vec(), from: index });
            }
        }
    }
    Ok(())
}

fn flatten(tree: &BTreeMap<Vec<u8>, Node>, prefix: Vec<u8>, entries: &mut Vec<Entry>) {
    for (name, node) in tree {
        let mut path = prefix.clone();
        path.extend_from_slice(name);
        match node {
            Node::Dir { children, .. } => {
                path.push(b'/');
                entries.push(Entry { name: path.clone().into(), kind: Kind::Directory, mode: 0o755, size: 0, link: Box::default() });
                flatten(children, path, entries);
            }
            Node::Link { target, .. } => {
                entries.push(Entry { name: path.into(), kind: Kind::Symlink, mode: 0o777, size: 0, link: target.as_slice().into() });
            }
        }
    }
}
