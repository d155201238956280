//! File outputs that appear whole or not at all.
//!
//! Bytes go to a temporary file in the target's directory (so the final rename stays on
//! one file system, as it must inside the Nix store) and are renamed into place only
//! after the last byte is written. On any error, or a drop without commit, the temporary
//! file is removed: nothing is left at or next to the out path.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file being written to a temporary name.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
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
        let file = File::create(&temp)
            .with_context(|| format!("cannot create `{}` (for output `{}`)", temp.display(), target.display()))?;
        Ok(AtomicFile { target: target.to_path_buf(), temp, writer: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// The writer for the file's bytes.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("writer is present until commit") // invariant: only commit takes it
    }

    /// Flushes, sets `mode` and renames the file into place.
    ///
    /// # Errors
    /// Flushing, chmod or rename fails (the temporary file is then removed).
    pub fn commit(mut self, mode: u32) -> Result<()> {
        let writer = self.writer.take().expect("writer is present until commit");
        let file = writer.into_inner().map_err(|e| e.into_error()).context("cannot write the output")?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set permissions of `{}`", self.temp.display()))?;
        drop(file);
        fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot move the output into place at `{}`", self.target.display()))?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Still holding the writer means commit did not finish: remove the partial file.
        if self.writer.is_some() || self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
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
