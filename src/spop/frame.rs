//! Bytes ↔ frame: the length prefix, the frame header, and the typed payloads of
//! the six frame types (HAPROXY-HELLO/DISCONNECT, NOTIFY from HAProxy;
//! AGENT-HELLO/DISCONNECT, ACK from the agent). Decoding borrows from the buffer.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::data::{self, Arg, TypedData, bytes_len, decode_bytes, encode_bytes, kv_get};
use super::{DecodeError, Status, varint};

/// FIN: the frame is complete. Every frame the agent sends carries exactly this flag.
pub const FLAG_FIN: u32 = 0x0000_0001;
/// ABORT: the sender abandons a fragmented frame (2.x only; never sent by us).
pub const FLAG_ABORT: u32 = 0x0000_0002;

/// The frame size allowed before the HELLO handshake has negotiated one. HAProxy's
/// HAPROXY-HELLO is 80 to 200 bytes (supported-versions, max-frame-size,
/// capabilities, healthcheck, a 36-character engine-id), so 4 KiB leaves it room
/// twenty times over, while a connection that never finishes its HELLO holds at most
/// 4 KiB of buffer (it was 65 535 before issue 14: 640 MB for 10 000 connections).
pub const PRE_HELLO_MAX_FRAME_SIZE: u32 = 4096;
/// HAProxy's floor for max-frame-size (`MIN_FRAME_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 256;
/// type + flags + 1-byte stream-id + 1-byte frame-id.
const MIN_FRAME_LEN: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    HaproxyHello = 1,
    HaproxyDisconnect = 2,
    Notify = 3,
    AgentHello = 101,
    AgentDisconnect = 102,
    Ack = 103,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Result<FrameType, DecodeError> {
        Ok(match b {
            1 => FrameType::HaproxyHello,
            2 => FrameType::HaproxyDisconnect,
            3 => FrameType::Notify,
            101 => FrameType::AgentHello,
            102 => FrameType::AgentDisconnect,
            103 => FrameType::Ack,
            // Type 0 is a 2.x continuation fragment: we never announce fragmentation.
            0 => return Err(DecodeError::Fragmented),
            other => return Err(DecodeError::UnknownFrameType(other)),
        })
    }

    /// A short lowercase name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameType::HaproxyHello => "haproxy_hello",
            FrameType::HaproxyDisconnect => "haproxy_disconnect",
            FrameType::Notify => "notify",
            FrameType::AgentHello => "agent_hello",
            FrameType::AgentDisconnect => "agent_disconnect",
            FrameType::Ack => "ack",
        }
    }
}

/// Variable scopes of set-var and unset-var actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Scope {
    Proc = 0,
    Sess = 1,
    Txn = 2,
    Req = 3,
    Res = 4,
}

impl Scope {
    fn from_u8(b: u8) -> Result<Scope, DecodeError> {
        Ok(match b {
            0 => Scope::Proc,
            1 => Scope::Sess,
            2 => Scope::Txn,
            3 => Scope::Req,
            4 => Scope::Res,
            other => return Err(DecodeError::UnknownScope(other)),
        })
    }
}

/// One SPOE message of a NOTIFY: a name and its arguments, in order, with names
/// that may be empty or repeated (so never a map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub name: Cow<'a, [u8]>,
    pub args: Vec<Arg<'a>>,
}

impl Message<'_> {
    /// The first argument named `name`.
    pub fn arg(&self, name: &str) -> Option<&TypedData<'_>> {
        kv_get(&self.args, name)
    }
}

/// One ACK action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    SetVar {
        scope: Scope,
        name: Cow<'a, [u8]>,
        value: TypedData<'a>,
    },
    UnsetVar {
        scope: Scope,
        name: Cow<'a, [u8]>,
    },
}

const ACTION_SET_VAR: u8 = 1;
const ACTION_UNSET_VAR: u8 = 2;

/// An action's type, its argument count (set-var: scope, name, value; unset-var:
/// scope, name), the scope and the name.
fn encode_action_head(kind: u8, scope: Scope, name: &[u8], out: &mut impl BufMut) {
    let nb_args = if kind == ACTION_SET_VAR { 3 } else { 2 };
    out.put_slice(&[kind, nb_args, scope as u8]);
    encode_bytes(name, out);
}

