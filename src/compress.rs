//! Compression of the whole archive, in parallel and deterministic.
//!
//! gzip: the stream is cut into fixed 1 MiB blocks, each compressed on its own as one
//! gzip member (RFC 1952 allows any number; gzip, pigz and Go's reader used by
//! `docker load` read them all), written in order. The cut points do not depend on the
//! thread count, so neither do the bytes. Each block is deflated whole by libdeflate,
//! which needs no streaming since a block is all in memory; that is why it is used
//! rather than zlib (see [`GZ_LEVEL`]).
//! zstd: libzstd's multi-threaded mode with a fixed job size, which gives the same bytes
//! for any worker count of one or more; we always ask for at least one worker.

use crate::attrs::Compressor;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use zstd::stream::raw::CParameter;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per gzip member.
pub const GZ_BLOCK: usize = 1 << 20;
/// The deflate implementation and its version (from Cargo.lock, see build.rs).
pub const DEFLATE_LIBRARY: &str = concat!("libdeflate-sys ", env!("NIX_LAYERS_LIBDEFLATE_SYS_VERSION"));
/// libdeflate's default level for each member. Measured on the bench's medium closure (417 MB of
/// tar, one core): libdeflate 2 gives 36.5% of the input at 86 MB/s, where zlib(-rs) 6,
/// our earlier setting, gave 36.3% at 35 MB/s and skopeo's pgzip 37.4%; libdeflate 1
/// gives 38.1% at 112 MB/s. Level 2 keeps the bytes pulled as small as before and
/// compresses 2.5× faster.
pub const GZ_LEVEL: i32 = 2;
/// zstd's default level (the zstd command's).
pub const ZSTD_LEVEL: i32 = 3;
/// log2 of the entries in each of zstd's two match tables (level 3's defaults are 17 and
/// 16). At 16 and 16 both tables, 512 KiB, stay in a core's L2 cache while the job's
/// input streams through: measured on the bench closures, 4–5% less CPU and time, output the
/// size of the `zstd -3` command's (+0.06% on the large closure, −0.05% on the medium),
/// since libzstd 1.5.7's block splitting wins back what the smaller table loses.
pub const ZSTD_HASH_LOG: u32 = 16;
/// log2 of the entries in zstd's chain table (see above).
pub const ZSTD_CHAIN_LOG: u32 = 16;
/// Uncompressed bytes per zstd job. libzstd's default at level 3 is 8 MiB, and its
/// buffers grew to 130 MB on a 2.6 GB image; 4 MiB jobs keep them near 80 MB for 0.25%
/// more output and the same speed. The jobs' cut points, hence the bytes, are fixed.
pub const ZSTD_JOB_SIZE: u32 = 4 << 20;

/// A format and its level: how a layer blob or an archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// gzip, zstd or none.
    pub format: Compressor,
    /// The level (0 for none).
    pub level: i32,
}

impl Compression {
    /// `format` at its default level ([`GZ_LEVEL`], [`ZSTD_LEVEL`]).
    pub fn default_for(format: Compressor) -> Compression {
        let level = match format {
            Compressor::None => 0,
            Compressor::Gz => GZ_LEVEL,
            Compressor::Zstd => ZSTD_LEVEL,
        };
        Compression { format, level }
    }

    /// `format` at `level`, or at its default level when `level` is `None`.
    ///
    /// # Errors
    /// A level outside 1–9 for gzip (gzip's and skopeo's range) or 1–19 for zstd, or any
    /// level for no compression.
    pub fn with_level(format: Compressor, level: Option<i32>) -> Result<Compression> {
        let Some(level) = level else { return Ok(Compression::default_for(format)) };
        let (name, range) = match format {
            Compressor::None => anyhow::bail!("--compression-level {level}: uncompressed layers have no level"),
            Compressor::Gz => ("gzip", 1..=9),
            Compressor::Zstd => ("zstd", 1..=19),
        };
        if !range.contains(&level) {
            anyhow::bail!("--compression-level {level}: {name} levels are {} to {}", range.start(), range.end());
        }
        Ok(Compression { format, level })
    }

    /// zstd's hash and chain table sizes when we set them ([`ZSTD_HASH_LOG`],
    /// [`ZSTD_CHAIN_LOG`]): at the default level only, which they were tuned for; other
    /// levels keep libzstd's own. The bytes and the cache key both depend on this.
    pub fn zstd_tables(self) -> Option<(u32, u32)> {
        (self.format == Compressor::Zstd && self.level == ZSTD_LEVEL).then_some((ZSTD_HASH_LOG, ZSTD_CHAIN_LOG))
    }
}

/// A writer that compresses as `compressor` says; [`Compressed::finish`] returns the inner writer.
pub enum Compressed<W: Write> {
    /// No compression.
    Plain(W),
    /// Parallel gzip.
    Gz(ParallelGzip<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressed<W> {
    /// Wraps `inner`.
    ///
    /// # Errors
    /// libzstd refuses its parameters.
    pub fn new(inner: W, compression: Compression, threads: usize) -> Result<Self> {
        Ok(match compression.format {
            Compressor::None => Compressed::Plain(inner),
            Compressor::Gz => Compressed::Gz(ParallelGzip::new(inner, compression.level, threads)?),
            Compressor::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, compression.level).context("cannot start zstd")?;
                encoder.multithread(threads.max(1) as u32).context("cannot start zstd workers")?;
                encoder.include_checksum(true).context("cannot configure zstd")?;
                let mut parameters = vec![CParameter::JobSize(ZSTD_JOB_SIZE)];
                if let Some((hash_log, chain_log)) = compression.zstd_tables() {
                    parameters.extend([CParameter::HashLog(hash_log), CParameter::ChainLog(chain_log)]);
                }
                for parameter in parameters {
                    encoder.set_parameter(parameter).with_context(|| format!("cannot set zstd's {parameter:?}"))?;
                }
                Compressed::Zstd(encoder)
            }
        })
    }

