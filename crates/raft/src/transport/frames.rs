//! The sending side of `Frames`: one long-lived stream per peer and lane that carries the
//! appends and votes of every group on this node. A unary RPC costs an HTTP/2 stream of its own
//! (headers both ways, trailers, a task on each side); with three nodes and a few groups led per
//! node, every log entry costs about four of them (an append and a commit notice per follower),
//! which was a fifth of a history node's CPU under load. On a stream each message is a few bytes
//! of framing, and every message queued while the previous frame was being written goes out
//! together in the next one, so messages of groups that replicate at the same moment share a
//! frame, and so do their answers (the receiver batches whatever is ready).
//!
//! A stream that breaks (the peer went away, restarted, or the connection failed its keepalive)
//! fails only the calls in flight on it, as `Unreachable`; the next call opens a new stream.

use std::collections::HashMap;
use std::time::Duration;

use chronicle_proto::chronicle::raft::v1::{
    FramedRequest, RaftFrame, RaftReply, framed_reply, framed_request,
    raft_transport_client::RaftTransportClient,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::MAX_MESSAGE_BYTES;

/// Most messages in one frame.
const MAX_MESSAGES_PER_FRAME: usize = 256;
/// A frame stops growing past this many bytes (it always carries at least one message), so a
/// frame of several large appends stays under the receiver's message limit.
const FRAME_BYTES_TARGET: usize = 4 * 1024 * 1024;

/// Why a framed call got no answer from the peer's group.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The stream could not be opened or broke with the call in flight.
    Unreachable(String),
    /// The peer handled the message and failed it (undecodable, deadline passed), or the
    /// caller's deadline passed first.
    Failed(String),
    /// The peer predates `Frames`: send it as a unary RPC (the request, handed back; no message
    /// was sent).
    Unimplemented(Box<framed_request::Call>),
}

struct Outgoing {
    call: framed_request::Call,
    timeout_ms: u32,
    answer: oneshot::Sender<Result<RaftReply, FrameError>>,
}

/// The handle to one open stream; clones share it. The stream closes when the last handle is
/// dropped and every call in flight has been answered.
#[derive(Clone)]
pub(crate) struct FrameSender {
    queue: mpsc::UnboundedSender<Outgoing>,
}

impl FrameSender {
    /// Opens a stream over `channel` (it dials, if need be, on a task of its own; calls queue
    /// meanwhile). `on_end` runs once the stream is gone, before the calls it failed are
    /// answered, so a caller that retries at once gets a new stream.
    pub(crate) fn open(channel: Channel, on_end: impl FnOnce() + Send + 'static) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(run_stream(channel, queued, on_end));
        Self { queue }
    }

