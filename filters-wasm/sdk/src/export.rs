//! The glue [`export_filter!`](crate::export_filter) expands to: turns the generated `Guest`
//! exports into calls on the author's [`Filter`]. Not part of the public API.

use std::cell::RefCell;
use std::sync::Once;
use std::thread::LocalKey;

pub use crate::bindings::{Batch as RawBatch, Guest, Verdicts as RawVerdicts};

use crate::bindings;

use crate::{Batch, Fields, Filter, Verdicts};

/// Where the configured filter lives between calls. A component instance is single-threaded
/// and serves one session, so a thread-local is exactly one filter per session.
pub type State<F> = LocalKey<RefCell<Option<F>>>;

/// Routes panics to the host's `report-panic` before the instance traps, so users see the
/// panic message instead of "unreachable". Installed on the first call into the component.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            bindings::logfleet::filter::host::report_panic(&info.to_string());
        }));
    });
}

/// `configure` export: builds the filter; an error is the author's message, unchanged.
pub fn configure<F: Filter>(state: &'static State<F>, config: &str) -> Result<(), String> {
    install_panic_hook();
    let filter = F::configure(config)?;
    state.with(|slot| *slot.borrow_mut() = Some(filter));
    Ok(())
}

/// `required-fields` export: the configured filter's columns (every column if the host asks
/// before configuring, which it never does).
pub fn required_fields<F: Filter>(state: &'static State<F>) -> Fields {
    install_panic_hook();
    state.with(|slot| slot.borrow().as_ref().map_or(Fields::all(), Filter::fields))
}

/// `filter-batch` export: runs the filter over a batch and returns its verdicts.
pub fn filter_batch<F: Filter>(state: &'static State<F>, raw: RawBatch) -> RawVerdicts {
    install_panic_hook();
    state.with(|slot| {
        let mut slot = slot.borrow_mut();
        let Some(filter) = slot.as_mut() else {
            // The host always configures first; a trap is the right answer to a broken host.
            panic!("filter-batch called before configure");
        };
        let batch = Batch::new(&raw);
        let mut verdicts = Verdicts::keep_all(batch.len());
        filter.batch(&batch, &mut verdicts);
        verdicts.into_raw()
    })
}

/// Exports `F` as this component's filter. Call once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$filter>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            /// The component's exports, delegating to the author's filter.
            struct Export;

            impl $crate::export::Guest for Export {
                fn required_fields() -> $crate::Fields {
                    $crate::export::required_fields::<$filter>(&STATE)
                }

                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::export::configure::<$filter>(&STATE, &config)
                }

                fn filter_batch(batch: $crate::export::RawBatch) -> $crate::export::RawVerdicts {
                    $crate::export::filter_batch::<$filter>(&STATE, batch)
                }
            }

    $crate::bindings::__export_filter_world!(Export with_types_in $crate::bindings);
        };
    };
}
