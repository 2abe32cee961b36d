//! Capturing a guest's stdout/stderr in memory without ever failing the
//! guest: the last `capacity` bytes are kept, older ones are dropped.
//! (wasmtime-wasi's `MemoryOutputPipe` traps the guest once it is full,
//! which would turn a chatty plugin into a failed one.)

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// An in-memory output stream that keeps the tail of what was written.
#[derive(Clone)]
pub(crate) struct CapturePipe {
    inner: Arc<Mutex<Captured>>,
    capacity: usize,
}

struct Captured {
    bytes: VecDeque<u8>,
    dropped: usize,
}

impl CapturePipe {
    /// A pipe keeping at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        CapturePipe {
            inner: Arc::new(Mutex::new(Captured {
                bytes: VecDeque::new(),
                dropped: 0,
            })),
            capacity: capacity.max(1),
        }
    }

    fn push(&self, buf: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let buf = if buf.len() > self.capacity {
            c.dropped += buf.len() - self.capacity;
            &buf[buf.len() - self.capacity..]
        } else {
            buf
        };
        let overflow = (c.bytes.len() + buf.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            c.bytes.drain(..overflow);
            c.dropped += overflow;
        }
        c.bytes.extend(buf);
    }

    /// What was captured, as text; prefixed with a note if bytes were dropped.
    pub(crate) fn text(&self) -> String {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = c.bytes.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        let s = String::from_utf8_lossy(&v).into_owned();
        if c.dropped > 0 {
            format!("[{} earlier bytes dropped]\n{s}", c.dropped)
        } else {
            s
        }
    }
}

impl IsTerminal for CapturePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturePipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for CapturePipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::CapturePipe;

    #[test]
    fn keeps_the_tail() {
        let p = CapturePipe::new(8);
        p.push(b"hello ");
        assert_eq!(p.text(), "hello ");
        p.push(b"world!");
        assert_eq!(p.text(), "[4 earlier bytes dropped]\no world!");
        p.push(b"0123456789");
        assert_eq!(p.text(), "[14 earlier bytes dropped]\n23456789");
    }
}
