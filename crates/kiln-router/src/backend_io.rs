//! Connections to instances, with one change to how hyper uses them: a
//! fresh connection is not read before the request has started to go out.
//!
//! hyper's client treats bytes that arrive on a connection with no request
//! written yet as an error ("received unexpected message from connection").
//! An app that answers as soon as a client connects (an `nc -l` style app,
//! as in Cloud Foundry's binary-buildpack fixtures) races with that on
//! every new connection. Holding reads back until the first write makes
//! the early answer the response to the request, which it is.

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use tower_service::Service;

/// [`HttpConnector`] whose connections are [`WriteFirst`].
#[derive(Clone)]
pub(crate) struct Connector(pub HttpConnector);

type ConnectError = <HttpConnector as Service<Uri>>::Error;

impl Service<Uri> for Connector {
    type Response = WriteFirst;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<WriteFirst, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(WriteFirst::new) })
    }
}

/// A connection that reports nothing to read until something was written.
pub(crate) struct WriteFirst {
    io: TokioIo<TcpStream>,
    wrote: bool,
    /// The read that waits for the first write.
    reader: Option<Waker>,
}

impl WriteFirst {
    fn new(io: TokioIo<TcpStream>) -> WriteFirst {
        WriteFirst {
            io,
            wrote: false,
            reader: None,
        }
    }

    fn note_written(&mut self, polled: &Poll<io::Result<usize>>) {
        if !self.wrote && matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.wrote = true;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
    }
}

impl Read for WriteFirst {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.wrote {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl Write for WriteFirst {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection for WriteFirst {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}
