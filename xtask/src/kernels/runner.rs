//! The guest side: `xtask guest-run --plan FILE` (hidden), started by the initramfs's /init
//! chrooted into the host's root once the guest is set up, and the plan and results it
//! exchanges with the host as JSON files in the results share.
//!
//! A plan runs either one command (`cargo xtask guest`: its output goes to the console, which
//! the host streams) or a list of scenario tests one after another (the matrix: each test's
//! output goes to its own log file in the results share, results.json is rewritten after
//! every test so a guest that dies keeps what it finished).

use std::{
    fs,
    io::Write as _,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Prefix of the lines the guest prints for the host to read on the console.
pub const MARKER: &str = "@@xtask-guest";
/// The file names in the results share.
pub const PLAN_FILE: &str = "plan.json";
pub const RESULTS_FILE: &str = "results.json";
/// How long the hooks probe (a short `memtrace trace`) may take under emulation.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);
/// PATH of everything run in the guest.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the guest runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The `uname -r` the host booted; the runner checks it.
    pub kernel: String,
    /// The results share, at its host path.
    pub results_dir: PathBuf,
    /// Working directory of the command or tests.
    pub cwd: PathBuf,
    /// Extra environment (on top of PATH, HOME, USER, TERM).
    pub env: Vec<(String, String)>,
    /// A memtrace binary to run a 1 s `trace --kind all` with first, to record which hooks
    /// this kernel gets.
    #[serde(default)]
    pub hooks_probe: Option<PathBuf>,
    pub work: Work,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// One command with its arguments; the runner exits with its status.
    Command { argv: Vec<String> },
    /// Scenario tests, one after another.
    Tests { tests: Vec<PlannedTest> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTest {
    /// The test target (`tests/tests/<target>.rs`).
    pub target: String,
    /// The exact test name in it.
    pub name: String,
    /// Its test executable on the host.
    pub exe: PathBuf,
    pub timeout_secs: u64,
}

impl PlannedTest {
    pub fn id(&self) -> String {
        format!("{}::{}", self.target, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    Timeout,
    /// Could not be run, or ran no test (name not found, ignored).
    Error,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Timeout => "TIMEOUT",
            Self::Error => "ERROR",
        }
    }
}

/// What the guest found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Results {
    /// `uname -r` in the guest.
    pub kernel: String,
    /// Per memtrace kind, the hooks of the probe session.
    pub hooks: Vec<KindHooks>,
    /// Why there are no hooks (the probe failed).
    pub hooks_error: Option<String>,
    pub command: Option<CommandResult>,
    pub tests: Vec<TestResult>,
    /// Problems of the runner itself (plan mismatch, cannot spawn).
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindHooks {
    pub kind: String,
    pub traced: bool,
    pub hooks: Vec<String>,
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Exit code, or 128 + signal.
    pub exit_code: i32,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub target: String,
    pub name: String,
    pub status: Status,
    pub duration_ms: u64,
    /// `exit status 101`, `killed after 300 s`, `ran no test`, ...
    pub detail: String,
    /// Its output (stdout and stderr).
    pub log: PathBuf,
}

impl TestResult {
    pub fn id(&self) -> String {
        format!("{}::{}", self.target, self.name)
    }
}

/// Writes `value` as JSON to `path` atomically (temp file + rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).context("cannot serialize")?;
    fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

fn marker(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARKER} {line}");
    let _ = out.flush();
}

/// The status as a shell would report it: the exit code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn base_command(program: &Path, plan: &Plan) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", GUEST_PATH)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("TERM", "dumb")
        .env("LANG", "C.UTF-8")
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd);
    c
}

