//! A small streaming tar reader: ustar, GNU and PAX headers (long names and link targets, PAX
//! `path`/`linkpath`/`size`/`uid`/`gid`/`mtime` and `SCHILY.xattr.*` records, GNU `L`/`K` long
//! names, base-256 numbers). Data is read through the same reader, so a hashing reader below it
//! sees every byte of the stream.

use std::io::{self, Read};

use crate::tar_write::BLOCK;

/// The entry types the reader reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// A type forge does not apply (GNU sparse files, volume labels, …), with its flag byte.
    Other(u8),
}

/// One entry's header, with PAX and GNU extensions already folded in.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub link: Vec<u8>,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad(msg: impl Into<String>) -> ReadError {
    ReadError::Malformed(msg.into())
}

pub(crate) struct TarReader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not yet read, and its padding.
    remaining: u64,
    padding: u64,
    done: bool,
    global_pax: Vec<(Vec<u8>, Vec<u8>)>,
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

fn parse_num(field: &[u8]) -> Result<u64, ReadError> {
    if field[0] & 0x80 != 0 {
        // GNU base-256, positive only.
        if field[0] & 0x40 != 0 {
            return Err(bad("negative base-256 number in header"));
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .ok_or_else(|| bad("numeric header field overflows"))?
                | b as u64;
        }
        return Ok(v);
    }
    let s = cstr(field);
    let s: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if s.is_empty() {
        return Ok(0);
    }
    let st = std::str::from_utf8(&s).map_err(|_| bad("non-ASCII numeric header field"))?;
    u64::from_str_radix(st, 8).map_err(|_| bad(format!("bad octal number {st:?} in header")))
}

/// PAX records as (key, value) pairs, in archive order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(data: &[u8]) -> Result<PaxRecords, ReadError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("PAX record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("PAX record length out of range"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn parse_time(v: &[u8]) -> Result<(i64, u32), ReadError> {
    let s = std::str::from_utf8(v).map_err(|_| bad("bad PAX mtime"))?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs
        .parse()
        .map_err(|_| bad(format!("bad PAX mtime {s:?}")))?;
    let mut nsec = 0u32;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        let padded = format!("{digits:0<9}");
        nsec = padded
            .parse()
            .map_err(|_| bad(format!("bad PAX mtime {s:?}")))?;
        if s.starts_with('-') && nsec > 0 {
            return Ok((secs - 1, 1_000_000_000 - nsec));
        }
    }
    Ok((secs, nsec))
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            done: false,
            global_pax: Vec::new(),
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = (n as usize).min(buf.len());
            self.inner.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads the current entry's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let k = (self.remaining as usize).min(buf.len());
        let n = self.inner.read(&mut buf[..k])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar ended inside an entry",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    fn read_block(&mut self, b: &mut [u8; BLOCK]) -> Result<bool, ReadError> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut b[got..]) {
                Ok(0) => {
                    if got == 0 {
                        return Ok(false);
                    }
                    return Err(bad("tar ended inside a header"));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn read_blob(&mut self, size: u64) -> Result<Vec<u8>, ReadError> {
        if size > 64 * 1024 * 1024 {
            return Err(bad("extended header larger than 64 MiB"));
        }
        let mut v = vec![0u8; size as usize];
        self.inner.read_exact(&mut v)?;
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.skip(pad)?;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive (two zero blocks or end of stream).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.skip(rest)?;
        self.remaining = 0;
        self.padding = 0;

        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                // End of archive. (A second zero block normally follows; trailing bytes are
                // left to the caller, who drains them for the diff_id.)
                self.done = true;
                return Ok(None);
            }
            let stored = parse_num(&block[148..156])?;
            let mut sum: u64 = 0;
            for (i, &b) in block.iter().enumerate() {
                sum += if (148..156).contains(&i) {
                    b' ' as u64
                } else {
                    b as u64
                };
            }
            if sum != stored {
                return Err(bad("header checksum mismatch"));
            }
            let flag = block[156];
            let size = parse_num(&block[124..136])?;
            match flag {
                b'x' => {
                    let data = self.read_blob(size)?;
                    pax.extend(parse_pax(&data)?);
                    continue;
                }
                b'g' => {
                    let data = self.read_blob(size)?;
                    self.global_pax = parse_pax(&data)?;
                    continue;
                }
                b'L' => {
                    let mut d = self.read_blob(size)?;
                    d.truncate(cstr(&d).len());
                    long_name = Some(d);
                    continue;
                }
                b'K' => {
                    let mut d = self.read_blob(size)?;
                    d.truncate(cstr(&d).len());
                    long_link = Some(d);
                    continue;
                }
                _ => {}
            }
            let ustar = &block[257..263] == b"ustar\0";
            let mut path = cstr(&block[0..100]).to_vec();
            if ustar {
                let prefix = cstr(&block[345..500]);
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&path);
                    path = p;
                }
            }
            if let Some(n) = long_name.take() {
                path = n;
            }
            let mut link = cstr(&block[157..257]).to_vec();
            if let Some(l) = long_link.take() {
                link = l;
            }
            let mut e = Entry {
                kind: EntryKind::Regular,
                mode: (parse_num(&block[100..108])? & 0o7777) as u32,
                uid: parse_num(&block[108..116])?,
                gid: parse_num(&block[116..124])?,
                size,
                mtime: parse_num(&block[136..148])? as i64,
                mtime_nsec: 0,
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
                path,
                link,
            };
            e.kind = match flag {
                b'0' | 0 | b'7' => {
                    if e.path.ends_with(b"/") {
                        EntryKind::Dir
                    } else {
                        EntryKind::Regular
                    }
                }
                b'1' => EntryKind::HardLink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::Char,
                b'4' => EntryKind::Block,
                b'5' => EntryKind::Dir,
                b'6' => EntryKind::Fifo,
                other => EntryKind::Other(other),
            };
            if matches!(e.kind, EntryKind::Char | EntryKind::Block) {
                e.dev_major = parse_num(&block[329..337])?;
                e.dev_minor = parse_num(&block[337..345])?;
            }
            let records: Vec<(Vec<u8>, Vec<u8>)> =
                self.global_pax.iter().cloned().chain(pax).collect();
            for (k, v) in records {
                let num = |v: &[u8]| -> Result<u64, ReadError> {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad numeric PAX record"))
                };
                match k.as_slice() {
                    b"path" => e.path = v,
                    b"linkpath" => e.link = v,
                    b"size" => e.size = num(&v)?,
                    b"uid" => e.uid = num(&v)?,
                    b"gid" => e.gid = num(&v)?,
                    b"mtime" => (e.mtime, e.mtime_nsec) = parse_time(&v)?,
                    _ => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            if let Ok(name) = std::str::from_utf8(name) {
                                e.xattrs.retain(|(n, _)| n != name);
                                e.xattrs.push((name.to_string(), v));
                            }
                        }
                    }
                }
            }
            // Only regular files carry data in practice; other types' size is skipped too.
            let data = match e.kind {
                EntryKind::Dir | EntryKind::Symlink | EntryKind::HardLink => 0,
                _ => e.size,
            };
            let data = if matches!(e.kind, EntryKind::Char | EntryKind::Block | EntryKind::Fifo) {
                0
            } else {
                data
            };
            self.remaining = data;
            self.padding = (BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64;
            if e.kind != EntryKind::Regular {
                e.size = 0;
            }
            return Ok(Some(e));
        }
    }
}
