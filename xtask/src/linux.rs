//! `cargo xtask linux`: fetch Debian's kernel and build a busybox initramfs.
//!
//! Everything lands in `target/linux/`:
//!
//! - `vmlinux`: the ELF kernel taken out of Debian's `linux-image-amd64`
//!   bzImage, checked to carry the Xen PVH entry note
//!   (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18);
//! - `version.txt`: one `package version` line for the kernel, one for
//!   busybox, one for xenstore-utils, one for e2fsprogs;
//! - `initramfs.cpio`: an uncompressed `newc` archive with Debian's static
//!   busybox, the Xen modules of the same kernel package ([`MODULES`], with
//!   their dependencies), Debian's `xenstore-*` tools and `e2fsck` (as
//!   `fsck.ext4`) with the libraries they load, and the `/init` of
//!   [`INIT_SCRIPT`];
//! - `root.ext4`: an ext4 image of the same files (plus `/etc/rootfs`),
//!   made with `mke2fs -d` from `root-tree/`: the Linux domain's `xvda`,
//!   which `/init` switches root to;
//! - `debs/`, `pkg/`, `busybox-pkg/`, `xs-pkg/`: the downloaded packages,
//!   unpacked.
//!
//! A second run does no network access: it checks the cached kernel and
//! rebuilds the archive from the cached packages. `--force` fetches again.
//!
//! Needs `apt-get`, `apt-cache`, `dpkg-deb`, `xz` (Debian's `xz-utils`) and
//! `readelf` (binutils), and package lists (`apt-get update`); run as root
//! it updates them itself.

use crate::{root, run};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The start of an xz stream: `FD 37 7A 58 5A 00`.
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Busybox applets linked into `/bin` (`sh` and those `/init` uses).
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "echo",
    "cat",
    "poweroff",
    "reboot",
    "nproc",
    "ls",
    "setsid",
    "cttyhack",
    "sleep",
    "dmesg",
    "uname",
    "mkdir",
    "insmod",
    "grep",
    "mkfifo",
    "kill",
    "rm",
    "timeout",
    "seq",
    "true",
    "dd",
    "sha256sum",
    "sync",
    "switch_root",
    "umount",
    "ip",
    "ping",
    "nc",
    "head",
];

/// The Xen modules `/init` loads, from the kernel's own package: the
/// xenstore, event-channel and grant devices Xen's user-space tools use,
/// the block and network front ends, virtio's PCI transport, block and
/// network drivers (the bare-QEMU baselines of the block and network
/// figures read the same image as `vda` and talk through `eth0`), and ext4 (with the crc32c its checksums ask the
/// crypto API for: there is no modprobe to load it on demand). Their
/// dependencies (`depends=` in each module's `.modinfo`) come too.
const MODULES: &[&str] = &[
    "xenfs",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-blkfront",
    "xen-netfront",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];

/// The ext4 root image `cargo xtask linux` builds from the initramfs'
/// files (`mke2fs -d`): `root.ext4`, this many MiB.
pub const ROOT_IMAGE_MIB: u32 = 32;

/// The sha256 of `/keep` as `pvhkeep` writes it: 1 MiB of `pvh-keep\n`
/// lines (`yes pvh-keep | head -c 1048576`), so a test knows it without
/// reading the guest's console.
pub const KEEP_SHA256: &str = "0b1fabe53aad12544ed1a1bf0224f664f568c700b0955065bffa16e5d374a0c2";

/// Debian's xenstore clients, the libraries they load, and the C library;
/// then e2fsprogs' `e2fsck` with its libraries (the guest checks its root
/// with `fsck.ext4 -n`). All unpacked into `xs-pkg/`.
const XS_PACKAGES: &[&str] = &[
    "xenstore-utils",
    "libxenstore4",
    "libxentoolcore1",
    "libc6",
    "e2fsprogs",
    "libext2fs2",
    "libcom-err2",
    "libblkid1",
    "libuuid1",
];

/// The xenstore tools put into the archive: one binary, the others links
/// to it as in the package (`xenstore-control` is Xen's wrapper script and
/// stays out).
const XS_TOOLS: &[&str] = &[
    "xenstore-chmod",
    "xenstore-exists",
    "xenstore-list",
    "xenstore-ls",
    "xenstore-read",
    "xenstore-rm",
    "xenstore-watch",
    "xenstore-write",
];

