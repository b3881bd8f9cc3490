//! The guests' initramfs, built here: the host's static busybox, `/init` (init.sh) and the
//! modules that mounting the 9p root needs, decompressed, in the order `modprobe
//! --show-depends` prints. Written as an uncompressed newc cpio archive, cached per kernel
//! release under `<target>/kernels/initramfs/` (the name carries a hash of the contents'
//! inputs, so a changed init script or busybox makes a new one).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use super::fetch::{HostTools, Kernel};
use crate::cmd;

/// `/init`.
pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// What mounting the host's root over virtio-9p needs (their dependencies come along).
pub const ROOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// One line of `modprobe --show-depends`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleStep {
    /// `insmod PATH [OPTIONS]`.
    Insmod { path: PathBuf, options: String },
    /// `builtin NAME`: nothing to load.
    Builtin(String),
}

/// Parses `modprobe --show-depends` output (dependencies first).
pub fn parse_show_depends(out: &str) -> Result<Vec<ModuleStep>> {
    let mut steps = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("insmod ") {
            let rest = rest.trim();
            let (path, options) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            steps.push(ModuleStep::Insmod {
                path: PathBuf::from(path),
                options: options.trim().to_owned(),
            });
        } else if let Some(name) = line.strip_prefix("builtin ") {
            steps.push(ModuleStep::Builtin(name.trim().to_owned()));
        } else {
            bail!("unexpected line in `modprobe --show-depends` output: {line:?}");
        }
    }
    Ok(steps)
}

/// The modules to insmod, in order, for all of `modules`: each one's `--show-depends` list,
/// concatenated, every module once (at its first place, after its dependencies).
pub fn load_order(outputs: &[String]) -> Result<Vec<(PathBuf, String)>> {
    let mut order: Vec<(PathBuf, String)> = Vec::new();
    for out in outputs {
        for step in parse_show_depends(out)? {
            if let ModuleStep::Insmod { path, options } = step {
                if !order.iter().any(|(p, _)| *p == path) {
                    order.push((path, options));
                }
            }
        }
    }
    Ok(order)
}

/// `foo.ko.xz` → `foo.ko`, with its contents decompressed.
fn read_module(path: &Path) -> Result<(String, Vec<u8>)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("module path {} has no file name", path.display()))?;
    let tool = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext));
    let Some((ext, tool)) = tool else {
        let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((name, data));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {tool} to decompress {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "`{tool} -dc {}` failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((name[..name.len() - ext.len()].to_owned(), out.stdout))
}

/// A newc ("070701") cpio archive, as the kernel unpacks initramfs images.
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so the same inputs give the same bytes
            u32::try_from(body.len()).unwrap_or(u32::MAX),
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            u32::try_from(namesize).unwrap_or(u32::MAX),
            0, // check
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.entry(name, 0o100_000 | mode, body);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes());
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        // The kernel reads initramfs in 512-byte blocks happily either way; round up anyway.
        while !self.data.len().is_multiple_of(512) {
            self.data.push(0);
        }
        self.data
    }
}

