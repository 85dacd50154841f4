//! Settings of the binaries' allocator (mimalloc, declared by each binary).
//!
//! Each `advance` of the engine allocates window states by the thousand (16 KiB registers
//! of long windows; about 1 GiB for one advance of a catch-up with 4 windows, see
//! `docs/benchmarks.md`) and frees them once the sink has them. mimalloc returns freed
//! memory to the kernel ("purges" it) 1 s after it was freed by default, and the kernel
//! zeroes every page again when it is touched: `clear_page_erms` was 11 % of a
//! steady-state run of the throughput benchmark at that delay, and 20 % with 10 s once
//! advances grew. A 60 s delay keeps the memory of one advance for the next ones (and
//! across pauses such as a ClickHouse retry), and still gives it back a minute after a
//! catch-up; see `docs/benchmarks.md`, "Allocator" and "Session 9".

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (v3 numbering; `libmimalloc-sys` names it only in
/// its v2 list). The test below checks it against mimalloc's documented default.
const PURGE_DELAY: mi_option_t = 15;

/// Milliseconds between freeing memory and returning it to the kernel.
pub const PURGE_DELAY_MS: i64 = 60_000;

/// Applies the settings above, unless the environment sets the option
/// (`MIMALLOC_PURGE_DELAY`, mimalloc's own override); call first thing in `main`.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc options are plain integers, read at the next purge; setting one
    // from any thread at any time is supported.
    unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) };
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads an option (an integer) by its index.
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_is_mimallocs_and_configure_sets_it() {
        // mimalloc v3's default purge delay is 1000 ms (no other option defaults to it),
        // unless the environment overrides it.
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Err(_) => {
                assert_eq!(purge_delay_ms(), 1000);
                configure();
                assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
            }
            // An operator's setting wins.
            Ok(v) => {
                configure();
                assert_eq!(Ok(purge_delay_ms()), v.trim().parse::<i64>());
            }
        }
    }
}
