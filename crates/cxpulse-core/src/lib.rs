//! cxpulse-core: the pure domain core of cxpulse.
//!
//! Data flows one way: [`events`] (validated by [`validate`]) go into the window engine,
//! which keeps mergeable KPI state ([`kpi`], [`sketch`]) in time panes and emits
//! "window updated" rows. Nothing in this crate does I/O; callers pass the processing clock in.

pub mod events;
pub mod kpi;
pub mod validate;

pub use events::*;
pub use validate::{ValidationError, ValidationPolicy};
pub mod watermark;
pub mod window;
