//! memtrace: finds kernel memory that is allocated and still held, by kernel stack.
//!
//! The modules follow the data path, and imports only go down it:
//!
//! - `commands` — the command line (the only code that knows clap): one file per subcommand;
//! - `session` — a tracing session (start, run on a schedule, finish, publish), `progress`;
//! - `output` (atomic files, `--output-dir`) and `schema` (the saved report's JSON, versioned);
//! - `render` — text, folded stacks, SVG flame graph, pprof of a `model::Report`;
//! - `model` — the report and how it is built from what the kernel recorded (no I/O);
//! - the stages that feed the model: `loader` (plan, load, attach, calibrate), `collector`
//!   (reads the maps), `symbolize`, `attribution` (cgroups, pods, owner filters), `sockets`,
//!   and `overview` (its own command);
//! - leaf modules at the bottom: `kernel` (tracefs, BTF, mm facts), `units`, `fsutil`,
//!   `privileges`, `sysinfo`.

pub(crate) mod attribution;
pub(crate) mod collector;
pub mod commands;
pub(crate) mod fsutil;
pub(crate) mod kernel;
pub(crate) mod loader;
pub(crate) mod model;
pub(crate) mod output;
pub(crate) mod overview;
pub(crate) mod privileges;
pub(crate) mod progress;
pub(crate) mod render;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod session;
pub(crate) mod sockets;
pub(crate) mod symbolize;
pub(crate) mod sysinfo;
pub(crate) mod units;
