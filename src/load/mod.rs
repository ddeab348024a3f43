//! Load generation: the HTTP/SSE client, request bodies, and the load loops.

pub mod arrival;
pub mod body;
pub mod chunk;
pub mod client;
pub mod conn;
pub mod driver;
pub mod session;
pub mod sse;
pub mod watch;