/// The init script. Tests look for its marker line,
/// `PVH-LINUX-INIT: up, cpus=<N>`, which ends with
/// `, xenstore name=<name>` when the domain has a xenstore (read with
/// Debian's `xenstore-read` through `/dev/xen/xenbus`).
///
/// Words on the kernel command line steer it:
/// - `pvhshell`: a shell on the console; leaving it powers off;
/// - `pvhpeer=D`: a handshake with domain D through xenstore: each side
///   writes `data/greeting` (readable by the other), waits with a watch
///   until the other's appears, answers `data/seen` and waits for the
///   other's; then it writes `data/done`;
/// - `pvhxsbench=N`: times N `xenstore-read name` runs (a process each)
///   and 10 N reads within one process (`xenstore-read` with 10 N paths), by
///   `/proc/uptime` (under QEMU's `-icount shift=0` a virtual nanosecond
///   is one instruction);
/// - `pvhblkbench=N`: from the disk root, times N MiB written to a file and
///   N MiB read from `/dev/xvda`, both `O_DIRECT` in 1 MiB blocks, then
///   1024 reads of 4 KiB in a row and 256 at random blocks;
/// - `pvhpersist`: from the disk root, the first boot writes `/persist`
///   and its sha256, checks the filesystem and reboots (`reboot -f`); the
///   next boot (the domain built again, the same disk) reads both back;
/// - `MODULE.PARAM=VALUE` (`xen_blkfront.max_ring_page_order=4`): passed
///   to insmod, as modprobe would;
/// - `pvhnoroot`: stay in the initramfs even when `/dev/xvda` is there;
/// - `pvhip=ADDR/LEN`: with a network interface (xen-netfront's `eth0`,
///   or virtio-net's under bare QEMU), bring it up with that address and print
///   `PVH-LINUX-NET: eth0 <mac> <ADDR/LEN>`; `pvhping=PEER` then pings
///   PEER until it answers (60 tries) and prints
///   `PVH-LINUX-NET: ping <PEER> ok`, then times 20 more (`ping -A`);
/// - `pvhnc=N` (with `pvhpeer=D` and `pvhping=ADDR`): N MiB over TCP with
///   busybox `nc`: the domain with the higher id sends N MiB of
///   `/dev/urandom` to ADDR, port 5001, after publishing its sha256 as
///   `data/nchash`; the other receives and compares
///   (`PVH-LINUX-NET: nc received N MiB from dD: sha256 matches`);
///   without a xenstore (bare QEMU, virtio-net's `eth0`), `pvhncrole=send`
///   or `pvhncrole=recv` says which side this is, and the sender appends
///   the sha256 to the stream (`... nc received N MiB from ADDR: sha256
///   matches`);
/// - `pvhflood=N` (after `pvhnc`, the same roles): the sender pings the
///   receiver N times with `ping -A -s 56` and again with `-s 1472`; the
///   two sides bracket each flood by an `nc` connection to port 5003 and
///   one to 5004, and each prints its `/proc/uptime` (elapsed and idle)
///   and the steal time of `/proc/stat` (1/100 s: time its vCPU was
///   runnable while other domains ran) at both ends: `PVH-LINUX-NET:
///   flood s=S n=N role=ROLE uptime=T0..T1 idle=I0..I1 steal=S0..S1`;
/// - `pvhgw=ADDR` (with `pvhip=`): a default route via ADDR (QEMU's user
///   network: 10.0.2.2);
/// - `pvhhttpd`: busybox `httpd` on port 80 serves `/blob` (4 MiB, its
///   sha256 printed as `PVH-LINUX-NET: httpd on port 80 serves /blob: ...`)
///   until a request for `/cgi-bin/done` (at most 900 s);
/// - `pvhkeep`: from the disk root, the first boot on a disk writes
///   `/keep` (1 MiB of `pvh-keep` lines, [`KEEP_SHA256`]) and powers off as
///   usual; a later boot, on a new machine with the same disk file, prints
///   its sha256 back. Every boot from a disk appends one line to
///   `/pvh-boots`;
/// - `pvhwait`: instead of powering off, wait until told to through
///   `control/shutdown`: Linux's xenbus watch runs `/sbin/poweroff`
///   (`orderly_poweroff`), busybox's `poweroff`, which signals PID 1
///   (SIGUSR2, as to busybox init); `/init` then says so, syncs and powers
///   off.
const INIT_SCRIPT: &str = r#"#!/bin/sh
# PID 1 of the test initramfs, written by `cargo xtask linux`.
export PATH=/bin:/sbin:/usr/bin
# /etc/rootfs is only in the disk image: there, the initramfs has mounted
# everything and loaded the modules already.
root=""
# The disk: a Xen virtual disk (xvda), or under bare QEMU a virtio one
# (vda, for the block figures' baseline).
dev=xvda
if [ -e /etc/rootfs ]; then
    grep -q '^/dev/vda / ' /proc/mounts && dev=vda
    root=", root=/dev/$dev"
else
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
fi
cmdline=" $(cat /proc/cmdline) "
# MODULE.PARAM=VALUE words of the kernel command line, for insmod (what
# modprobe would pass).
modparams() {
    for w in $cmdline; do
        case "$w" in "${1//-/_}".*=*) echo "${w#*.}" ;; esac
    done
}
if [ -z "$root" ]; then
    for m in $(cat /etc/modules); do
        insmod /lib/modules/$m.ko $(modparams $m) || echo "PVH-LINUX-INIT: insmod $m failed"
    done
    mount -t xenfs xenfs /proc/xen 2>/dev/null
fi
# A Xen virtual disk with an ext4 root on it: switch to it (unless
# `pvhnoroot`). Loading xen-blkfront waited for its devices to connect.
[ -b /dev/xvda ] || { [ -b /dev/vda ] && dev=vda; }
if [ -z "$root" ] && [ -b /dev/$dev ] && [ "${cmdline#* pvhnoroot }" = "$cmdline" ]; then
    if mount -t ext4 /dev/$dev /newroot; then
        if [ -x /newroot/init ] && [ -e /newroot/etc/rootfs ]; then
            echo "PVH-LINUX-INIT: switching root to /dev/$dev"
            for d in proc sys dev; do mount -o move /$d /newroot/$d; done
            exec switch_root /newroot /init
        fi
        echo "PVH-LINUX-INIT: /dev/$dev holds no root"
        umount /newroot
    else
        echo "PVH-LINUX-INIT: mount /dev/$dev failed"
    fi
fi
# An orderly power-off: what busybox's `poweroff` asks of init.
orderly() {
    echo "PVH-LINUX-INIT: orderly poweroff (control/shutdown)"
    rootdown
    poweroff -f
}
# From the disk: / read-only, then checked (fsck.ext4 -n, forced).
rootdown() {
    sync
    [ -n "$root" ] || return 0
    mount -o remount,ro / || echo "PVH-LINUX-INIT: remount / read-only failed"
    # (Its output is kept in a variable: / cannot be written now.)
    out=$(fsck.ext4 -fn /dev/$dev 2>&1)
    rc=$?
    if [ $rc = 0 ]; then
        echo "PVH-LINUX-INIT: fsck.ext4 -fn /dev/$dev: clean"
    else
        echo "PVH-LINUX-INIT: fsck.ext4 -fn /dev/$dev: exit $rc"
        echo "$out"
    fi
}
trap orderly USR2
arg() {
    for w in $cmdline; do
        case "$w" in "$1"=*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}
# await PATH VALUE: waits, with a xenstore watch on PATH, until PATH reads
# VALUE. The watch fires once when set, so a value written before counts.
await() {
    rm -f /tmp/watch && mkfifo /tmp/watch || return 1
    xenstore-watch "$1" >/tmp/watch &
    watcher=$!
    exec 3</tmp/watch
    ok=1
    while read -r _ <&3; do
        if [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ]; then ok=0; break; fi
    done
    kill $watcher 2>/dev/null
    exec 3<&-
    return $ok
}
store=""
# Linux offers /dev/xen/xenbus only to a domain with a xenstore
# (HVM_PARAM_STORE_PFN not 0).
if [ -e /dev/xen/xenbus ]; then
    if name=$(timeout 60 xenstore-read name); then
        store=", xenstore name=$name"
    else
        echo "PVH-LINUX-INIT: xenstore-read name failed"
    fi
