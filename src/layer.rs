//! Layer tars, produced in parallel and delivered in order, each file read once.
//!
//! Workers take layers in order and write each one's tar bytes into fixed-size chunks,
//! hashing every chunk (the layer's diff_id) before handing it on. The consumer takes the
//! chunks layer by layer, in order. Each layer's queue is bounded, and chunk buffers are
//! recycled, so memory stays flat whatever the layer and closure sizes: at most
//! `threads × (QUEUE_DEPTH + 1)` chunks are alive. The bytes do not depend on the thread
//! count.

use crate::scan::LayerSource;
use crate::tar_header::{self, Kind};
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
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
        let result = write_layer(layers[i], &pool, &cancelled, tx);
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
        LayerSource::Entries { entries, owner } => {
            for entry in entries {
                if cancelled.load(Ordering::Relaxed) {
                    bail!("cancelled");
                }
                entry.header(owner).write_to(&mut chunks)?;
                if entry.kind == Kind::File {
                    copy_exact(&mut chunks, &entry.source(), entry.size)?;
                    chunks.write_all(&tar_header::ZEROS[..tar_header::padding(entry.size)])?;
                }
            }
            chunks.write_all(&tar_header::ZEROS)?;
            chunks.write_all(&tar_header::ZEROS)?;
        }
        LayerSource::Prebuilt { path, size } => copy_exact(&mut chunks, path, *size)?,
    }
    chunks.finish()?;
    let expected = source.size();
    if size != expected {
        return Err(anyhow!("internal error: layer is {size} bytes, {expected} were planned"));
    }
    Ok(LayerDigest { sha256: sha.finalize().into(), size })
}

/// Copies exactly `len` bytes of `path` (its size when scanned), failing if the file has
/// changed size since: the tar header already promised `len` bytes.
fn copy_exact<F: FnMut(Vec<u8>) -> io::Result<()>>(chunks: &mut Chunker<'_, F>, path: &Path, len: u64) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let read = chunks
        .fill_from(&mut file, len)
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
    fn fill_from(&mut self, file: &mut File, len: u64) -> io::Result<u64> {
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
