//! regent: one leader per LAN group, fenced by epochs.

pub mod config;
pub mod core;
pub mod hooks;
pub mod net;
pub mod state;
pub mod wire;
