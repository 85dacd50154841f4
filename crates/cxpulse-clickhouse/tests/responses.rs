//! Survey responses against the real ClickHouse: comments byte-exact in any script.

mod common;

use common::{t0, TestDb, MINUTE};
use cxpulse_clickhouse::SurveyRow;
use cxpulse_core::events::{Channel, SurveyMetric, SurveyResponse};

const COMMENTS: &[(&str, &str)] = &[
    // Persian with ZERO WIDTH NON-JOINER (U+200C) and Persian digits.
    (
        "fa",
        "پشتیبانی خیلی کند بود؛ می‌خواهم سفارش ۱۲۳۴ را لغو کنم.",
    ),
    // Thai: combining vowels and tone marks, no spaces between words.
    ("th", "พนักงานบริการดีมากครับ แต่การจัดส่งล่าช้าไปสามวัน"),
    // Romanian with comma-below ș ț (U+0219, U+021B) and cedilla ş ţ (U+015F, U+0163).
    (
        "ro",
        "Mulțumesc pentru ajutor! Livrarea a întârziat, dar ş şi ţ arată diferit.",
    ),
    // Emoji: ZWJ family, skin tone, flag, keycap, variation selector, astral plane.
    (
        "en",
        "Great 👍🏽 service 👨‍👩‍👧‍👦 🇮🇷🇹🇭🇷🇴 1️⃣ ❤️ 𝄞 — \"quoted\", tab\there, back\\slash, 'single'",
    ),
    // Mixed directions and a line break.
    ("fa", "خوب بود\nbut the app crashed (نسخه 2.3) 🙃"),
];

fn response(i: usize, lang: &str, comment: &str) -> SurveyResponse {
    SurveyResponse {
        response_id: format!("resp-{i:03}"),
        submitted_at: t0() + i as i64 * MINUTE,
        customer_id: format!("cust-{i}"),
        segment: "vip".into(),
        channel: Channel::ALL[i % Channel::ALL.len()],
        touchpoint: "checkout".into(),
        metric: SurveyMetric::ALL[i % 3],
        score: (i % 8) as i32,
        comment: Some(comment.to_string()),
        language: Some(lang.to_string()),
        case_id: (i % 2 == 0).then(|| format!("case-{i}")),
    }
}

#[tokio::test]
async fn comments_round_trip_byte_exact() {
    let Some(url) = common::url("comments_round_trip_byte_exact") else {
        return;
    };
    let db = TestDb::migrated(&url, "resp").await;
    let mut responses: Vec<SurveyResponse> = COMMENTS
        .iter()
        .enumerate()
        .map(|(i, (lang, c))| response(i, lang, c))
        .collect();
    let mut none = response(COMMENTS.len(), "en", "");
    none.comment = None;
    none.language = None;
    responses.push(none);
    let rows: Vec<SurveyRow> = responses
        .iter()
        .enumerate()
        .map(|(i, r)| SurveyRow::from_response(r, 4, 1000 + i as i64))
        .collect::<Result<_, _>>()
        .expect("rows");
    db.sink
        .write_responses(&rows, "resp:4:1000")
        .await
        .expect("write");
    // A redelivery of response 0 from a later offset replaces the first copy.
    let redelivered = SurveyRow::from_response(&responses[0], 4, 2000).expect("row");
    db.sink
        .write_responses(std::slice::from_ref(&redelivered), "resp:4:2000")
        .await
        .expect("write");

    let back: Vec<SurveyRow> = db
        .db_client()
        .query("SELECT ?fields FROM survey_responses FINAL ORDER BY response_id")
        .fetch_all()
        .await
        .expect("read");
    let mut expected = rows.clone();
    expected[0] = redelivered;
    assert_eq!(back, expected);
    for (b, (_, c)) in back.iter().zip(COMMENTS) {
        assert_eq!(b.comment.as_deref().map(str::as_bytes), Some(c.as_bytes()));
    }

    // The server sees the same bytes (not a re-encoding that happens to round-trip).
    let lengths: Vec<(String, u64, u64)> = db
        .db_client()
        .query(
            "SELECT response_id, length(assumeNotNull(comment)), lengthUTF8(assumeNotNull(comment)) \
             FROM survey_responses FINAL WHERE comment IS NOT NULL ORDER BY response_id",
        )
        .fetch_all()
        .await
        .expect("lengths");
    for ((id, bytes, chars), (_, c)) in lengths.iter().zip(COMMENTS) {
        assert_eq!(*bytes, c.len() as u64, "{id}");
        assert_eq!(*chars, c.chars().count() as u64, "{id}");
    }
    let thai = db
        .count("SELECT count() FROM survey_responses WHERE comment LIKE '%ล่าช้า%'")
        .await;
    assert_eq!(thai, 1);
}

#[test]
fn score_out_of_range_is_an_error() {
    let mut r = response(0, "en", "x");
    r.score = 300;
    assert!(SurveyRow::from_response(&r, 0, 1).is_err());
    let r = response(0, "en", "x");
    assert!(SurveyRow::from_response(&r, 0, -1).is_err());
}
