//! In-process agents (the JVM agent in `jvm-agent/`): the socket they
//! stream plaintext to and the frames they send (`agent.proto`).

mod frame;
mod listener;

pub use frame::{
    AgentChunk, AgentConn, AgentEvent, Frame, FrameError, FrameReader, Hook, MAX_FRAME, MAX_PAYLOAD,
};
pub use listener::{listen, AgentMsg, AgentSocket, ListenError, DEFAULT_SOCKET};