    /// Whether the stream has ended (a new one is needed).
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Sends one message and waits for its answer, at most `timeout` (the receiver gives up
    /// after the same time).
    pub(crate) async fn call(
        &self,
        call: framed_request::Call,
        timeout: Duration,
    ) -> Result<RaftReply, FrameError> {
        let (answer, answered) = oneshot::channel();
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        self.queue
            .send(Outgoing {
                call,
                timeout_ms,
                answer,
            })
            .map_err(|_| FrameError::Unreachable("the stream to the peer closed".into()))?;
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(FrameError::Unreachable(
                "the stream to the peer closed".into(),
            )),
            Err(_) => Err(FrameError::Failed(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

type Waiting = HashMap<u64, oneshot::Sender<Result<RaftReply, FrameError>>>;

async fn run_stream(
    channel: Channel,
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    on_end: impl FnOnce() + Send + 'static,
) {
    let (frames, outbound) = mpsc::unbounded_channel::<RaftFrame>();
    let mut client = RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let opened = client
        .frames(tokio_stream::wrappers::UnboundedReceiverStream::new(
            outbound,
        ))
        .await;
    let mut waiting = Waiting::new();
    let ended = match opened {
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            // Nothing was sent: every queued call goes back to its caller.
            on_end();
            queued.close();
            while let Ok(outgoing) = queued.try_recv() {
                let call = Box::new(outgoing.call);
                let _ = outgoing.answer.send(Err(FrameError::Unimplemented(call)));
            }
            return;
        }
        Err(status) => format!("opening the stream: {status}"),
        Ok(response) => {
            let mut inbound = response.into_inner();
            pump(&mut queued, &frames, &mut inbound, &mut waiting).await
        }
    };
    tracing::debug!(reason = %ended, "Raft frame stream ended");
    fail_all(on_end, &mut queued, waiting, || {
        FrameError::Unreachable(ended.clone())
    });
}

/// Moves calls into frames and answers back to their callers until the stream breaks or
/// closes; returns why it ended.
async fn pump(
    queued: &mut mpsc::UnboundedReceiver<Outgoing>,
    frames: &mpsc::UnboundedSender<RaftFrame>,
    inbound: &mut tonic::Streaming<chronicle_proto::chronicle::raft::v1::RaftReplyFrame>,
    waiting: &mut Waiting,
) -> String {
    let mut next_id = 0u64;
    let mut open = true;
    loop {
        if !open && waiting.is_empty() {
            return "closed by this node".into();
        }
        tokio::select! {
            first = queued.recv(), if open => {
                let Some(first) = first else {
                    // Every handle is gone: answer what is in flight, then close.
                    open = false;
                    continue;
                };
                let frame = collect_frame(first, queued, &mut next_id, waiting);
                if !frame.requests.is_empty() && frames.send(frame).is_err() {
                    return "the outbound stream closed".into();
                }
            }
            message = inbound.message() => match message {
                Ok(Some(frame)) => {
                    for reply in frame.replies {
                        let Some(answer) = waiting.remove(&reply.id) else { continue };
                        let _ = answer.send(match reply.outcome {
                            Some(framed_reply::Outcome::Reply(reply)) => Ok(reply),
                            Some(framed_reply::Outcome::Failed(why)) => {
                                Err(FrameError::Failed(why))
                            }
                            None => Err(FrameError::Failed("an empty answer".into())),
                        });
                    }
                }
                Ok(None) => return "the peer closed the stream".into(),
                Err(status) => return status.to_string(),
            },
        }
    }
}

/// `first` and whatever else is queued, up to the frame's limits; each call is registered as
/// waiting under a fresh ID. Calls whose caller already gave up are dropped.
fn collect_frame(
    first: Outgoing,
    queued: &mut mpsc::UnboundedReceiver<Outgoing>,
    next_id: &mut u64,
    waiting: &mut Waiting,
) -> RaftFrame {
    let mut requests = Vec::new();
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(outgoing) = next.take() {
        if !outgoing.answer.is_closed() {
            *next_id += 1;
            let request = FramedRequest {
                id: *next_id,
                call: Some(outgoing.call),
                timeout_ms: outgoing.timeout_ms,
            };
            bytes += request.encoded_len();
            waiting.insert(*next_id, outgoing.answer);
            requests.push(request);
        }
        if requests.len() >= MAX_MESSAGES_PER_FRAME || bytes >= FRAME_BYTES_TARGET {
            break;
        }
        next = queued.try_recv().ok();
    }
    RaftFrame { requests }
}

/// Ends the stream: `on_end` first (the pool forgets it), then every call in flight or still
/// queued gets `error`.
fn fail_all(
    on_end: impl FnOnce(),
    queued: &mut mpsc::UnboundedReceiver<Outgoing>,
    waiting: Waiting,
    error: impl Fn() -> FrameError,
) {
    on_end();
    queued.close();
    for (_, answer) in waiting {
        let _ = answer.send(Err(error()));
    }
    while let Ok(outgoing) = queued.try_recv() {
        let _ = outgoing.answer.send(Err(error()));
    }
}
