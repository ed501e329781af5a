//! Bytes in → frame → what to do: the SPOP session rules of one connection, with no
//! I/O and no runtime. The connection feeds it bytes and events (peer closed, timer
//! fired, agent stopping) and does what each [`Step`] or [`Close`] says.
//!
//! The rules (docs/spop.md#session-rules):
//! - the first frame must be HAPROXY-HELLO; its checks pick the DISCONNECT status
//!   (5 no version, 8 unsupported version, 6 no max-frame-size, 9 bad size);
//! - the read limit is 4 096 until the handshake, the negotiated size after;
//! - a health-check HELLO gets AGENT-HELLO, then a silent close;
//! - after HELLO only NOTIFY and HAPROXY-DISCONNECT are welcome: a second HELLO or
//!   an agent frame is status 4, HAPROXY-DISCONNECT is answered with status 0;
//! - a frame without FIN (or a type-0 continuation) is status 10, one over the limit
//!   status 3, any other malformation status 4;
//! - EOF, ECONNRESET and EPIPE are normal closes (HAProxy 3.1+ closes with RST).
//!
//! Each frame header is decoded once, here; a NOTIFY's payload is decoded by
//! whoever runs it ([`Notify::messages`]), so a slow handler never holds the reader.
//! Each frame is copied out of the read buffer, so the buffer is one allocation of a
//! known size, charged to the buffer budget by the connection ([`crate::budget`]),
//! and a NOTIFY in flight holds only its own bytes.

use std::io::ErrorKind;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{HaproxyHello, Header, PRE_HELLO_MAX_FRAME_SIZE, decode_messages, read_frame};
use super::{DecodeError, Frame, FrameType, Message, Status, data};
use crate::budget::Charge;

/// The read buffer a new connection starts with: a whole HAPROXY-HELLO fits.
pub const HELLO_BUFFER: usize = 512;

/// One connection's protocol state and its read buffer.
#[derive(Debug)]
pub struct Session {
    buf: BytesMut,
    phase: Phase,
    /// Our ceiling for max-frame-size (HAProxy's value is used when lower).
    ceiling: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for HAPROXY-HELLO.
    Hello,
    /// Handshake done: NOTIFYs flow, frames are bounded by the negotiated size.
    Open { max: u32 },
    /// The health check's AGENT-HELLO went out; the next step is the close.
    Healthcheck,
    /// A [`Close`] was returned: nothing more comes out.
    Closed,
}

/// What the connection does next with the bytes it has read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write this frame (the AGENT-HELLO), whole, in one write.
    Send(Bytes),
    /// Run the handler on this NOTIFY and send its ACK when ready.
    Notify(Notify),
    /// Close the connection, as [`Close`] says.
    Close(Close),
}

/// Why and how a connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The peer closed the socket (EOF, RST, EPIPE): nothing to send.
    PeerClosed,
    /// A read failed in some other way before the handshake: nothing to send.
    ReadFailed(ErrorKind),
    /// HAPROXY-DISCONNECT: answer AGENT-DISCONNECT 0.
    PeerDisconnect,
    /// The health check has its AGENT-HELLO: close without a DISCONNECT.
    Healthcheck,
    /// A protocol error or a timeout: AGENT-DISCONNECT with this status.
    Error(Status),
    /// The agent stops before the handshake: close without a word.
    Stopped,
    /// The agent stops: let in-flight NOTIFYs send their ACKs, then
    /// AGENT-DISCONNECT 0.
    Shutdown,
}

/// How a connection ended (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// HAProxy closed the socket (EOF, RST, EPIPE) or said DISCONNECT.
    Peer,
    /// Health-check HELLO answered.
    Healthcheck,
    /// We sent AGENT-DISCONNECT with this status.
    Disconnected(Status),
    /// Shut down by the agent; AGENT-DISCONNECT 0 was sent once past the handshake.
    Shutdown,
    /// Some other I/O error.
    Io(ErrorKind),
}