/// `xtask guest-run --plan FILE`: runs the plan, writes results.json next to it, and returns
/// the exit code (the command's; for tests 0 when all passed).
pub fn guest_run(plan_path: &Path) -> Result<i32> {
    let plan: Plan = read_json(plan_path)?;
    let results_path = plan.results_dir.join(RESULTS_FILE);
    let mut results = Results {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        ..Results::default()
    };
    if results.kernel != plan.kernel {
        results.errors.push(format!(
            "booted {:?}, the plan was for {:?}",
            results.kernel, plan.kernel
        ));
    }
    if let Some(memtrace) = &plan.hooks_probe {
        match probe_hooks(memtrace, &plan) {
            Ok(hooks) => results.hooks = hooks,
            Err(e) => results.hooks_error = Some(format!("{e:#}")),
        }
        write_json(&results_path, &results)?;
    }
    let code = match &plan.work {
        Work::Command { argv } => {
            let code = run_command(&plan, argv, &mut results);
            write_json(&results_path, &results)?;
            code
        }
        Work::Tests { tests } => {
            let logs = plan.results_dir.join("tests");
            fs::create_dir_all(&logs)
                .with_context(|| format!("cannot create {}", logs.display()))?;
            for (i, test) in tests.iter().enumerate() {
                marker(&format!("test-start {i} {}", test.id()));
                let log = logs.join(format!("{i:02}-{}.log", test.id().replace("::", "-")));
                let result = run_test(&plan, test, log);
                marker(&format!(
                    "test-end {i} {} {} {}",
                    result.status.label(),
                    result.duration_ms,
                    result.detail
                ));
                results.tests.push(result);
                write_json(&results_path, &results)?;
            }
            i32::from(
                !results.errors.is_empty()
                    || results.tests.iter().any(|t| t.status != Status::Pass),
            )
        }
    };
    Ok(code)
}

fn run_command(plan: &Plan, argv: &[String], results: &mut Results) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        results.errors.push("empty command".to_owned());
        return 127;
    };
    let mut command = base_command(Path::new(program), plan);
    command.args(args);
    marker("start");
    let started = Instant::now();
    let code = match command.status() {
        Ok(status) => exit_code(status),
        Err(e) => {
            eprintln!("xtask guest-run: cannot run {program}: {e}");
            results.errors.push(format!("cannot run {program}: {e}"));
            127
        }
    };
    results.command = Some(CommandResult {
        exit_code: code,
        duration_ms: millis(started.elapsed()),
    });
    code
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one test executable for one exact test, output to `log`, in its own process group
/// (killed whole on timeout).
fn run_test(plan: &Plan, test: &PlannedTest, log: PathBuf) -> TestResult {
    let started = Instant::now();
    let (status, detail) = match run_test_inner(plan, test, &log) {
        Ok(outcome) => outcome,
        Err(e) => (Status::Error, format!("{e:#}")),
    };
    TestResult {
        target: test.target.clone(),
        name: test.name.clone(),
        status,
        duration_ms: millis(started.elapsed()),
        detail,
        log,
    }
}

