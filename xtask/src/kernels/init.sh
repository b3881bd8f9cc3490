#!/bin/busybox sh
# /init of the guest initramfs that `cargo xtask guest` / the kernel matrix boot (written by
# xtask/src/kernels/initramfs.rs). PID 1: load the 9p modules, mount the host's / (read-only)
# at /newroot and the run's results directory (writable) at the same path in it, mount the
# pseudo filesystems inside, set what guest.env asks for (sysctls, modules), run the xtask
# guest runner chrooted into the host's root, write its exit status to the results share and
# power off. Every step that matters prints a `@@xtask-guest` marker line on the console,
# which the host reads. The kernel passes MT_RESULTS (the results directory's host path) from
# its command line in the environment.

/bin/busybox --install -s /bin
export PATH=/bin
R=/newroot

say() { echo "@@xtask-guest $*"; }
die() {
    say "fail $*"
    sync
    poweroff -f
    sleep 5
    exit 1
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# The 9p modules, in the order `modprobe --show-depends` printed (decompressed at build time).
while read -r file opts; do
    [ -n "$file" ] || continue
    # shellcheck disable=SC2086 # options are separate words
    insmod "/lib/modules/$file" $opts || die "insmod $file"
done </etc/xtask-modules

P9=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$P9,ro,cache=loose" r "$R" || die "cannot mount the host root over 9p"
[ -n "$MT_RESULTS" ] || die "MT_RESULTS is not set on the kernel command line"
# The results share is mounted here first and bound into the host's tree once /tmp and
# /var/tmp are set up (it may live under them, in a clone made in a temp dir).
mkdir -p /results
mount -t 9p -o "$P9" results /results || die "cannot mount the results share"
[ -r /results/guest.env ] || die "no $MT_RESULTS/guest.env"
# shellcheck source=/dev/null
. /results/guest.env

# The host's own /tmp and /var/tmp, kept reachable before fresh ones cover them: MT_KEEP lists
# host directories under them (the workspace, its target directory) bound back in place.
mkdir -p /host/tmp /host/var-tmp
mount --bind "$R/tmp" /host/tmp || die "bind the host's /tmp"
mount --bind "$R/var/tmp" /host/var-tmp || die "bind the host's /var/tmp"
keep_host_dirs() { # $1: /tmp or /var/tmp, just mounted afresh
    echo "$MT_KEEP" | while read -r dir; do
        case "$1:$dir" in
        /tmp:/tmp/*) src=/host/tmp${dir#/tmp} ;;
        /var/tmp:/var/tmp/*) src=/host/var-tmp${dir#/var/tmp} ;;
        *) continue ;;
        esac
        mkdir -p "$R$dir" && mount --bind "$src" "$R$dir" || die "cannot keep $dir visible"
    done
}

mount -t proc proc "$R/proc" || die "mount proc"
mount -t sysfs sysfs "$R/sys" || die "mount sysfs"
mount -t devtmpfs devtmpfs "$R/dev" || die "mount devtmpfs"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts devpts "$R/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -t tracefs tracefs "$R/sys/kernel/tracing" || die "mount tracefs"
mount -t debugfs debugfs "$R/sys/kernel/debug" || die "mount debugfs"
mount -t bpf bpf "$R/sys/fs/bpf" || die "mount bpffs"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup" || die "mount cgroup2"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" || die "mount tmpfs on /tmp"
keep_host_dirs /tmp
mount -t tmpfs -o mode=755 tmpfs "$R/run" || die "mount tmpfs on /run"
ip link set lo up || die "ip link set lo up"
hostname guest

# Module autoloading (request_module) runs /proc/sys/kernel/modprobe in PID 1's root, this
# initramfs: hand it to the host's modprobe on the unpacked kernel tree.
cat >/bin/guest-modprobe <<EOF
#!/bin/sh
exec chroot $R "$MT_MODPROBE" -d "$MT_TREE" -S "$MT_RELEASE" "\$@"
EOF
chmod 755 /bin/guest-modprobe
echo /bin/guest-modprobe >/proc/sys/kernel/modprobe

# guest.env defines MT_SYSCTLS (name=value lines, value words separated by commas), MT_MODULES
# (names) and MT_SCRATCH (non-empty: a scratch disk is attached).
echo "$MT_SYSCTLS" | while IFS='=' read -r name value; do
    [ -n "$name" ] || continue
    echo "$value" | tr ',' ' ' >"/proc/sys/$(echo "$name" | tr . /)" || die "sysctl $name=$value"
done
if [ -n "$MT_MODULES" ]; then
    # shellcheck disable=SC2086 # one word per module
    chroot "$R" "$MT_MODPROBE" -d "$MT_TREE" -S "$MT_RELEASE" -a $MT_MODULES ||
        say "warning: modprobe $MT_MODULES failed"
fi

# /var/tmp: the scratch disk (ext4 on virtio-blk, made by the host: disk-backed like the
# host's temp dirs, for page-cache scenarios) when there is one, else tmpfs.
if [ -n "$MT_SCRATCH" ]; then
    chroot "$R" "$MT_MODPROBE" -d "$MT_TREE" -S "$MT_RELEASE" -a virtio_blk ext4 ||
        die "modprobe virtio_blk ext4"
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    mount -t ext4 /dev/vda "$R/var/tmp" || die "cannot mount the scratch disk on /var/tmp"
    chmod 1777 "$R/var/tmp"
else
    mount -t tmpfs -o mode=1777 tmpfs "$R/var/tmp" || die "mount tmpfs on /var/tmp"
fi
keep_host_dirs /var/tmp
mkdir -p "$R$MT_RESULTS" 2>/dev/null
mount --bind /results "$R$MT_RESULTS" || die "cannot mount the results share at $MT_RESULTS"

say ready
chroot "$R" "$MT_RUNNER" guest-run --plan "$MT_RESULTS/plan.json"
rc=$?
echo "$rc" >"$R$MT_RESULTS/exit-status"
say "exit $rc"
sync
umount "$R$MT_RESULTS"
poweroff -f
