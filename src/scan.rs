//! The files of each planned layer, read from metadata only (no file contents yet).
//!
//! Everything that can be wrong on disk is found here, before the first output byte: a
//! missing store path, a special file. Since every entry's size is known, so is every
//! layer's, which is what lets layers go straight into the archive in one pass.
//!
//! Store-layer order: the entries of the store directory itself (`nix/`, `nix/store/`),
//! then each store path in plan order, depth first, a directory before its contents,
//! siblings sorted by name bytes. Symlinks are recorded, never followed.
//!
//! The store is not trusted: every name is looked up relative to its directory's
//! descriptor, without following symlinks (see [`crate::nofollow`]), and each entry keeps
//! the device and inode it had, so that the writer ([`crate::layer`]) reads exactly the
//! files scanned or fails naming the one that changed.

use crate::cache::{KeyBuilder, LayerKey};
use crate::nixdb::DbFile;
use crate::nofollow::{self, Child, FileId};
use crate::plan::Customisation;
use crate::store_path::StorePath;
use crate::tar_header::{self, Header, Kind, Owner};
use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{Dir, FileType, Stat};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
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
    /// Which file the scan saw (store entries; zero for entries not on disk): a file or
    /// directory found at the same name when the layer is written must be this one.
    pub id: FileId,
}

impl Entry {
    /// The tar header of this entry.
    pub fn header<'a>(&'a self, owner: &'a Owner) -> Header<'a> {
        Header { name: &self.name, kind: self.kind, mode: self.mode, size: self.size, link: &self.link, owner }
    }

    /// Where a file entry's data is on disk (for messages: files are opened relative to
    /// their directory, see [`crate::nofollow`]).
    pub fn source(&self) -> PathBuf {
        let mut path = b"/".to_vec();
        path.extend_from_slice(&self.name);
        PathBuf::from(std::ffi::OsString::from_vec(path))
    }

    fn not_on_disk(name: Vec<u8>, kind: Kind, link: Vec<u8>) -> Entry {
        let mode = if kind == Kind::Symlink { 0o777 } else { 0o755 };
        Entry { name: name.into(), kind, mode, size: 0, link: link.into(), id: FileId::default() }
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
        /// The store directory the entries were scanned from (store layers), under which
        /// files are opened relative to their directory when written; `None` when no
        /// entry has data to read (the contents layer).
        store_dir: Option<Box<str>>,
        /// Bytes of the file entries that are not on disk (the Nix database of
        /// `includeNixDB`), by tar name.
        inline: BTreeMap<Box<[u8]>, Vec<u8>>,
    },
    /// A finished tar copied as it is (a prebuilt customisation layer).
    Prebuilt {
        /// The `layer.tar` file, for messages.
        path: PathBuf,
        /// Its size when scanned.
        size: u64,
        /// The file itself, open since it was checked: its bytes are read from this very
        /// file, whatever happens to the path meanwhile.
        file: File,
    },
}

impl LayerSource {
    /// Exact size of the layer tar in bytes.
    pub fn size(&self) -> u64 {
        match self {
            LayerSource::Entries { entries, owner, .. } => {
                entries.iter().map(|e| e.header(owner).entry_len()).sum::<u64>() + tar_header::END_LEN
            }
            LayerSource::Prebuilt { size, .. } => *size,
        }
    }

