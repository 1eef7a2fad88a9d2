//! Writing a file around the page cache (`O_DIRECT`), for copies that are kept in case and
//! hardly ever read: a cluster peer's copy of a queued upload, which is read only if its
//! sender dies before the object store has the binary.
//!
//! A buffered write copies every byte into the kernel's page cache (allocating its pages) and
//! the writeback then sends them to the disk; a direct write sends the bytes to the disk from
//! this process's buffer, with no copy and no cache pages. On this project's test machines the
//! page-cache copy is the largest single cost of a queued upload (docs/benchmarks.md, "The
//! cluster queue"), and a copy nobody reads gains nothing from the cache.
//!
//! A direct write needs its buffer, its length and its file offset aligned to the device's
//! block size; [`ALIGN`] (4 KiB) is a multiple of every common one. The bytes are gathered in an
//! aligned buffer and written a full buffer at a time; the last, partial block is padded with
//! zeros and the file truncated to its length afterwards. Where the filesystem refuses direct
//! I/O (tmpfs, some network filesystems) or refuses an alignment, the writer falls back to
//! buffered writes for the rest of the file: the bytes and the durability (the caller's fsync)
//! are the same either way.

use std::fs::File;
use std::io::{self, Write};

use rustix::fs::OFlags;

/// The alignment of direct writes' buffers, lengths and offsets.
const ALIGN: usize = 4096;

/// Writes one file, around the page cache where the filesystem allows.
pub struct UncachedWriter {
    file: File,
    /// Holds the aligned buffer at `start`.
    backing: Vec<u8>,
    start: usize,
    capacity: usize,
    /// Bytes gathered in the buffer.
    len: usize,
    /// Bytes written to the file so far.
    written: u64,
    /// Whether the file is open for direct I/O.
    direct: bool,
}

impl std::fmt::Debug for UncachedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UncachedWriter")
            .field("written", &self.written)
            .field("gathered", &self.len)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl UncachedWriter {
    /// A writer that writes `capacity` bytes (a multiple of [`ALIGN`]) per call.
    pub fn new(file: File, capacity: usize) -> Self {
        let capacity = capacity.next_multiple_of(ALIGN).max(ALIGN);
        let backing = vec![0u8; capacity + ALIGN];
        let start = backing.as_ptr().align_offset(ALIGN);
        let direct = start < ALIGN && set_direct(&file, true).is_ok();
        Self {
            file,
            start: if direct { start } else { 0 },
            backing,
            capacity,
            len: 0,
            written: 0,
            direct,
        }
    }

    /// Whether the bytes go around the page cache (false: the filesystem refused it).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (self.capacity - self.len).min(data.len());
            let at = self.start + self.len;
            self.backing[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == self.capacity {
                self.write_out(self.capacity)?;
                self.len = 0;
            }
        }
        Ok(())
    }

    /// Writes what is gathered (the last block padded, then cut off again) and returns the
    /// file, not yet fsynced.
    pub fn finish(mut self) -> io::Result<File> {
        let len = self.len;
        if len > 0 {
            let padded = if self.direct {
                len.next_multiple_of(ALIGN)
            } else {
                len
            };
            let at = self.start;
            self.backing[at + len..at + padded].fill(0);
            self.write_out(padded)?;
            if padded != len {
                self.written -= (padded - len) as u64;
                self.file.set_len(self.written)?;
            }
        }
        Ok(self.file)
    }

    /// Writes the buffer's first `n` bytes at the end of the file.
    fn write_out(&mut self, n: usize) -> io::Result<()> {
        let mut done = 0;
        while done < n {
            let from = self.start + done;
            match self.file.write(&self.backing[from..self.start + n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    done += k;
                    self.written += k as u64;
                    // A short direct write leaves the rest unaligned: go on buffered.
                    if self.direct && done < n && done % ALIGN != 0 {
                        self.go_buffered()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if self.direct
                        && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    self.go_buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn go_buffered(&mut self) -> io::Result<()> {
        set_direct(&self.file, false)?;
        self.direct = false;
        Ok(())
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(dir: &std::path::Path, sizes: &[usize], capacity: usize) -> (Vec<u8>, bool) {
        let path = dir.join("f");
        let file = File::create(&path).expect("create");
        let mut writer = UncachedWriter::new(file, capacity);
        let direct = writer.is_direct();
        let mut expected = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            writer.write_all(&chunk).expect("write");
            expected.extend_from_slice(&chunk);
        }
        writer.finish().expect("finish").sync_all().expect("fsync");
        assert_eq!(std::fs::read(&path).expect("read"), expected);
        (expected, direct)
    }

    #[test]
    fn any_length_is_written_whole_and_exact() {
        // The direct path where the temporary folder's filesystem takes it (ext4, xfs; tmpfs
        // since Linux 6.6). Lengths below,
        // at and around the alignment and the buffer, in chunks of odd sizes.
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[&[usize]] = &[
            &[],
            &[1],
            &[4095],
            &[4096],
            &[4097],
            &[8192, 1],
            &[3000, 3000, 3000, 7000],
            &[16384, 16384, 16384, 16384, 5],
            &[100_000, 7, 65_536],
        ];
        let mut direct = false;
        for sizes in cases {
            direct |= written(dir.path(), sizes, 16384).1;
        }
        if !direct {
            eprintln!("note: this filesystem refused O_DIRECT; the buffered fallback was tested");
        }
    }

    #[test]
    fn a_switch_to_buffered_writes_midway_keeps_every_byte() {
        // What a refusal of direct I/O leads to (tmpfs took O_DIRECT before Linux 6.6 refused
        // it; some network filesystems still do): the rest of the file is written buffered,
        // whether the switch comes before the first write, after a full buffer or with a
        // partial block gathered.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        for switch_after in [0usize, 8192, 8192 + 100] {
            let mut writer = UncachedWriter::new(File::create(&path).expect("create"), 8192);
            let first: Vec<u8> = (0..switch_after).map(|j| (j % 251) as u8).collect();
            writer.write_all(&first).expect("write");
            writer.go_buffered().expect("buffered");
            assert!(!writer.is_direct());
            let rest: Vec<u8> = (0..20_000).map(|j| (j % 241) as u8).collect();
            writer.write_all(&rest).expect("write");
            writer.finish().expect("finish").sync_all().expect("fsync");
            assert_eq!(std::fs::read(&path).expect("read"), [first, rest].concat());
        }
    }
}
