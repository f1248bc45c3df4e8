//! Host bindings generated from `wit/filter.wit`, world `logfleet:filter/filter`.
//!
//! `Filter` / `FilterPre` are the typed instance and pre-instance; `Batch`, `Verdicts` and
//! `Fields` the WIT types (at the root because the world `use`s them).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "logfleet:filter/filter",
});