fi
echo "PVH-LINUX-INIT: up, cpus=$(nproc)$store$root"
if [ -n "$root" ]; then
    # The disk: its size, then data written, synced, dropped from the
    # page cache and read back from the back end.
    echo "PVH-LINUX-INIT: $dev $(cat /sys/block/$dev/size) sectors, $(cat /sys/block/$dev/queue/logical_block_size)-byte blocks"
    # Whose disk: a domain finds its own unclaimed (a disk shared with
    # another domain would show the other's name).
    owner=$(cat /owner 2>/dev/null || echo unclaimed)
    echo "${name:-nobody}" >/owner
    sync
    echo "PVH-LINUX-INIT: $dev was $owner, now ${name:-nobody}'s"
    dd if=/dev/urandom of=/blktest bs=64k count=64 2>/dev/null
    sync
    set -- $(sha256sum /blktest)
    before=$1
    echo 3 >/proc/sys/vm/drop_caches
    set -- $(sha256sum /blktest)
    if [ "$1" = "$before" ]; then
        echo "PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 $1"
    else
        echo "PVH-LINUX-INIT: blktest read back $1, wrote $before"
    fi
    if n=$(arg pvhblkbench); then
        # O_DIRECT, 1 MiB blocks: n MiB written to a file, then n MiB of
        # the device read; times from /proc/uptime.
        read t0 _ </proc/uptime
        dd if=/dev/zero of=/blkbench bs=1M count=$n oflag=direct 2>/dev/null
        read t1 _ </proc/uptime
        dd if=/dev/$dev of=/dev/null bs=1M count=$n iflag=direct 2>/dev/null
        read t2 _ </proc/uptime
        # 4 KiB requests: 1024 O_DIRECT reads of one block each.
        dd if=/dev/$dev of=/dev/null bs=4k count=1024 iflag=direct 2>/dev/null
        read t3 _ </proc/uptime
        # 256 O_DIRECT reads of 4 KiB at random blocks (a dd each: the
        # process start is in the figure, on both sides alike).
        blocks=$(( $(cat /sys/block/$dev/size) / 8 ))
        i=0
        while [ $i -lt 256 ]; do
            dd if=/dev/$dev of=/dev/null bs=4k count=1 skip=$(( (RANDOM * 32768 + RANDOM) % blocks )) iflag=direct 2>/dev/null
            i=$((i + 1))
        done
        read t4 _ </proc/uptime
        rm -f /blkbench
        echo "PVH-LINUX-INIT: blkbench n=$n MiB write=$t0..$t1 read=$t1..$t2 read4k=1024 $t2..$t3 rand4k=256 $t3..$t4 (O_DIRECT, 1 MiB blocks)"
    fi
    # One line per boot on this disk (a disk file kept between machines
    # shows one per boot; `debugfs -R "cat /pvh-boots"` reads it).
    n=$(( $(wc -l </pvh-boots 2>/dev/null || echo 0) + 1 ))
    echo "boot $n: ${name:-nobody} on $dev" >>/pvh-boots
    sync
    echo "PVH-LINUX-INIT: /pvh-boots: $n lines"
    # Data that must outlive the whole machine (`pvhkeep`): the first boot
    # on a disk writes /keep (1 MiB of "pvh-keep" lines: the host knows its
    # hash) and goes on to power off as usual; a later boot, on a new
    # machine with the same disk file, reads it back.
    case "$cmdline" in *" pvhkeep "*)
        if [ -e /keep ]; then
            set -- $(sha256sum /keep)
            echo "PVH-LINUX-INIT: /keep reads back: sha256 $1"
        else
            yes pvh-keep | head -c 1048576 >/keep
            sync
            set -- $(sha256sum /keep)
            echo "PVH-LINUX-INIT: /keep written: sha256 $1"
        fi
    esac
    # Data that must outlive a reboot (`pvhpersist`): the first boot
    # writes /persist and its hash, checks the filesystem and reboots; the
    # next boot on the same disk compares the two.
    case "$cmdline" in *" pvhpersist "*)
        if [ -e /persist.sha256 ]; then
            want=$(cat /persist.sha256)
            set -- $(sha256sum /persist)
            if [ "$1" = "$want" ]; then
                echo "PVH-LINUX-INIT: after the reboot /persist reads back: sha256 $1"
            else
                echo "PVH-LINUX-INIT: after the reboot /persist reads $1, not $want"
            fi
        else
            dd if=/dev/urandom of=/persist bs=64k count=16 2>/dev/null
            set -- $(sha256sum /persist)
            echo "$1" >/persist.sha256
            sync
            echo "PVH-LINUX-INIT: /persist written: sha256 $1; rebooting"
            rootdown
            reboot -f
        fi
    esac
fi
# A network interface: eth0 (xen-netfront, or virtio-net under bare QEMU)
# with the address of `pvhip=`, then a ping of `pvhping=` until it answers.
if ip=$(arg pvhip); then
    if [ -e /sys/class/net/eth0 ]; then
        ip link set lo up
        ip addr add "$ip" dev eth0 && ip link set eth0 up
        echo "PVH-LINUX-NET: eth0 $(cat /sys/class/net/eth0/address) $ip"
        if gw=$(arg pvhgw); then
            ip route add default via "$gw" && echo "PVH-LINUX-NET: default route via $gw"
        fi
        if peer=$(arg pvhping); then
            ok=""
            for i in $(seq 60); do
                if ping -c 1 -W 2 "$peer" >/dev/null 2>&1; then ok=1; break; fi
            done
            if [ -n "$ok" ]; then
                echo "PVH-LINUX-NET: ping $peer ok"
                # 20 more, each sent when the last answer came (-A).
                out=$(ping -A -c 20 -q "$peer" 2>&1)
                rtt=${out##*min/avg/max = }
                echo "PVH-LINUX-NET: ping $peer rtt min/avg/max ${rtt%% ms*} ms (20 pings)"
            else
                echo "PVH-LINUX-NET: ping $peer failed"
            fi
        fi
    else
        echo "PVH-LINUX-NET: no eth0"
    fi
fi
# A web server for the host (`pvhhttpd`): busybox httpd on port 80 serves
# /blob (4 MiB of /dev/urandom, its sha256 printed); a request for
# /cgi-bin/done ends the wait (or 900 s), and /init goes on to power off.
case "$cmdline" in *" pvhhttpd "*)
    mkdir -p /www/cgi-bin
    dd if=/dev/urandom of=/www/blob bs=64k count=64 2>/dev/null
    printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho bye\ntouch /tmp/httpd.done\n' >/www/cgi-bin/done
    chmod 755 /www/cgi-bin/done
    set -- $(sha256sum /www/blob)
    if httpd -p 80 -h /www; then
        echo "PVH-LINUX-NET: httpd on port 80 serves /blob: 4194304 bytes, sha256 $1"
        for i in $(seq 900); do [ -e /tmp/httpd.done ] && break; sleep 1; done
        if [ -e /tmp/httpd.done ]; then
            echo "PVH-LINUX-NET: httpd: /cgi-bin/done requested"
        else
            echo "PVH-LINUX-NET: httpd: nobody asked for /cgi-bin/done"
        fi
    else
        echo "PVH-LINUX-NET: httpd failed to start"
    fi