    /// The layer's cache key (see [`crate::cache`]): its tar headers, the bytes not on
    /// disk, and `nar_hashes`, the (store path, narHash) of each path whose files it reads.
    /// `None` when its files' content cannot be vouched for: a store path without a
    /// narHash, or a prebuilt tar that cannot be identified.
    pub fn cache_key(&self, nar_hashes: &[(&str, Option<&str>)]) -> Option<LayerKey> {
        match self {
            LayerSource::Entries { entries, owner, store_dir, inline } => {
                let mut key = KeyBuilder::new(owner);
                key.number(entries.len() as u64);
                for entry in entries {
                    key.bytes(&entry.name);
                    key.number(match entry.kind {
                        Kind::File => 0,
                        Kind::Directory => 1,
                        Kind::Symlink => 2,
                    });
                    key.number(u64::from(entry.mode));
                    key.number(entry.size);
                    key.bytes(&entry.link);
                }
                key.number(inline.len() as u64);
                for (name, bytes) in inline {
                    key.bytes(name);
                    key.bytes(bytes);
                }
                if store_dir.is_some() {
                    key.number(nar_hashes.len() as u64);
                    for (path, hash) in nar_hashes {
                        key.bytes(path.as_bytes());
                        key.bytes((*hash)?.as_bytes());
                    }
                }
                Some(key.finish())
            }
            // A store file never changes in place; rebuilt after a garbage collection, it
            // is a new inode with a new change time.
            LayerSource::Prebuilt { path, size, file } => {
                let stat = rustix::fs::fstat(file).ok()?;
                let mut key = KeyBuilder::new(&Owner { uid: 0, gid: 0, uname: String::new(), gname: String::new(), mtime: 0 });
                key.bytes(b"prebuilt");
                key.bytes(path.as_os_str().as_encoded_bytes());
                key.number(*size);
                key.number(stat.st_dev);
                key.number(stat.st_ino);
                key.number(stat.st_ctime as u64);
                key.number(stat.st_ctime_nsec as u64);
                Some(key.finish())
            }
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
        entries.push(Entry::not_on_disk(prefix.clone(), Kind::Directory, Vec::new()));
    }
    for tree in trees {
        entries.extend(tree);
    }
    LayerSource::Entries { entries, owner, store_dir: Some(store_dir.into()), inline: BTreeMap::new() }
}

/// The store directory `path` is in, opened (see [`crate::nofollow`]).
fn open_store_dir_of(path: &StorePath) -> Result<OwnedFd> {
    let dir = &path.as_str()[..path.as_str().len() - path.base_name().len()];
    let dir = if dir.len() > 1 { dir.trim_end_matches('/') } else { dir };
    nofollow::open_store_dir(Path::new(dir)).with_context(|| format!("cannot open the store directory `{dir}`"))
}

/// Each store path's tree of entries, in the order of `paths`, scanned on `threads`
/// workers (a closure of many small paths is mostly directory listing and `stat`).
///
/// Every name is looked up relative to its directory's descriptor, never through a
/// symlink: a store path that is a symlink is one symlink entry.
///
/// # Errors
/// A store path missing on disk, an unreadable directory, or a special file: the error
/// of the first such path in `paths`, whatever the thread count.
pub fn scan_store_paths(paths: &[&StorePath], threads: usize) -> Result<Vec<Vec<Entry>>> {
    let Some(first) = paths.first() else { return Ok(Vec::new()) };
    let store = open_store_dir_of(first)?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let scan_one = |path: &StorePath| -> Result<Vec<Entry>> {
        let base = path.base_name().as_bytes();
        let stat = nofollow::lstat_at(store.as_fd(), base)
            .with_context(|| format!("store path `{path}` is missing on disk or unreadable"))?;
        let mut entries = Vec::new();
        scan_tree(store.as_fd(), base, Some(&stat), &mut path.as_str().as_bytes()[1..].to_vec(), &mut entries)?;
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

/// Scans `base` in the directory `parent`, whose `lstat` is `stat` (`None`: a directory
/// by its `getdents` type, not `lstat`ed); `name` is its tar name (its path without the
/// leading `/`), used as a buffer for the names below it.
fn scan_tree(parent: BorrowedFd<'_>, base: &[u8], stat: Option<&Stat>, name: &mut Vec<u8>, entries: &mut Vec<Entry>) -> Result<()> {
    let path = |name: &[u8]| format!("/{}", String::from_utf8_lossy(name));
    if let Some(stat) = stat {
        let (mode, id) = (stat.st_mode & 0o7777, FileId::of(stat));
        let link = match nofollow::file_type(stat) {
            FileType::Directory => None,
            FileType::Symlink => Some(
                nofollow::read_link_at(parent, base).with_context(|| format!("cannot read symlink `{}`", path(name)))?,
            ),
            FileType::RegularFile => {
                let size = nofollow::size_of(stat);
                entries.push(Entry { name: name.as_slice().into(), kind: Kind::File, mode, size, link: Box::default(), id });
                return Ok(());
            }
            _ => bail!("`{}` is a {}; store paths hold only files, directories and symlinks", path(name), nofollow::kind_of(stat)),
        };
        if let Some(link) = link {
            entries.push(Entry { name: name.as_slice().into(), kind: Kind::Symlink, mode: 0o777, size: 0, link: link.into(), id });
            return Ok(());
        }
    }
    let (dir, stat, children) = open_and_list(parent, base, stat.map(FileId::of)).map_err(|e| e.context(path(name)))?;
    let dir_fd = dir.fd().with_context(|| format!("cannot list directory `{}`", path(name)))?;
    let dir_name = [name.as_slice(), b"/"].concat().into();
    let (mode, id) = (stat.st_mode & 0o7777, FileId::of(&stat));
    entries.push(Entry { name: dir_name, kind: Kind::Directory, mode, size: 0, link: Box::default(), id });
    for child in children {
        let len = name.len();
        name.push(b'/');
        name.extend_from_slice(&child.name);
        scan_tree(dir_fd, &child.name, child.stat.as_ref(), name, entries)?;
        name.truncate(len);
    }
    Ok(())
}

/// Opens the directory `base` of `parent`, never through a symlink; when the caller
/// `lstat`ed it, it must be that directory (`expected`). The error says what went wrong;
/// the caller adds the path.
fn open_dir(parent: BorrowedFd<'_>, base: &[u8], expected: Option<FileId>) -> Result<(OwnedFd, Stat)> {
    let changed = |e: &dyn std::fmt::Display| {
        anyhow!("directory changed while being scanned ({e}; it is now {})", nofollow::describe(parent, base))
    };
    let (fd, stat) = nofollow::open_dir_at(parent, base).map_err(|e| changed(&e))?;
    match expected {
        Some(id) if id != FileId::of(&stat) => Err(changed(&format!("it was {id}"))),
        _ => Ok((fd, stat)),
    }
}

/// [`open_dir`], then lists the directory.
fn open_and_list(parent: BorrowedFd<'_>, base: &[u8], expected: Option<FileId>) -> Result<(Dir, Stat, Vec<Child>)> {
    let (fd, stat) = open_dir(parent, base, expected)?;
    let (dir, children) = nofollow::list_dir(fd).map_err(|e| anyhow!("cannot list directory: {e}"))?;
    Ok((dir, stat, children))
}

/// The customisation layer: `contents` merged at `/` the way symlinkJoin merges them, or
/// a prebuilt `layer.tar`.
///
/// Directories present in several contents are merged recursively; every file and
/// symlink becomes a symlink to its path in the store. Entries are owned by root (as in
/// nixpkgs, where `uid`/`gid` apply to store layers only). Nothing is followed: a content
/// that is itself a symlink is an error (symlinkJoin would merge the directory it points
/// to, which may be outside the store).
///
/// A prebuilt `layer.tar` must be a regular file in its store path (not a symlink) and a
/// tar whose entries stay inside the root; it is kept open until written.
///
/// `extra` (the Nix database of `includeNixDB`) is added to the generated layer; a
/// prebuilt one is taken as it is (see [`extra_layer`]).
///
/// # Errors
/// A content that is not a directory, or two contents providing the same path (both
/// named), or a content providing a path of `extra`; a `layer.tar` that is missing, not a
/// regular file, not a tar, or has an entry that leaves the root (named).
pub fn customisation_layer(customisation: &Customisation, mtime: i64, extra: Vec<(String, DbFile)>) -> Result<LayerSource> {
    let contents = match customisation {
        Customisation::Prebuilt(dir) => return prebuilt_layer(dir),
        Customisation::Contents(contents) => contents,
    };
    contents_layer(contents, mtime, extra)
}

/// A layer of `extra` alone (the Nix database, after a prebuilt customisation layer).
///
/// # Errors
/// Two files of `extra` on the same path.
pub fn extra_layer(mtime: i64, extra: Vec<(String, DbFile)>) -> Result<LayerSource> {
    contents_layer(&[], mtime, extra)
}

fn contents_layer(contents: &[StorePath], mtime: i64, extra: Vec<(String, DbFile)>) -> Result<LayerSource> {
    let mut root = BTreeMap::new();
    if let Some(first) = contents.first() {
        let store = open_store_dir_of(first)?;
        for (index, content) in contents.iter().enumerate() {
            let base = content.base_name().as_bytes();
            let stat = nofollow::lstat_at(store.as_fd(), base)
                .with_context(|| format!("`contents` entry `{content}` is missing on disk"))?;
            match nofollow::file_type(&stat) {
                FileType::Directory => {}
                FileType::Symlink => bail!(
                    "`contents` entry `{content}` is {}; a store path that is a symlink is never followed: \
                     list the store path it points to instead",
                    nofollow::describe(store.as_fd(), base)
                ),
                _ => bail!("`contents` entry `{content}` is not a directory; contents are merged into `/` like symlinkJoin"),
            }
            let (dir, _, children) = open_and_list(store.as_fd(), base, Some(FileId::of(&stat)))
                .map_err(|e| e.context(format!("`contents` entry `{content}`")))?;
            let mut source = content.as_str().as_bytes().to_vec();
            merge_into(&mut root, dir, children, &mut source, &mut Vec::new(), index, contents)?;
        }
    }
    for (name, file) in extra {
        add_extra(&mut root, &name, file, contents)?;
    }
    let mut entries = Vec::new();
    let mut inline = BTreeMap::new();
    flatten(root, Vec::new(), &mut entries, &mut inline);
    let owner = Owner { uid: 0, gid: 0, uname: "root".into(), gname: "root".into(), mtime };
    Ok(LayerSource::Entries { entries, owner, store_dir: None, inline })
}

/// The prebuilt customisation layer `<dir>/layer.tar`, opened and checked.
fn prebuilt_layer(dir: &StorePath) -> Result<LayerSource> {
    let path = PathBuf::from(format!("{dir}/layer.tar"));
    let store = open_store_dir_of(dir)?;
    let base = dir.base_name().as_bytes();
    let stat = nofollow::lstat_at(store.as_fd(), base)
        .with_context(|| format!("prebuilt customisation layer `{dir}` is missing on disk"))?;
    if nofollow::file_type(&stat) != FileType::Directory {
        bail!(
            "prebuilt customisation layer `{dir}` is {}, not a directory holding `layer.tar` (store symlinks are never followed)",
            nofollow::describe(store.as_fd(), base)
        );
    }
    let (dir_fd, _) = open_dir(store.as_fd(), base, Some(FileId::of(&stat)))
        .map_err(|e| e.context(format!("prebuilt customisation layer `{dir}`")))?;
    let dir_fd = dir_fd.as_fd();
    let (file, stat) = match nofollow::open_file_at(dir_fd, b"layer.tar") {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("prebuilt customisation layer `{}` is missing", path.display())
        }
        Err(e) => match nofollow::describe(dir_fd, b"layer.tar") {
            now if now.starts_with("a symlink") => {
                bail!("prebuilt customisation layer `{}` is {now}; store symlinks are never followed", path.display())
            }
            now => bail!("cannot open the prebuilt customisation layer `{}` ({now}): {e}", path.display()),
        },
    };
    if nofollow::file_type(&stat) != FileType::RegularFile {
        bail!("prebuilt customisation layer `{}` is a {}, not a regular file", path.display(), nofollow::kind_of(&stat));
    }
    let size = nofollow::size_of(&stat);
    check_layer_tar(&file, size).with_context(|| format!("prebuilt customisation layer `{}`", path.display()))?;
    Ok(LayerSource::Prebuilt { path, size, file })
}

/// Checks that `file` (`size` bytes) is a tar archive (ustar, GNU or PAX, read with the
/// `tar` crate) and that every entry, and every hard link's target, stays inside the
/// image root: no absolute name, no `..` component. Only headers are read; data is
/// skipped.
fn check_layer_tar(file: &File, size: u64) -> Result<()> {
    let mut archive = tar::Archive::new(ReadAt::new(file, size));
    let not_tar = |e: std::io::Error| anyhow!("not a valid tar archive: {e}");
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let entry = entry.map_err(not_tar)?;
        let name = entry.path_bytes();
        let shown = || String::from_utf8_lossy(&name).into_owned();
        if let Some(why) = leaves_root(&name) {
            bail!("entry `{}` {why}; every entry must stay inside the image root", shown());
        }
        if entry.header().entry_type().is_hard_link() {
            if let Some(target) = entry.link_name_bytes() {
                if let Some(why) = leaves_root(&target) {
                    bail!("hard link `{}` → `{}`: the target {why}", shown(), String::from_utf8_lossy(&target));
                }
            }
        }
        let end = entry.raw_file_position().saturating_add(entry.size());
        if end > size {
            bail!("entry `{}` is truncated: its data ends at byte {end}, the file has {size}", shown());
        }
    }
    Ok(())
}

/// Why a tar name leaves the root, if it does.
fn leaves_root(name: &[u8]) -> Option<&'static str> {
    if name.first() == Some(&b'/') {
        Some("has an absolute name")
    } else if name.split(|&b| b == b'/').any(|c| c == b"..") {
        Some("has a `..` component")
    } else {
        None
    }
}

