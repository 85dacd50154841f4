//! cxpulse-core: the pure domain core of cxpulse.
//!
//! Data flows one way: [`events`] (validated by [`validate`]) go into the [`engine`], which
//! keeps mergeable KPI state ([`kpi`], built on `cxpulse-sketch`) in time panes ([`window`])
//! and emits "window updated" rows as the [`watermark`] advances. Nothing in this crate does
//! I/O; callers pass the processing clock in.

pub mod engine;
pub mod events;
mod expiry;
pub mod kpi;
pub mod segments;
mod settled;
pub mod validate;
pub mod watermark;
pub mod window;

pub use engine::{
    EngineConfig, EngineStats, GroupKey, IngestOutcome, KpiEngine, KpiRow, PaneRecord, TooLate,
};
pub use events::*;
pub use validate::{ValidationError, ValidationPolicy};
