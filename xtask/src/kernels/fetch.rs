//! The host side's Debian packages: the tools the guests need (installed through apt when
//! missing) and the stock kernels (the newest of a series in apt's lists, downloaded with
//! `apt-get download`, unpacked with `dpkg-deb -x` and `depmod`ed into a cache under
//! `<target>/kernels/trees/`; nothing is installed on the host for a kernel).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, is_root};

/// What the guests need on the host: (program, Debian package that has it).
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("dpkg-deb", "dpkg"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
    ("mkfs.ext4", "e2fsprogs"),
];
/// The initramfs needs a statically linked busybox: `busybox-static` (it replaces `busybox`).
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The only kernel flavour the matrix boots (not -cloud, -rt).
const FLAVOUR: &str = "amd64";
/// apt's package lists older than this are refreshed before a kernel is picked, so "the
/// newest kernel of the series" means the mirror's newest, not a months-old list's.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Written into an unpacked kernel tree once `dpkg-deb -x` and `depmod` succeeded.
const TREE_MARKER: &str = ".xtask-complete";

/// apt, with `apt-get update` run at most once per xtask run.
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    fn require_root(what: &str, fix: &str) -> Result<()> {
        if !is_root() {
            bail!("{what} needs root (apt): run xtask as root, or {fix}");
        }
        Ok(())
    }

    /// `apt-get update`, once.
    pub fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        Self::require_root(
            "refreshing apt's package lists",
            "run `sudo apt-get update` first",
        )?;
        cmd::run(
            apt_get().arg("update"),
            "apt-get update failed: check the network to the Debian mirror and /etc/apt/sources.list*",
        )?;
        self.updated = true;
        Ok(())
    }

    /// `apt-get install -y --no-install-recommends PACKAGES`, after one `apt-get update`.
    pub fn install(&mut self, packages: &[&str]) -> Result<()> {
        let list = packages.join(" ");
        let manual = format!("sudo apt-get install -y --no-install-recommends {list}");
        Self::require_root(
            &format!("installing {list}"),
            &format!("install them yourself: `{manual}`"),
        )?;
        self.update()?;
        cmd::run(
            apt_get()
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages),
            &format!("apt-get could not install {list}: see its errors above, or run `{manual}`"),
        )
    }

    /// Refreshes the lists when they are older than `LISTS_MAX_AGE` (and we may).
    fn refresh_if_stale(&mut self) -> Result<()> {
        if self.updated || !is_root() {
            return Ok(());
        }
        let age = lists_age();
        if age.is_none_or(|age| age > LISTS_MAX_AGE) {
            eprintln!(
                "[xtask] apt's package lists are {}: refreshing them to find the newest kernels",
                age.map_or("missing".to_owned(), |a| format!(
                    "{:.0} h old",
                    a.as_secs_f64() / 3600.0
                ))
            );
            self.update()?;
        }
        Ok(())
    }
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        // Wait for another apt/dpkg (unattended upgrades) instead of failing at once.
        .args(["-o", "DPkg::Lock::Timeout=300"]);
    c
}

/// Age of the newest package list apt has.
fn lists_age() -> Option<Duration> {
    let newest = fs::read_dir("/var/lib/apt/lists")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("_Packages"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()?;
    SystemTime::now().duration_since(newest).ok()
}

/// Absolute paths of the host programs the guests use.
pub struct HostTools {
    pub qemu: PathBuf,
    pub busybox: PathBuf,
    pub modprobe: PathBuf,
    pub depmod: PathBuf,
    pub dpkg_deb: PathBuf,
    pub mkfs_ext4: PathBuf,
}

/// `name` in PATH or the sbin directories (root's PATH may lack them).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `elf` is an ELF file without a program interpreter (statically linked).
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    // ELF64 little endian only (x86_64 hosts).
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
    })
}

fn static_busybox() -> Option<PathBuf> {
    let bin = which("busybox")?;
    let elf = fs::read(&bin).ok()?;
    is_static_elf(&elf).then_some(bin)
}

