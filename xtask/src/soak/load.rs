//! The soak's load, run from this process while memtrace serve traces the machine:
//!
//! - the bench's three workloads (`bench::workload`: page-fault churn, a loopback TCP stream,
//!   the AF_UNIX datagram slab loop) in turn, [`LoadOptions::workload_period`] each, in
//!   slices so that stopping takes at most one slice;
//! - process churn: short-lived `sh -c true` children, a few per second, so that the owners
//!   memtrace attributes allocations to come and go;
//! - cgroup churn (when a cgroup v2 hierarchy is mounted and writable): a parent directory
//!   `memtrace-soak-<pid>` at the top of the hierarchy, in it child directories created and
//!   removed one after the other (a few alive at once), each entered by a short-lived shell
//!   that moves itself in and runs a command there.
//!
//! Every thread stops at a flag; [`Load::stop`] (and the drop guard) joins them, waits for
//! their children (each child is waited for by the thread that started it) and removes every
//! cgroup directory created here.

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::bench::workload::Workload;

/// How the load runs.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// How long each workload runs before the next one takes over.
    pub workload_period: Duration,
    /// Each workload runs in slices this long (a stop waits for at most one).
    pub slice: Duration,
    /// Pause between two short-lived child processes.
    pub process_every: Duration,
    /// Pause between two cgroup churn cycles.
    pub cgroup_every: Duration,
    /// Child cgroups alive at once (the oldest is removed when one more is created).
    pub cgroups_alive: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            workload_period: Duration::from_secs(20),
            slice: Duration::from_secs(2),
            process_every: Duration::from_millis(250),
            cgroup_every: Duration::from_secs(2),
            cgroups_alive: 3,
        }
    }
}

/// What the load did so far (read by the sampler, written by the load threads).
#[derive(Default)]
pub struct LoadStats {
    /// Index into [`Workload::ALL`] of the running workload; `usize::MAX` before the first.
    phase: AtomicUsize,
    /// Work done per workload (pages, bytes, cycles).
    work: Mutex<[f64; 3]>,
    /// Seconds run per workload.
    seconds: Mutex<[f64; 3]>,
    pub processes: AtomicU64,
    pub cgroups_created: AtomicU64,
    pub cgroups_removed: AtomicU64,
    /// The first error of a load thread (the thread ended with it).
    failure: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LoadStats {
    /// The workload running now.
    pub fn phase(&self) -> Option<Workload> {
        Workload::ALL
            .get(self.phase.load(Ordering::Relaxed))
            .copied()
    }

    /// Per workload: seconds run and work done.
    pub fn totals(&self) -> Vec<(Workload, f64, f64)> {
        let work = *lock(&self.work);
        let seconds = *lock(&self.seconds);
        Workload::ALL
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, seconds[i], work[i]))
            .collect()
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn fail(&self, what: &str, e: &anyhow::Error) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some(format!("{what}: {e:#}"));
        }
    }
}

/// Where the cgroup churn happens, or why it does not.
#[derive(Clone, Debug)]
pub enum CgroupChurn {
    /// The parent directory created for it.
    On(PathBuf),
    Off(String),
}

/// The body of a load thread.
type LoadThread = Box<dyn FnOnce(&AtomicBool, &LoadStats) -> Result<()> + Send>;

/// The running load; see the module documentation.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    cgroup_parent: Option<CgroupParent>,
    pub cgroups: CgroupChurn,
}

impl Load {
    /// Starts every part of the load.
    pub fn start(opts: LoadOptions) -> Result<Load> {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(LoadStats {
                phase: AtomicUsize::new(usize::MAX),
                ..LoadStats::default()
            }),
            threads: Vec::new(),
            cgroup_parent: None,
            cgroups: CgroupChurn::Off(String::new()),
        };
        load.cgroups = match CgroupParent::create() {
            Ok(parent) => {
                let path = parent.path.clone();
                load.cgroup_parent = Some(parent);
                CgroupChurn::On(path)
            }
            Err(why) => CgroupChurn::Off(why),
        };
        // The first cycle runs here: a hierarchy that refuses to move a process turns the
        // churn off with the reason instead of failing the soak later.
        if let (Some(parent), CgroupChurn::On(_)) = (&load.cgroup_parent, &load.cgroups) {
            let mut ring = VecDeque::new();
            let first = cgroup_cycle(&parent.path, 0, &mut ring, 0, &load.stats);
            remove_all(&mut ring, &load.stats);
            if let Err(e) = first {
                load.cgroups = CgroupChurn::Off(format!("{e:#}"));
                load.cgroup_parent = None;
            }
        }

