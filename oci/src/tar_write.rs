//! A small, deterministic tar writer: ustar headers, with PAX extended headers whenever a value
//! does not fit (long names and link targets, large sizes and ids, out-of-range mtimes) and for
//! xattrs (`SCHILY.xattr.*`). Nothing host-specific reaches the output: no user or group names,
//! no access or change times, no pids in PAX header names.

use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;

/// The entry types forge writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// Everything a header says about one entry.
pub(crate) struct Header<'a> {
    /// Relative path, no leading `/` or `./`; directories without the trailing slash.
    pub path: &'a [u8],
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link: &'a [u8],
    pub dev_major: u64,
    pub dev_minor: u64,
    /// Sorted by name.
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// Appends one `"<len> key=value\n"` PAX record, whose length counts its own digits.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = base + 1;
    loop {
        let total = base + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `v` as zero-padded octal in `field.len() - 1` digits plus NUL; false when it does not fit.
fn put_octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// GNU base-256 encoding for numeric fields too large for octal (used only for device numbers,
/// which PAX has no keyword for).
fn put_base256(field: &mut [u8], v: u64) {
    for b in field.iter_mut() {
        *b = 0;
    }
    let n = field.len();
    for (i, byte) in v.to_be_bytes().iter().rev().enumerate() {
        if i < n {
            field[n - 1 - i] = *byte;
        }
    }
    field[0] |= 0x80;
}

fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

// One argument per header field, in the order they appear in the block.
#[allow(clippy::too_many_arguments)]
fn raw_header(
    name: &[u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u64, u64),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_octal(&mut h[100..108], mode as u64 & 0o7777);
    put_octal(&mut h[108..116], uid);
    put_octal(&mut h[116..124], gid);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[156] = flag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if !put_octal(&mut h[329..337], dev.0) {
        put_base256(&mut h[329..337], dev.0);
    }
    if !put_octal(&mut h[337..345], dev.1) {
        put_base256(&mut h[337..345], dev.1);
    }
    h
}

/// The tar stream writer. Counts bytes so callers can pad and check sizes.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    /// Data bytes still owed for the current regular-file entry.
    pending: u64,
    /// Bytes of the current entry's data written so far (for padding).
    written_in_entry: u64,
}

const OCTAL_MAX_7: u64 = 0o7777777;
const OCTAL_MAX_11: u64 = 0o77777777777;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            pending: 0,
            written_in_entry: 0,
        }
    }

    /// Writes the header (and its PAX header when needed). For regular files the caller then
    /// writes exactly `size` bytes with [`TarWriter::write_data`] and calls [`TarWriter::end_entry`].
    pub fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        if self.pending != 0 {
            return Err(io::Error::other(
                "tar entry data was not completely written",
            ));
        }
        let mut name = h.path.to_vec();
        if h.kind == Kind::Dir && !name.ends_with(b"/") {
            name.push(b'/');
        }
        let mut pax = Vec::new();
        if name.len() > 100 {
            pax_record(&mut pax, "path", &name);
        }
        if h.link.len() > 100 {
            pax_record(&mut pax, "linkpath", h.link);
        }
        if h.uid > OCTAL_MAX_7 {
            pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
        }
        if h.gid > OCTAL_MAX_7 {
            pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
        }
        if h.size > OCTAL_MAX_11 {
            pax_record(&mut pax, "size", h.size.to_string().as_bytes());
        }
        if h.mtime < 0 || h.mtime as u64 > OCTAL_MAX_11 {
            pax_record(&mut pax, "mtime", h.mtime.to_string().as_bytes());
        }
        for (k, v) in h.xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
        }
        let clamp = |v: u64, max: u64| if v > max { 0 } else { v };
        let mtime = if h.mtime < 0 || h.mtime as u64 > OCTAL_MAX_11 {
            0
        } else {
            h.mtime as u64
        };
        if !pax.is_empty() {
            // A deterministic, human-readable name for the extended header; readers ignore it.
            let base = name
                .rsplit(|&b| b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"entry");
            let mut pname = b"PaxHeaders/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(88)]);
            let mut block = raw_header(
                &pname,
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                mtime,
                b"",
                (0, 0),
            );
            checksum(&mut block);
            self.out.write_all(&block)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let size = if h.kind == Kind::Regular { h.size } else { 0 };
        let mut block = raw_header(
            &name,
            h.kind.flag(),
            h.mode,
            clamp(h.uid, OCTAL_MAX_7),
            clamp(h.gid, OCTAL_MAX_7),
            clamp(size, OCTAL_MAX_11),
            mtime,
            h.link,
            (h.dev_major, h.dev_minor),
        );
        checksum(&mut block);
        self.out.write_all(&block)?;
        self.pending = size;
        self.written_in_entry = 0;
        Ok(())
    }

    /// Writes file data; never more than the header promised.
    pub fn write_data(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() as u64 > self.pending {
            return Err(io::Error::other("more data than the tar header announced"));
        }
        self.out.write_all(buf)?;
        self.pending -= buf.len() as u64;
        self.written_in_entry += buf.len() as u64;
        Ok(())
    }

    /// Bytes still owed for the current entry.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Pads the current entry's data to a block boundary.
    pub fn end_entry(&mut self) -> io::Result<()> {
        if self.pending != 0 {
            return Err(io::Error::other(
                "tar entry data was not completely written",
            ));
        }
        let n = self.written_in_entry;
        self.written_in_entry = 0;
        self.pad(n)
    }

    fn pad(&mut self, n: u64) -> io::Result<()> {
        let rem = (n % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        // 1 + 4 + 1 + 92 + 1 = 99 → with 2 digits 101 → needs 3 digits → 102.
        pax_record(&mut v, "path", &[b'x'; 92]);
        assert_eq!(&v[..4], b"102 ");
        assert_eq!(v.len(), 102);
    }

    #[test]
    fn octal_overflow_is_reported() {
        let mut f = [0u8; 8];
        assert!(put_octal(&mut f, 0o7777777));
        assert_eq!(&f, b"7777777\0");
        assert!(!put_octal(&mut f, 0o10000000));
    }
}
