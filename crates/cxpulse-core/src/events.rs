//! The event contracts of cxpulse, as the domain sees them.
//!
//! These types mirror `schemas/touchpoint_event.avsc` and `schemas/survey_response.avsc`.
//! Decoding (Avro) lives in `cxpulse-avro`; this module only defines the shapes and
//! their validation rules, so that every other part of the system speaks one language.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch, UTC. Event time and processing time both use it.
pub type Millis = i64;

pub const MINUTE_MS: Millis = 60_000;
pub const HOUR_MS: Millis = 60 * MINUTE_MS;
pub const DAY_MS: Millis = 24 * HOUR_MS;

/// Where a customer interaction happened.
///
/// `Unknown` is the Avro enum default: a channel added by a newer writer schema that this
/// reader does not know yet still decodes, as `Unknown`, instead of failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    MobileApp,
    Email,
    Phone,
    Chat,
    Social,
    Store,
    Unknown,
}

impl Channel {
    /// Every channel, in the order of the Avro enum symbols.
    pub const ALL: [Channel; 8] = [
        Channel::Web,
        Channel::MobileApp,
        Channel::Email,
        Channel::Phone,
        Channel::Chat,
        Channel::Social,
        Channel::Store,
        Channel::Unknown,
    ];

    /// The Avro symbol / label value of this channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::MobileApp => "mobile_app",
            Channel::Email => "email",
            Channel::Phone => "phone",
            Channel::Chat => "chat",
            Channel::Social => "social",
            Channel::Store => "store",
            Channel::Unknown => "unknown",
        }
    }

    /// Parses an Avro symbol; symbols this build does not know map to `Unknown`
    /// (forward compatibility, exactly like the Avro enum default).
    pub fn from_symbol(symbol: &str) -> Channel {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == symbol)
            .unwrap_or(Channel::Unknown)
    }

    /// Position in [`Channel::ALL`] (also the Avro enum index).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened at a touchpoint. `Other` is the Avro enum default for kinds added later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchpointKind {
    Visit,
    Purchase,
    ContactOpened,
    AgentReplied,
    CaseResolved,
    OutboundContact,
    Other,
}

impl TouchpointKind {
    pub const ALL: [TouchpointKind; 7] = [
        TouchpointKind::Visit,
        TouchpointKind::Purchase,
        TouchpointKind::ContactOpened,
        TouchpointKind::AgentReplied,
        TouchpointKind::CaseResolved,
        TouchpointKind::OutboundContact,
        TouchpointKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TouchpointKind::Visit => "visit",
            TouchpointKind::Purchase => "purchase",
            TouchpointKind::ContactOpened => "contact_opened",
            TouchpointKind::AgentReplied => "agent_replied",
            TouchpointKind::CaseResolved => "case_resolved",
            TouchpointKind::OutboundContact => "outbound_contact",
            TouchpointKind::Other => "other",
        }
    }

    pub fn from_symbol(symbol: &str) -> TouchpointKind {
        TouchpointKind::ALL
            .into_iter()
            .find(|k| k.as_str() == symbol)
            .unwrap_or(TouchpointKind::Other)
    }

    /// Kinds that belong to a support case and therefore need a `case_id`.
    pub fn needs_case_id(self) -> bool {
        matches!(
            self,
            TouchpointKind::ContactOpened
                | TouchpointKind::AgentReplied
                | TouchpointKind::CaseResolved
        )
    }
}

impl fmt::Display for TouchpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The survey question a response answers. `Unknown` is the Avro enum default: a metric a
/// newer writer added decodes, and validation then rejects it with a clear error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SurveyMetric {
    #[serde(rename = "NPS")]
    Nps,
    #[serde(rename = "CSAT")]
    Csat,
    #[serde(rename = "CES")]
    Ces,
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl SurveyMetric {
    pub const ALL: [SurveyMetric; 4] = [
        SurveyMetric::Nps,
        SurveyMetric::Csat,
        SurveyMetric::Ces,
        SurveyMetric::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SurveyMetric::Nps => "NPS",
            SurveyMetric::Csat => "CSAT",
            SurveyMetric::Ces => "CES",
            SurveyMetric::Unknown => "UNKNOWN",
        }
    }

    pub fn from_symbol(symbol: &str) -> SurveyMetric {
        SurveyMetric::ALL
            .into_iter()
            .find(|m| m.as_str() == symbol)
            .unwrap_or(SurveyMetric::Unknown)
    }

    /// The inclusive score scale of the metric, or `None` for a metric this build does not know.
    pub fn scale(self) -> Option<(i32, i32)> {
        match self {
            SurveyMetric::Nps => Some((0, 10)),
            SurveyMetric::Csat => Some((1, 5)),
            SurveyMetric::Ces => Some((1, 7)),
            SurveyMetric::Unknown => None,
        }
    }
}

