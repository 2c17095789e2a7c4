//! A layer blob as the ostree importers want it: the compressed bytes from the image proxy, counted as
//! they arrive (download progress), decompressed on the thread that reads them (ostree-ext's tar
//! importers read on a blocking thread of their own, so layers decompress in parallel).

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// How a layer blob is compressed (its OCI media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Gzip,
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// `None` for media types ostree-ext itself cannot import either.
    pub(crate) fn of(media_type: &ostree_ext::oci_spec::image::MediaType) -> Option<Self> {
        use ostree_ext::oci_spec::image::MediaType;
        match media_type {
            MediaType::ImageLayerGzip => Some(Self::Gzip),
            MediaType::ImageLayerZstd => Some(Self::Zstd),
            MediaType::ImageLayer => Some(Self::None),
            MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Self::Gzip)
            }
            MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Self::None)
            }
            _ => None,
        }
    }
}

enum Decoder {
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
    None,
}

/// The decompressed tar stream of one layer; `received` counts the compressed bytes read so far.
pub(crate) struct LayerStream<R> {
    inner: R,
    received: Arc<AtomicU64>,
    decoder: Decoder,
    /// Decompressed bytes not handed out yet, from `pos`.
    out: Vec<u8>,
    pos: usize,
    finished: bool,
}

impl<R: AsyncBufRead + Unpin> LayerStream<R> {
    pub(crate) fn new(
        inner: R,
        compression: Compression,
        received: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let decoder = match compression {
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())))
            }
            Compression::Zstd => {
                Decoder::Zstd(Box::new(zstd::stream::write::Decoder::new(Vec::new())?))
            }
            Compression::None => Decoder::None,
        };
        Ok(Self {
            inner,
            received,
            decoder,
            out: Vec::new(),
            pos: 0,
            finished: false,
        })
    }

    /// Feed compressed bytes; returns how many were consumed. Output lands in `self.out`.
    fn feed(&mut self, input: &[u8]) -> std::io::Result<usize> {
        match &mut self.decoder {
            Decoder::Gzip(d) => {
                let n = d.write(input)?;
                self.out.append(d.get_mut());
                Ok(n)
            }
            Decoder::Zstd(d) => {
                let n = d.write(input)?;
                d.flush()?;
                self.out.append(d.get_mut());
                Ok(n)
            }
            Decoder::None => {
                self.out.extend_from_slice(input);
                Ok(input.len())
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.decoder {
            Decoder::Gzip(d) => {
                d.try_finish()?;
                self.out.append(d.get_mut());
            }
            Decoder::Zstd(d) => {
                d.flush()?;
                self.out.append(d.get_mut());
            }
            Decoder::None => {}
        }
        Ok(())
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for LayerStream<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.pos);
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            this.out.clear();
            this.pos = 0;
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let chunk = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
            if chunk.is_empty() {
                this.finished = true;
                this.finish()?;
                continue;
            }
            // Copy out of the borrow of `inner` before feeding the decoder.
            let chunk = chunk.to_vec();
            let used = this.feed(&chunk)?;
            if used == 0 {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "trailing data after the end of the compressed layer",
                )));
            }
            Pin::new(&mut this.inner).consume(used);
            this.received.fetch_add(used as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn roundtrip(compression: Compression, compressed: Vec<u8>) -> (Vec<u8>, u64) {
        let received = Arc::new(AtomicU64::new(0));
        // A tiny buffer, so the decoder sees the stream in many pieces.
        let inner = tokio::io::BufReader::with_capacity(7, std::io::Cursor::new(compressed));
        let mut s = LayerStream::new(inner, compression, received.clone()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        (out, received.load(Ordering::Relaxed))
    }

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[tokio::test]
    async fn gzip_zstd_and_plain_layers_decompress_and_count_the_wire_bytes() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            roundtrip(Compression::Gzip, gz.clone()).await,
            (data.clone(), gz.len() as u64)
        );
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(
            roundtrip(Compression::Zstd, zst.clone()).await,
            (data.clone(), zst.len() as u64)
        );
        assert_eq!(
            roundtrip(Compression::None, data.clone()).await,
            (data.clone(), data.len() as u64)
        );
    }

    #[tokio::test]
    async fn a_truncated_gzip_layer_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&sample()).unwrap();
        let mut gz = gz.finish().unwrap();
        gz.truncate(gz.len() / 2);
        let received = Arc::new(AtomicU64::new(0));
        let mut s = LayerStream::new(
            tokio::io::BufReader::new(std::io::Cursor::new(gz)),
            Compression::Gzip,
            received,
        )
        .unwrap();
        let mut out = Vec::new();
        assert!(s.read_to_end(&mut out).await.is_err());
    }
}