esac
# nc until it connects (30 tries, a second apart).
ncconnect() {
    for i in $(seq 30); do
        if nc "$1" "$2" </dev/null >/dev/null; then return 0; fi
        sleep 1
    done
    return 1
}
# flood ROLE ADDR N: ping floods at 56 and 1472 bytes (see `pvhflood`).
flood() {
    for s in 56 1472; do
        if [ "$1" = send ]; then
            ncconnect "$2" 5003 || { echo "PVH-LINUX-NET: flood sync failed"; return; }
            read t0 i0 </proc/uptime
            read _ _ _ _ _ _ _ _ s0 _ </proc/stat
            ping -A -c "$3" -s $s -q "$2" >/tmp/flood 2>&1
            read t1 i1 </proc/uptime
            read _ _ _ _ _ _ _ _ s1 _ </proc/stat
            ncconnect "$2" 5004
            grep -q " $3 packets received" /tmp/flood || cat /tmp/flood
        else
            timeout 600 nc -l -p 5003 </dev/null >/dev/null
            read t0 i0 </proc/uptime
            read _ _ _ _ _ _ _ _ s0 _ </proc/stat
            timeout 600 nc -l -p 5004 </dev/null >/dev/null
            read t1 i1 </proc/uptime
            read _ _ _ _ _ _ _ _ s1 _ </proc/stat
        fi
        echo "PVH-LINUX-NET: flood s=$s n=$3 role=$1 uptime=$t0..$t1 idle=$i0..$i1 steal=$s0..$s1"
    done
}
# Without a xenstore (bare QEMU): the transfer of `pvhnc` with the sha256
# at the end of the stream, then `pvhflood`.
if [ -z "$store" ] && n=$(arg pvhnc) && role=$(arg pvhncrole) && addr=$(arg pvhping); then
    if [ "$role" = send ]; then
        dd if=/dev/urandom of=/tmp/nc.tx bs=1M count=$n 2>/dev/null
        set -- $(sha256sum /tmp/nc.tx)
        echo "$1" >>/tmp/nc.tx
        ok=""
        for i in $(seq 30); do
            read t0 _ </proc/uptime
            if nc "$addr" 5001 </tmp/nc.tx; then ok=1; break; fi
            sleep 1
        done
        read t1 _ </proc/uptime
        rm -f /tmp/nc.tx
        if [ -n "$ok" ]; then
            echo "PVH-LINUX-NET: nc sent $n MiB to $addr in $t0..$t1 s"
        else
            echo "PVH-LINUX-NET: nc to $addr failed"
        fi
    else
        rm -f /tmp/nc.in && mkfifo /tmp/nc.in
        sleep 600 >/tmp/nc.in &
        hold=$!
        nc -l -p 5001 </tmp/nc.in >/tmp/nc.rx
        kill $hold 2>/dev/null
        set -- $(dd if=/tmp/nc.rx bs=1M count=$n 2>/dev/null | sha256sum)
        got=$1
        sent=$(dd if=/tmp/nc.rx bs=1M skip=$n 2>/dev/null)
        rm -f /tmp/nc.rx
        if [ "$got" = "$sent" ]; then
            echo "PVH-LINUX-NET: nc received $n MiB from $addr: sha256 matches"
        else
            echo "PVH-LINUX-NET: nc received sha256 $got, $addr sent $sent"
        fi
    fi
    if f=$(arg pvhflood); then flood "$role" "$addr" "$f"; fi
fi
if [ -n "$store" ]; then
    echo "PVH-LINUX-INIT: xenbus: $(echo /sys/bus/xen/*)"
    me=$(xenstore-read domid)
    if peer=$(arg pvhpeer); then
        xenstore-write data/greeting "hello-from-d$me"
        xenstore-chmod data/greeting "n$me" "r$peer"
        if await /local/domain/$peer/data/greeting "hello-from-d$peer"; then
            echo "PVH-LINUX-INIT: xenstore watch saw d$peer: hello-from-d$peer"
        else
            echo "PVH-LINUX-INIT: xenstore watch on d$peer failed"
        fi
        xenstore-write data/seen 1
        xenstore-chmod data/seen "n$me" "r$peer"
        await /local/domain/$peer/data/seen 1 || echo "PVH-LINUX-INIT: no answer from d$peer"
    fi
    if n=$(arg pvhnc) && peer=$(arg pvhpeer) && addr=$(arg pvhping); then
        if [ "$me" -gt "$peer" ]; then
            dd if=/dev/urandom of=/tmp/nc.tx bs=1M count=$n 2>/dev/null
            set -- $(sha256sum /tmp/nc.tx)
            xenstore-write data/nchash "$1"
            xenstore-chmod data/nchash "n$me" "r$peer"
            ok=""
            for i in $(seq 30); do
                read t0 _ </proc/uptime
                if nc "$addr" 5001 </tmp/nc.tx; then ok=1; break; fi
                sleep 1
            done
            read t1 _ </proc/uptime
            rm -f /tmp/nc.tx
            if [ -n "$ok" ]; then
                echo "PVH-LINUX-NET: nc sent $n MiB to $addr in $t0..$t1 s"
            else
                echo "PVH-LINUX-NET: nc to $addr failed"
            fi
        else
            # nc quits when its stdin ends: a fifo held open by a sleep.
            rm -f /tmp/nc.in && mkfifo /tmp/nc.in
            sleep 600 >/tmp/nc.in &
            hold=$!
            nc -l -p 5001 </tmp/nc.in >/tmp/nc.rx
            kill $hold 2>/dev/null
            set -- $(sha256sum /tmp/nc.rx)
            got=$1
            rm -f /tmp/nc.rx
            sent=""
            for i in $(seq 60); do
                sent=$(xenstore-read /local/domain/$peer/data/nchash 2>/dev/null) && break
                sleep 1
            done
            if [ "$got" = "$sent" ]; then
                echo "PVH-LINUX-NET: nc received $n MiB from d$peer: sha256 matches"
            else
                echo "PVH-LINUX-NET: nc received sha256 $got, d$peer sent $sent"
            fi
        fi
        if f=$(arg pvhflood); then
            if [ "$me" -gt "$peer" ]; then flood send "$addr" "$f"; else flood recv "$addr" "$f"; fi
        fi
    fi
    if n=$(arg pvhxsbench); then
        set -- $(for i in $(seq $((n * 10))); do echo name; done)
        read t0 _ </proc/uptime
        for i in $(seq $n); do xenstore-read name >/dev/null; done
        read t1 _ </proc/uptime
        xenstore-read "$@" >/dev/null
        read t2 _ </proc/uptime
        echo "PVH-LINUX-INIT: xsbench n=$n processes=$t0..$t1 one-process-n=$((n * 10)) one-process=$t1..$t2"
    fi
    xenstore-write data/done 1
