//! Validation of decoded events: the rules a record must satisfy before it may touch a KPI.
//!
//! Each failure is a [`ValidationError`] that names the field and the offending value, so a
//! dead-lettered record says exactly why it was refused.

use crate::events::{Currency, CxEvent, Millis, SurveyMetric, SurveyResponse, TouchpointEvent};
use thiserror::Error;

/// Limits applied by [`CxEvent::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidationPolicy {
    /// How far an event time may lie ahead of the processing clock (clock skew allowance).
    pub max_future_skew_ms: Millis,
    /// Identifiers and free-text labels longer than this are refused (bytes).
    pub max_id_bytes: usize,
    /// Comments longer than this are refused (bytes).
    pub max_comment_bytes: usize,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        ValidationPolicy {
            max_future_skew_ms: 5 * 60_000,
            max_id_bytes: 256,
            max_comment_bytes: 64 * 1024,
        }
    }
}

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("field `{field}` is empty")]
    EmptyField { field: &'static str },
    #[error("field `{field}` is {len} bytes long; at most {max} are allowed")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("event time `{field}` is missing (value {value})")]
    MissingEventTime { field: &'static str, value: Millis },
    #[error("event time `{field}` = {event_time} ms lies {ahead_ms} ms ahead of the processing clock ({now} ms); at most {max_skew_ms} ms are allowed")]
    EventTimeInFuture {
        field: &'static str,
        event_time: Millis,
        now: Millis,
        ahead_ms: Millis,
        max_skew_ms: Millis,
    },
    #[error("score {score} is outside the {metric} scale {min}..={max}")]
    ScoreOutOfRange {
        metric: SurveyMetric,
        score: i32,
        min: i32,
        max: i32,
    },
    #[error("metric symbol is not one this build understands (decoded as UNKNOWN)")]
    UnknownMetric,
    #[error("touchpoint kind `{kind}` needs a `case_id`")]
    MissingCaseId { kind: &'static str },
    #[error("`amount` is set but `currency` is not")]
    AmountWithoutCurrency,
    #[error("`currency` = {currency:?} is set but `amount` is not")]
    CurrencyWithoutAmount { currency: String },
    #[error("`currency` = {currency:?} is not an ISO 4217 code (three upper-case letters)")]
    InvalidCurrency { currency: String },
}

impl ValidationError {
    /// A short, stable reason label (for metrics and dead-letter headers).
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::EmptyField { .. } => "empty_field",
            ValidationError::FieldTooLong { .. } => "field_too_long",
            ValidationError::MissingEventTime { .. } => "missing_event_time",
            ValidationError::EventTimeInFuture { .. } => "event_time_in_future",
            ValidationError::ScoreOutOfRange { .. } => "score_out_of_range",
            ValidationError::UnknownMetric => "unknown_metric",
            ValidationError::MissingCaseId { .. } => "missing_case_id",
            ValidationError::AmountWithoutCurrency => "amount_without_currency",
            ValidationError::CurrencyWithoutAmount { .. } => "currency_without_amount",
            ValidationError::InvalidCurrency { .. } => "invalid_currency",
        }
    }
}

fn check_id(
    field: &'static str,
    value: &str,
    policy: &ValidationPolicy,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::EmptyField { field });
    }
    check_len(field, value, policy.max_id_bytes)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_time(
    field: &'static str,
    t: Millis,
    now: Millis,
    policy: &ValidationPolicy,
) -> Result<(), ValidationError> {
    if t <= 0 {
        return Err(ValidationError::MissingEventTime { field, value: t });
    }
    let ahead = t.saturating_sub(now);
    if ahead > policy.max_future_skew_ms {
        return Err(ValidationError::EventTimeInFuture {
            field,
            event_time: t,
            now,
            ahead_ms: ahead,
            max_skew_ms: policy.max_future_skew_ms,
        });
    }
    Ok(())
}

impl TouchpointEvent {
    /// Checks the record against the contract; `now` is the processing clock.
    pub fn validate(&self, now: Millis, policy: &ValidationPolicy) -> Result<(), ValidationError> {
        check_id("event_id", &self.event_id, policy)?;
        check_time("occurred_at", self.occurred_at, now, policy)?;
        check_id("customer_id", &self.customer_id, policy)?;
        check_id("segment", &self.segment, policy)?;
        check_len("touchpoint", &self.touchpoint, policy.max_id_bytes)?;
        if self.kind.needs_case_id() {
            match &self.case_id {
                Some(c) if !c.is_empty() => check_len("case_id", c, policy.max_id_bytes)?,
                _ => {
                    return Err(ValidationError::MissingCaseId {
                        kind: self.kind.as_str(),
                    })
                }
            }
        }
        match (&self.amount, &self.currency) {
            (Some(_), None) => return Err(ValidationError::AmountWithoutCurrency),
            (None, Some(c)) => {
                return Err(ValidationError::CurrencyWithoutAmount {
                    currency: c.clone(),
                })
            }
            (Some(_), Some(c)) if Currency::parse(c).is_none() => {
                return Err(ValidationError::InvalidCurrency {
                    currency: c.clone(),
                })
            }
            _ => {}
        }
        Ok(())
    }

    /// The parsed currency (only meaningful after [`TouchpointEvent::validate`] succeeded).
    pub fn currency_code(&self) -> Option<Currency> {
        self.currency.as_deref().and_then(Currency::parse)
    }
}

impl SurveyResponse {
    /// Checks the record against the contract; `now` is the processing clock.
    pub fn validate(&self, now: Millis, policy: &ValidationPolicy) -> Result<(), ValidationError> {
        check_id("response_id", &self.response_id, policy)?;
        check_time("submitted_at", self.submitted_at, now, policy)?;
        check_id("customer_id", &self.customer_id, policy)?;
        check_id("segment", &self.segment, policy)?;
        check_len("touchpoint", &self.touchpoint, policy.max_id_bytes)?;
        let (min, max) = self.metric.scale().ok_or(ValidationError::UnknownMetric)?;
        if self.score < min || self.score > max {
            return Err(ValidationError::ScoreOutOfRange {
                metric: self.metric,
                score: self.score,
                min,
                max,
            });
        }
        if let Some(c) = &self.comment {
            check_len("comment", c, policy.max_comment_bytes)?;
        }
        if let Some(l) = &self.language {
            check_len("language", l, 35)?;
        }
        if let Some(c) = &self.case_id {
            check_len("case_id", c, policy.max_id_bytes)?;
        }
        Ok(())
    }
}

impl CxEvent {
    pub fn validate(&self, now: Millis, policy: &ValidationPolicy) -> Result<(), ValidationError> {
        match self {
            CxEvent::Touchpoint(e) => e.validate(now, policy),
            CxEvent::Survey(r) => r.validate(now, policy),
        }
    }
}