impl Close {
    /// The status of the AGENT-DISCONNECT to send, if any.
    pub fn reply(self) -> Option<Status> {
        match self {
            Close::PeerDisconnect | Close::Shutdown => Some(Status::Normal),
            Close::Error(status) => Some(status),
            Close::PeerClosed | Close::ReadFailed(_) | Close::Healthcheck | Close::Stopped => None,
        }
    }

    /// Whether in-flight NOTIFYs finish (and their ACKs go out) before the reply.
    pub fn drain(self) -> bool {
        self == Close::Shutdown
    }

    /// How the connection ended, for logs.
    pub fn closed(self) -> Closed {
        match self {
            Close::PeerClosed | Close::PeerDisconnect => Closed::Peer,
            Close::ReadFailed(kind) => Closed::Io(kind),
            Close::Healthcheck => Closed::Healthcheck,
            Close::Error(status) => Closed::Disconnected(status),
            Close::Stopped | Close::Shutdown => Closed::Shutdown,
        }
    }
}

/// One NOTIFY, its header already decoded; the payload is decoded by its task.
#[derive(Debug, PartialEq, Eq)]
pub struct Notify {
    /// The whole frame, length prefix included.
    frame: Bytes,
    header: Header,
    /// The frame's bytes in the buffer budget, given back when the NOTIFY is dropped.
    charge: Option<Charge>,
}

impl Notify {
    /// The frame's size in bytes, length prefix included.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame is empty (never: a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Keeps `charge` until this NOTIFY is dropped.
    pub fn hold(&mut self, charge: Charge) {
        self.charge = Some(charge);
    }

    /// The stream-id the ACK must carry.
    pub fn stream_id(&self) -> u64 {
        self.header.stream_id
    }

    /// The frame-id the ACK must carry.
    pub fn frame_id(&self) -> u64 {
        self.header.frame_id
    }

    /// Decodes the messages, borrowing from the frame.
    ///
    /// # Errors
    /// A malformed payload; the connection then closes with status 4
    /// ([`Session::notify_invalid`]).
    pub fn messages(&self) -> Result<Vec<Message<'_>>, DecodeError> {
        decode_messages(&self.frame[4 + self.header.payload_offset..])
    }
}

impl Session {
    /// A session waiting for HAPROXY-HELLO; `ceiling` caps the negotiated frame size.
    pub fn new(ceiling: u32) -> Session {
        Session {
            buf: BytesMut::with_capacity(HELLO_BUFFER),
            phase: Phase::Hello,
            ceiling,
        }
    }

    /// Where the connection puts the bytes it reads.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether the handshake is done and NOTIFYs may come.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// The negotiated max-frame-size (4 096 until the handshake): the limit for
    /// every frame read, and for every ACK written.
    pub fn max_frame_size(&self) -> u32 {
        match self.phase {
            Phase::Open { max } => max,
            _ => PRE_HELLO_MAX_FRAME_SIZE,
        }
    }

    /// The next step for the bytes buffered so far, or `None` when more bytes are
    /// needed (or the session is closed).
    pub fn next_step(&mut self) -> Option<Step> {
        let limit = match self.phase {
            Phase::Closed => return None,
            Phase::Healthcheck => return Some(Step::Close(self.close(Close::Healthcheck))),
            Phase::Hello => PRE_HELLO_MAX_FRAME_SIZE,
            Phase::Open { max } => max,
        };
        let frame = match read_frame(&self.buf, limit) {
            Ok(None) => return None,
            Ok(Some(n)) => {
                let frame = Bytes::copy_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                frame
            }
            Err(e) => return Some(Step::Close(self.close(Close::Error(e.status())))),
        };
        let step = match Header::decode(&frame[4..]) {
            Err(e) => Err(Close::Error(e.status())),
            Ok(header) if self.phase == Phase::Hello => self.hello(&frame, header),
            Ok(header) => open(frame, header),
        };
        Some(step.unwrap_or_else(|close| Step::Close(self.close(close))))
    }

