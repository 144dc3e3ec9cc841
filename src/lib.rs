//! regent: one leader per LAN group, fenced by epochs.

pub mod announce;
pub mod config;
pub mod control;
pub mod core;
pub mod guard;
pub mod hooks;
pub mod logging;
pub mod net;
pub mod notify;
pub mod persist;
pub mod state;
pub mod wire;

pub mod demo;
pub mod driver;