impl<'a> Action<'a> {
    /// set-var with a static name.
    pub fn set(scope: Scope, name: &'static str, value: TypedData<'a>) -> Self {
        Action::SetVar {
            scope,
            name: Cow::Borrowed(name.as_bytes()),
            value,
        }
    }

    /// The same action, owning its name and value.
    pub fn into_owned(self) -> Action<'static> {
        match self {
            Action::SetVar { scope, name, value } => Action::SetVar {
                scope,
                name: name.into_owned().into(),
                value: value.into_owned(),
            },
            Action::UnsetVar { scope, name } => Action::UnsetVar {
                scope,
                name: name.into_owned().into(),
            },
        }
    }

    fn encode(&self, out: &mut impl BufMut) {
        match self {
            Action::SetVar { scope, name, value } => {
                encode_action_head(ACTION_SET_VAR, *scope, name, out);
                value.encode(out);
            }
            Action::UnsetVar { scope, name } => {
                encode_action_head(ACTION_UNSET_VAR, *scope, name, out);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Action::SetVar { name, value, .. } => 3 + bytes_len(name) + value.encoded_len(),
            Action::UnsetVar { name, .. } => 3 + bytes_len(name),
        }
    }

    fn decode(input: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let [kind, nb_args, ..] = *input else {
            return Err(DecodeError::Truncated("action"));
        };
        let scope = |b: Option<&u8>| Scope::from_u8(*b.ok_or(DecodeError::Truncated("scope"))?);
        match (kind, nb_args) {
            (ACTION_SET_VAR, 3) => {
                let scope = scope(input.get(2))?;
                let (name, n) = decode_bytes(&input[3..])?;
                let (value, m) = TypedData::decode(&input[3 + n..])?;
                let name = Cow::Borrowed(name);
                Ok((Action::SetVar { scope, name, value }, 3 + n + m))
            }
            (ACTION_UNSET_VAR, 2) => {
                let scope = scope(input.get(2))?;
                let (name, n) = decode_bytes(&input[3..])?;
                let name = Cow::Borrowed(name);
                Ok((Action::UnsetVar { scope, name }, 3 + n))
            }
            (ACTION_SET_VAR | ACTION_UNSET_VAR, _) => {
                Err(DecodeError::BadActionArgs { kind, nb_args })
            }
            _ => Err(DecodeError::UnknownActionType(kind)),
        }
    }
}

/// A frame's payload, by frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    HaproxyHello(Vec<Arg<'a>>),
    HaproxyDisconnect(Vec<Arg<'a>>),
    Notify(Vec<Message<'a>>),
    AgentHello(Vec<Arg<'a>>),
    AgentDisconnect(Vec<Arg<'a>>),
    Ack(Vec<Action<'a>>),
}

impl Body<'_> {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Body::HaproxyHello(_) => FrameType::HaproxyHello,
            Body::HaproxyDisconnect(_) => FrameType::HaproxyDisconnect,
            Body::Notify(_) => FrameType::Notify,
            Body::AgentHello(_) => FrameType::AgentHello,
            Body::AgentDisconnect(_) => FrameType::AgentDisconnect,
            Body::Ack(_) => FrameType::Ack,
        }
    }
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub flags: u32,
    pub stream_id: u64,
    pub frame_id: u64,
    pub body: Body<'a>,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("encoded frame of {len} bytes exceeds the negotiated maximum {max}")]
    TooBig { len: usize, max: u32 },
}

/// Reads the 4-byte length prefix at the start of `buf` and returns the length of
/// the whole frame (prefix included) once `buf` holds all of it, or `None` when
/// more bytes are needed. The length is checked against `max` before anything is
/// allocated for it.
///
/// # Errors
/// `FrameTooBig` above `max`; `FrameTooShort` below the 7-byte minimum (zero included).
pub fn read_frame(buf: &[u8], max: u32) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len > max {
        return Err(DecodeError::FrameTooBig { len, max });
    }
    if len < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooShort(len));
    }
    let total = 4 + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// The frame header: type byte, flags, ids, and where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub frame_type: FrameType,
    pub flags: u32,
    pub stream_id: u64,
    pub frame_id: u64,
    pub payload_offset: usize,
}