    /// How many bytes the read buffer must hold for the frame being read: its
    /// length prefix, and once that is in, the whole frame (never more than the
    /// read limit allows; a longer prefix closes the session at the next step).
    pub fn wanted(&self) -> usize {
        let limit = self.max_frame_size() as usize;
        match self.buf.get(..4) {
            Some(p) => 4 + (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize).min(limit),
            None => 4,
        }
    }

    /// HAProxy closed the socket (read returned 0 bytes).
    pub fn peer_closed(&mut self) -> Close {
        self.close(Close::PeerClosed)
    }

    /// A read failed. After the handshake every read error is a peer close.
    pub fn read_failed(&mut self, kind: ErrorKind) -> Close {
        let peer_close = matches!(
            kind,
            ErrorKind::ConnectionReset
                | ErrorKind::BrokenPipe
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
        );
        let close = match self.phase {
            Phase::Hello if !peer_close => Close::ReadFailed(kind),
            _ => Close::PeerClosed,
        };
        self.close(close)
    }

    /// The HELLO timeout (before the handshake) or the idle timeout (after) fired.
    pub fn timed_out(&mut self) -> Close {
        self.close(Close::Error(Status::Timeout))
    }

    /// The agent is stopping.
    pub fn shutdown(&mut self) -> Close {
        let close = match self.phase {
            Phase::Hello => Close::Stopped,
            _ => Close::Shutdown,
        };
        self.close(close)
    }

    /// The buffer budget cannot hold what this connection needs next.
    pub fn over_budget(&mut self) -> Close {
        self.close(Close::Error(Status::Resource))
    }

    /// A NOTIFY's payload did not decode.
    pub fn notify_invalid(&mut self) -> Close {
        self.close(Close::Error(Status::Invalid))
    }

    fn close(&mut self, close: Close) -> Close {
        self.phase = Phase::Closed;
        close
    }

    /// Checks the first frame and answers AGENT-HELLO.
    fn hello(&mut self, frame: &[u8], header: Header) -> Result<Step, Close> {
        if header.frame_type != FrameType::HaproxyHello {
            return Err(Close::Error(Status::Invalid)); // NOTIFY included
        }
        let items = data::decode_kv_list(&frame[4 + header.payload_offset..])
            .map_err(|e| Close::Error(e.status()))?;
        let hello = HaproxyHello::parse(&items).map_err(Close::Error)?;
        let max = hello.negotiate(self.ceiling);
        self.phase = if hello.healthcheck {
            Phase::Healthcheck
        } else {
            Phase::Open { max }
        };
        Ok(Step::Send(encode(
            &Frame::agent_hello(max),
            PRE_HELLO_MAX_FRAME_SIZE,
        )))
    }
}

/// The AGENT-DISCONNECT frame for `status`, ready to write.
pub fn disconnect_frame(status: Status) -> Bytes {
    encode(&Frame::agent_disconnect(status), PRE_HELLO_MAX_FRAME_SIZE)
}

/// A frame after the handshake.
fn open(frame: Bytes, header: Header) -> Result<Step, Close> {
    match header.frame_type {
        FrameType::Notify => Ok(Step::Notify(Notify {
            frame,
            header,
            charge: None,
        })),
        FrameType::HaproxyDisconnect => Err(Close::PeerDisconnect),
        // A second HELLO, or agent frames coming our way.
        _ => Err(Close::Error(Status::Invalid)),
    }
}

/// Encodes a frame the agent builds itself (AGENT-HELLO, AGENT-DISCONNECT): both are
/// far below the 256-byte floor of any negotiated size.
fn encode(frame: &Frame<'_>, max: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.encoded_len() + 4);
    frame
        .encode(&mut out, max)
        .expect("AGENT-HELLO and AGENT-DISCONNECT fit any frame size");
    out.freeze()
}

#[cfg(test)]
mod tests;
