//! The socket in-process agents (the JVM agent in `jvm-agent/`) stream
//! plaintext to; their frames are decoded by `nettap_core::agent`.

mod listener;

pub use listener::{listen, AgentSocket, ListenError, DEFAULT_SOCKET};