impl Header {
    /// Decodes the header of a frame `body` (the bytes after the length prefix).
    pub fn decode(body: &[u8]) -> Result<Header, DecodeError> {
        let Some(&[t, f0, f1, f2, f3]) = body.get(..5).map(|s| <&[u8; 5]>::try_from(s).unwrap())
        else {
            return Err(DecodeError::Truncated("frame header"));
        };
        let frame_type = FrameType::from_u8(t)?;
        let flags = u32::from_be_bytes([f0, f1, f2, f3]);
        if flags & FLAG_FIN == 0 {
            return Err(DecodeError::Fragmented);
        }
        let (stream_id, a) = varint::decode(&body[5..])?;
        let (frame_id, b) = varint::decode(&body[5 + a..])?;
        Ok(Header {
            frame_type,
            flags,
            stream_id,
            frame_id,
            payload_offset: 5 + a + b,
        })
    }
}

impl<'a> Frame<'a> {
    /// Decodes a frame `body` (the bytes after the length prefix, exactly one frame).
    ///
    /// # Errors
    /// Any malformation; the whole body must be consumed.
    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let h = Header::decode(body)?;
        let payload = &body[h.payload_offset..];
        let body = match h.frame_type {
            FrameType::HaproxyHello => Body::HaproxyHello(data::decode_kv_list(payload)?),
            FrameType::HaproxyDisconnect => Body::HaproxyDisconnect(data::decode_kv_list(payload)?),
            FrameType::AgentHello => Body::AgentHello(data::decode_kv_list(payload)?),
            FrameType::AgentDisconnect => Body::AgentDisconnect(data::decode_kv_list(payload)?),
            FrameType::Notify => Body::Notify(decode_messages(payload)?),
            FrameType::Ack => Body::Ack(decode_actions(payload)?),
        };
        Ok(Frame {
            flags: h.flags,
            stream_id: h.stream_id,
            frame_id: h.frame_id,
            body,
        })
    }

    /// The length of the frame after its 4-byte prefix.
    pub fn encoded_len(&self) -> usize {
        let payload: usize = match &self.body {
            Body::HaproxyHello(kv)
            | Body::HaproxyDisconnect(kv)
            | Body::AgentHello(kv)
            | Body::AgentDisconnect(kv) => kv.iter().map(Arg::encoded_len).sum(),
            Body::Notify(msgs) => msgs
                .iter()
                .map(|m| {
                    bytes_len(&m.name) + 1 + m.args.iter().map(Arg::encoded_len).sum::<usize>()
                })
                .sum(),
            Body::Ack(actions) => actions.iter().map(Action::encoded_len).sum(),
        };
        5 + varint::encoded_len(self.stream_id) + varint::encoded_len(self.frame_id) + payload
    }

    /// Appends the frame, length prefix included, in one contiguous run of bytes
    /// (so it goes out in one write).
    ///
    /// # Errors
    /// `TooBig` when the frame would exceed `max` (nothing is written then).
    ///
    /// # Panics
    /// Never for frames we build; a NOTIFY message with more than 255 arguments is
    /// a programming error and is reported as `TooBig` instead.
    pub fn encode(&self, out: &mut BytesMut, max: u32) -> Result<(), EncodeError> {
        let len = self.encoded_len();
        let too_many_args =
            matches!(&self.body, Body::Notify(m) if m.iter().any(|m| m.args.len() > 255));
        if len > max as usize || too_many_args {
            return Err(EncodeError::TooBig { len, max });
        }
        out.reserve(4 + len);
        out.put_u32(len as u32);
        out.put_u8(self.body.frame_type() as u8);
        out.put_u32(self.flags);
        varint::encode(self.stream_id, out);
        varint::encode(self.frame_id, out);
        match &self.body {
            Body::HaproxyHello(kv)
            | Body::HaproxyDisconnect(kv)
            | Body::AgentHello(kv)
            | Body::AgentDisconnect(kv) => kv.iter().for_each(|a| a.encode(out)),
            Body::Notify(msgs) => {
                for m in msgs {
                    encode_bytes(&m.name, out);
                    out.put_u8(m.args.len() as u8);
                    m.args.iter().for_each(|a| a.encode(out));
                }
            }
            Body::Ack(actions) => actions.iter().for_each(|a| a.encode(out)),
        }
        Ok(())
    }

    /// AGENT-HELLO: version 2.0, the negotiated frame size, `pipelining`. The
    /// capabilities key is always present (HAProxy 3.1+'s health check requires it).
    pub fn agent_hello(max_frame_size: u32) -> Frame<'static> {
        Frame {
            flags: FLAG_FIN,
            stream_id: 0,
            frame_id: 0,
            body: Body::AgentHello(vec![
                Arg::new("version", TypedData::str("2.0")),
                Arg::new("max-frame-size", TypedData::Uint32(max_frame_size)),
                Arg::new("capabilities", TypedData::str("pipelining")),
            ]),
        }
    }

    /// AGENT-DISCONNECT with HAProxy's message for `status`.
    pub fn agent_disconnect(status: Status) -> Frame<'static> {
        Frame {
            flags: FLAG_FIN,
            stream_id: 0,
            frame_id: 0,
            body: Body::AgentDisconnect(vec![
                Arg::new("status-code", TypedData::Uint32(status.code())),
                Arg::new("message", TypedData::str(status.message())),
            ]),
        }
    }

    /// ACK for the NOTIFY `(stream_id, frame_id)`.
    pub fn ack(stream_id: u64, frame_id: u64, actions: Vec<Action<'a>>) -> Frame<'a> {
        Frame {
            flags: FLAG_FIN,
            stream_id,
            frame_id,
            body: Body::Ack(actions),
        }
    }
}