impl fmt::Display for SurveyMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A money amount as a fixed-point decimal with four fractional digits
/// (Avro `decimal`, precision 18, scale 4): `units` is the amount times 10 000.
/// Integer arithmetic keeps revenue sums exact and merges associative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Amount {
    pub units: i64,
}

impl Amount {
    pub const SCALE: u32 = 4;
    pub const ONE: i64 = 10_000;

    pub fn from_units(units: i64) -> Amount {
        Amount { units }
    }

    /// The value as a float, for display only (sums are kept in integer units).
    pub fn as_f64(self) -> f64 {
        self.units as f64 / Self::ONE as f64
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        write!(f, "{sign}{}.{:04}", abs / 10_000, abs % 10_000)
    }
}

/// An ISO 4217 currency code: three ASCII upper-case letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Option<Currency> {
        let b = code.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Some(Currency([b[0], b[1], b[2]]))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid currency code {s:?}")))
    }
}

/// One customer interaction (`schemas/touchpoint_event.avsc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchpointEvent {
    /// Unique per event; a redelivered event with the same id is counted once.
    pub event_id: String,
    /// Event time.
    pub occurred_at: Millis,
    pub customer_id: String,
    pub segment: String,
    pub channel: Channel,
    /// Free text naming the journey step: checkout, onboarding, support, …
    pub touchpoint: String,
    pub kind: TouchpointKind,
    pub case_id: Option<String>,
    pub amount: Option<Amount>,
    /// Raw currency text as written; validated by [`TouchpointEvent::validate`].
    pub currency: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// One survey answer (`schemas/survey_response.avsc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyResponse {
    pub response_id: String,
    /// Event time.
    pub submitted_at: Millis,
    pub customer_id: String,
    pub segment: String,
    pub channel: Channel,
    pub touchpoint: String,
    pub metric: SurveyMetric,
    pub score: i32,
    /// The customer's own words, any language, kept byte-exact.
    pub comment: Option<String>,
    /// BCP 47 tag of the comment's language, when known (fa, th, ro, en, …).
    pub language: Option<String>,
    pub case_id: Option<String>,
}

/// Anything the engine ingests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CxEvent {
    Touchpoint(TouchpointEvent),
    Survey(SurveyResponse),
}

impl CxEvent {
    /// The unique id used for de-duplication.
    pub fn id(&self) -> &str {
        match self {
            CxEvent::Touchpoint(e) => &e.event_id,
            CxEvent::Survey(r) => &r.response_id,
        }
    }

    /// Event time.
    pub fn event_time(&self) -> Millis {
        match self {
            CxEvent::Touchpoint(e) => e.occurred_at,
            CxEvent::Survey(r) => r.submitted_at,
        }
    }

    pub fn customer_id(&self) -> &str {
        match self {
            CxEvent::Touchpoint(e) => &e.customer_id,
            CxEvent::Survey(r) => &r.customer_id,
        }
    }

    pub fn segment(&self) -> &str {
        match self {
            CxEvent::Touchpoint(e) => &e.segment,
            CxEvent::Survey(r) => &r.segment,
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            CxEvent::Touchpoint(e) => e.channel,
            CxEvent::Survey(r) => r.channel,
        }
    }
}

impl From<TouchpointEvent> for CxEvent {
    fn from(e: TouchpointEvent) -> Self {
        CxEvent::Touchpoint(e)
    }
}

impl From<SurveyResponse> for CxEvent {
    fn from(r: SurveyResponse) -> Self {
        CxEvent::Survey(r)
    }
}
