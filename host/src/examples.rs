//! The example plug-ins from `guest-examples/`, compiled to wasm components by
//! `build.rs` and embedded here, so `weir demo` and the tests can load them from
//! any directory. Plug-in authors: read their sources in `guest-examples/`.

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// The component of example `name` (e.g. `credit-check`).
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of all example plug-ins.
pub fn names() -> impl Iterator<Item = &'static str> {
    EXAMPLES.iter().map(|(n, _)| *n)
}
