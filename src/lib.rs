//! regent: one leader per LAN group, fenced by epochs.

pub mod core;
pub mod hooks;