        let spawn = |name: &'static str, load: &mut Load, body: LoadThread| -> Result<()> {
            let stop = Arc::clone(&load.stop);
            let stats = Arc::clone(&load.stats);
            let handle = std::thread::Builder::new()
                .name(format!("soak-{name}"))
                .spawn(move || {
                    if let Err(e) = body(&stop, &stats) {
                        stats.fail(name, &e);
                    }
                })
                .with_context(|| format!("spawning the {name} thread"))?;
            load.threads.push((name, handle));
            Ok(())
        };
        spawn(
            "workloads",
            &mut load,
            Box::new(move |stop, stats| workloads(opts, stop, stats)),
        )?;
        spawn(
            "processes",
            &mut load,
            Box::new(move |stop, stats| process_churn(opts, stop, stats)),
        )?;
        if let CgroupChurn::On(parent) = &load.cgroups {
            let parent = parent.clone();
            spawn(
                "cgroups",
                &mut load,
                Box::new(move |stop, stats| cgroup_churn(&parent, opts, stop, stats)),
            )?;
        }
        Ok(load)
    }

    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Stops and joins every thread, removes the cgroups; the first failure of the load, if
    /// any. The statistics stay readable.
    pub fn stop(&mut self) -> Result<()> {
        self.shutdown()?;
        match self.stats.failure() {
            Some(failure) => bail!("the load failed: {failure}"),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for (name, handle) in self.threads.drain(..) {
            if handle.join().is_err() {
                self.stats
                    .fail(name, &anyhow::anyhow!("the {name} thread panicked"));
            }
        }
        match self.cgroup_parent.take() {
            Some(parent) => parent.remove(),
            None => Ok(()),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("[soak] warning: {e:#}");
        }
    }
}

/// Sleeps `total` in short steps; false when the stop flag was raised meanwhile.
fn nap(total: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

fn workloads(opts: LoadOptions, stop: &AtomicBool, stats: &LoadStats) -> Result<()> {
    loop {
        for (i, workload) in Workload::ALL.iter().enumerate() {
            stats.phase.store(i, Ordering::Relaxed);
            let end = Instant::now() + opts.workload_period;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let measured = workload.run(opts.slice.min(end - now))?;
                lock(&stats.work)[i] += measured.work;
                lock(&stats.seconds)[i] += measured.elapsed.as_secs_f64();
            }
        }
    }
}

fn quiet(mut command: Command) -> Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn process_churn(opts: LoadOptions, stop: &AtomicBool, stats: &LoadStats) -> Result<()> {
    while nap(opts.process_every, stop) {
        let mut sh = Command::new("sh");
        sh.args(["-c", "true"]);
        let status = quiet(sh)
            .status()
            .context("cannot run `sh -c true` (is /bin/sh there?)")?;
        if !status.success() {
            bail!("`sh -c true` ended with {status}");
        }
        stats.processes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

// ---- cgroups ---------------------------------------------------------------------------------

/// The mount point of the cgroup v2 hierarchy in a /proc/self/mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Fields: id, parent id, major:minor, root, mount point, options...
        let point = mount.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The test parent `memtrace-soak-<pid>` at the top of the cgroup v2 hierarchy.
struct CgroupParent {
    path: PathBuf,
}

impl CgroupParent {
    /// Creates it; the reason as text when there is no writable cgroup v2 hierarchy.
    fn create() -> std::result::Result<CgroupParent, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let Some(mount) = cgroup2_mount(&mountinfo) else {
            return Err("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none \
                        /sys/fs/cgroup/unified to have one)"
                .into());
        };
        let path = mount.join(format!("memtrace-soak-{}", std::process::id()));
        fs::create_dir(&path)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", path.display()))?;
        Ok(CgroupParent { path })
    }

    /// Removes the children left (none, normally) and the parent.
    fn remove(self) -> Result<()> {
        let path = self.path.clone();
        // Disarm the drop guard: this is the removal.
        std::mem::forget(self);
        remove_tree(&path)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("[soak] warning: {e:#}");
        }
    }
}

