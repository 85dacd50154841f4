//! `cxpulse config check`.

use crate::config;
use std::path::Path;

/// Prints the resolved configuration (secrets redacted) to stdout; a configuration error is
/// returned (exit status 2) with the key that is wrong and why.
pub fn check(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<()> {
    let loaded = config::load(path, env, &[])?;
    println!(
        "# cxpulse configuration, resolved from: {}",
        loaded.sources()
    );
    println!("# secrets are shown as \"{}\"", config::REDACTED);
    println!();
    print!("{}", loaded.redacted_toml());
    eprintln!("configuration OK ({})", loaded.sources());
    Ok(())
}
