//! Store files opened relative to directory descriptors, never through a symlink.
//!
//! The store is input, not trusted. Between the scan and the moment a file's bytes are
//! read, any name in it may have been replaced: by a symlink to `/etc/shadow`, by a FIFO
//! whose `open` or `read` would block forever, by another file. So nothing under the store
//! directory is opened by path. Each directory is opened relative to its parent's
//! descriptor with `O_NOFOLLOW | O_DIRECTORY`, each file the same way with `O_NONBLOCK`
//! too (a FIFO then opens at once instead of waiting for a writer), and the descriptor's
//! `fstat` is compared with what the scan recorded (type, device and inode, a file's size)
//! before a byte is read.
//!
//! Only the store directory itself (`$NIX_STORE`) is opened by path, following symlinks:
//! it is configuration, not store content.
//!
//! The system calls go through `rustix`: safe, typed wrappers (no `unsafe` here), and a
//! crate the build already had through `tempfile`; std has no `openat`/`fstatat`.

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// Which file an entry is: the same file on disk only if both numbers agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileId {
    /// Device (`st_dev`).
    pub dev: u64,
    /// Inode (`st_ino`).
    pub ino: u64,
}

impl FileId {
    /// The identity in `stat`.
    pub fn of(stat: &Stat) -> FileId {
        // `as`: the field types differ between architectures (u64 or c_ulong).
        #[allow(clippy::unnecessary_cast)]
        FileId { dev: stat.st_dev as u64, ino: stat.st_ino as u64 }
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {} inode {}", self.dev, self.ino)
    }
}

/// What kind of file `stat` describes, in words (`regular file`, `symlink`, `fifo`, …).
pub fn kind_of(stat: &Stat) -> &'static str {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device file",
        FileType::Unknown => "special file",
    }
}

/// `stat`'s file type.
pub fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// `stat`'s size in bytes (never negative for a file that exists).
pub fn size_of(stat: &Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

/// Opens the store directory by path (the one path that is trusted, see the module docs).
///
/// # Errors
/// It is missing, unreadable or not a directory.
pub fn open_store_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// `lstat` of `name` in `dir`: a symlink is described, not followed.
///
/// # Errors
/// As `fstatat`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The target of the symlink `name` in `dir`.
///
/// # Errors
/// As `readlinkat` (`EINVAL` if it is no longer a symlink).
pub fn read_link_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Opens the directory `name` in `dir`, never through a symlink, and returns it with its
/// `fstat` (the caller compares it with what it expects).
///
/// # Errors
/// As `openat` (`ELOOP`: it is a symlink; `ENOTDIR`: not a directory) or `fstat`.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<(OwnedFd, Stat)> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    Ok((fd, stat))
}

/// The flags every store file is opened with: read only, not through a symlink, and
/// without blocking on a FIFO or a device.
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// Opens `name` in `dir` for reading (see [`file_flags`]) and returns it with its
/// `fstat`, for the caller to check.
///
/// # Errors
/// As `openat` (`ELOOP`: it is a symlink) or `fstat`.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<(File, Stat)> {
    let fd = rustix::fs::openat(dir, name, file_flags(), Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    Ok((File::from(fd), stat))
}

/// Opens the relative path `rel` below `dir` for reading in one system call, with no
/// symlink in any component and nothing outside `dir` (`openat2` with
/// `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`, Linux 5.6), and returns it with its `fstat`.
/// One path walk in the kernel, as a plain `open` by path would be, where opening each
/// directory in turn would cost three system calls per directory.
///
/// # Errors
/// As `openat2`; [`unsupported`] tells when the kernel (or a seccomp filter) refuses the
/// call itself.
pub fn open_file_beneath(dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(File, Stat)> {
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH;
    let fd = rustix::fs::openat2(dir, rel, file_flags(), Mode::empty(), resolve)?;
    let stat = rustix::fs::fstat(&fd)?;
    Ok((File::from(fd), stat))
}

/// Whether `error` from [`open_file_beneath`] means `openat2` is not available: an old
/// kernel (`ENOSYS`), a container's seccomp filter (`EPERM`, `ENOSYS`), or flags it does
/// not know (`EINVAL`).
pub fn unsupported(error: &io::Error) -> bool {
    [Errno::NOSYS, Errno::PERM, Errno::INVAL].iter().any(|e| error.raw_os_error() == Some(e.raw_os_error()))
}

/// One entry of a listed directory.
pub struct Child {
    /// Its name.
    pub name: Box<[u8]>,
    /// Its `lstat`; `None` for a directory (by the type `getdents` gave), which the
    /// caller opens with [`open_dir_at`] and `fstat`s instead: one system call less.
    pub stat: Option<Stat>,
}

/// The entries of the directory `fd` (not `.` or `..`), sorted by name bytes; and the
/// directory, whose descriptor opens the children.
///
/// # Errors
/// Reading the directory or an entry's `lstat` fails.
pub fn list_dir(fd: OwnedFd) -> io::Result<(Dir, Vec<Child>)> {
    let mut dir = Dir::new(fd)?;
    let mut children: Vec<Child> = Vec::new();
    while let Some(item) = dir.read() {
        let item = item?;
        let name = item.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let stat = match item.file_type() {
            FileType::Directory => None,
            _ => Some(lstat_at(dir.fd()?, name)?),
        };
        children.push(Child { name: Box::from(name), stat });
    }
    children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok((dir, children))
}

/// What is at `name` in `dir` now, for an error message: `a symlink to `/etc/passwd``,
/// `a fifo`, `nothing`.
pub fn describe(dir: BorrowedFd<'_>, name: &[u8]) -> String {
    match lstat_at(dir, name) {
        Ok(stat) if file_type(&stat) == FileType::Symlink => match read_link_at(dir, name) {
            Ok(target) => format!("a symlink to `{}`", String::from_utf8_lossy(&target)),
            Err(_) => "a symlink".into(),
        },
        Ok(stat) => format!("a {} ({})", kind_of(&stat), FileId::of(&stat)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "nothing".into(),
        Err(e) => format!("unreadable ({e})"),
    }
}
