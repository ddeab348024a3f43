//! The built-in engines `runner engine sim` and `runner engine replay`: servers of their own
//! (OpenAI-compatible HTTP), run as engine processes like any other; no lifecycle code here.

pub mod prefix_cache;
pub mod replay;
pub mod sim;
pub mod text;
