//! Every dashboard in `grafana/dashboards/` type-checks against the npm package
//! `@grafana/schema` (pinned in `scripts/servers.sh`, installed under
//! `~/.cache/cxpulse/grafana-schema` by `scripts/servers.sh install npm`): one TypeScript file
//! per dashboard (`const dashboard: Dashboard = <json>`, each panel with its plugin's
//! `Options`, each query with its datasource's model; see
//! `cxpulse_stack_tests::dashboard_typescript`), compiled with `tsc --noEmit --strict`.
//! A deliberately broken copy must fail, so the check cannot pass by accepting anything.

use cxpulse_stack_tests::{dashboard_typescript, dashboards, tool, Dashboard};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn node_modules(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CXPULSE_GRAFANA_NODE_MODULES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/cxpulse/grafana-schema/node_modules"))
        });
    match dir {
        Some(d)
            if d.join("typescript/bin/tsc").is_file()
                && d.join("@grafana/schema/package.json").is_file() =>
        {
            Some(d)
        }
        _ => {
            println!(
                "SKIPPED {test}: typescript and @grafana/schema are not installed; run `scripts/servers.sh install npm` \
                 and `eval \"$(scripts/servers.sh env)\"`"
            );
            None
        }
    }
}

fn version_of(node_modules: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(node_modules.join(package).join("package.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["version"].as_str().unwrap_or("?").to_string()
}

/// Writes a tsc project with one file per dashboard into a fresh directory and compiles it.
/// Returns (success, compiler output).
fn typecheck(node_modules: &Path, node: &Path, boards: &[Dashboard], tag: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "cxpulse-grafana-schema-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(node_modules, dir.join("node_modules")).unwrap();
    let mut files = Vec::new();
    for d in boards {
        let ts = dashboard_typescript(d).unwrap_or_else(|e| panic!("{e}"));
        let file = format!("{}.ts", d.name);
        std::fs::write(dir.join(&file), ts).unwrap();
        files.push(Value::String(file));
    }
    let tsconfig = serde_json::json!({
        "compilerOptions": {
            "strict": true,
            "noEmit": true,
            "target": "es2022",
            "module": "esnext",
            "moduleResolution": "bundler",
            "types": [],
            // The package's own .d.ts files are not ours to check; ours are.
            "skipLibCheck": true
        },
        "files": files
    });
    std::fs::write(
        dir.join("tsconfig.json"),
        serde_json::to_string_pretty(&tsconfig).unwrap(),
    )
    .unwrap();
    let out = Command::new(node)
        .arg(node_modules.join("typescript/bin/tsc"))
        .args(["-p", "tsconfig.json", "--pretty", "false"])
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() || tag == "broken" {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("(kept {} for inspection)", dir.display());
    }
    (out.status.success(), text)
}

#[test]
fn dashboards_typecheck_against_grafana_schema() {
    let test = "dashboards_typecheck_against_grafana_schema";
    let Some(nm) = node_modules(test) else { return };
    let Some(node) = tool("CXPULSE_NODE", "node") else {
        println!("SKIPPED {test}: `node` is not on PATH");
        return;
    };
    let boards = dashboards();
    println!(
        "checking {} dashboards with typescript {} against @grafana/schema {}",
        boards.len(),
        version_of(&nm, "typescript"),
        version_of(&nm, "@grafana/schema")
    );
    let (ok, out) = typecheck(&nm, &node, &boards, "ok");
    assert!(ok, "the dashboards do not match @grafana/schema:\n{out}");
    for d in &boards {
        println!("  {} ({}): ok", d.name, d.title());
    }
}

/// The check must be able to fail: three wrong field types in a copy of the first dashboard
/// (a number written as text, an unknown enum value in a panel's options, a query's text as
/// a number) must each be reported.
#[test]
fn a_broken_dashboard_fails_the_typecheck() {
    let test = "a_broken_dashboard_fails_the_typecheck";
    let Some(nm) = node_modules(test) else { return };
    let Some(node) = tool("CXPULSE_NODE", "node") else {
        println!("SKIPPED {test}: `node` is not on PATH");
        return;
    };
    let mut d = dashboards().remove(0);
    d.name = "broken".to_string();
    d.json["schemaVersion"] = Value::String("41".into());
    let panels = d.json["panels"].as_array_mut().unwrap();
    let stat = panels
        .iter_mut()
        .find(|p| p["type"] == "stat")
        .expect("a stat panel to break");
    stat["options"]["colorMode"] = Value::String("rainbow".into());
    let with_target = panels
        .iter_mut()
        .find(|p| p["type"] == "timeseries")
        .expect("a time series panel to break");
    let target = &mut with_target["targets"][0];
    let field = if target.get("expr").is_some() {
        "expr"
    } else {
        "rawSql"
    };
    target[field] = Value::from(42);
    let (ok, out) = typecheck(&nm, &node, &[d], "broken");
    assert!(!ok, "a broken dashboard passed the type check:\n{out}");
    for needle in [
        "Type 'string' is not assignable to type 'number'",
        "'\"rainbow\"' is not assignable",
        "Type 'number' is not assignable to type 'string'",
    ] {
        assert!(out.contains(needle), "expected `{needle}` in:\n{out}");
    }
    println!("the broken copy fails as it should:\n{out}");
}