fi
case "$cmdline" in
*" pvhshell "*)
    echo "PVH-LINUX-INIT: shell (exit to power off)"
    setsid cttyhack sh
    ;;
*" pvhwait "*)
    echo "PVH-LINUX-INIT: waiting for control/shutdown"
    # `wait` returns when a signal comes; a foreground sleep would not.
    while :; do sleep 1000 & wait $!; done
    ;;
esac
rootdown
poweroff -f
echo "PVH-LINUX-INIT: poweroff failed"
while :; do sleep 1000; done
"#;

/// The paths `cargo xtask linux` produces.
struct Artifacts {
    vmlinux: PathBuf,
    initramfs: PathBuf,
}

/// The ext4 root image `cargo xtask linux` builds.
pub fn root_image_path() -> PathBuf {
    linux_dir().join("root.ext4")
}

fn linux_dir() -> PathBuf {
    root().join("target").join("linux")
}

pub fn linux(args: &[&str]) -> Result<(), String> {
    let mut force = false;
    for a in args {
        match *a {
            "--force" => force = true,
            other => return Err(format!("linux: unknown option `{other}` (takes --force)")),
        }
    }
    let dir = linux_dir();
    let out = Artifacts {
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio"),
    };
    let busybox_bin = dir.join("busybox-pkg").join("bin").join("busybox");

    let cached_kernel = !force && check_vmlinux_file(&out.vmlinux).is_ok();
    if !cached_kernel {
        fetch_kernel(&dir, &out.vmlinux)?;
    } else {
        eprintln!("==> cached kernel: {}", out.vmlinux.display());
    }

    if force || (!busybox_bin.is_file() && !valid_cpio_file(&out.initramfs)) {
        fetch_busybox(&dir)?;
    }
    let xs_tree = dir.join("xs-pkg");
    if force
        || !xs_tree.join("usr/bin/xenstore").is_file()
        || !xs_tree.join("sbin/e2fsck").is_file()
    {
        fetch_xenstore_utils(&dir)?;
    }
    if busybox_bin.is_file() {
        // Cheap and offline: keeps the archive in step with `INIT_SCRIPT`.
        let busybox = fs::read(&busybox_bin).map_err(|e| io_err(&busybox_bin, e))?;
        check_applets(&busybox_bin)?;
        let mut extra = Extra::default();
        extra.modules(&dir.join("pkg"))?;
        extra.xenstore_tools(&xs_tree)?;
        let archive = initramfs(&busybox, &extra);
        if fs::read(&out.initramfs).ok().as_deref() != Some(&archive[..]) {
            write_atomic(&out.initramfs, &archive)?;
        }
        root_image(&dir, &busybox, &extra)?;
    } else if !valid_cpio_file(&out.initramfs) {
        return Err(format!("no busybox at {}", busybox_bin.display()));
    }

    for p in [&out.vmlinux, &out.initramfs] {
        let len = fs::metadata(p).map_err(|e| io_err(p, e))?.len();
        println!("{} ({} bytes)", p.display(), len);
    }
    if let Ok(v) = fs::read_to_string(dir.join("version.txt")) {
        print!("{v}");
    }
    Ok(())
}

/// Downloads and unpacks the kernel package, writes `vmlinux` and the
/// kernel line of `version.txt`.
fn fetch_kernel(dir: &Path, vmlinux: &Path) -> Result<(), String> {
    let mut apt = Apt::default();
    let package = apt.kernel_package()?;
    let deb = apt.download(&package, &dir.join("debs"))?;
    let pkg = dir.join("pkg");
    unpack(&deb, &pkg)?;

    let boot = pkg.join("boot");
    let bzimage = fs::read_dir(&boot)
        .map_err(|e| io_err(&boot, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or(format!("no vmlinuz-* in {}", boot.display()))?;
    eprintln!("==> extracting the ELF kernel from {}", bzimage.display());
    let image = fs::read(&bzimage).map_err(|e| io_err(&bzimage, e))?;
    let elf = extract_vmlinux(&image)?;
    write_atomic(vmlinux, &elf)?;

    let version = deb_field(&deb, "Version")?;
    update_version(dir, 0, &format!("{package} {version}"))
}

/// Downloads and unpacks `busybox-static` into `busybox-pkg/`.
fn fetch_busybox(dir: &Path) -> Result<(), String> {
    let mut apt = Apt::default();
    let deb = apt.download("busybox-static", &dir.join("debs"))?;
    unpack(&deb, &dir.join("busybox-pkg"))?;
    let version = deb_field(&deb, "Version")?;
    update_version(dir, 1, &format!("busybox-static {version}"))
}

/// Downloads [`XS_PACKAGES`] and unpacks them together into `xs-pkg/`.
fn fetch_xenstore_utils(dir: &Path) -> Result<(), String> {
    let mut apt = Apt::default();
    let tree = dir.join("xs-pkg");
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| io_err(&tree, e))?;
    }
    let mut version = String::new();
    let mut e2fs = String::new();
    for package in XS_PACKAGES {
        let deb = apt.download(package, &dir.join("debs"))?;
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(&deb).arg(&tree);
        run(c)?;
        if *package == "xenstore-utils" {
            version = deb_field(&deb, "Version")?;
        }
        if *package == "e2fsprogs" {
            e2fs = deb_field(&deb, "Version")?;
        }
    }
    update_version(dir, 2, &format!("xenstore-utils {version}"))?;
    update_version(dir, 3, &format!("e2fsprogs {e2fs}"))
}

/// What the archive holds besides busybox: `(path, mode, contents)` files
/// and `(path, target)` links.
#[derive(Default)]
struct Extra {
    files: Vec<(String, u32, Vec<u8>)>,
    links: Vec<(String, String)>,
    /// Module names in load order (each after what it depends on).
    modules: Vec<String>,
}

