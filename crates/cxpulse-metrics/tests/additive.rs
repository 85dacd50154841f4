//! The additive parts exported by several instances (disjoint partitions) sum to the parts
//! exported by one instance that owns every partition: what the recording rules rely on.

mod common;

use common::three_exporters;
use cxpulse_metrics::{additive_family_names, flatten};
use std::collections::BTreeSet;

fn family_of(sample: &str) -> &str {
    let name = sample.split('{').next().unwrap();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if base.ends_with("_seconds") {
                return base;
            }
        }
    }
    name
}

#[test]
fn parts_of_two_instances_sum_to_one_instance() {
    let [a, b, all] = three_exporters(7, 12.0, 25);
    let xa = flatten(&a.families());
    let xb = flatten(&b.families());
    let xall = flatten(&all.families());

    let additive: BTreeSet<&str> = additive_family_names().collect();
    let mut keys: BTreeSet<&String> = xall.keys().collect();
    keys.extend(xa.keys());
    keys.extend(xb.keys());
    let mut compared = 0;
    let mut families_seen = BTreeSet::new();
    for key in keys {
        let family = family_of(key);
        if !additive.contains(family) {
            continue;
        }
        families_seen.insert(family.to_string());
        let sum = xa.get(key).copied().unwrap_or(0.0) + xb.get(key).copied().unwrap_or(0.0);
        let whole = xall.get(key).copied().unwrap_or(0.0);
        if family == "cxpulse_window_customers" {
            // HyperLogLog estimates of disjoint customer sets add up approximately.
            assert!(
                (sum - whole).abs() <= 0.03 * whole + 2.0,
                "{key}: {sum} vs {whole}"
            );
        } else {
            assert!(
                (sum - whole).abs() <= 1e-9 * whole.abs().max(1.0),
                "{key}: instances sum to {sum}, one instance exports {whole}"
            );
        }
        compared += 1;
    }
    assert!(compared > 1_000, "only {compared} samples compared");
    // Every additive family was exercised (closed loop needs 24 h of data: present as 0).
    for f in additive_family_names() {
        assert!(families_seen.contains(f), "family {f} never exported");
    }
    // Spot check: the 1h (all, all) NPS responses are the sum over the two instances.
    let key =
        r#"cxpulse_window_nps_responses{channel="all",group="promoter",segment="all",window="1h"}"#;
    assert!(xall[key] > 0.0);
    assert_eq!(xa[key] + xb[key], xall[key]);
}