/// Finds the host tools, installing their packages (as root, through apt) when missing.
pub fn ensure_host_tools(apt: &mut Apt) -> Result<HostTools> {
    if which("apt-get").is_none() {
        bail!(
            "apt-get not found: the kernel matrix needs a Debian/Ubuntu host (or install \
             qemu-system-x86_64, a static busybox, kmod, dpkg, xz, zstd and mkfs.ext4 yourself)"
        );
    }
    let mut missing: Vec<&str> = Vec::new();
    for &(tool, package) in HOST_TOOLS {
        if which(tool).is_none() && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if static_busybox().is_none() {
        missing.push(BUSYBOX_PACKAGE);
    }
    if !missing.is_empty() {
        eprintln!(
            "[xtask] the guests need Debian packages that are missing: {}",
            missing.join(" ")
        );
        apt.install(&missing)?;
    }
    let find = |tool: &str, package: &str| {
        which(tool).with_context(|| {
            format!("{tool} is still missing after installing {package}: install {package}")
        })
    };
    Ok(HostTools {
        qemu: find("qemu-system-x86_64", "qemu-system-x86")?,
        busybox: static_busybox().with_context(|| {
            format!("no statically linked busybox: `apt-get install {BUSYBOX_PACKAGE}`")
        })?,
        modprobe: find("modprobe", "kmod")?,
        depmod: find("depmod", "kmod")?,
        dpkg_deb: find("dpkg-deb", "dpkg")?,
        mkfs_ext4: find("mkfs.ext4", "e2fsprogs")?,
    })
}

/// Which kernel to boot: the newest of a series, or an exact release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSpec {
    /// `6.1`: the newest `linux-image-6.1.*-amd64`.
    Series(String),
    /// `6.1.0-57-amd64`: exactly `linux-image-6.1.0-57-amd64`.
    Release(String),
}

impl KernelSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let series = s.split('.').count() == 2
            && s.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if series {
            return Ok(Self::Series(s.to_owned()));
        }
        let release_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+~_".contains(&b));
        if s.starts_with(|c: char| c.is_ascii_digit()) && release_chars && s.contains('-') {
            return Ok(Self::Release(s.to_owned()));
        }
        bail!(
            "{s:?} is neither a kernel series (like 6.1 or 6.12) nor a kernel release \
             (like 6.1.0-57-amd64)"
        )
    }
}

impl std::fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Series(s) | Self::Release(s) => f.write_str(s),
        }
    }
}

/// A kernel package in apt's lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `linux-image-6.1.0-57-amd64` (or `…-unsigned` when only that exists).
    pub package: String,
    /// `uname -r` of it: `6.1.0-57-amd64`.
    pub release: String,
}

/// The version numbers in a release, for ordering: `6.12.118+deb12-amd64` → [6, 12, 118, 12,
/// 64]. Compared as numbers, so 6.1.0-9 < 6.1.0-10 and 6.12.99 < 6.12.100.
pub fn release_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The release of a kernel image package name, whether it is the `-unsigned` variant, or
/// `None` for anything else (-dbg, meta-packages, other flavours, templates).
fn parse_image_package(name: &str) -> Option<(String, bool)> {
    let rest = name.strip_prefix("linux-image-")?;
    let (release, unsigned) = match rest.strip_suffix("-unsigned") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let version = release.strip_suffix(&format!("-{FLAVOUR}"))?;
    // `6.1.0-57`, `6.12.118+deb12`: every dash-separated part starts with a digit (a flavour
    // such as `-cloud`, `-rt` does not), and there is a patch level after the series.
    let numeric = version
        .split('-')
        .all(|p| p.starts_with(|c: char| c.is_ascii_digit()));
    let dots = version.split('-').next()?.split('.').count();
    (numeric && dots >= 3).then(|| (release.to_owned(), unsigned))
}