impl Extra {
    /// [`MODULES`] and their dependencies from the kernel package in
    /// `pkg`, as `lib/modules/NAME.ko`.
    fn modules(&mut self, pkg: &Path) -> Result<(), String> {
        let base = pkg.join("lib/modules");
        let mut found = Vec::new();
        find_files(&base, ".ko", &mut found)?;
        let by_name = |name: &str| {
            let want = name.replace('_', "-");
            found
                .iter()
                .find(|p| {
                    p.file_stem()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.replace('_', "-") == want)
                })
                .cloned()
        };
        let mut stack: Vec<(String, bool)> = MODULES
            .iter()
            .rev()
            .map(|m| (m.to_string(), false))
            .collect();
        while let Some((name, deps_done)) = stack.pop() {
            let name = name.replace('_', "-");
            if self.modules.contains(&name) {
                continue;
            }
            let path = by_name(&name).ok_or(format!(
                "module {name} not in {} (run `cargo xtask linux --force`)",
                base.display()
            ))?;
            let data = fs::read(&path).map_err(|e| io_err(&path, e))?;
            if deps_done {
                self.files
                    .push((format!("lib/modules/{name}.ko"), 0o644, data));
                self.modules.push(name);
                continue;
            }
            stack.push((name.clone(), true));
            for dep in modinfo_depends(&data) {
                if stack.len() > 64 {
                    return Err(format!("module {name}: dependency loop"));
                }
                stack.push((dep, false));
            }
        }
        let list = self.modules.join("\n") + "\n";
        self.files
            .push(("etc/modules".into(), 0o644, list.into_bytes()));
        Ok(())
    }

    /// Debian's `xenstore` binary from the unpacked `tree`, [`XS_TOOLS`]
    /// as links to it, the libraries it needs (`DT_NEEDED`, transitively)
    /// and its program interpreter.
    fn xenstore_tools(&mut self, tree: &Path) -> Result<(), String> {
        let bin = "usr/bin/xenstore";
        self.files
            .push((bin.into(), 0o755, read_in_tree(tree, bin)?));
        for t in XS_TOOLS {
            self.links.push((format!("usr/bin/{t}"), "xenstore".into()));
        }
        self.libraries(tree, bin)?;
        // e2fsck, as fsck.ext4 (what the package links it as).
        let fsck = "sbin/e2fsck";
        self.files
            .push((fsck.into(), 0o755, read_in_tree(tree, fsck)?));
        self.links.push(("sbin/fsck.ext4".into(), "e2fsck".into()));
        self.libraries(tree, fsck)
    }

    /// The libraries the ELF `bin` of `tree` needs (`DT_NEEDED`,
    /// transitively) and its program interpreter, each added once.
    fn libraries(&mut self, tree: &Path, bin: &str) -> Result<(), String> {
        let (mut todo, interp) = elf_needs(&tree.join(bin))?;
        let interp = interp.ok_or("xenstore has no program interpreter")?;
        let rel = interp.trim_start_matches('/').to_string();
        if !self.files.iter().any(|f| f.0 == rel) {
            self.files
                .push((rel.clone(), 0o755, read_in_tree(tree, &rel)?));
        }
        let mut done: Vec<String> = Vec::new();
        // The interpreter is loaded already, under its own name.
        let interp_name = rel.rsplit('/').next().unwrap_or_default().to_string();
        while let Some(lib) = todo.pop() {
            let dest = format!("lib/x86_64-linux-gnu/{lib}");
            if done.contains(&lib) || lib == interp_name || self.files.iter().any(|f| f.0 == dest) {
                continue;
            }
            let rel = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
                .iter()
                .map(|d| format!("{d}/{lib}"))
                .find(|r| fs::symlink_metadata(tree.join(r)).is_ok())
                .ok_or(format!(
                    "{lib} (needed by xenstore) is not in {}",
                    tree.display()
                ))?;
            let data = read_in_tree(tree, &rel)?;
            let real = resolve_in_tree(tree, &rel)?;
            todo.extend(elf_needs(&tree.join(&real))?.0);
            self.files.push((dest, 0o755, data));
            done.push(lib);
        }
        Ok(())
    }
}

/// The `depends=` modules of a `.ko` (from its `.modinfo` strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every file under `dir` whose name ends with `suffix`.
fn find_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for e in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let t = e.file_type().map_err(|err| io_err(&e.path(), err))?;
        if t.is_dir() {
            find_files(&e.path(), suffix, out)?;
        } else if e.file_name().to_string_lossy().ends_with(suffix) {
            out.push(e.path());
        }
    }
    Ok(())
}

/// `rel` inside `tree` with symbolic links followed within the tree (an
/// absolute link target names a path in the tree, not on the host).
fn resolve_in_tree(tree: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut cur = normalize(Path::new(rel.trim_start_matches('/')));
    for _ in 0..16 {
        let p = tree.join(&cur);
        let meta = fs::symlink_metadata(&p).map_err(|e| io_err(&p, e))?;
        if !meta.file_type().is_symlink() {
            return Ok(cur);
        }
        let target = fs::read_link(&p).map_err(|e| io_err(&p, e))?;
        cur = match target.strip_prefix("/") {
            Ok(abs) => normalize(abs),
            Err(_) => normalize(&cur.parent().unwrap_or(Path::new("")).join(target)),
        };
    }
    Err(format!("{rel}: too many links in {}", tree.display()))
}

fn read_in_tree(tree: &Path, rel: &str) -> Result<Vec<u8>, String> {
    let p = tree.join(resolve_in_tree(tree, rel)?);
    fs::read(&p).map_err(|e| io_err(&p, e))
}

/// A relative path without `.` and `..` components.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The `DT_NEEDED` libraries and the program interpreter of an ELF file,
/// as `readelf` reports them.
fn elf_needs(path: &Path) -> Result<(Vec<String>, Option<String>), String> {
    let out = Command::new("readelf")
        .args(["-d", "-l", "-W"])
        .arg(path)
        .output()
        .map_err(|e| format!("could not start readelf (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!("readelf {}: {}", path.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let between = |line: &str, open: &str| {
        line.split_once(open)
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(v, _)| v.to_string())
    };
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| between(l, "Shared library: ["))
        .collect();
    let interp = text
        .lines()
        .find_map(|l| between(l, "Requesting program interpreter: "));
    Ok((needed, interp))
}

/// Sets line `index` of `version.txt` (0: kernel, 1: busybox,
/// 2: xenstore-utils).
fn update_version(dir: &Path, index: usize, line: &str) -> Result<(), String> {
    let path = dir.join("version.txt");
    let old = fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    lines.resize(lines.len().max(index + 1), String::new());
    lines[index] = line.to_string();
    write_atomic(&path, format!("{}\n", lines.join("\n")).as_bytes())
}