/// FNV-1a, for cache keys.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The initramfs for `kernel`, from the cache under `cache` or built into it.
pub fn ensure(cache: &Path, tools: &HostTools, kernel: &Kernel) -> Result<PathBuf> {
    let started = Instant::now();
    let mut outputs = Vec::new();
    for module in ROOT_MODULES {
        let out = cmd::output_quiet(
            Command::new(&tools.modprobe)
                .arg("-d")
                .arg(&kernel.tree)
                .arg("-S")
                .arg(&kernel.release)
                .arg("--show-depends")
                .arg(module),
        )
        .with_context(|| format!("kernel {} has no usable {module} module", kernel.release))?;
        outputs.push(out);
    }
    let order = load_order(&outputs)?;
    let busybox = fs::read(&tools.busybox)
        .with_context(|| format!("cannot read {}", tools.busybox.display()))?;

    let mut key = fnv1a(0xcbf2_9ce4_8422_2325, INIT_SCRIPT.as_bytes());
    key = fnv1a(key, &busybox);
    for (path, options) in &order {
        key = fnv1a(key, path.as_os_str().as_encoded_bytes());
        key = fnv1a(key, options.as_bytes());
    }
    let dir = cache.join("initramfs");
    let image = dir.join(format!("{}-{key:016x}.cpio", kernel.release));
    if image.is_file() {
        return Ok(image);
    }

    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "newroot",
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.dir(d);
    }
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let mut list = String::new();
    for (i, (path, options)) in order.iter().enumerate() {
        let (name, data) = read_module(path)?;
        let file = format!("{i:02}-{name}");
        cpio.file(&format!("lib/modules/{file}"), 0o644, &data);
        list.push_str(&format!("{file} {options}\n"));
    }
    cpio.file("etc/xtask-modules", 0o644, list.as_bytes());
    let bytes = cpio.finish();

    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Older images of this release (other inputs) go.
    if let Ok(entries) = fs::read_dir(&dir) {
        let prefix = format!("{}-", kernel.release);
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix).unwrap_or("");
            // `<release>-<16 hex>.cpio` only (6.1.0-5 must not take 6.1.0-57's images).
            if rest.len() == 21 && rest.ends_with(".cpio") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let tmp = dir.join(format!(".{}.tmp-{}", kernel.release, std::process::id()));
    fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &image).with_context(|| format!("cannot rename to {}", image.display()))?;
    let names: Vec<String> = order
        .iter()
        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    eprintln!(
        "[xtask] initramfs for {}: {} KiB, modules {} ({:.1} s): {}",
        kernel.release,
        bytes.len() / 1024,
        names.join(" "),
        started.elapsed().as_secs_f64(),
        image.display()
    );
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_depends() {
        let out = "insmod /t/lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_ring.ko.xz \n\
                   builtin virtio\n\
                   insmod /t/lib/modules/6.1.0-57-amd64/kernel/net/9p/9pnet.ko.xz  debug=1\n";
        assert_eq!(
            parse_show_depends(out).unwrap(),
            vec![
                ModuleStep::Insmod {
                    path: "/t/lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio_ring.ko.xz"
                        .into(),
                    options: String::new()
                },
                ModuleStep::Builtin("virtio".into()),
                ModuleStep::Insmod {
                    path: "/t/lib/modules/6.1.0-57-amd64/kernel/net/9p/9pnet.ko.xz".into(),
                    options: "debug=1".into()
                },
            ]
        );
        assert!(parse_show_depends("modprobe: FATAL: Module 9p not found\n").is_err());
    }

    #[test]
    fn load_order_keeps_each_module_once_after_its_dependencies() {
        let outputs = vec![
            "insmod /m/virtio_ring.ko\ninsmod /m/virtio.ko\ninsmod /m/virtio_pci.ko\n".to_owned(),
            "insmod /m/virtio_ring.ko\ninsmod /m/9pnet.ko\ninsmod /m/9pnet_virtio.ko\n".to_owned(),
            "builtin netfs\ninsmod /m/9pnet.ko\ninsmod /m/9p.ko\n".to_owned(),
        ];
        let order: Vec<String> = load_order(&outputs)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "/m/virtio_ring.ko",
                "/m/virtio.ko",
                "/m/virtio_pci.ko",
                "/m/9pnet.ko",
                "/m/9pnet_virtio.ko",
                "/m/9p.ko"
            ]
        );
    }

    #[test]
    fn cpio_newc_layout() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 100755, ..., filesize 10, ..., namesize 5 ("init\0").
        let header = std::str::from_utf8(&bytes[6..110]).unwrap();
        assert_eq!(&header[..8], "00000001");
        assert_eq!(&header[8..16], "000081ed");
        assert_eq!(&header[48..56], "0000000a");
        assert_eq!(&header[88..96], "00000005");
        // Name at 110, padded to 4: body at 116.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        let trailer = bytes.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert!(trailer > 126);
        assert_eq!(bytes.len() % 512, 0);
    }
}
