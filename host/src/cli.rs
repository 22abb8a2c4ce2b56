//! The `weir` command line: parses arguments (clap), calls the library, prints
//! results (JSON with `--json`) and maps errors to exit codes: 0 success, 1 an
//! operation was rejected or failed (message on stderr), 2 usage errors.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::Weir;
use crate::error::{Error, Result};

#[derive(Parser, Debug)]
#[command(name = "weir", version, about = "A WebAssembly plug-in host: records, an event pipeline and a durable job queue")]
pub struct Cli {
    /// The database file.
    #[arg(long, global = true, env = "WEIR_DB", default_value = "weir.db")]
    pub db: PathBuf,
    /// The user operations run as.
    #[arg(long = "as", global = true, default_value = "system")]
    pub user: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Plug-ins: wasm components implementing a weir world.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Loads the example plug-ins and runs weir's story end to end.
    Demo,
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// Adds a component (re-adding a name makes a new version).
    Add {
        name: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Lists plug-in versions.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Plugin(cmd) => {
            let weir = Weir::open(&cli.db)?;
            plugin(&weir, cmd)
        }
        Command::Demo => crate::demo::run(&cli.db),
    }
}

fn plugin(weir: &Weir, cmd: PluginCmd) -> Result<()> {
    match cmd {
        PluginCmd::Add { name, file, json } => {
            let wasm = std::fs::read(&file)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?;
            let row = weir.add_plugin(&name, &wasm)?;
            if json {
                print_json(&row);
            } else {
                println!(
                    "added plug-in {} version {} (world {}, {} bytes, sha256 {})",
                    row.name, row.version, row.world, row.size, &row.sha256[..16]
                );
            }
        }
        PluginCmd::List { json } => {
            let rows = weir.list_plugins()?;
            if json {
                print_json(&rows);
            } else {
                println!("{:<20} {:>7}  {:<9} {:>9}  {}", "NAME", "VERSION", "WORLD", "BYTES", "ADDED");
                for r in rows {
                    println!("{:<20} {:>7}  {:<9} {:>9}  {}", r.name, r.version, r.world, r.size, r.created_at);
                }
            }
        }
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}
