//! Tar headers, written by hand so that an entry's encoded size is known before its bytes.
//!
//! Every entry is one POSIX ustar header, preceded by a PAX extended header (`x`, named
//! `././@PaxHeader`) when a value does not fit ustar: a name or link target over 100
//! bytes, a size of 8 GiB or more, a large uid/gid, long owner names, or an mtime before
//! 1970. Docker, podman and skopeo (Go's archive/tar) read all of these.

use std::io::{self, Write};

/// Tar block size.
pub const BLOCK: u64 = 512;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with `size` bytes of data following the header.
    File,
    /// A directory (name ends with `/`).
    Directory,
    /// A symbolic link to `link`.
    Symlink,
}

/// The fields of one entry's header.
pub struct Header<'a> {
    /// Entry name, relative (no leading `/`); directories end with `/`.
    pub name: &'a [u8],
    /// Entry kind.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Data size (files only; 0 otherwise).
    pub size: u64,
    /// Symlink target (symlinks only).
    pub link: &'a [u8],
    /// Owner id and name, group id and name, mtime.
    pub owner: &'a Owner,
}

/// Ownership and time applied to every entry of a layer.
#[derive(Clone, Debug)]
pub struct Owner {
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time, Unix seconds.
    pub mtime: i64,
}

const NAME_LEN: usize = 100;
const OWNER_NAME_LEN: usize = 32;
/// Largest value of an 11-digit octal field (size, mtime).
const MAX_OCTAL_11: u64 = 0o77777777777;
/// Largest value of a 7-digit octal field (uid, gid).
const MAX_OCTAL_7: u64 = 0o7777777;

impl Header<'_> {
    /// Bytes the header(s) take, PAX extension included; data and its padding excluded.
    pub fn encoded_len(&self) -> u64 {
        let pax = self.pax_records();
        if pax.is_empty() {
            BLOCK
        } else {
            2 * BLOCK + padded(pax.len() as u64)
        }
    }

    /// Bytes the whole entry takes: header(s), data, padding to a block.
    pub fn entry_len(&self) -> u64 {
        self.encoded_len() + padded(self.size)
    }

    /// Writes the header(s). The caller writes `size` data bytes and [`padding`] after it.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let pax = self.pax_records();
        if !pax.is_empty() {
            let pax_owner = Owner { uid: 0, gid: 0, uname: String::new(), gname: String::new(), mtime: 0 };
            let mut block = ustar_block(b"././@PaxHeader", b'x', 0o644, pax.len() as u64, b"", &pax_owner);
            checksum(&mut block);
            out.write_all(&block)?;
            out.write_all(&pax)?;
            out.write_all(&ZEROS[..padding(pax.len() as u64)])?;
        }
        let type_flag = match self.kind {
            Kind::File => b'0',
            Kind::Directory => b'5',
            Kind::Symlink => b'2',
        };
        let mut block = ustar_block(self.name, type_flag, self.mode, self.size, self.link, self.owner);
        checksum(&mut block);
        out.write_all(&block)
    }

    fn pax_records(&self) -> Vec<u8> {
        let mut records = Vec::new();
        if self.name.len() > NAME_LEN {
            pax_record(&mut records, "path", self.name);
        }
        if self.link.len() > NAME_LEN {
            pax_record(&mut records, "linkpath", self.link);
        }
        if self.size > MAX_OCTAL_11 {
            pax_record(&mut records, "size", self.size.to_string().as_bytes());
        }
        let o = self.owner;
        if o.uid > MAX_OCTAL_7 {
            pax_record(&mut records, "uid", o.uid.to_string().as_bytes());
        }
        if o.gid > MAX_OCTAL_7 {
            pax_record(&mut records, "gid", o.gid.to_string().as_bytes());
        }
        if o.uname.len() > OWNER_NAME_LEN {
            pax_record(&mut records, "uname", o.uname.as_bytes());
        }
        if o.gname.len() > OWNER_NAME_LEN {
            pax_record(&mut records, "gname", o.gname.as_bytes());
        }
        if o.mtime < 0 || o.mtime as u64 > MAX_OCTAL_11 {
            pax_record(&mut records, "mtime", o.mtime.to_string().as_bytes());
        }
        records
    }
}

/// `size` rounded up to whole blocks.
pub fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Zero bytes needed after `size` bytes of data to reach a block boundary.
pub fn padding(size: u64) -> usize {
    (padded(size) - size) as usize
}

/// A block of zeros: padding source, and (twice) the end-of-archive marker.
pub const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// Length of the end-of-archive marker.
pub const END_LEN: u64 = 2 * BLOCK;

/// Appends `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let digits = |n: usize| n.to_string().len();
    // Adding the length's own digits can add one more digit (e.g. 99 -> 101).
    let mut len = body + digits(body);
    if body + digits(len) != len {
        len = body + digits(len);
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(name: &[u8], type_flag: u8, mode: u32, size: u64, link: &[u8], o: &Owner) -> [u8; 512] {
    let mut b = [0u8; 512];
    put_bytes(&mut b[0..100], name);
    put_octal(&mut b[100..108], u64::from(mode));
    put_octal(&mut b[108..116], o.uid.min(MAX_OCTAL_7));
    put_octal(&mut b[116..124], o.gid.min(MAX_OCTAL_7));
    put_octal(&mut b[124..136], size.min(MAX_OCTAL_11));
    put_octal(&mut b[136..148], o.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64);
    b[156] = type_flag;
    put_bytes(&mut b[157..257], link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    put_bytes(&mut b[265..297], o.uname.as_bytes());
    put_bytes(&mut b[297..329], o.gname.as_bytes());
    b
}

/// Copies as much of `value` as fits; longer values travel in a PAX record.
fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal digits, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn checksum(block: &mut [u8; 512]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { uid: 0, gid: 0, uname: "root".into(), gname: "root".into(), mtime: 1 }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [1, 5, 90, 95, 96, 97, 200, 995, 1000] {
            let mut r = Vec::new();
            pax_record(&mut r, "path", &vec![b'a'; n]);
            let text = String::from_utf8(r.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "n={n}");
        }
    }

    #[test]
    fn encoded_len_matches_written_bytes() {
        let o = owner();
        let long = vec![b'x'; 300];
        let big_owner = Owner { uid: 1 << 30, uname: "u".repeat(40), mtime: -5, ..owner() };
        let cases = [
            Header { name: b"nix/", kind: Kind::Directory, mode: 0o755, size: 0, link: b"", owner: &o },
            Header { name: &long, kind: Kind::File, mode: 0o444, size: 3, link: b"", owner: &o },
            Header { name: b"l", kind: Kind::Symlink, mode: 0o777, size: 0, link: &long, owner: &big_owner },
            Header { name: b"big", kind: Kind::File, mode: 0o444, size: 1 << 34, link: b"", owner: &o },
        ];
        for h in &cases {
            let mut out = Vec::new();
            h.write_to(&mut out).unwrap();
            assert_eq!(out.len() as u64, h.encoded_len());
        }
    }
}
