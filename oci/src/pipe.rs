//! Compression on a worker thread, so reading files, building tar headers and hashing the
//! diff_id overlap with compressing (as `tar | gzip` overlaps two processes).
//!
//! The caller's thread keeps the output writer (which need not be `Send`): the worker sends
//! compressed chunks back, and the caller hashes and writes them whenever it hands over more
//! input, and at the end. Channels are bounded on the way in, so memory stays at a few chunks,
//! and spent buffers travel back to be reused (fresh allocations of this size would be new
//! mappings, each page faulted in again).

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use crate::compression::{Compression, Encoder};
use crate::{Digest, Hasher};

const CHUNK: usize = 512 * 1024;

/// A `Write` that compresses on a worker thread and writes the result to `out`.
pub(crate) struct CompressPipe<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    to_worker: Option<SyncSender<Vec<u8>>>,
    from_worker: Receiver<Vec<u8>>,
    /// Input buffers the worker is done with.
    spare_in: Receiver<Vec<u8>>,
    /// Output buffers written out, for the worker to refill.
    spare_out: mpsc::Sender<Vec<u8>>,
    /// The worker returns the digest and size of the compressed stream it produced.
    worker: Option<JoinHandle<io::Result<(Digest, u64)>>>,
}

/// Collects encoder output into chunks and ships them to the caller.
struct ChunkOut {
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    hasher: Hasher,
    size: u64,
}

impl Write for ChunkOut {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.hasher.update(b);
        self.size += b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            let next = self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK + 64 * 1024));
            let full = std::mem::replace(&mut self.buf, next);
            self.tx
                .send(full)
                .map_err(|_| io::Error::other("layer writer went away"))?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> CompressPipe<W> {
    pub fn new(c: Compression, out: W) -> io::Result<CompressPipe<W>> {
        c.validate()
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        let (to_worker, inbox) = mpsc::sync_channel::<Vec<u8>>(4);
        let (back, from_worker) = mpsc::channel::<Vec<u8>>();
        let (spare_in_tx, spare_in) = mpsc::channel::<Vec<u8>>();
        let (spare_out, spare_out_rx) = mpsc::channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("forge-compress".into())
            .spawn(move || {
                let sink = ChunkOut {
                    buf: Vec::with_capacity(CHUNK + 64 * 1024),
                    tx: back,
                    spare: spare_out_rx,
                    hasher: Hasher::new(),
                    size: 0,
                };
                let mut enc = Encoder::new(c, sink)?;
                for mut chunk in inbox {
                    enc.write_all(&chunk)?;
                    chunk.clear();
                    // The producer may have finished already; then the buffer is just freed.
                    let _ = spare_in_tx.send(chunk);
                }
                let mut sink = enc.finish()?;
                if !sink.buf.is_empty() {
                    let rest = std::mem::take(&mut sink.buf);
                    sink.tx
                        .send(rest)
                        .map_err(|_| io::Error::other("layer writer went away"))?;
                }
                Ok((sink.hasher.finish(), sink.size))
            })?;
        Ok(CompressPipe {
            out: Some(out),
            buf: Vec::with_capacity(CHUNK),
            to_worker: Some(to_worker),
            from_worker,
            spare_in,
            spare_out,
            worker: Some(worker),
        })
    }

    /// Writes out whatever compressed output is ready, without waiting.
    fn drain_ready(&mut self) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("pipe already finished"))?;
        loop {
            match self.from_worker.try_recv() {
                Ok(mut chunk) => {
                    out.write_all(&chunk)?;
                    chunk.clear();
                    let _ = self.spare_out.send(chunk);
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.fresh_buf();
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self
            .to_worker
            .as_ref()
            .ok_or_else(|| io::Error::other("pipe already finished"))?;
        if tx.send(full).is_err() {
            // The worker stopped: its error says why.
            return Err(self
                .join_worker()
                .err()
                .unwrap_or_else(|| io::Error::other("compressor stopped")));
        }
        self.drain_ready()
    }

    fn fresh_buf(&self) -> Vec<u8> {
        self.spare_in
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK))
    }

    fn join_worker(&mut self) -> io::Result<(Digest, u64)> {
        self.to_worker = None;
        match self.worker.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("compressor thread panicked"))?,
            None => Err(io::Error::other("compressor already finished")),
        }
    }

    /// Flushes the codec trailer through to `out`; returns the digest and size of the
    /// compressed stream, and `out`.
    pub fn finish(mut self) -> io::Result<(Digest, u64, W)> {
        self.ship()?;
        self.to_worker = None; // closes the worker's inbox
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("pipe already finished"))?;
        // Receive until the worker drops its sender (it has then finished the stream).
        for chunk in self.from_worker.iter() {
            out.write_all(&chunk)?;
        }
        let (d, n) = self.join_worker()?;
        Ok((d, n, out))
    }
}

impl<W: Write> Write for CompressPipe<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && b.len() >= CHUNK {
            // Large writes go in one piece.
            self.buf.extend_from_slice(b);
            self.ship()?;
            return Ok(b.len());
        }
        let room = CHUNK - self.buf.len();
        let n = room.min(b.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= CHUNK {
            self.ship()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for CompressPipe<W> {
    fn drop(&mut self) {
        // On an abandoned layer, stop the worker; its result no longer matters.
        self.to_worker = None;
        while self.from_worker.recv().is_ok() {}
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}