fn run_test_inner(plan: &Plan, test: &PlannedTest, log: &Path) -> Result<(Status, String)> {
    let out = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone().context("cannot duplicate the log file")?;
    let mut command = base_command(&test.exe, plan);
    command
        .args([&test.name, "--exact", "--test-threads=1", "--nocapture"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", test.exe.display()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let deadline = Instant::now() + Duration::from_secs(test.timeout_secs);
    loop {
        if let Some(status) = child.try_wait().context("waitpid failed")? {
            let text = fs::read_to_string(log).unwrap_or_default();
            return Ok(classify(status, &text));
        }
        if Instant::now() >= deadline {
            // SAFETY: kill() has no memory-safety preconditions; `pid` leads the process
            // group we made for this test (process_group(0)) and has not been reaped.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            let mut file = fs::OpenOptions::new().append(true).open(log)?;
            writeln!(
                file,
                "\n[xtask guest-run] killed after the per-test timeout of {} s",
                test.timeout_secs
            )?;
            return Ok((
                Status::Timeout,
                format!("killed after {} s", test.timeout_secs),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test's status from its exit status and output: libtest's summary must say exactly one
/// test passed (an unknown or ignored name runs none and still exits 0).
pub fn classify(status: ExitStatus, output: &str) -> (Status, String) {
    let summary = output
        .lines()
        .rev()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("");
    if !status.success() {
        let detail = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => format!("killed by signal {}", status.signal().unwrap_or(0)),
        };
        return (Status::Fail, detail);
    }
    if summary.contains(" 1 passed;") {
        (Status::Pass, String::new())
    } else {
        (
            Status::Error,
            format!(
                "ran no test ({})",
                summary.trim_start_matches("test result: ")
            ),
        )
    }
}

/// `memtrace trace --duration 1s --kind all` and the hooks of each kind from its JSON.
fn probe_hooks(memtrace: &Path, plan: &Plan) -> Result<Vec<KindHooks>> {
    let json = Path::new("/tmp/xtask-hooks-probe.json");
    let err_path = Path::new("/tmp/xtask-hooks-probe.err");
    let err = fs::File::create(err_path)
        .with_context(|| format!("cannot create {}", err_path.display()))?;
    let mut command = base_command(memtrace, plan);
    command
        .args([
            "trace",
            "--duration",
            "1s",
            "--kind",
            "all",
            "--class",
            "all",
            "--quiet",
            "--json",
        ])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0);
    marker("hooks-probe");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", memtrace.display()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("waitpid failed")? {
            break status;
        }
        if Instant::now() >= deadline {
            // SAFETY: kill() has no memory-safety preconditions; `pid` leads its own process
            // group and has not been reaped.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            anyhow::bail!("memtrace trace did not finish within {PROBE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let stderr = fs::read_to_string(err_path).unwrap_or_default();
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        anyhow::bail!(
            "memtrace trace failed ({status}): {}",
            last.unwrap_or("no output")
        );
    }
    let report: serde_json::Value = read_json(json)?;
    let kinds = report["session"]["kinds"]
        .as_array()
        .context("the report has no session.kinds")?;
    Ok(kinds
        .iter()
        .map(|k| KindHooks {
            kind: k["kind"].as_str().unwrap_or("?").to_owned(),
            traced: k["traced"].as_bool().unwrap_or(false),
            hooks: k["hooks"]
                .as_array()
                .map(|h| {
                    h.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            note: k["note"].as_str().map(str::to_owned),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            kernel: "6.1.0-57-amd64".into(),
            results_dir: "/t/kernels/runs/1-2-6.1.0-57-amd64".into(),
            cwd: "/w/tests".into(),
            env: vec![("MEMTRACE_REQUIRE_BPF".into(), "1".into())],
            hooks_probe: Some("/w/target/release/memtrace".into()),
            work: Work::Tests {
                tests: vec![PlannedTest {
                    target: "churn".into(),
                    name: "page_fault_churn_is_seen_and_freed".into(),
                    exe: "/w/target/release/deps/churn-0123".into(),
                    timeout_secs: 300,
                }],
            },
        }
    }

    #[test]
    fn plan_and_results_round_trip() {
        let plan = plan();
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains(r#""kind":"tests""#));
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), plan);

        let command = Plan {
            hooks_probe: None,
            work: Work::Command {
                argv: vec!["/bin/true".into(), "--x".into()],
            },
            ..plan
        };
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), command);
        // A plan written without the optional field still reads.
        let text = text.replace(r#""hooks_probe":null,"#, "");
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), command);

        let results = Results {
            kernel: "6.1.0-57-amd64".into(),
            hooks: vec![KindHooks {
                kind: "page".into(),
                traced: true,
                hooks: vec!["tp_btf:mm_page_alloc".into()],
                note: None,
            }],
            hooks_error: None,
            command: Some(CommandResult {
                exit_code: 3,
                duration_ms: 1500,
            }),
            tests: vec![TestResult {
                target: "churn".into(),
                name: "page_fault_churn_is_seen_and_freed".into(),
                status: Status::Timeout,
                duration_ms: 300_000,
                detail: "killed after 300 s".into(),
                log: "/t/x.log".into(),
            }],
            errors: vec![],
        };
        let text = serde_json::to_string_pretty(&results).unwrap();
        assert!(text.contains(r#""status": "timeout""#));
        assert_eq!(serde_json::from_str::<Results>(&text).unwrap(), results);
    }

    #[test]
    fn classifies_libtest_outcomes() {
        let ok = ExitStatus::from_raw(0);
        let failed = ExitStatus::from_raw(101 << 8);
        let passed = "running 1 test\ntest x ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 \
                      ignored; 0 measured; 9 filtered out; finished in 3.2s\n";
        assert_eq!(classify(ok, passed).0, Status::Pass);
        let none = "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 \
                    measured; 10 filtered out; finished in 0.0s\n";
        let (status, detail) = classify(ok, none);
        assert_eq!(status, Status::Error);
        assert!(detail.starts_with("ran no test (ok. 0 passed;"), "{detail}");
        assert_eq!(
            classify(failed, "test result: FAILED. 0 passed; 1 failed;"),
            (Status::Fail, "exit status 101".into())
        );
        assert_eq!(
            classify(ExitStatus::from_raw(9), ""),
            (Status::Fail, "killed by signal 9".into())
        );
    }
}
