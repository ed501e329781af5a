//! Bytes in → frame → message, and actions → frame → bytes out: the SPOP codec.
//!
//! Pure protocol, no I/O. The wire grammar (HAProxy `doc/SPOE.txt` §3):
//!
//! ```text
//! FRAME            : <LENGTH:u32 BE> <TYPE:1> <FLAGS:u32 BE> <STREAM-ID:varint> <FRAME-ID:varint> <PAYLOAD>
//! KV-LIST          : [ <NAME:varint-len bytes> <TYPED-DATA> ... ]        (HELLO, DISCONNECT)
//! LIST-OF-MESSAGES : [ <NAME> <NB-ARGS:1> <KV-LIST of NB-ARGS> ... ]     (NOTIFY)
//! LIST-OF-ACTIONS  : [ <TYPE:1> <NB-ARGS:1> <ARGS> ... ]                 (ACK)
//! ```
//!
//! [`frame::read_frame`] is the only place that knows about "need more bytes";
//! [`session::Session`] holds the rules of one connection (HELLO first, the close
//! statuses). How stagedoor uses the protocol: docs/spop.md.

pub mod data;
pub mod frame;
pub mod session;
pub mod varint;

pub use data::{Arg, TypedData};
pub use frame::{Action, Actions, Body, Frame, FrameType, Message, Scope, encode_ack};

/// Why bytes from HAProxy could not be decoded. Each maps to the SPOP status code
/// the agent sends in its AGENT-DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {len} exceeds the maximum frame size {max}")]
    FrameTooBig { len: u32, max: u32 },
    #[error("frame length {0} is below the 7-byte minimum")]
    FrameTooShort(u32),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("unknown data type {0}")]
    UnknownDataType(u8),
    #[error("integer out of range for {0}")]
    IntOutOfRange(&'static str),
    #[error("unknown action type {0}")]
    UnknownActionType(u8),
    #[error("unknown variable scope {0}")]
    UnknownScope(u8),
    #[error("action type {kind} with {nb_args} arguments")]
    BadActionArgs { kind: u8, nb_args: u8 },
    #[error("fragmented frames are not supported")]
    Fragmented,
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The SPOP status code for an AGENT-DISCONNECT caused by this error.
    pub fn status(&self) -> Status {
        match self {
            DecodeError::FrameTooBig { .. } => Status::TooBig,
            DecodeError::Fragmented => Status::FragmentationNotSupported,
            _ => Status::Invalid,
        }
    }
}

/// SPOP status codes (`doc/SPOE.txt` §3.2.6), as sent in DISCONNECT frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Normal = 0,
    Io = 1,
    Timeout = 2,
    TooBig = 3,
    Invalid = 4,
    NoVersion = 5,
    NoFrameSize = 6,
    NoCapabilities = 7,
    UnsupportedVersion = 8,
    BadFrameSize = 9,
    FragmentationNotSupported = 10,
    Interlaced = 11,
    FrameIdNotFound = 12,
    Resource = 13,
    Unknown = 99,
}

impl Status {
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// HAProxy's message for the code (`spoe_frm_err_reasons`).
    pub const fn message(self) -> &'static str {
        match self {
            Status::Normal => "normal",
            Status::Io => "I/O error",
            Status::Timeout => "a timeout occurred",
            Status::TooBig => "frame is too big",
            Status::Invalid => "invalid frame received",
            Status::NoVersion => "version value not found",
            Status::NoFrameSize => "max-frame-size value not found",
            Status::NoCapabilities => "capabilities value not found",
            Status::UnsupportedVersion => "unsupported version",
            Status::BadFrameSize => "max-frame-size too big or too small",
            Status::FragmentationNotSupported => "fragmentation not supported",
            Status::Interlaced => "invalid interlaced frames",
            Status::FrameIdNotFound => "frame-id not found",
            Status::Resource => "resource allocation error",
            Status::Unknown => "an unknown error occurred",
        }
    }

    pub fn from_code(code: u32) -> Option<Status> {
        use Status::*;
        [
            Normal,
            Io,
            Timeout,
            TooBig,
            Invalid,
            NoVersion,
            NoFrameSize,
            NoCapabilities,
            UnsupportedVersion,
            BadFrameSize,
            FragmentationNotSupported,
            Interlaced,
            FrameIdNotFound,
            Resource,
            Unknown,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}