/// Removes a cgroup directory (retrying while its last process is being released).
fn remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("removing the cgroup {}", dir.display()))
            }
        }
    }
}

/// Removes the child cgroups under `parent`, then `parent`.
fn remove_tree(parent: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path())?;
            }
        }
    }
    remove_cgroup(parent)
}

/// The shell that enters a cgroup: moves itself into `$1`, checks that it arrived, and runs a
/// command there (its allocations are charged to the cgroup).
const ENTER_CGROUP: &str =
    "echo $$ > \"$1/cgroup.procs\" && grep -q \"^0::$2\\$\" /proc/self/cgroup \
                            && exec cat /proc/self/status";

/// One cycle: creates child `n`, runs a short-lived process in it, removes the oldest child
/// once more than `alive` exist.
fn cgroup_cycle(
    parent: &Path,
    n: u64,
    ring: &mut VecDeque<PathBuf>,
    alive: usize,
    stats: &LoadStats,
) -> Result<()> {
    let dir = parent.join(format!("churn-{n}"));
    fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
    stats.cgroups_created.fetch_add(1, Ordering::Relaxed);
    ring.push_back(dir.clone());
    // The cgroup's path as /proc/PID/cgroup shows it: relative to the hierarchy's root.
    let mount = parent.parent().context("the cgroup parent has no parent")?;
    let relative = Path::new("/").join(dir.strip_prefix(mount).context("cgroup path")?);
    let mut sh = Command::new("sh");
    sh.args(["-c", ENTER_CGROUP, "soak-cgroup"])
        .arg(&dir)
        .arg(&relative);
    let status = quiet(sh)
        .status()
        .context("cannot run sh to enter a cgroup")?;
    if !status.success() {
        bail!(
            "a process could not move itself into the cgroup {} ({status})",
            dir.display()
        );
    }
    stats.processes.fetch_add(1, Ordering::Relaxed);
    while ring.len() > alive {
        if let Some(old) = ring.pop_front() {
            remove_cgroup(&old)?;
            stats.cgroups_removed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn remove_all(ring: &mut VecDeque<PathBuf>, stats: &LoadStats) {
    while let Some(dir) = ring.pop_front() {
        match remove_cgroup(&dir) {
            Ok(()) => {
                stats.cgroups_removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("[soak] warning: {e:#}"),
        }
    }
}

fn cgroup_churn(
    parent: &Path,
    opts: LoadOptions,
    stop: &AtomicBool,
    stats: &LoadStats,
) -> Result<()> {
    let mut ring = VecDeque::new();
    let mut n = 1;
    let result = (|| {
        while nap(opts.cgroup_every, stop) {
            cgroup_cycle(parent, n, &mut ring, opts.cgroups_alive, stats)?;
            n += 1;
        }
        Ok(())
    })();
    remove_all(&mut ring, stats);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1 = "27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount(v1), None);
        let spaced = "26 25 0:24 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mount(spaced),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    #[test]
    fn process_churn_stops_at_the_flag() {
        let stats = LoadStats::default();
        let stop = AtomicBool::new(false);
        let opts = LoadOptions {
            process_every: Duration::from_millis(10),
            ..LoadOptions::default()
        };
        std::thread::scope(|s| {
            let churn = s.spawn(|| process_churn(opts, &stop, &stats));
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            churn.join().expect("no panic").expect("sh -c true runs");
        });
        assert!(stats.processes.load(Ordering::Relaxed) > 0);
    }
}
