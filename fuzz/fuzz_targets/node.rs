//! Fuzz target `node`: see `bodies::node` for what it checks.

#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::node(data));
