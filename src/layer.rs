//! Layer tars, produced in parallel and delivered in order, each file read once.
//!
//! Workers take layers in order and write each one's tar bytes into fixed-size chunks,
//! hashing every chunk (the layer's diff_id) before handing it on. The consumer takes the
//! chunks layer by layer, in order. Each layer's queue is bounded, and chunk buffers are
//! recycled, so memory stays flat whatever the layer and closure sizes: at most
//! `threads × (QUEUE_DEPTH + 1)` chunks are alive. The bytes do not depend on the thread
//! count.

use crate::nofollow::{self, FileId};
use crate::scan::{Entry, LayerSource, ReadAt};
use crate::tar_header::{self, Kind};
use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{FileType, Stat};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

/// Size of one chunk of layer bytes.
pub const CHUNK_SIZE: usize = 1 << 19;
/// Chunks a worker may run ahead of the consumer on one layer.
const QUEUE_DEPTH: usize = 4;

/// What a layer's queue carries.
enum Message {
    Chunk(Vec<u8>),
    Done(Result<LayerDigest>),
}

/// A finished layer's digest and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigest {
    /// SHA-256 of the uncompressed tar (the diff_id).
    pub sha256: [u8; 32],
    /// Bytes written.
    pub size: u64,
}

impl LayerDigest {
    /// `sha256:<hex>`.
    pub fn diff_id(&self) -> String {
        format!("sha256:{}", hex(&self.sha256))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that passes bytes on to `inner` and keeps their SHA-256 and count: a blob's
/// digest and size, or a base layer's diff_id, taken while it is written.
pub struct Hashing<W> {
    /// Where the bytes go.
    pub inner: W,
    /// SHA-256 of the bytes written so far.
    pub sha: Sha256,
    /// How many bytes were written.
    pub size: u64,
}

impl<W: Write> Hashing<W> {
    /// Hashes what is written to `inner`.
    pub fn new(inner: W) -> Hashing<W> {
        Hashing { inner, sha: Sha256::new(), size: 0 }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Recycled chunk buffers, so a multi-GB layer does not allocate (and fault in) fresh
/// memory for every megabyte.
pub struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn new() -> BufferPool {
        BufferPool(Mutex::new(Vec::new()))
    }

    fn take(&self) -> Vec<u8> {
        let recycled = self.0.lock().ok().and_then(|mut pool| pool.pop());
        let mut buf = recycled.unwrap_or_default();
        buf.resize(CHUNK_SIZE, 0);
        buf
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        if let Ok(mut pool) = self.0.lock() {
            pool.push(buf);
        }
    }
}

/// What the consumer of [`produce_in_order`] is told, in archive order.
pub enum Event<'a> {
    /// The next bytes of the layer.
    Chunk(&'a [u8]),
    /// The layer is complete.
    Finished(LayerDigest),
}

/// Produces every layer's bytes on `threads` workers and calls `consume(layer, event)`
/// for each chunk in archive order, and once more when each layer is finished.
///
/// # Errors
/// The first error of a worker (a file that vanished, changed size, or cannot be read) or
/// of the consumer; the other workers stop soon after.
pub fn produce_in_order(
    layers: &[&LayerSource],
    threads: usize,
    mut consume: impl FnMut(usize, Event<'_>) -> Result<()>,
) -> Result<()> {
    let pool = BufferPool::new();
    let cancelled = AtomicBool::new(false);
    let next_layer = AtomicUsize::new(0);
    let (senders, receivers): (Vec<SyncSender<Message>>, Vec<Receiver<Message>>) =
        (0..layers.len()).map(|_| sync_channel(QUEUE_DEPTH)).unzip();
    let worker = || loop {
        let i = next_layer.fetch_add(1, Ordering::SeqCst);
        if i >= layers.len() || cancelled.load(Ordering::SeqCst) {
            break;
        }
        let tx = &senders[i];
        // A panic here would leave the consumer waiting on this layer's queue for ever
        // (every sender lives until the scope ends): report it as the layer's error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_layer(layers[i], &pool, &cancelled, tx)))
            .unwrap_or_else(|_| Err(anyhow!("internal error: the worker writing layer {} panicked", i + 1)));
        if tx.send(Message::Done(result)).is_err() {
            break; // the consumer gave up
        }
    };
    std::thread::scope(|scope| {
        crate::workers::spawn_scoped(scope, threads.max(1).min(layers.len().max(1)), &worker)?;
        let result = (|| {
            for (i, rx) in receivers.into_iter().enumerate() {
                loop {
                    match rx.recv() {
                        Ok(Message::Chunk(buf)) => {
                            let outcome = consume(i, Event::Chunk(&buf));
                            pool.give(buf);
                            outcome?;
                        }
                        Ok(Message::Done(digest)) => {
                            consume(i, Event::Finished(digest?))?;
                            break;
                        }
                        Err(_) => bail!("layer {} was not produced (a worker stopped)", i + 1),
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            cancelled.store(true, Ordering::SeqCst);
        }
        result
    })
}

/// Writes one layer into chunks sent to `tx`, hashing as it goes.
fn write_layer(source: &LayerSource, pool: &BufferPool, cancelled: &AtomicBool, tx: &SyncSender<Message>) -> Result<LayerDigest> {
    let mut sha = Sha256::new();
    let mut size = 0u64;
    let mut chunks = Chunker::new(pool, |chunk: Vec<u8>| {
        sha.update(&chunk);
        size += chunk.len() as u64;
        tx.send(Message::Chunk(chunk)).map_err(|_| io::Error::other("consumer stopped"))
    });
    match source {
        LayerSource::Entries { entries, owner, store_dir, inline } => {
            let mut tree = match store_dir {
                Some(dir) => Some(StoreTree::open(dir)?),
                None => None,
            };
            for entry in entries {
                if cancelled.load(Ordering::Relaxed) {
                    bail!("cancelled");
                }
                entry.header(owner).write_to(&mut chunks)?;
                if let Some(bytes) = inline.get(&entry.name) {
                    // In memory (the Nix database): sized from these very bytes.
                    chunks.write_all(bytes)?;
                    chunks.write_all(&tar_header::ZEROS[..tar_header::padding(entry.size)])?;
                    continue;
                }
                match (entry.kind, tree.as_mut()) {
                    (Kind::Directory, Some(tree)) => tree.enter(entry)?,
                    (Kind::File, Some(tree)) => {
                        let mut file = tree.open_file(entry)?;
                        copy_exact(&mut chunks, &mut file, &entry.source(), entry.size)?;
                        chunks.write_all(&tar_header::ZEROS[..tar_header::padding(entry.size)])?;
                    }
                    (Kind::File, None) => bail!("internal error: `{}` has no store to be read from", entry.source().display()),
                    (Kind::Directory | Kind::Symlink, _) => {} // written as scanned: nothing to read
                }
            }
            chunks.write_all(&tar_header::ZEROS)?;
            chunks.write_all(&tar_header::ZEROS)?;
        }
        LayerSource::Prebuilt { path, size, file } => {
            // The file was checked when scanned and has stayed open since; its size must
            // still be the one the archive header promises.
            let now = nofollow::size_of(&rustix::fs::fstat(file).with_context(|| format!("cannot stat `{}`", path.display()))?);
            if now != *size {
                bail!("`{}` changed size after it was scanned (it was {size} bytes, now {now})", path.display());
            }
            copy_exact(&mut chunks, &mut ReadAt::new(file, *size), path, *size)?
        }
        LayerSource::Base(base) => {
            let read = chunks.fill_from(&mut base.reader(), base.size).with_context(|| format!("cannot read {}", base.describe()))?;
            if read < base.size {
                bail!("{} is truncated: only {read} of its {} bytes could be read", base.describe(), base.size);
            }
        }
    }
    chunks.finish()?;
    let expected = source.size();
    if size != expected {
        return Err(anyhow!("internal error: layer is {size} bytes, {expected} were planned"));
    }
    let sha256: [u8; 32] = sha.finalize().into();
    if let LayerSource::Base(base) = source {
        // Its bytes are already on their way: a stream ends with this error (`build` and
        // `oci` leave nothing behind, `push` never puts the manifest).
        base.check(&sha256)?;
    }
    Ok(LayerDigest { sha256, size })
}

/// Opens the files of a store layer being written, checking each against the scan.
///
/// A file is opened in one system call below the store directory's descriptor with no
/// symlink allowed in any component (`openat2`, see [`nofollow::open_file_beneath`]), then
/// its `fstat` must match the scan: a regular file, same device and inode, same size. So a
/// name swapped for a symlink, a FIFO or another file after the scan, or a directory on
/// its way swapped for a symlink, is refused, naming it.
///
/// When that open fails, or `openat2` is unavailable, the file is reached one directory
/// at a time instead: entries come depth first, a directory before its contents, so the
/// directories the current entry is in form one chain from the store directory down.
/// Each is opened relative to its parent's descriptor, never through a symlink, and must
/// be the directory the scan saw; the error then names the first name that changed.
struct StoreTree<'a> {
    /// The store directory's tar name, with its `/` (`nix/store/`).
    root_name: Vec<u8>,
    /// The store directory.
    root: OwnedFd,
    /// Whether `openat2` may work (until the kernel says it does not).
    beneath: bool,
    /// The chain below it: each directory entry, and its descriptor once opened (always
    /// a prefix of the chain is open).
    chain: Vec<(&'a Entry, Option<OwnedFd>)>,
}

impl<'a> StoreTree<'a> {
    fn open(store_dir: &str) -> Result<StoreTree<'a>> {
        let root = nofollow::open_store_dir(Path::new(store_dir))
            .with_context(|| format!("cannot open the store directory `{store_dir}`"))?;
        let mut root_name = store_dir.trim_start_matches('/').as_bytes().to_vec();
        root_name.push(b'/');
        Ok(StoreTree { root_name, root, beneath: true, chain: Vec::new() })
    }

    /// Leaves the directories `name` is not in; returns `name`'s last component.
    fn move_to_parent_of(&mut self, name: &'a [u8]) -> Result<&'a [u8]> {
        let (parent, base) = split_name(name);
        while self.chain.last().is_some_and(|(dir, _)| *dir.name != *parent) {
            self.chain.pop();
        }
        if self.chain.is_empty() && parent != self.root_name.as_slice() {
            bail!("internal error: `/{}` is not below an open directory of the store", String::from_utf8_lossy(name));
        }
        Ok(base)
    }

    /// A directory entry: the chain now ends with it (opened only if needed).
    fn enter(&mut self, entry: &'a Entry) -> Result<()> {
        if self.root_name.starts_with(&entry.name) {
            return Ok(()); // the store directory's own entries (`nix/`, `nix/store/`): not read
        }
        self.move_to_parent_of(&entry.name)?;
        self.chain.push((entry, None));
        Ok(())
    }

    /// Opens, outermost first, every directory of the chain not open yet, each checked to
    /// be the one scanned; returns the innermost (the store directory if none).
    fn open_chain(&mut self) -> Result<BorrowedFd<'_>> {
        let first_closed = self.chain.iter().position(|(_, fd)| fd.is_none()).unwrap_or(self.chain.len());
        for i in first_closed..self.chain.len() {
            let (outer, rest) = self.chain.split_at_mut(i);
            let parent = outer.last().and_then(|(_, fd)| fd.as_ref()).unwrap_or(&self.root).as_fd();
            let (dir, fd) = &mut rest[0];
            let base = split_name(&dir.name).1;
            let (opened, stat) =
                nofollow::open_dir_at(parent, base).map_err(|e| changed(&dir.source(), parent, base, &e.to_string()))?;
            let id = FileId::of(&stat);
            if id != dir.id {
                bail!("`{}` changed after it was scanned: it is another directory ({id}, was {})", shown(&dir.source()), dir.id);
            }
            *fd = Some(opened);
        }
        Ok(self.chain.last().and_then(|(_, fd)| fd.as_ref()).unwrap_or(&self.root).as_fd())
    }

    /// Opens the file `entry` and checks it is the file scanned.
    fn open_file(&mut self, entry: &'a Entry) -> Result<File> {
        let base = self.move_to_parent_of(&entry.name)?;
        if self.beneath {
            let rel = entry.name.strip_prefix(self.root_name.as_slice()).unwrap_or(&entry.name);
            match nofollow::open_file_beneath(self.root.as_fd(), rel) {
                Ok((file, stat)) => return check_file(entry, file, &stat),
                Err(e) if nofollow::unsupported(&e) => self.beneath = false,
                Err(_) => {} // something changed on the way: the walk below names it
            }
        }
        let parent = self.open_chain()?;
        let (file, stat) =
            nofollow::open_file_at(parent, base).map_err(|e| changed(&entry.source(), parent, base, &e.to_string()))?;
        check_file(entry, file, &stat)
    }
}

/// `file`, opened for `entry`, if its `stat` is the scan's: a regular file, same device
/// and inode, same size.
fn check_file(entry: &Entry, file: File, stat: &Stat) -> Result<File> {
    let id = FileId::of(stat);
    let why = if nofollow::file_type(stat) != FileType::RegularFile {
        format!("changed after it was scanned: it is now a {}", nofollow::kind_of(stat))
    } else if id != entry.id {
        format!("changed after it was scanned: it is another file ({id}, was {})", entry.id)
    } else if nofollow::size_of(stat) != entry.size {
        format!("changed size after it was scanned (it was {} bytes, now {})", entry.size, nofollow::size_of(stat))
    } else {
        return Ok(file);
    };
    bail!("`{}` {why}; nothing was read from it", entry.source().display())
}

/// A tar name's parent (with its `/`) and last component: `a/b/` → (`a/`, `b`).
fn split_name(name: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    trimmed.split_at(trimmed.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1))
}

/// `path` for a message, without a directory's trailing `/`.
fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    text.strip_suffix('/').map(str::to_string).unwrap_or(text)
}

/// The error for a name that could not be opened as scanned, saying what is there now.
fn changed(path: &Path, parent: BorrowedFd<'_>, base: &[u8], error: &str) -> anyhow::Error {
    let now = nofollow::describe(parent, base);
    let path = shown(path);
    if now.starts_with("a symlink") {
        anyhow!("`{path}` changed after it was scanned: it is now {now}, and store symlinks are never followed")
    } else {
        anyhow!("`{path}` changed after it was scanned: it is now {now} ({error})")
    }
}

/// Copies exactly `len` bytes of `file` (its size when scanned), failing if the file has
/// changed size since: the tar header already promised `len` bytes.
fn copy_exact<F: FnMut(Vec<u8>) -> io::Result<()>>(chunks: &mut Chunker<'_, F>, file: &mut impl Read, path: &Path, len: u64) -> Result<()> {
    let read = chunks
        .fill_from(file, len)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut probe = [0u8; 1];
    let grew = file.read(&mut probe).with_context(|| format!("cannot read `{}`", path.display()))? > 0;
    if read < len || grew {
        bail!(
            "`{}` changed size while being read (it was {len} bytes when scanned{})",
            path.display(),
            if grew { ", now it is larger".to_string() } else { format!(", only {read} could be read") }
        );
    }
    Ok(())
}

/// Fills fixed-size buffers and hands each full one to `emit`. Files are read straight
/// into the buffer, so their bytes are copied once on the way in.
struct Chunker<'p, F> {
    buf: Vec<u8>,
    filled: usize,
    pool: &'p BufferPool,
    emit: F,
}

impl<'p, F: FnMut(Vec<u8>) -> io::Result<()>> Chunker<'p, F> {
    fn new(pool: &'p BufferPool, emit: F) -> Self {
        Chunker { buf: pool.take(), filled: 0, pool, emit }
    }

    fn flush_full(&mut self) -> io::Result<()> {
        if self.filled == self.buf.len() {
            let full = std::mem::replace(&mut self.buf, self.pool.take());
            self.filled = 0;
            (self.emit)(full)?;
        }
        Ok(())
    }

    /// Reads up to `len` bytes of `file`; returns how many there were.
    fn fill_from(&mut self, file: &mut impl Read, len: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            self.flush_full()?;
            let room = (self.buf.len() - self.filled).min((len - done).min(usize::MAX as u64) as usize);
            let n = match file.read(&mut self.buf[self.filled..self.filled + room]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled += n;
            done += n as u64;
        }
        Ok(done)
    }

    fn finish(mut self) -> io::Result<()> {
        if self.filled > 0 {
            let mut last = std::mem::take(&mut self.buf);
            last.truncate(self.filled);
            (self.emit)(last)?;
        } else {
            self.pool.give(std::mem::take(&mut self.buf));
        }
        Ok(())
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> Write for Chunker<'_, F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush_full()?;
        let n = data.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scan::{scan_store_paths, store_layer};
    use crate::store_path::StorePath;
    use crate::tar_header::Owner;
    use std::fs;

    /// Reads every file of `entries` through a [`StoreTree`], with `openat2` or with the
    /// walk one directory at a time; returns each file's name and bytes.
    fn read_all(store: &str, entries: &[Entry], beneath: bool) -> Result<Vec<(String, Vec<u8>)>> {
        let mut tree = StoreTree::open(store)?;
        tree.beneath = beneath;
        let mut read = Vec::new();
        for entry in entries {
            match entry.kind {
                Kind::Directory => tree.enter(entry)?,
                Kind::File => {
                    let mut bytes = Vec::new();
                    tree.open_file(entry)?.read_to_end(&mut bytes)?;
                    read.push((String::from_utf8_lossy(&entry.name).into_owned(), bytes));
                }
                Kind::Symlink => {}
            }
        }
        Ok(read)
    }

    /// A scanned store path: `a/b/one`, `a/two`, `c/d/` (empty), `e/three`, `top`, `link`.
    fn scanned() -> (tempfile::TempDir, String, Vec<Entry>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store").to_str().unwrap().to_string();
        let path = format!("{store}/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-x");
        for (rel, data) in [("a/b/one", "1"), ("a/two", "22"), ("e/three", "333"), ("top", "4444")] {
            let file = Path::new(&path).join(rel);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, data).unwrap();
        }
        fs::create_dir_all(Path::new(&path).join("c/d")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", Path::new(&path).join("link")).unwrap();
        let store_path = StorePath::parse(&store, &path).unwrap();
        let trees = scan_store_paths(&[&store_path], 1).unwrap();
        let owner = Owner { uid: 0, gid: 0, uname: String::new(), gname: String::new(), mtime: 1 };
        let LayerSource::Entries { entries, .. } = store_layer(&store, trees, owner) else { unreachable!() };
        (tmp, store, entries)
    }

    #[test]
    fn the_directory_walk_reads_what_openat2_reads() {
        let (_tmp, store, entries) = scanned();
        let fast = read_all(&store, &entries, true).unwrap();
        let walked = read_all(&store, &entries, false).unwrap();
        let sizes: Vec<usize> = walked.iter().map(|(_, bytes)| bytes.len()).collect();
        assert_eq!(sizes, [1, 2, 3, 4], "{walked:?}");
        assert_eq!(fast, walked);
    }

    #[test]
    fn the_directory_walk_refuses_a_directory_swapped_for_a_symlink() {
        let (tmp, store, entries) = scanned();
        let a = Path::new(&store).join("0l1v2mjy9ivhn9njfz2szzh7whr0vj02-x/a");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("b")).unwrap();
        fs::write(outside.join("b/one"), "X").unwrap();
        fs::rename(&a, tmp.path().join("old")).unwrap();
        std::os::unix::fs::symlink(&outside, &a).unwrap();
        for beneath in [true, false] {
            let error = format!("{:#}", read_all(&store, &entries, beneath).unwrap_err());
            assert!(error.contains(&format!("`{}` changed after it was scanned", a.display())), "{error}");
            assert!(error.contains("symlink"), "{error}");
        }
    }
}
