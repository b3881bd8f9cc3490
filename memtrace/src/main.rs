use std::process::ExitCode;

fn main() -> ExitCode {
    memtrace::commands::main()
}