/// The actions of one ACK, encoded as they are added: the agent answers without an
/// [`Action`] value or an owned string per variable (an allowed request's eight
/// variables cost ~170 ns as `Action`s, one heap string each, before this;
/// BENCHMARKS.md, "Issue 14: the warm path, third pass"). [`encode_ack`] puts them in a frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Actions {
    bytes: Vec<u8>,
}

impl Clone for Actions {
    fn clone(&self) -> Self {
        Actions {
            bytes: self.bytes.clone(),
        }
    }

    /// Into the allocation already there (the agent's remembered decisions).
    fn clone_from(&mut self, source: &Self) {
        self.bytes.clone_from(&source.bytes);
    }
}

impl Actions {
    /// No actions yet, room for `bytes` of them.
    pub fn with_capacity(bytes: usize) -> Self {
        Actions {
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Adds a set-var.
    pub fn set(&mut self, scope: Scope, name: &str, value: &TypedData<'_>) {
        encode_action_head(ACTION_SET_VAR, scope, name.as_bytes(), &mut self.bytes);
        value.encode(&mut self.bytes);
    }

    /// Adds a set-var of a STRING: `words` joined by one space each.
    pub fn set_joined(&mut self, scope: Scope, name: &str, words: &[String]) {
        encode_action_head(ACTION_SET_VAR, scope, name.as_bytes(), &mut self.bytes);
        let len = words.iter().map(String::len).sum::<usize>() + words.len().saturating_sub(1);
        self.bytes.push(data::T_STR);
        varint::encode(len as u64, &mut self.bytes);
        for (n, w) in words.iter().enumerate() {
            if n > 0 {
                self.bytes.push(b' ');
            }
            self.bytes.extend_from_slice(w.as_bytes());
        }
    }

    /// Adds any action.
    pub fn push(&mut self, action: &Action<'_>) {
        action.encode(&mut self.bytes);
    }

    /// The encoded list, as it goes in the ACK.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The actions back as values (for tests and tools).
    ///
    /// # Errors
    /// Never for a list built here; kept typed as any decode.
    pub fn decode(&self) -> Result<Vec<Action<'_>>, DecodeError> {
        decode_actions(&self.bytes)
    }
}

impl<'a> FromIterator<Action<'a>> for Actions {
    fn from_iter<I: IntoIterator<Item = Action<'a>>>(iter: I) -> Self {
        let mut out = Actions::default();
        iter.into_iter().for_each(|a| out.push(&a));
        out
    }
}

