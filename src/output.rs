//! File outputs that appear whole or not at all, and stdout.
//!
//! Bytes go to a temporary file in the target's directory (so the final rename stays on
//! one file system, as it must inside the Nix store) and are renamed into place only
//! after the last byte is written. On any error, or a drop without commit, the temporary
//! file is removed: nothing is left at or next to the out path. After
//! [`remove_temp_files_on_signals`], SIGTERM, SIGINT and SIGHUP remove it too; SIGKILL
//! cannot be caught, and leaves it.

use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Temporary files being written, removed if a signal ends the process.
static TEMP_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn temp_files() -> MutexGuard<'static, Vec<PathBuf>> {
    TEMP_FILES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a temporary file or directory (one that [`AtomicFile`] does not manage) to be
/// removed if a signal ends the process; [`forget_temp`] once it is gone or renamed.
pub fn track_temp(path: PathBuf) {
    temp_files().push(path);
}

/// Undoes [`track_temp`].
pub fn forget_temp(path: &Path) {
    temp_files().retain(|f| f != path);
}

/// From now on, SIGTERM, SIGINT and SIGHUP remove every temporary output file, then end
/// the process as the signal would have (the parent sees the same signal).
///
/// A thread does the work, not the signal handler itself (which may only do
/// async-signal-safe things): signal-hook's handler just wakes it.
///
/// # Errors
/// The handlers or the thread cannot be set up.
pub fn remove_temp_files_on_signals() -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot set up signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        // Its own small stack, whatever RUST_MIN_STACK says: it only removes files.
        .stack_size(64 << 10)
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held until the process ends: a commit cannot rename a file away meanwhile.
                let files = temp_files();
                for file in files.iter() {
                    if fs::remove_file(file).is_err() {
                        let _ = fs::remove_dir_all(file);
                    }
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// A writer whose errors name what is written (`path`, or `stdout`): "No space left on
/// device" alone does not say where.
pub struct Named<W> {
    inner: W,
    name: String,
}

impl<W: Write> Named<W> {
    /// Wraps `inner`, called `name` in errors.
    pub fn new(inner: W, name: String) -> Named<W> {
        Named { inner, name }
    }

    fn explain(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("cannot write {}: {e}", self.name))
    }
}

impl<W: Write> Write for Named<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.explain(e))
    }
}

/// Standard output, buffered, with errors naming it.
///
/// # Errors
/// Standard output was closed when the program started. Rust's runtime then puts
/// `/dev/null`, opened read-write, in its place, and every byte would vanish with exit
/// status 0; a shell's `>/dev/null` opens it write-only, so that stays allowed.
pub fn stdout() -> Result<BufWriter<Named<io::StdoutLock<'static>>>> {
    let target = fs::read_link("/proc/self/fd/1").ok();
    let flags = fs::read_to_string("/proc/self/fdinfo/1").ok().and_then(|info| {
        let line = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim().to_string();
        u32::from_str_radix(&line, 8).ok()
    });
    const O_ACCMODE: u32 = 0o3;
    const O_RDWR: u32 = 0o2;
    if target.as_deref() == Some(Path::new("/dev/null")) && flags.is_some_and(|f| f & O_ACCMODE == O_RDWR) {
        bail!("standard output is closed: redirect it to a file or a pipe (or to /dev/null to discard)");
    }
    Ok(BufWriter::with_capacity(1 << 20, Named::new(io::stdout().lock(), "to stdout".into())))
}

/// A file being written to a temporary name.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<Named<File>>>,
}

impl AtomicFile {
    /// Starts writing what will become `target`.
    ///
    /// # Errors
    /// The target's directory does not exist or is not writable.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = target
            .file_name()
            .with_context(|| format!("output path `{}` has no file name", target.display()))?;
        let temp = dir.join(format!(".{}.nix-layers-{}.tmp", base.to_string_lossy(), std::process::id()));
        // Listed and created under the lock: a signal comes either before the file exists
        // (and the process ends before it can be created) or after it is listed.
        let mut files = temp_files();
        let file = File::create(&temp)
            .with_context(|| format!("cannot create `{}` (for output `{}`)", temp.display(), target.display()))?;
        files.push(temp.clone());
        drop(files);
        let name = format!("`{}` (the output `{}` being written)", temp.display(), target.display());
        let writer = BufWriter::with_capacity(1 << 20, Named::new(file, name));
        Ok(AtomicFile { target: target.to_path_buf(), temp, writer: Some(writer) })
    }

    /// The writer for the file's bytes.
    pub fn writer(&mut self) -> &mut BufWriter<Named<File>> {
        self.writer.as_mut().expect("writer is present until commit") // invariant: only commit takes it
    }

    /// Flushes, sets `mode` and renames the file into place.
    ///
    /// # Errors
    /// Flushing, chmod or rename fails (the temporary file is then removed).
    pub fn commit(mut self, mode: u32) -> Result<()> {
        let writer = self.writer.take().expect("writer is present until commit");
        let file = writer.into_inner().map_err(|e| e.into_error()).context("cannot write the output")?.inner;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of `{}`", self.temp.display()))?;
        drop(file);
        // Under the lock: a signal now either comes before (the file is removed, the
        // rename fails) or after (the output is whole).
        let mut files = temp_files();
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot move the output into place at `{}`", self.target.display()))?;
        files.retain(|f| *f != self.temp);
        Ok(())
    }
}

/// Takes `temp` off the list of files a signal removes.
fn forget(temp: &Path) {
    temp_files().retain(|f| f != temp);
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Still holding the writer means commit did not finish: remove the partial file.
        if self.writer.is_some() || self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
        forget(&self.temp);
    }
}

/// Writes `bytes` to `target` atomically with `mode`.
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit`].
pub fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = AtomicFile::create(target)?;
    file.writer().write_all(bytes).context("cannot write the output")?;
    file.commit(mode)
}