/// Apt access, running `apt-get update` once when root and the lists are
/// empty.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    /// Runs `f`; on failure, updates the lists once (root only) and retries.
    fn retry<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> Result<T, String> {
        match f() {
            Ok(v) => Ok(v),
            Err(e) if self.updated => Err(e),
            Err(e) if is_root() => {
                eprintln!("xtask: {what} failed ({e}); running apt-get update once");
                self.updated = true;
                let mut update = Command::new("apt-get");
                update.arg("update");
                run(update)?;
                f()
            }
            Err(e) => Err(format!(
                "{e}\n{what} failed: are the package lists empty? \
                 Run `apt-get update` as root, then try again"
            )),
        }
    }

    /// The versioned package `linux-image-amd64` depends on.
    fn kernel_package(&mut self) -> Result<String, String> {
        self.retry("apt-cache depends linux-image-amd64", || {
            let out = Command::new("apt-cache")
                .args(["depends", "linux-image-amd64"])
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("could not start apt-cache: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            match kernel_dependency(&text) {
                Some(p) if out.status.success() => {
                    eprintln!("==> linux-image-amd64 depends on {p}");
                    Ok(p)
                }
                _ => Err(format!(
                    "apt-cache depends linux-image-amd64 names no linux-image-*-amd64 \
                     ({}): {text:?}",
                    out.status
                )),
            }
        })
    }

    /// `apt-get download package` into `dir`; returns the `.deb`.
    fn download(&mut self, package: &str, dir: &Path) -> Result<PathBuf, String> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // Drop older downloads so that exactly one file matches afterwards.
        for old in debs_of(dir, package)? {
            fs::remove_file(&old).map_err(|e| io_err(&old, e))?;
        }
        self.retry(&format!("apt-get download {package}"), || {
            let mut c = Command::new("apt-get");
            c.args(["download", package]).current_dir(dir);
            run(c)
        })?;
        let mut found = debs_of(dir, package)?;
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(format!(
                "expected one {package}_*.deb in {}, found {n}",
                dir.display()
            )),
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Picks `linux-image-<version>-amd64` (or `-amd64-unsigned`) from the output
/// of `apt-cache depends linux-image-amd64`. Alternatives (`|Depends:`) and
/// their continuation lines count like any other `Depends:` line; virtual
/// packages (`<name>`) are skipped.
fn kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            !p.starts_with('<')
                && p.starts_with("linux-image-")
                && (p.ends_with("-amd64") || p.ends_with("-amd64-unsigned"))
        })
        .map(str::to_string)
}

/// The `.deb` files for `package` in `dir` (`package_version_arch.deb`).
fn debs_of(dir: &Path, package: &str) -> Result<Vec<PathBuf>, String> {
    let prefix = format!("{package}_");
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Unpacks `deb` into a fresh `dest`.
fn unpack(deb: &Path, dest: &Path) -> Result<(), String> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|e| io_err(dest, e))?;
    }
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb).arg(dest);
    run(c)
}

fn deb_field(deb: &Path, field: &str) -> Result<String, String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .map_err(|e| format!("could not start dpkg-deb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dpkg-deb -f {} {field} failed: {}",
            deb.display(),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Finds the xz stream in a bzImage and decompresses it with
/// `xz --single-stream -dc`, which stops at the end of the first stream and
/// ignores what follows. Every occurrence of the magic is tried until one
/// gives a kernel that passes `check_vmlinux`.
fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>, String> {
    let mut last = String::from("no xz stream (magic FD 37 7A 58 5A 00) in the bzImage");
    let offsets = image
        .windows(XZ_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == XZ_MAGIC)
        .map(|(i, _)| i);
    for off in offsets {
        let elf = match xz_decompress(&image[off..]) {
            Ok(elf) => elf,
            Err(e) => {
                last = format!("xz stream at {off:#x}: {e}");
                continue;
            }
        };
        match check_vmlinux(&elf) {
            Ok(entry) => {
                eprintln!(
                    "==> xz stream at {off:#x}: ELF64 kernel, {} bytes, PVH entry {entry:#x}",
                    elf.len()
                );
                return Ok(elf);
            }
            Err(e) => last = format!("xz stream at {off:#x}: {e}"),
        }
    }
    Err(last)
}

fn xz_decompress(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("xz")
        .args(["--single-stream", "-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start xz (Debian: xz-utils): {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (out, err) = std::thread::scope(|s| {
        // xz may stop reading early (end of stream): a broken pipe is fine.
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let err = s.spawn(move || {
            let mut e = String::new();
            let _ = stderr.read_to_string(&mut e);
            e
        });
        let mut out = Vec::new();
        let r = stdout.read_to_end(&mut out);
        (r.map(|_| out), err.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| format!("xz: {e}"))?;
    let out = out.map_err(|e| format!("reading xz output: {e}"))?;
    if !status.success() {
        return Err(format!("xz failed ({status}): {}", err.trim()));
    }
    Ok(out)
}

fn check_vmlinux_file(path: &Path) -> Result<u64, String> {
    let elf = fs::read(path).map_err(|e| io_err(path, e))?;
    check_vmlinux(&elf)
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Checks for a little-endian x86_64 ELF64 with a `Xen` note of type
/// `XEN_ELFNOTE_PHYS32_ENTRY` in a `PT_NOTE` segment; returns the entry.
fn check_vmlinux(elf: &[u8]) -> Result<u64, String> {
    const PT_NOTE: u32 = 4;
    const EM_X86_64: u16 = 62;
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf[4] != 2 || elf[5] != 1 || u16_at(elf, 18) != Some(EM_X86_64) {
        return Err("not a little-endian x86_64 ELF64".into());
    }
    let bad = || "truncated ELF headers".to_string();
    let phoff = u64_at(elf, 0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(elf, 0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(elf, 0x38).ok_or_else(bad)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph).ok_or_else(bad)? != PT_NOTE {
            continue;
        }
        let off = u64_at(elf, ph + 8).ok_or_else(bad)? as usize;
        let size = u64_at(elf, ph + 32).ok_or_else(bad)? as usize;
        let notes = elf.get(off..off.saturating_add(size)).ok_or_else(bad)?;
        if let Some(entry) = xen_phys32_entry(notes) {
            return Ok(entry);
        }
    }
    Err("no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY) in any PT_NOTE segment".into())
}

/// Walks the notes of one segment for `Xen`/`XEN_ELFNOTE_PHYS32_ENTRY`.
fn xen_phys32_entry(mut notes: &[u8]) -> Option<u64> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let kind = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = align4(name_end)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let name = notes.get(12..name_end)?;
        let desc = notes.get(desc_start..desc_end)?;
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
            return match desc.len() {
                4 => u32_at(desc, 0).map(u64::from),
                8 => u64_at(desc, 0),
                _ => None,
            };
        }
        notes = notes.get(align4(desc_end)?.min(notes.len())..)?;
    }
    None
}

/// Runs the host's copy of the static busybox to check it has the applets
/// the archive links.
fn check_applets(busybox: &Path) -> Result<(), String> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("could not run {} --list: {e}", busybox.display()))?;
    let list = String::from_utf8_lossy(&out.stdout);
    let have: Vec<&str> = list.lines().collect();
    let missing: Vec<&str> = APPLETS
        .iter()
        .copied()
        .filter(|a| !have.contains(a))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} lacks applets: {}",
            busybox.display(),
            missing.join(" ")
        ))
    }
}

fn valid_cpio_file(path: &Path) -> bool {
    fs::read(path).is_ok_and(|b| {
        b.starts_with(b"070701") && b.windows(11).rev().any(|w| w == b"TRAILER!!!\0")
    })
}

