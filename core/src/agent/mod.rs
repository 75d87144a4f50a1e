//! What in-process agents (the JVM agent in `jvm-agent/`) send: frames of
//! `agent.proto`, decoded without I/O. The sensor owns the socket.

mod frame;
mod wire;

pub use frame::{
    decode, AgentChunk, AgentConn, AgentEvent, Frame, FrameError, FrameReader, Hook, MAX_FRAME, MAX_PAYLOAD,
};

/// One frame and the process that sent it.
#[derive(Debug)]
pub struct AgentMsg {
    /// The agent's process (from the socket's peer credentials, not from a frame).
    pub pid: u32,
    /// The frame.
    pub frame: Frame,
}
