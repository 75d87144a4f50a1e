//! nettap's mutating admission webhook: Java pods get the JVM agent (an init
//! container that provides `libnettap_agent.so`, `-agentpath:` appended to
//! `JAVA_TOOL_OPTIONS`, the sensor's socket directory mounted).
#![deny(missing_docs)]

pub mod certs;
pub mod mutate;
pub mod review;
pub mod server;