/// From `apt-cache search --names-only '^linux-image-'` output, the package to download for
/// `spec`: for a series the newest release of it (signed package preferred, `-unsigned` only
/// when the signed one is missing).
pub fn pick_kernel(search_output: &str, spec: &KernelSpec) -> Option<Candidate> {
    // release → (signed package present, unsigned present)
    let mut found: Vec<(String, bool, bool)> = Vec::new();
    for line in search_output.lines() {
        let name = line.split(" - ").next().unwrap_or("").trim();
        let Some((release, unsigned)) = parse_image_package(name) else {
            continue;
        };
        let wanted = match spec {
            KernelSpec::Series(series) => release
                .strip_prefix(series.as_str())
                .is_some_and(|r| r.starts_with('.')),
            KernelSpec::Release(r) => *r == release,
        };
        if !wanted {
            continue;
        }
        match found.iter_mut().find(|(r, _, _)| *r == release) {
            Some(entry) if unsigned => entry.2 = true,
            Some(entry) => entry.1 = true,
            None => found.push((release, !unsigned, unsigned)),
        }
    }
    let (release, signed, _) = found
        .into_iter()
        .max_by(|a, b| release_key(&a.0).cmp(&release_key(&b.0)))?;
    let package = if signed {
        format!("linux-image-{release}")
    } else {
        format!("linux-image-{release}-unsigned")
    };
    Some(Candidate { package, release })
}

/// An unpacked, depmod'ed kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub release: String,
    pub package: String,
    /// The unpacked package (`boot/`, `lib/modules/<release>/`): `modprobe -d` takes it.
    pub tree: PathBuf,
    pub vmlinuz: PathBuf,
    /// What QEMU boots: the uncompressed ELF `boot/vmlinux-<release>` extracted from vmlinuz
    /// (entered through PVH: no firmware real-mode setup and no decompression under emulation,
    /// 2–3 s less per boot), or vmlinuz itself when that cannot be had.
    pub boot_image: PathBuf,
}

fn apt_cache_search() -> Result<String> {
    cmd::output(Command::new("apt-cache").args(["search", "--names-only", "^linux-image-"]))
        .context("cannot list the kernel packages with apt-cache")
}

fn cached_kernel(trees: &Path, release: &str) -> Option<Kernel> {
    let tree = trees.join(release);
    let package = fs::read_to_string(tree.join(TREE_MARKER)).ok()?;
    let vmlinuz = tree.join("boot").join(format!("vmlinuz-{release}"));
    vmlinuz.is_file().then(|| Kernel {
        release: release.to_owned(),
        package: package.trim().to_owned(),
        tree,
        boot_image: vmlinuz.clone(),
        vmlinuz,
    })
}

