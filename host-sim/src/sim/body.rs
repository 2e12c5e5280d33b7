//! Bodies as streams: where request and response data come from and where it goes. Replay
//! hands over whole bodies ([`ChunkList`], [`Buffered`]); serve streams them over sockets, so
//! the filter sees each chunk as it arrives and the client gets each chunk as it is released.

use super::{UpstreamReply, UpstreamRequest};
use crate::abi::pairs::Pairs;

/// A body arriving chunk by chunk, in the shape the codec delivers it to the filter.
pub trait BodySource: Send {
    /// No body at all: the headers carry end-of-stream.
    fn is_empty(&self) -> bool;
    /// Blocks for the next chunk: `(data, last)`; `None` after the last one. The last chunk
    /// carries end-of-stream unless trailers follow.
    fn next_chunk(&mut self) -> Option<(Vec<u8>, bool)>;
    /// Without blocking: everything that arrived while the filter held the headers, as one
    /// chunk (Envoy buffers it and delivers it in one callback when the headers continue).
    fn take_arrived(&mut self) -> Option<(Vec<u8>, bool)>;
    /// The sender broke off mid-body (the upstream request must not look complete).
    fn aborted(&self) -> bool {
        false
    }
}

/// A body that is already complete: replay lines, local replies, stub upstream answers.
#[derive(Debug, Default)]
pub struct ChunkList {
    chunks: std::collections::VecDeque<(Vec<u8>, bool)>,
}

impl ChunkList {
    /// Chunks as given. Empty chunks carry nothing, except a final one after data when no
    /// trailers follow: Envoy's HTTP/1 codec delivers a body as data (eos=false) and then an
    /// empty end-of-stream chunk.
    pub fn new(chunks: &[Vec<u8>], has_trailers: bool) -> Self {
        let has_data = chunks.iter().any(|c| !c.is_empty());
        let n = chunks.len();
        let kept: Vec<Vec<u8>> = if has_data {
            chunks
                .iter()
                .enumerate()
                .filter(|(i, c)| !c.is_empty() || (i + 1 == n && !has_trailers))
                .map(|(_, c)| c.clone())
                .collect()
        } else {
            Vec::new()
        };
        let count = kept.len();
        Self {
            chunks: kept
                .into_iter()
                .enumerate()
                .map(|(i, c)| (c, i + 1 == count))
                .collect(),
        }
    }

    /// An upstream body as the upstream codec delivers it: the data, then an empty
    /// end-of-stream chunk (or the data alone when trailers follow).
    pub fn upstream(body: Vec<u8>, has_trailers: bool) -> Self {
        if body.is_empty() {
            return Self::default();
        }
        let chunks = if has_trailers {
            vec![body]
        } else {
            vec![body, Vec::new()]
        };
        Self::new(&chunks, has_trailers)
    }

    /// A whole body in one end-of-stream chunk (local replies).
    pub fn whole(body: Vec<u8>) -> Self {
        Self::new(&[body], false)
    }
}

impl BodySource for ChunkList {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn next_chunk(&mut self) -> Option<(Vec<u8>, bool)> {
        self.chunks.pop_front()
    }

    fn take_arrived(&mut self) -> Option<(Vec<u8>, bool)> {
        if self.chunks.is_empty() {
            return None;
        }
        let data = self.chunks.drain(..).flat_map(|(c, _)| c).collect();
        Some((data, true))
    }
}

/// How the origin answered a streamed exchange.
pub enum StreamedReply {
    Response {
        status: u16,
        headers: Pairs,
        body: Box<dyn BodySource>,
        trailers: Pairs,
    },
    ConnectFailure,
    Timeout,
}

/// One upstream request in flight: its head went out when the filter released the request
/// headers; body data follows as the filter releases it.
pub trait UpstreamExchange {
    fn write(&mut self, data: &[u8]);
    /// The request is complete (with its trailers): wait for the origin's answer.
    fn finish(self: Box<Self>, trailers: Pairs) -> StreamedReply;
}

/// Where the filtered response goes as it is released (serve: the client's socket).
pub trait ResponseSink {
    /// The response head as the filter left it (pseudo-headers removed), the moment the filter
    /// releases it; `end_of_stream`: no body follows.
    fn head(&mut self, status: u16, headers: &Pairs, end_of_stream: bool);
    /// Body data the filter released.
    fn data(&mut self, chunk: Vec<u8>);
}

/// An exchange over an [`Upstream`](super::Upstream) that only answers whole requests:
/// collects the body and sends it all at `finish`.
pub struct Buffered<'a, U: ?Sized> {
    pub upstream: &'a mut U,
    pub request: UpstreamRequest,
    pub address: Option<String>,
}

impl<U: super::Upstream + ?Sized> UpstreamExchange for Buffered<'_, U> {
    fn write(&mut self, data: &[u8]) {
        self.request.body.extend_from_slice(data);
    }

    fn finish(mut self: Box<Self>, trailers: Pairs) -> StreamedReply {
        self.request.trailers = trailers;
        match self.upstream.send(&self.request, self.address.as_deref()) {
            UpstreamReply::Response {
                status,
                headers,
                body,
                trailers,
            } => StreamedReply::Response {
                status,
                headers,
                body: Box::new(ChunkList::upstream(body, !trailers.is_empty())),
                trailers,
            },
            UpstreamReply::ConnectFailure => StreamedReply::ConnectFailure,
            UpstreamReply::Timeout => StreamedReply::Timeout,
        }
    }
}

/// Reads a body to its end (for paths that do not stream: pass-through without a filter).
pub fn collect(source: &mut dyn BodySource) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((chunk, _)) = source.next_chunk() {
        out.extend_from_slice(&chunk);
    }
    out
}