/// The initramfs: busybox, its applet links, `/dev/console`, `/init`,
/// `/sbin/poweroff` and the `extra` files (with their directories).
fn initramfs(busybox: &[u8], extra: &Extra) -> Vec<u8> {
    let mut c = Cpio::default();
    let mut dirs: Vec<String> = ["bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "newroot"]
        .map(String::from)
        .to_vec();
    for name in extra
        .files
        .iter()
        .map(|f| &f.0)
        .chain(extra.links.iter().map(|l| &l.0))
    {
        let mut p = Path::new(name.as_str()).parent();
        let mut chain = Vec::new();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
        for d in chain.into_iter().rev() {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, busybox);
    for a in APPLETS {
        c.symlink(&format!("bin/{a}"), "busybox");
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.file("init", 0o755, INIT_SCRIPT.as_bytes());
    // What Linux runs for an orderly power-off: busybox's `poweroff`,
    // which signals init rather than powering off itself.
    c.symlink("sbin/poweroff", "/bin/busybox");
    for (name, mode, data) in &extra.files {
        c.file(name, *mode, data);
    }
    for (name, target) in &extra.links {
        c.symlink(name, target);
    }
    c.finish()
}

/// The ext4 root image `root.ext4` ([`ROOT_IMAGE_MIB`]): the initramfs'
/// files plus `/etc/rootfs` (how `/init` knows it runs from the disk), made
/// with `mke2fs -d` from a staging tree (`root-tree/`). Rebuilt only when
/// the tree changed (`root-tree.stamp` holds a digest of the tree).
fn root_image(dir: &Path, busybox: &[u8], extra: &Extra) -> Result<(), String> {
    let tree = dir.join("root-tree");
    let image = dir.join("root.ext4");
    let stamp_path = dir.join("root-tree.stamp");
    // A digest of everything that goes in (FNV-1a over names and data).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: &[u8]| {
        for &x in b {
            h = (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    };
    feed(busybox);
    feed(INIT_SCRIPT.as_bytes());
    for (n, _, d) in &extra.files {
        feed(n.as_bytes());
        feed(d);
    }
    for (n, t) in &extra.links {
        feed(n.as_bytes());
        feed(t.as_bytes());
    }
    let stamp = format!("{h:016x} {ROOT_IMAGE_MIB}\n");
    if image.is_file() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        println!("{} (up to date)", image.display());
        return Ok(());
    }
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| io_err(&tree, e))?;
    }
    let mk = |p: &Path| fs::create_dir_all(p).map_err(|e| io_err(p, e));
    for d in ["bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "newroot"] {
        mk(&tree.join(d))?;
    }
    let put = |name: &str, mode: u32, data: &[u8]| -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let p = tree.join(name);
        if let Some(parent) = p.parent() {
            mk(parent)?;
        }
        fs::write(&p, data).map_err(|e| io_err(&p, e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(|e| io_err(&p, e))
    };
    let link = |name: &str, target: &str| -> Result<(), String> {
        let p = tree.join(name);
        if let Some(parent) = p.parent() {
            mk(parent)?;
        }
        std::os::unix::fs::symlink(target, &p).map_err(|e| io_err(&p, e))
    };
    put("bin/busybox", 0o755, busybox)?;
    for a in APPLETS {
        link(&format!("bin/{a}"), "busybox")?;
    }
    put("init", 0o755, INIT_SCRIPT.as_bytes())?;
    link("sbin/poweroff", "/bin/busybox")?;
    for (name, mode, data) in &extra.files {
        put(name, *mode, data)?;
    }
    for (name, target) in &extra.links {
        link(name, target)?;
    }
    put("etc/rootfs", 0o644, b"/dev/xvda\n")?;
    let tmp = dir.join("root.ext4.tmp");
    let _ = fs::remove_file(&tmp);
    let mut c = Command::new("mke2fs");
    c.args([
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "pvhroot",
        "-E",
        "root_owner=0:0",
        "-d",
    ])
    .arg(&tree)
    .arg(&tmp)
    .arg(format!("{ROOT_IMAGE_MIB}M"));
    run(c).map_err(|e| format!("{e} (mke2fs is in Debian's e2fsprogs)"))?;
    fs::rename(&tmp, &image).map_err(|e| io_err(&image, e))?;
    fs::write(&stamp_path, stamp).map_err(|e| io_err(&stamp_path, e))?;
    println!("{} ({ROOT_IMAGE_MIB} MiB ext4)", image.display());
    Ok(())
}

/// A writer for the `newc` cpio format (the one Linux unpacks as an
/// initramfs): a 110-byte ASCII header ("070701" and thirteen 8-digit hex
/// fields), the NUL-terminated name, padding to 4 bytes, the data, padding
/// to 4 bytes; a `TRAILER!!!` entry ends the archive. Times are 0 and
/// owners root so that the archive is reproducible.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFLNK: u32 = 0o120_000;
    const S_IFCHR: u32 = 0o020_000;

    fn dir(&mut self, name: &str) {
        self.entry(name, Self::S_IFDIR | 0o755, 2, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, Self::S_IFREG | perm, 1, (0, 0), data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, Self::S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }
    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, Self::S_IFCHR | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" {
            0
        } else {
            self.next_ino
        };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio entries are below 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short names"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

/// Writes `path` through a temporary file and a rename, so that readers
/// never see a partial file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_versioned_kernel() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let alt = "linux-image-amd64\n |Depends: <linux-image-virtual>\n  \
                   Depends: linux-image-6.1.0-9-amd64-unsigned\n";
        assert_eq!(
            kernel_dependency(alt).as_deref(),
            Some("linux-image-6.1.0-9-amd64-unsigned")
        );
        assert_eq!(kernel_dependency("E: No packages found"), None);
    }

    #[test]
    fn cpio_headers_are_aligned() {
        let a = initramfs(b"busybox", &Extra::default());
        assert!(a.starts_with(b"070701"));
        assert!(a.len().is_multiple_of(4));
        // Every header starts on a 4-byte boundary: walk them.
        let mut off = 0;
        let mut names = Vec::new();
        loop {
            let h = &a[off..off + 110];
            assert_eq!(&h[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (filesize, namesize) = (field(6), field(11));
            let name = &a[off + 110..off + 110 + namesize - 1];
            names.push(String::from_utf8(name.to_vec()).unwrap());
            if name == b"TRAILER!!!" {
                break;
            }
            let data = (off + 110 + namesize + 3) & !3;
            off = (data + filesize + 3) & !3;
        }
        assert!(names.iter().any(|n| n == "init"));
        assert!(names.iter().any(|n| n == "dev/console"));
    }
}