    /// Flushes everything and returns the inner writer.
    ///
    /// # Errors
    /// Writing the last bytes fails.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressed::Plain(w) => Ok(w),
            Compressed::Gz(gz) => gz.finish(),
            Compressed::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressed::Plain(w) => w.write(buf),
            Compressed::Gz(w) => w.write(buf),
            Compressed::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressed::Plain(w) => w.flush(),
            Compressed::Gz(_) => Ok(()), // members are written as they complete
            Compressed::Zstd(w) => w.flush(),
        }
    }
}

/// A block to compress, a buffer to compress it into, and where to send both back.
type Job = (Vec<u8>, Vec<u8>, Sender<io::Result<Finished>>);
/// The block (for reuse) and its gzip member.
type Finished = (Vec<u8>, Vec<u8>);

/// gzip with fixed-size members compressed on worker threads.
pub struct ParallelGzip<W: Write> {
    inner: W,
    block: Vec<u8>,
    jobs: Option<Sender<Job>>,
    /// Results in stream order; at most `max_in_flight` outstanding.
    in_flight: VecDeque<Receiver<io::Result<Finished>>>,
    /// Buffers back from finished members, reused so memory stays flat.
    spare: Vec<Vec<u8>>,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzip<W> {
    fn new(inner: W, level: i32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let started = std::thread::Builder::new().spawn(move || {
                // A compressor holds libdeflate's tables: one per worker, reused.
                let mut deflater = deflater(level);
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((block, member, reply)) = job else { return };
                    let _ = reply.send(gzip_member(&mut deflater, &block, member).map(|member| (block, member)));
                }
            });
            match started {
                Ok(worker) => workers.push(worker),
                // The OS refused a thread: the ones already started do the work.
                Err(e) if workers.is_empty() => {
                    return Err(io::Error::new(e.kind(), format!("cannot start a gzip worker thread: {e}")))
                }
                Err(_) => break,
            }
        }
        Ok(ParallelGzip {
            inner,
            block: Vec::with_capacity(GZ_BLOCK),
            jobs: Some(jobs),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            max_in_flight: threads * 2 + 1,
            workers,
        })
    }

    fn submit_block(&mut self) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let next = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(GZ_BLOCK));
        let block = std::mem::replace(&mut self.block, next);
        let member = self.spare.pop().unwrap_or_default();
        let (reply, result) = channel();
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("gzip already finished"))?;
        jobs.send((block, member, reply)).map_err(|_| io::Error::other("gzip workers stopped"))?;
        self.in_flight.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.in_flight.pop_front() {
            let (mut block, mut member) = result.recv().map_err(|_| io::Error::other("a gzip worker stopped"))??;
            self.inner.write_all(&member)?;
            block.clear();
            member.clear();
            self.spare.extend([block, member]);
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || self.in_flight.is_empty() {
            // An empty input still needs one (empty) member to be valid gzip.
            self.submit_block()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZ_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZ_BLOCK {
            self.submit_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// libdeflate's compressor at `level` (checked by [`Compression::with_level`]).
fn deflater(level: i32) -> libdeflater::Compressor {
    let level = libdeflater::CompressionLvl::new(level).unwrap_or_else(|_| libdeflater::CompressionLvl::default());
    libdeflater::Compressor::new(level)
}

/// Size of gzip's fixed header.
const GZ_HEADER: usize = 10;

/// One complete gzip member: fixed header (no name, mtime 0, OS Unix), raw deflate,
/// CRC-32 and length.
fn gzip_member(deflater: &mut libdeflater::Compressor, data: &[u8], mut member: Vec<u8>) -> io::Result<Vec<u8>> {
    member.clear();
    member.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    member.resize(GZ_HEADER + deflater.deflate_compress_bound(data.len()), 0);
    let deflated = deflater
        .deflate_compress(data, &mut member[GZ_HEADER..])
        .map_err(|e| io::Error::other(format!("libdeflate failed: {e:?}")))?;
    member.truncate(GZ_HEADER + deflated);
    member.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    member.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut gz = Compressed::new(Vec::new(), Compression::default_for(Compressor::Gz), threads).unwrap();
        // Uneven writes, across member boundaries.
        for piece in data.chunks(300_001) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_members_decode_to_the_input_whatever_the_thread_count() {
        // 2.5 members: text-like bytes that compress, then incompressible ones.
        let mut data: Vec<u8> = (0..GZ_BLOCK + GZ_BLOCK / 2).map(|i| b"nix-layers "[i % 11]).collect();
        let mut x: u32 = 1;
        data.extend((0..GZ_BLOCK).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        let one = gzip(&data, 1);
        assert_eq!(gunzip(&one), data);
        assert_eq!(one, gzip(&data, 3), "the bytes depend on the thread count");
        assert!(one.windows(3).filter(|w| *w == [0x1f, 0x8b, 8]).count() >= 3, "one member per MiB");
    }

    #[test]
    fn gzip_of_nothing_is_one_valid_empty_member() {
        let empty = gzip(b"", 2);
        assert!(empty.starts_with(&[0x1f, 0x8b, 8]) && empty.ends_with(&[0; 8]), "{empty:?}");
        assert_eq!(gunzip(&empty), b"");
    }
}
