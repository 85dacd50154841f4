//! Parsing Canonical Form and CRC-64-AVRO fingerprints follow the Avro specification, so that
//! single-object headers agree with what Java, Python and the Confluent tools write.

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use cxpulse_avro::{
    fingerprint64, parsing_canonical_form, schema_fingerprint, RecordKind, SchemaRegistry,
    SURVEY_RESPONSE_SCHEMA, TOUCHPOINT_EVENT_SCHEMA,
};

/// (input, canonical form, fingerprint as a signed 64-bit number) — the Avro specification's
/// test vectors (`share/test/data/schema-tests.txt` in the Avro repository).
const SPEC_VECTORS: &[(&str, &str, Option<i64>)] = &[
    (r#""null""#, r#""null""#, Some(7195948357588979594)),
    (r#"{"type":"null"}"#, r#""null""#, None),
    (r#""boolean""#, r#""boolean""#, Some(-6970731678124411036)),
    (r#""int""#, r#""int""#, Some(8247732601305521295)),
    (r#"{"type":"int"}"#, r#""int""#, None),
    (r#""long""#, r#""long""#, Some(-3434872931120570953)),
    (r#""float""#, r#""float""#, Some(5583340709985441680)),
    (r#""double""#, r#""double""#, Some(-8181574048448539266)),
    (r#""bytes""#, r#""bytes""#, Some(5746618253357095269)),
    (r#""string""#, r#""string""#, Some(-8142146995180207161)),
    ("[  ]", "[]", Some(-1241056759729112623)),
    (r#"[ "int"  ]"#, r#"["int"]"#, Some(-5232228896498058493)),
    (
        r#"[ "int" , {"type":"boolean"} ]"#,
        r#"["int","boolean"]"#,
        Some(5392556393470105090),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}"#,
        r#"{"name":"x.y.foo","type":"record","fields":[]}"#,
        Some(5916914534497305771),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}"#,
        r#"{"name":"a.b.foo","type":"record","fields":[]}"#,
        Some(-4616218487480524110),
    ),
    (
        r#"{"fields":[], "type":"record", "name":"foo", "doc":"Useful info", "aliases":["foo","bar"]}"#,
        r#"{"name":"foo","type":"record","fields":[]}"#,
        Some(-4824392279771201922),
    ),
    (
        r#"{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}"#,
        Some(7843277075252814651),
    ),
    (
        r#"{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"},
            {"order":"descending","name":"f2","doc":"Hello","type":"int"}],
            "type":"record", "name":"foo" }"#,
        r#"{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}"#,
        Some(-4860222112080293046),
    ),
    (
        r#"{"type":"enum", "name":"foo", "symbols":["A1"]}"#,
        r#"{"name":"foo","type":"enum","symbols":["A1"]}"#,
        Some(-6342190197741309591),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}"#,
        r#"{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}"#,
        Some(-4448647247586288245),
    ),
    (
        r#"{"name":"foo","type":"fixed","size":15}"#,
        r#"{"name":"foo","type":"fixed","size":15}"#,
        Some(1756455273707447556),
    ),
    (
        r#"{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}"#,
        r#"{"name":"x.y.z.foo","type":"fixed","size":32}"#,
        Some(-3064184465700546786),
    ),
    (
        r#"{ "items":{"type":"null"}, "type":"array"}"#,
        r#"{"type":"array","items":"null"}"#,
        Some(-589620603366471059),
    ),
    (
        r#"{ "values":"string", "type":"map"}"#,
        r#"{"type":"map","values":"string"}"#,
        Some(-8732877298790414990),
    ),
    (
        r#"{"name":"PigValue","type":"record",
            "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}"#,
        r#"{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}"#,
        Some(-1759257747318642341),
    ),
];

#[test]
fn canonical_forms_and_fingerprints_match_the_specification_vectors() {
    for (input, canonical, fingerprint) in SPEC_VECTORS {
        assert_eq!(
            parsing_canonical_form(input).unwrap(),
            *canonical,
            "{input}"
        );
        if let Some(fp) = fingerprint {
            assert_eq!(fingerprint64(canonical.as_bytes()) as i64, *fp, "{input}");
            assert_eq!(schema_fingerprint(input).unwrap() as i64, *fp, "{input}");
        }
    }
}

#[test]
fn crc64_avro_equals_apache_avros_rabin() {
    // apache-avro hashes its own canonical form; on schemas without logical types that form is
    // the specification's, so both fingerprints must agree.
    for json in [
        r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"}]}"#,
        r#"{"type":"enum","name":"e","namespace":"x","symbols":["A","B"]}"#,
        r#"{"type":"map","values":{"type":"array","items":"string"}}"#,
        r#"["null","string","bytes","double"]"#,
    ] {
        let schema = Schema::parse_str(json).unwrap();
        let theirs = schema.fingerprint::<Rabin>().bytes;
        let pcf = schema.canonical_form();
        assert_eq!(parsing_canonical_form(json).unwrap(), pcf, "{json}");
        assert_eq!(
            fingerprint64(pcf.as_bytes()).to_le_bytes().to_vec(),
            theirs,
            "{json}"
        );
    }
}

#[test]
fn canonical_forms_of_the_cxpulse_schemas() {
    assert_eq!(
        RecordKind::Touchpoint.reader_canonical_form(),
        concat!(
            r#"{"name":"io.cxpulse.v1.TouchpointEvent","type":"record","fields":["#,
            r#"{"name":"event_id","type":"string"},"#,
            r#"{"name":"occurred_at","type":"long"},"#,
            r#"{"name":"customer_id","type":"string"},"#,
            r#"{"name":"segment","type":"string"},"#,
            r#"{"name":"channel","type":{"name":"io.cxpulse.v1.Channel","type":"enum","symbols":["web","mobile_app","email","phone","chat","social","store","unknown"]}},"#,
            r#"{"name":"touchpoint","type":"string"},"#,
            r#"{"name":"kind","type":{"name":"io.cxpulse.v1.TouchpointKind","type":"enum","symbols":["visit","purchase","contact_opened","agent_replied","case_resolved","outbound_contact","other"]}},"#,
            r#"{"name":"case_id","type":["null","string"]},"#,
            r#"{"name":"amount","type":["null","bytes"]},"#,
            r#"{"name":"currency","type":["null","string"]},"#,
            r#"{"name":"attributes","type":{"type":"map","values":"string"}}]}"#,
        )
    );
    assert_eq!(
        RecordKind::Survey.reader_canonical_form(),
        concat!(
            r#"{"name":"io.cxpulse.v1.SurveyResponse","type":"record","fields":["#,
            r#"{"name":"response_id","type":"string"},"#,
            r#"{"name":"submitted_at","type":"long"},"#,
            r#"{"name":"customer_id","type":"string"},"#,
            r#"{"name":"segment","type":"string"},"#,
            r#"{"name":"channel","type":{"name":"io.cxpulse.v1.Channel","type":"enum","symbols":["web","mobile_app","email","phone","chat","social","store","unknown"]}},"#,
            r#"{"name":"touchpoint","type":"string"},"#,
            r#"{"name":"metric","type":{"name":"io.cxpulse.v1.SurveyMetric","type":"enum","symbols":["NPS","CSAT","CES","UNKNOWN"]}},"#,
            r#"{"name":"score","type":"int"},"#,
            r#"{"name":"comment","type":["null","string"]},"#,
            r#"{"name":"language","type":["null","string"]},"#,
            r#"{"name":"case_id","type":["null","string"]}]}"#,
        )
    );
    for kind in RecordKind::ALL {
        assert_eq!(
            kind.reader_fingerprint(),
            fingerprint64(kind.reader_canonical_form().as_bytes())
        );
    }
}

#[test]
fn repeated_named_types_and_namespaces_are_canonicalized() {
    let json = r#"{"type":"record","name":"R","namespace":"a.b","fields":[
        {"name":"x","type":{"type":"enum","name":"E","symbols":["A"]}},
        {"name":"y","type":"E"},
        {"name":"z","type":{"type":"fixed","name":"c.F","size":"4"}},
        {"name":"w","type":{"type":"array","items":"c.F"}}]}"#;
    assert_eq!(
        parsing_canonical_form(json).unwrap(),
        concat!(
            r#"{"name":"a.b.R","type":"record","fields":["#,
            r#"{"name":"x","type":{"name":"a.b.E","type":"enum","symbols":["A"]}},"#,
            r#"{"name":"y","type":"a.b.E"},"#,
            r#"{"name":"z","type":{"name":"c.F","type":"fixed","size":4}},"#,
            r#"{"name":"w","type":{"type":"array","items":"c.F"}}]}"#
        )
    );
}

#[test]
fn the_built_in_registry_answers_the_reader_fingerprints() {
    let registry = SchemaRegistry::new();
    for kind in RecordKind::ALL {
        let w = registry.by_fingerprint(kind.reader_fingerprint()).unwrap();
        assert_eq!(w.kind(), kind);
        assert_eq!(w.id(), kind.builtin_schema_id());
        assert_eq!(w.canonical_form(), kind.reader_canonical_form());
    }
    assert_eq!(registry.ids(), vec![1, 2]);
}

#[test]
fn apache_avro_0_22_canonical_form_deviates_for_logical_types() {
    // Why this crate computes the canonical form itself: apache-avro 0.22 writes
    // `{"type":"long"}` for a timestamp-millis long and keeps decimal precision/scale, so its
    // fingerprints of the cxpulse schemas differ from every other Avro implementation's.
    // If this starts failing, apache-avro follows the specification now and the two agree.
    for json in [TOUCHPOINT_EVENT_SCHEMA, SURVEY_RESPONSE_SCHEMA] {
        let theirs = Schema::parse_str(json).unwrap().canonical_form();
        assert!(theirs.contains(r#"{"type":"long"}"#), "{theirs}");
        assert_ne!(theirs, parsing_canonical_form(json).unwrap());
    }
}

#[test]
fn fingerprints_documented_in_schemas_readme() {
    // If a schema change moves these, update the table in schemas/README.md.
    assert_eq!(
        RecordKind::Touchpoint.reader_fingerprint(),
        0xf794_32fe_96cb_b46f
    );
    assert_eq!(
        RecordKind::Survey.reader_fingerprint(),
        0xbe48_b898_54cf_63bf
    );
    let v0 = |file: &str| schema_fingerprint(file).unwrap();
    assert_eq!(
        v0(include_str!(
            "../../../schemas/history/touchpoint_event.v0.avsc"
        )),
        0xa176_f34f_163b_d214
    );
    assert_eq!(
        v0(include_str!(
            "../../../schemas/history/survey_response.v0.avsc"
        )),
        0xb7af_43be_129b_94eb
    );
}
