//! Known-answer accuracy test for `Hll`: exact distinct counts vs. estimates
//! over several disjoint key families. Run with `--nocapture` to see the
//! observed errors.

use cxpulse_sketch::Hll;

const CHECKPOINTS: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// Formats the i-th key of a family.
type KeyFn = fn(u64) -> String;

/// Disjoint key families (no key can appear in two families).
const FAMILIES: [(&str, KeyFn); 4] = [
    ("customer-{i}", |i| format!("customer-{i}")),
    ("cust:{i}:eu-west", |i| format!("cust:{i}:eu-west")),
    ("acct/{i:010}", |i| format!("acct/{i:010}")),
    ("u{i}@example.test", |i| format!("u{i}@example.test")),
];

#[test]
fn hll_relative_error_within_two_percent() {
    let mut failures = Vec::new();
    let mut union = Hll::new();
    println!(
        "{:<20} {:>9} {:>9} {:>9}",
        "family", "n", "estimate", "rel.err"
    );
    for (name, key) in FAMILIES {
        let mut h = Hll::new();
        let mut next = 0u64;
        for &n in &CHECKPOINTS {
            while next < n {
                h.insert(key(next).as_bytes());
                next += 1;
            }
            let est = h.estimate();
            let err = (est as f64 - n as f64) / n as f64;
            println!("{name:<20} {n:>9} {est:>9} {:>+8.3}%", err * 100.0);
            let ok = if n <= 100 {
                est.abs_diff(n) <= 1
            } else {
                err.abs() <= 0.02
            };
            if !ok {
                failures.push(format!(
                    "{name} n={n} estimate={est} err={:+.3}%",
                    err * 100.0
                ));
            }
        }
        union.merge(&h);
    }
    // The four families are disjoint: the union holds 4 million keys.
    let n = 4 * CHECKPOINTS[CHECKPOINTS.len() - 1];
    let est = union.estimate();
    let err = (est as f64 - n as f64) / n as f64;
    println!(
        "{:<20} {n:>9} {est:>9} {:>+8.3}%",
        "union of all",
        err * 100.0
    );
    if err.abs() > 0.02 {
        failures.push(format!("union n={n} estimate={est}"));
    }
    assert!(
        failures.is_empty(),
        "estimates outside the error target: {failures:#?}"
    );
}