/// Reads a shared [`File`] from its own position, with `pread`: the file's offset is
/// never touched, so the layer can be checked, then copied, from the same descriptor.
pub struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    len: u64,
}

impl<'a> ReadAt<'a> {
    /// Reads `file`, of `len` bytes, from its start.
    pub fn new(file: &'a File, len: u64) -> ReadAt<'a> {
        ReadAt { file, pos: 0, len }
    }
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ReadAt<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// A node of the merged tree; `from` is the index of the content that provided it
/// ([`EXTRA`] for the files of `includeNixDB`).
enum Node {
    Dir { children: BTreeMap<Vec<u8>, Node>, from: usize },
    Link { target: Vec<u8>, from: usize },
    /// A file whose bytes are in memory (never from a content).
    Data { bytes: Vec<u8> },
}

/// `from` of the nodes added by [`add_extra`].
const EXTRA: usize = usize::MAX;

/// Adds `file` at `name` (relative, `/`-separated) to the merged tree: its directories
/// are merged with the contents', but no content may provide the file itself, nor a
/// non-directory on its way.
fn add_extra(root: &mut BTreeMap<Vec<u8>, Node>, name: &str, file: DbFile, contents: &[StorePath]) -> Result<()> {
    let conflict = |from: usize, at: &str| {
        let by = if from == EXTRA { "the Nix database itself".to_string() } else { format!("`contents` entry `{}`", contents[from]) };
        anyhow!("includeNixDB: `/{at}` is needed for the Nix database but is also provided by {by}")
    };
    let components: Vec<&str> = name.split('/').collect();
    let Some((last, dirs)) = components.split_last() else { return Ok(()) };
    let mut tree = root;
    for (i, dir) in dirs.iter().enumerate() {
        let at = components[..=i].join("/");
        let node = tree.entry(dir.as_bytes().to_vec()).or_insert_with(|| Node::Dir { children: BTreeMap::new(), from: EXTRA });
        tree = match node {
            Node::Dir { children, .. } => children,
            Node::Link { from, .. } => return Err(conflict(*from, &at)),
            Node::Data { .. } => return Err(conflict(EXTRA, &at)),
        };
    }
    match (tree.get(last.as_bytes()), &file) {
        (Some(Node::Dir { .. }), DbFile::Directory) => return Ok(()),
        (Some(Node::Dir { from, .. } | Node::Link { from, .. }), _) => return Err(conflict(*from, name)),
        (Some(Node::Data { .. }), _) => return Err(conflict(EXTRA, name)),
        (None, _) => {}
    }
    let node = match file {
        DbFile::File(bytes) => Node::Data { bytes },
        DbFile::Symlink(target) => Node::Link { target, from: EXTRA },
        DbFile::Directory => Node::Dir { children: BTreeMap::new(), from: EXTRA },
    };
    tree.insert(last.as_bytes().to_vec(), node);
    Ok(())
}

/// Merges the listed directory `dir` (its `children`) into `tree`. `source` is its path
/// in the store (symlink targets are built on it), `rel` its path in the image.
fn merge_into(
    tree: &mut BTreeMap<Vec<u8>, Node>,
    dir: Dir,
    children: Vec<Child>,
    source: &mut Vec<u8>,
    rel: &mut Vec<u8>,
    index: usize,
    contents: &[StorePath],
) -> Result<()> {
    let dir_fd = dir.fd()?;
    for Child { name, stat } in children {
        let (source_len, rel_len) = (source.len(), rel.len());
        source.push(b'/');
        source.extend_from_slice(&name);
        rel.push(b'/');
        rel.extend_from_slice(&name);
        let conflict = |other: usize, rel: &[u8]| {
            anyhow!(
                "`contents` conflict: `{}` is provided by both `{}` and `{}`",
                String::from_utf8_lossy(rel),
                contents[other],
                contents[index]
            )
        };
        // `stat` is from lstat: a symlink to a directory is a link, not a directory.
        let is_dir = !matches!(&stat, Some(stat) if nofollow::file_type(stat) != FileType::Directory);
        let merge_dir = |tree: &mut BTreeMap<Vec<u8>, Node>, source: &mut Vec<u8>, rel: &mut Vec<u8>| -> Result<()> {
            let shown = String::from_utf8_lossy(source).into_owned();
            let (sub, _, sub_children) =
                open_and_list(dir_fd, &name, stat.as_ref().map(FileId::of)).map_err(|e| e.context(shown))?;
            merge_into(tree, sub, sub_children, source, rel, index, contents)
        };
        match tree.get_mut(name.as_ref()) {
            Some(Node::Dir { children, .. }) if is_dir => merge_dir(children, source, rel)?,
            Some(Node::Dir { from, .. } | Node::Link { from, .. }) => return Err(conflict(*from, rel)),
            Some(Node::Data { .. }) => bail!("internal error: `contents` merged after the Nix database"),
            None if is_dir => {
                let mut children = BTreeMap::new();
                merge_dir(&mut children, source, rel)?;
                tree.insert(name.into_vec(), Node::Dir { children, from: index });
            }
            None => {
                tree.insert(name.into_vec(), Node::Link { target: source.clone(), from: index });
            }
        }
        source.truncate(source_len);
        rel.truncate(rel_len);
    }
    Ok(())
}

/// The tree's entries, in order; file bytes move into `inline` (a database can be tens of MB).
fn flatten(tree: BTreeMap<Vec<u8>, Node>, prefix: Vec<u8>, entries: &mut Vec<Entry>, inline: &mut BTreeMap<Box<[u8]>, Vec<u8>>) {
    for (name, node) in tree {
        let mut path = prefix.clone();
        path.extend_from_slice(&name);
        match node {
            Node::Dir { children, .. } => {
                path.push(b'/');
                entries.push(Entry::not_on_disk(path.clone(), Kind::Directory, Vec::new()));
                flatten(children, path, entries, inline);
            }
            Node::Link { target, .. } => entries.push(Entry::not_on_disk(path, Kind::Symlink, target)),
            Node::Data { bytes } => {
                let mut entry = Entry::not_on_disk(path, Kind::File, Vec::new());
                (entry.mode, entry.size) = (0o644, bytes.len() as u64);
                inline.insert(entry.name.clone(), bytes);
                entries.push(entry);
            }
        }
    }
}
