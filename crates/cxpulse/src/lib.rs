//! The `cxpulse` command as a library: CLI, configuration, commands.
//!
//! `main.rs` only parses the command line and calls [`run`]. Commands live in
//! [`commands`]; the stream job (`run`), `migrate` and `generate` slot in there.

pub mod allocator;
pub mod board;
pub mod cli;
pub mod commands;
pub mod config;
pub mod duration;
pub mod logging;
pub mod test_stack;

use cli::{Cli, Command, ConfigCommand};

/// The version reported by `--version` and `cxpulse_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit status for configuration errors (also clap's status for usage errors).
pub const EXIT_CONFIG: u8 = 2;

/// The process environment as (name, value) pairs (non-UTF-8 entries skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Runs one command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let env = process_env();
    let cwd = std::env::current_dir().unwrap_or_default();
    let path = config::resolve_path(cli.config.as_deref(), &env, &cwd);
    match cli.command {
        Command::Config(ConfigCommand::Check) => commands::config::check(path.as_deref(), &env),
        Command::Demo(args) => commands::demo::run(path.as_deref(), &env, cli.log_format, args),
        Command::Migrate => commands::migrate::run(path.as_deref(), &env, cli.log_format),
        Command::Generate(args) => {
            commands::generate::run(path.as_deref(), &env, cli.log_format, args)
        }
        Command::Run(args) => commands::run::run(path.as_deref(), &env, cli.log_format, args),
    }
}

/// The exit status for an error: [`EXIT_CONFIG`] for configuration errors, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<config::ConfigError>()) {
        EXIT_CONFIG
    } else {
        1
    }
}