/// The compressed kernel inside a bzImage (x86 boot protocol 2.08+): `payload_offset` (u32 at
/// 0x248) and `payload_length` (u32 at 0x24c), counted from the protected-mode code, which
/// starts after the `setup_sects` (u8 at 0x1f1; 0 means 4) 512-byte sectors of setup and the
/// boot sector. The payload's last 4 bytes are the uncompressed size, not compressed data.
pub fn bzimage_payload(image: &[u8]) -> Option<&[u8]> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| {
        let v = u32::from_le_bytes(image.get(o..o + 4)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    if u16_at(0x206)? < 0x0208 {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let len = u32_at(0x24c)?.checked_sub(4)?;
    image.get(start..start.checked_add(len)?)
}

/// Decompresses a kernel payload by its magic (xz, zstd, gzip) with the matching tool.
fn decompress(payload: &[u8]) -> Result<Vec<u8>> {
    let tool = if payload.starts_with(b"\xfd7zXZ\0") {
        "xz"
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else {
        bail!("the kernel payload is compressed with a format xtask does not know");
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {tool}"))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let out = std::thread::scope(|scope| {
        let writer = scope.spawn(move || std::io::Write::write_all(&mut stdin, payload));
        let out = child.wait_with_output();
        let _ = writer.join();
        out
    })
    .with_context(|| format!("{tool} -dc failed"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `boot/vmlinux-<release>`, extracted from vmlinuz once.
fn ensure_vmlinux(kernel: &Kernel) -> Result<PathBuf> {
    let vmlinux = kernel
        .tree
        .join("boot")
        .join(format!("vmlinux-{}", kernel.release));
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let started = Instant::now();
    let image = fs::read(&kernel.vmlinuz)
        .with_context(|| format!("cannot read {}", kernel.vmlinuz.display()))?;
    let payload =
        bzimage_payload(&image).context("vmlinuz is not a bzImage of boot protocol 2.08+")?;
    let elf = decompress(payload)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("the decompressed kernel is not an ELF file");
    }
    let tmp = vmlinux.with_extension("tmp");
    fs::write(&tmp, &elf).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &vmlinux)
        .with_context(|| format!("cannot rename to {}", vmlinux.display()))?;
    eprintln!(
        "[xtask] kernel {}: extracted the uncompressed vmlinux ({} MiB) in {:.1} s",
        kernel.release,
        elf.len() >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(vmlinux)
}

/// Boots the extracted vmlinux when there is one (see [`Kernel::boot_image`]).
fn with_boot_image(mut kernel: Kernel) -> Kernel {
    match ensure_vmlinux(&kernel) {
        Ok(vmlinux) => kernel.boot_image = vmlinux,
        Err(e) => eprintln!(
            "[xtask] note: booting {} compressed ({e:#}); slower under emulation",
            kernel.vmlinuz.display()
        ),
    }
    kernel
}

/// The kernel for `spec`: the newest in apt's lists (refreshed when stale or when the series
/// is missing), from the cache under `cache` or downloaded and unpacked into it.
pub fn prepare_kernel(
    cache: &Path,
    apt: &mut Apt,
    tools: &HostTools,
    spec: &KernelSpec,
) -> Result<Kernel> {
    fetch_kernel(cache, apt, tools, spec).map(with_boot_image)
}

fn fetch_kernel(
    cache: &Path,
    apt: &mut Apt,
    tools: &HostTools,
    spec: &KernelSpec,
) -> Result<Kernel> {
    apt.refresh_if_stale()?;
    let trees = cache.join("trees");
    let mut candidate = pick_kernel(&apt_cache_search()?, spec);
    if candidate.is_none() && !apt.updated && is_root() {
        apt.update()?;
        candidate = pick_kernel(&apt_cache_search()?, spec);
    }
    let candidate = candidate.with_context(|| {
        format!(
            "no kernel package for {spec} in apt's lists (`apt-cache search --names-only \
             '^linux-image-{spec}'` finds no linux-image-{spec}*-{FLAVOUR}): run `apt-get \
             update`, or add the suite that has it to /etc/apt/sources.list.d"
        )
    })?;
    if let Some(kernel) = cached_kernel(&trees, &candidate.release) {
        eprintln!(
            "[xtask] kernel {} ({}): cached in {}",
            kernel.release,
            kernel.package,
            kernel.tree.display()
        );
        return Ok(kernel);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
    let started = Instant::now();
    let deb = match download(&debs, &candidate.package) {
        Ok(deb) => deb,
        // The lists may name a version the mirror no longer has: refresh them and try the
        // (possibly newer) pick once more.
        Err(e) if !apt.updated && is_root() => {
            eprintln!("[xtask] {e:#}; refreshing apt's lists and trying again");
            apt.update()?;
            let again = pick_kernel(&apt_cache_search()?, spec)
                .with_context(|| format!("no kernel package for {spec} after apt-get update"))?;
            if let Some(kernel) = cached_kernel(&trees, &again.release) {
                return Ok(kernel);
            }
            return unpack_new(
                tools,
                &trees,
                &again,
                &download(&debs, &again.package)?,
                started,
            );
        }
        Err(e) => return Err(e),
    };
    unpack_new(tools, &trees, &candidate, &deb, started)
}

fn unpack_new(
    tools: &HostTools,
    trees: &Path,
    candidate: &Candidate,
    deb: &Path,
    started: Instant,
) -> Result<Kernel> {
    let downloaded = started.elapsed();
    let kernel = unpack(tools, trees, candidate, deb)?;
    eprintln!(
        "[xtask] kernel {}: downloaded in {:.1} s, unpacked and depmod'ed in {:.1} s",
        kernel.release,
        downloaded.as_secs_f64(),
        (started.elapsed() - downloaded).as_secs_f64()
    );
    // The .deb is not needed any more (the tree is the cache).
    let _ = fs::remove_file(deb);
    Ok(kernel)
}

/// `apt-get download PACKAGE` into `dir`; returns the .deb.
fn download(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    // Leftovers of an interrupted download of the same package.
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        {
            let _ = fs::remove_file(&path);
        }
    }
    cmd::run(
        apt_get()
            .current_dir(dir)
            // The cache belongs to root: no fetching as the unprivileged _apt user.
            .args(["-o", "APT::Sandbox::User=root", "download", package]),
        &format!("apt-get could not download {package}: check the network to the Debian mirror"),
    )?;
    fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .with_context(|| {
            format!(
                "apt-get download left no {prefix}*.deb in {}",
                dir.display()
            )
        })
}

/// `dpkg-deb -x` into a temporary directory, `depmod`, then renamed into place.
fn unpack(tools: &HostTools, trees: &Path, candidate: &Candidate, deb: &Path) -> Result<Kernel> {
    let release = &candidate.release;
    let tree = trees.join(release);
    let tmp = trees.join(format!(".{release}.tmp-{}", std::process::id()));
    for dir in [&tree, &tmp] {
        if dir.exists() {
            fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove the stale {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    cmd::run(
        Command::new(&tools.dpkg_deb).arg("-x").arg(deb).arg(&tmp),
        &format!("{} may be damaged: remove it", deb.display()),
    )?;
    // modprobe/depmod -b look in DIR/lib/modules; a merged-/usr package has usr/lib/modules.
    let lib = tmp.join("lib");
    if !tmp.join("lib/modules").join(release).is_dir() {
        if tmp.join("usr/lib/modules").join(release).is_dir() && !lib.exists() {
            std::os::unix::fs::symlink("usr/lib", &lib)
                .with_context(|| format!("cannot create {}", lib.display()))?;
        } else {
            bail!("{} has no lib/modules/{release}", candidate.package);
        }
    }
    if !tmp
        .join("boot")
        .join(format!("vmlinuz-{release}"))
        .is_file()
    {
        bail!("{} has no boot/vmlinuz-{release}", candidate.package);
    }
    cmd::run(
        Command::new(&tools.depmod).arg("-b").arg(&tmp).arg(release),
        "depmod failed on the unpacked kernel",
    )?;
    fs::write(tmp.join(TREE_MARKER), format!("{}\n", candidate.package))
        .with_context(|| format!("cannot write into {}", tmp.display()))?;
    if let Err(e) = fs::rename(&tmp, &tree) {
        // Another xtask unpacked the same kernel meanwhile: use theirs.
        let _ = fs::remove_dir_all(&tmp);
        return cached_kernel(trees, release).with_context(|| {
            format!("cannot rename {} to {}: {e}", tmp.display(), tree.display())
        });
    }
    cached_kernel(trees, release)
        .with_context(|| format!("{} is incomplete after unpacking", tree.display()))
}

/// Removes cached trees of the same series older than `keep` (a new kernel replaced them).
pub fn prune_older(cache: &Path, keep: &Kernel, series: &str) -> Vec<String> {
    let trees = cache.join("trees");
    let Ok(entries) = fs::read_dir(&trees) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let same_series = name
            .strip_prefix(series)
            .is_some_and(|r| r.starts_with('.'));
        if same_series
            && name != keep.release
            && release_key(&name) < release_key(&keep.release)
            && fs::remove_dir_all(entry.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = "\
linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-10-amd64 - Linux 6.1 for 64-bit PCs (signed)
linux-image-6.1.0-10-amd64-dbg - Debug symbols for linux-image-6.1.0-10-amd64
linux-image-6.1.0-10-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-11-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-11-rt-amd64 - Linux 6.1 for 64-bit PCs, PREEMPT_RT (signed)
linux-image-6.1.0-11-rt-amd64-unsigned - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.1.0-12-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-12-amd64-dbg - Debug symbols
linux-image-6.12-amd64 - Linux for 64-bit PCs (meta-package)
linux-image-6.12-amd64-signed-template - Template for signed linux-image packages for amd64
linux-image-6.12.99+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.100+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.100+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.118+deb12-rt-amd64 - Linux 6.12 for 64-bit PCs (signed), PREEMPT_RT
linux-image-6.12.118+deb12-amd64-dbg - Debug symbols for linux-image-6.12.118+deb12-amd64
linux-image-amd64 - Linux for 64-bit PCs (meta-package)
";

    fn series(s: &str) -> KernelSpec {
        KernelSpec::Series(s.to_owned())
    }

    #[test]
    fn picks_the_newest_of_each_series_numerically() {
        // 6.1.0-12 only exists unsigned: it is newer, so it is taken, as -unsigned.
        assert_eq!(
            pick_kernel(SEARCH, &series("6.1")),
            Some(Candidate {
                package: "linux-image-6.1.0-12-amd64-unsigned".into(),
                release: "6.1.0-12-amd64".into()
            })
        );
        let without_12: String = SEARCH
            .lines()
            .filter(|l| !l.contains("6.1.0-12"))
            .map(|l| format!("{l}\n"))
            .collect();
        // 10 > 9 (not lexical), the signed package preferred over -unsigned, -cloud/-rt
        // (11) ignored.
        assert_eq!(
            pick_kernel(&without_12, &series("6.1")),
            Some(Candidate {
                package: "linux-image-6.1.0-10-amd64".into(),
                release: "6.1.0-10-amd64".into()
            })
        );
        // 100 > 99; the meta-package, template, -rt and -dbg of 118 ignored.
        assert_eq!(
            pick_kernel(SEARCH, &series("6.12")),
            Some(Candidate {
                package: "linux-image-6.12.100+deb12-amd64".into(),
                release: "6.12.100+deb12-amd64".into()
            })
        );
        assert_eq!(pick_kernel(SEARCH, &series("6.6")), None);
        assert_eq!(pick_kernel(SEARCH, &series("6.11")), None);
    }

    #[test]
    fn picks_an_exact_release() {
        let spec = KernelSpec::parse("6.1.0-9-amd64").unwrap();
        assert_eq!(spec, KernelSpec::Release("6.1.0-9-amd64".into()));
        assert_eq!(
            pick_kernel(SEARCH, &spec).map(|c| c.package),
            Some("linux-image-6.1.0-9-amd64".into())
        );
        let spec = KernelSpec::parse("6.1.0-11-rt-amd64").unwrap();
        assert_eq!(pick_kernel(SEARCH, &spec), None);
    }

    #[test]
    fn kernel_specs() {
        assert_eq!(KernelSpec::parse("6.12").unwrap(), series("6.12"));
        assert_eq!(KernelSpec::parse(" 5.10 ").unwrap(), series("5.10"));
        assert!(KernelSpec::parse("6").is_err());
        assert!(KernelSpec::parse("six").is_err());
        assert!(KernelSpec::parse("6.1.x").is_err());
        assert!(KernelSpec::parse("6.1.0-9 amd64").is_err());
    }

    #[test]
    fn release_keys_compare_as_numbers() {
        assert!(release_key("6.1.0-9-amd64") < release_key("6.1.0-10-amd64"));
        assert!(release_key("6.12.99+deb12-amd64") < release_key("6.12.100+deb12-amd64"));
        assert_eq!(
            release_key("6.12.118+deb12-amd64"),
            vec![6, 12, 118, 12, 64]
        );
    }

    #[test]
    fn finds_the_bzimage_payload() {
        // setup_sects 1: protected-mode code at 1024; payload at +16, 9 bytes + 4 of size.
        let mut image = vec![0u8; 2048];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&13u32.to_le_bytes());
        image[1040..1049].copy_from_slice(b"\xfd7zXZ\0abc");
        assert_eq!(bzimage_payload(&image), Some(&b"\xfd7zXZ\0abc"[..]));
        // Boot protocol too old for payload fields; not a bzImage; payload past the end.
        image[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
        assert_eq!(bzimage_payload(&image), None);
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&4000u32.to_le_bytes());
        assert_eq!(bzimage_payload(&image), None);
        assert_eq!(bzimage_payload(b"\x7fELF"), None);
    }

    #[test]
    fn static_elf_detection() {
        // A minimal ELF64 LE header with one PT_LOAD program header at 64.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(is_static_elf(&elf));
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(!is_static_elf(&elf));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
