//! Events shared by the engine's integration tests.

use cxpulse_core::{Channel, CxEvent, Millis, TouchpointEvent, TouchpointKind, DAY_MS};

/// 2024-05-01T00:00:00Z.
pub const START: Millis = 19_844 * DAY_MS;

/// Event `e{id}`: a web visit at `at` by customer `c{customer}` of the `smb` segment.
pub fn visit(id: u32, at: Millis, customer: u32) -> CxEvent {
    CxEvent::Touchpoint(TouchpointEvent {
        event_id: format!("e{id}"),
        occurred_at: at,
        customer_id: format!("c{customer}"),
        segment: "smb".to_string(),
        channel: Channel::Web,
        touchpoint: "home".to_string(),
        kind: TouchpointKind::Visit,
        case_id: None,
        amount: None,
        currency: None,
        attributes: Vec::new(),
    })
}