impl From<Vec<Action<'_>>> for Actions {
    fn from(v: Vec<Action<'_>>) -> Self {
        v.into_iter().collect()
    }
}

/// Appends an ACK frame carrying `actions`, length prefix included: the same bytes as
/// [`Frame::ack`] with those actions, [`Frame::encode`]d.
///
/// # Errors
/// `TooBig` when the frame would exceed `max` (nothing is written then).
pub fn encode_ack(
    stream_id: u64,
    frame_id: u64,
    actions: &Actions,
    out: &mut BytesMut,
    max: u32,
) -> Result<(), EncodeError> {
    let len =
        5 + varint::encoded_len(stream_id) + varint::encoded_len(frame_id) + actions.bytes.len();
    if len > max as usize {
        return Err(EncodeError::TooBig { len, max });
    }
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u8(FrameType::Ack as u8);
    out.put_u32(FLAG_FIN);
    varint::encode(stream_id, out);
    varint::encode(frame_id, out);
    out.put_slice(&actions.bytes);
    Ok(())
}

/// Decodes a NOTIFY payload (a LIST-OF-MESSAGES).
// Inlined into both callers (Frame::decode, Notify::messages), as it was into its
// one caller before the session existed: out of line, decode_notify6 in
// benches/spop.rs ran slower (paired runs, and 0.5% more instructions).
#[inline(always)]
pub(super) fn decode_messages(mut input: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    let mut msgs = Vec::new();
    while !input.is_empty() {
        let (name, n) = decode_bytes(input)?;
        let nb_args = *input.get(n).ok_or(DecodeError::Truncated("message"))?;
        input = &input[n + 1..];
        let mut args = Vec::with_capacity(usize::from(nb_args).min(input.len() / 2));
        for _ in 0..nb_args {
            let (arg, used) = Arg::decode(input)?;
            args.push(arg);
            input = &input[used..];
        }
        msgs.push(Message {
            name: Cow::Borrowed(name),
            args,
        });
    }
    Ok(msgs)
}

fn decode_actions(mut input: &[u8]) -> Result<Vec<Action<'_>>, DecodeError> {
    let mut actions = Vec::new();
    while !input.is_empty() {
        let (a, n) = Action::decode(input)?;
        actions.push(a);
        input = &input[n..];
    }
    Ok(actions)
}

// === handshake ===

/// What the agent needs from a HAPROXY-HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyHello {
    /// HAProxy's max-frame-size.
    pub max_frame_size: u32,
    /// A `healthcheck` HELLO: answer AGENT-HELLO, then close.
    pub healthcheck: bool,
    /// Its capabilities, as announced (informational).
    pub capabilities: String,
}

impl HaproxyHello {
    /// Checks the HELLO's KV-list; the error is the status of the AGENT-DISCONNECT.
    pub fn parse(items: &[Arg<'_>]) -> Result<HaproxyHello, Status> {
        let versions = kv_get(items, "supported-versions")
            .and_then(TypedData::as_bytes)
            .ok_or(Status::NoVersion)?;
        let supports_2_0 = versions
            .split(|&b| b == b',')
            .any(|v| v.trim_ascii() == b"2.0");
        if !supports_2_0 {
            return Err(Status::UnsupportedVersion);
        }
        let max = kv_get(items, "max-frame-size")
            .and_then(TypedData::as_i64)
            .ok_or(Status::NoFrameSize)?;
        let max_frame_size = u32::try_from(max)
            .ok()
            .filter(|&m| m >= MIN_FRAME_SIZE)
            .ok_or(Status::BadFrameSize)?;
        let healthcheck = matches!(kv_get(items, "healthcheck"), Some(TypedData::Bool(true)));
        let capabilities = kv_get(items, "capabilities")
            .and_then(TypedData::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        Ok(HaproxyHello {
            max_frame_size,
            healthcheck,
            capabilities,
        })
    }

    /// The frame size the agent announces: HAProxy's value capped by `ceiling`,
    /// never below HAProxy's floor of 256.
    pub fn negotiate(&self, ceiling: u32) -> u32 {
        self.max_frame_size.min(ceiling).max(MIN_FRAME_SIZE)
    }
}
