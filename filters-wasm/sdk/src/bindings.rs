//! Bindings generated from `wit/filter.wit` (world `logfleet:filter/filter`).
//!
//! Kept in one module so the rest of the SDK, and authors, see Rust types only. The export
//! macro is public so that [`export_filter!`](crate::export_filter) can expand in the author's
//! crate, where the component's exports must be defined.

wit_bindgen::generate!({
    path: "../../wit",
    world: "logfleet:filter/filter",
    pub_export_macro: true,
    export_macro_name: "__export_filter_world",
    default_bindings_module: "::logfleet_filter_sdk::bindings",
});
