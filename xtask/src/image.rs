//! `cargo xtask image` and `cargo xtask run`: build the hypervisor image and
//! boot it in an emulator.

mod devcases;

use crate::{cargo, root, run};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value our image writes to QEMU's isa-debug-exit port on success, as
/// QEMU reports it: `(0x10 << 1) | 1` (see `crates/hypervisor/src/machine.rs`).
pub const QEMU_EXIT_SUCCESS: i32 = 33;
/// The same for failure: `(0x11 << 1) | 1`.
pub const QEMU_EXIT_FAILURE: i32 = 35;

/// The CPU vendor whose virtualization extension a run exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// AMD SVM, under QEMU's TCG.
    Amd,
    /// Intel VMX, under Bochs.
    Intel,
}

impl Vendor {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "amd" => Ok(Self::Amd),
            "intel" => Ok(Self::Intel),
            other => Err(format!("--vendor takes amd or intel, not `{other}`")),
        }
    }
}

/// A boot module and its command line (the hyperlaunch role: see
/// crates/hypervisor/src/launch.rs).
#[derive(Clone, Debug)]
pub struct Module {
    pub path: PathBuf,
    pub cmdline: String,
}

impl Module {
    /// A module without a command line.
    pub fn plain(path: PathBuf) -> Self {
        Self {
            path,
            cmdline: String::new(),
        }
    }
}

/// The serial line's input side.
#[derive(Clone, Debug, Default)]
pub enum SerialInput {
    /// Nothing is typed.
    #[default]
    None,
    /// The user's terminal (interactive runs).
    Terminal,
    /// Scripted: when the output so far contains the first string, type
    /// the second (in order).
    Script(Vec<(String, String)>),
}

/// How QEMU is given the image (`cargo xtask run --qemu-boot`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QemuBoot {
    /// `-kernel IMAGE -append CMDLINE -initrd "FILE ARGS,FILE ARGS"`:
    /// QEMU's own Multiboot (v1) loader, as QEMU boots Xen; no firmware
    /// disk reads, every module with its command line.
    #[default]
    Multiboot,
    /// `-kernel` with a copy of the image whose Multiboot magic is wiped
    /// ([`pvh_image`]): QEMU's `-kernel` tries Multiboot before the PVH
    /// note, so only this copy reaches `pvh_entry`. At most one module,
    /// without a command line (QEMU's PVH loader passes no more).
    Pvh,
    /// A GRUB rescue ISO on the CD-ROM ([`build_iso`]): GRUB's Multiboot2,
    /// the way Bochs boots.
    Grub,
}

impl QemuBoot {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "multiboot" => Ok(Self::Multiboot),
            "pvh" => Ok(Self::Pvh),
            "grub" => Ok(Self::Grub),
            other => Err(format!(
                "--qemu-boot takes multiboot, pvh or grub, not `{other}`"
            )),
        }
    }
}

/// Options shared by `image` and `run`.
#[derive(Debug)]
pub struct RunOptions {
    pub vendor: Vendor,
    /// The hypervisor's command line.
    pub cmdline: String,
    /// The machine's memory in MiB.
    pub mem_mib: u32,
    pub smp: u32,
    pub gdb: bool,
    pub modules: Vec<Module>,
    pub timeout: Option<Duration>,
    /// Read the console from the debug port 0xE9 instead of COM1.
    pub debugcon: bool,
    /// What goes to the machine's serial input.
    pub input: SerialInput,
    /// The Bochs CPU model (Intel runs; `ryzen` gives SVM with NRIP save).
    pub bochs_cpu: String,
    /// More QEMU arguments (e.g. `-icount shift=0` for `cargo xtask bench`).
    pub extra_qemu_args: Vec<String>,
    /// How QEMU loads the image.
    pub qemu_boot: QemuBoot,
    /// Run QEMU's vCPUs on parallel host threads (multi-threaded TCG).
    /// Off by default: QEMU's MTTCG corrupts the boot CPU's SVM state
    /// (see [`qemu_accel`]).
    pub mttcg: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            vendor: Vendor::Amd,
            cmdline: String::new(),
            mem_mib: 256,
            smp: 2,
            gdb: false,
            modules: Vec::new(),
            timeout: None,
            debugcon: false,
            input: SerialInput::None,
            bochs_cpu: "corei7_skylake_x".into(),
            extra_qemu_args: Vec::new(),
            qemu_boot: QemuBoot::default(),
            mttcg: false,
        }
    }
}

/// What `cargo xtask run` is asked to boot.
#[derive(Debug, Default)]
struct Guests {
    /// A PVH kernel (`--guest`), else the test guest.
    guest: Option<PathBuf>,
    initrd: Option<PathBuf>,
    guest_cmdline: Option<String>,
    /// Guest memory in MiB.
    guest_mem: Option<u32>,
    vcpus: u32,
    /// Boot the cached Debian kernel and busybox initramfs.
    linux: bool,
    /// With `--linux`: an interactive shell instead of the unattended boot.
    shell: bool,
    /// Start the service domain (xenstore for every domain) first:
    /// `--service` / `--no-service`; by default with `--linux` only.
    service: Option<bool>,
    /// With `--linux`: how many Linux domains (`--domains N`).
    domains: u32,
    /// With `--linux` and the service domain: the first Linux's `xvda`
    /// (`--disk FILE`; by default `target/linux/root.ext4`, `--no-disk`
    /// for none).
    disk: Option<PathBuf>,
    no_disk: bool,
    /// `--disk-file PATH`: the first Linux's `xvda` is PATH on QEMU's
    /// virtio-blk, assigned to the service domain (created from the root
    /// image if missing). QEMU only.
    disk_file: Option<PathBuf>,
    /// `--net user[,hostfwd=...]`: a virtio-net device on QEMU's user
    /// network, assigned to the service domain as its switch's uplink;
    /// the text after `user` goes to `-netdev` as it is. QEMU only.
    net: Option<String>,
    /// `--host-mem` was given (else it grows with a disk).
    host_mem_given: bool,
}

impl Guests {
    fn service(&self) -> bool {
        self.service.unwrap_or(self.linux)
    }
}

fn parse_options(args: &[&str]) -> Result<(RunOptions, Guests), String> {
    let mut o = RunOptions::default();
    let mut g = Guests {
        vcpus: 1,
        domains: 1,
        ..Default::default()
    };
    let mut host_mem = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(|s| s.to_string())
                .ok_or(format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| {
            v.parse::<u32>()
                .map_err(|_| format!("{name} takes a number, not `{v}`"))
        };
        match *a {
            "--vendor" => o.vendor = Vendor::parse(&value("--vendor")?)?,
            "--cmdline" => o.cmdline = value("--cmdline")?,
            "--mem" => g.guest_mem = Some(num("--mem", value("--mem")?)?),
            "--host-mem" => host_mem = Some(num("--host-mem", value("--host-mem")?)?),
            "--smp" => o.smp = num("--smp", value("--smp")?)?,
            "--vcpus" => g.vcpus = num("--vcpus", value("--vcpus")?)?.max(1),
            "--guest" => g.guest = Some(value("--guest")?.into()),
            "--initrd" => g.initrd = Some(value("--initrd")?.into()),
            "--guest-cmdline" => g.guest_cmdline = Some(value("--guest-cmdline")?),
            "--linux" => g.linux = true,
            "--service" => g.service = Some(true),
            "--no-service" => g.service = Some(false),
            "--domains" => g.domains = num("--domains", value("--domains")?)?.clamp(1, 8),
            "--disk" => g.disk = Some(value("--disk")?.into()),
            "--no-disk" => g.no_disk = true,
            "--disk-file" => g.disk_file = Some(value("--disk-file")?.into()),
            "--net" => {
                let v = value("--net")?;
                let rest = v
                    .strip_prefix("user")
                    .filter(|r| r.is_empty() || r.starts_with(','));
                match rest {
                    Some(r) => g.net = Some(r.to_string()),
                    None => {
                        return Err(format!(
                            "--net takes `user` or `user,hostfwd=...` (QEMU's user network), not `{v}`"
                        ));
                    }
                }
            }
            "--shell" => g.shell = true,
            "--module" => o.modules.push(Module::plain(value("--module")?.into())),
            "--timeout" => {
                let s: u64 = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout takes seconds".to_string())?;
                o.timeout = Some(Duration::from_secs(s));
            }
            "--gdb" => o.gdb = true,
            "--mttcg" => o.mttcg = true,
            "--bochs-cpu" => o.bochs_cpu = value("--bochs-cpu")?,
            "--qemu-boot" => o.qemu_boot = QemuBoot::parse(&value("--qemu-boot")?)?,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if g.domains > 1 && !g.linux {
        return Err("--domains goes with --linux".into());
    }
    if (g.disk_file.is_some() || g.net.is_some()) && !(g.linux && g.service()) {
        return Err("--disk-file and --net go with --linux and the service domain".into());
    }
    if (g.disk_file.is_some() || g.net.is_some()) && o.vendor == Vendor::Intel {
        return Err("--disk-file and --net need QEMU's virtio devices: Bochs (--vendor intel) has none and keeps the boot-module disk (--disk FILE)".into());
    }
    if g.disk_file.is_some() && (g.disk.is_some() || g.no_disk) {
        return Err("--disk-file replaces --disk and --no-disk".into());
    }
    let guest_mem = g.guest_mem.unwrap_or(if g.linux { 256 } else { 64 });
    o.mem_mib = host_mem.unwrap_or((guest_mem * g.domains + 192).max(256));
    g.host_mem_given = host_mem.is_some();
    Ok((o, g))
}

/// The hyperlaunch command line of a kernel module.
fn kernel_cmdline(mem_mib: u32, vcpus: u32, guest_cmdline: &str) -> String {
    format!("kernel mem={mem_mib}M vcpus={vcpus} -- {guest_cmdline}")
}

/// The cached Debian kernel and initramfs (`cargo xtask linux`).
pub fn linux_files() -> (PathBuf, PathBuf) {
    let dir = root().join("target/linux");
    (dir.join("vmlinux"), dir.join("initramfs.cpio"))
}

/// The modules for a Linux domain called `name`: the kernel with its
/// command line (`words` for the `/init` of xtask/src/linux.rs, such as
/// `pvhshell`), and the busybox initramfs.
pub fn linux_modules(name: &str, mem_mib: u32, vcpus: u32, words: &str) -> Vec<Module> {
    let (kernel, initrd) = linux_files();
    let mut cmd = String::from("console=hvc0 earlyprintk=xen");
    if !words.is_empty() {
        cmd.push(' ');
        cmd.push_str(words);
    }
    vec![
        Module {
            path: kernel,
            cmdline: format!("kernel name={name} mem={mem_mib}M vcpus={vcpus} -- {cmd}"),
        },
        Module {
            path: initrd,
            cmdline: "ramdisk".into(),
        },
    ]
}

/// `domains` Linux domains of `mem_mib` each, after a service domain when
/// `service`: named `linux` (one) or `linux1`.. (several); ids count from 2
/// with the service domain (d1), else from 1. With the service domain each
/// Linux waits for `control/shutdown` once its `/init` is done, and the
/// service domain sends it when every domain wrote `data/done`; two
/// domains also run the xenstore handshake with each other (`pvhpeer`).
/// `words` go to every Linux. With the service domain, `disks[i]` becomes
/// Linux i's `xvda`: the service domain's `ramdisk` module (one file as
/// it is, several concatenated into `target/linux-disks.img`, each at a
/// 4 KiB boundary), its memory grown by their size, and a
/// `disk=ID[@OFFSET+LEN]` word per disk on its command line.
/// `service_last` puts the service domain's modules after the Linux
/// domains' (Linux starts first and waits for the store; ids from 1).
/// `net` (with the service domain) gives each Linux a vif on the service
/// domain's switch (the `vif` option of its kernel module, so Xen's
/// `00:16:3e` MAC with its id), the address `10.0.0.ID/24` (`pvhip=`)
/// and, with two domains, the other's address to ping (`pvhping=`).
#[allow(clippy::too_many_arguments)]
pub fn linux_plan(
    domains: u32,
    mem_mib: u32,
    vcpus: u32,
    service: bool,
    words: &str,
    disks: &[&Path],
    service_last: bool,
    net: bool,
) -> Result<Vec<Module>, String> {
    linux_plan_with(
        domains,
        mem_mib,
        vcpus,
        service,
        words,
        disks,
        service_last,
        net,
        PassThrough::default(),
    )
}

/// QEMU devices assigned to the service domain (`cargo xtask run --linux
/// --disk-file PATH` and `--net user`; issue 17).
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough {
    /// A virtio-blk disk at [`DISK_SLOT`]: the first Linux's `xvda`.
    pub disk: bool,
    /// A virtio-net device at [`NET_SLOT`]: the switch's uplink; the
    /// Linux domains get addresses on QEMU's user network.
    pub uplink: bool,
}

impl PassThrough {
    fn any(self) -> bool {
        self.disk || self.uplink
    }

    /// The `pci=` list of the service domain's module options.
    fn pci(self) -> String {
        let mut f = Vec::new();
        if self.disk {
            f.push(format!("00:{DISK_SLOT}.0"));
        }
        if self.uplink {
            f.push(format!("00:{NET_SLOT}.0"));
        }
        f.join(",")
    }
}

/// The PCI slot (hexadecimal) of `--disk-file`'s virtio-blk device.
pub const DISK_SLOT: &str = "04";
/// The PCI slot of `--net`'s virtio-net device.
pub const NET_SLOT: &str = "05";
/// The service domain's direct-mapped region for device DMA (MiB): the
/// virtqueues, a 256 KiB block buffer and a page per posted receive
/// buffer fit with room to spare.
pub const DIRECTMAP_MIB: u32 = 16;
/// The Linux domains' addresses on QEMU's user network (`--net user`):
/// 10.0.2.15 for the first, as QEMU's own DHCP would give, then up.
const USER_NET_FIRST: u32 = 15;

/// Attaches `path` as a raw virtio-blk disk at [`DISK_SLOT`], creating it
/// from the Linux root image (`cargo xtask linux`'s `root.ext4`) if
/// missing.
pub(crate) fn attach_disk_file(o: &mut RunOptions, path: &Path) -> Result<(), String> {
    if !path.exists() {
        let root = crate::linux::root_image_path();
        std::fs::copy(&root, path).map_err(|e| {
            format!(
                "--disk-file: copying {} to {}: {e}",
                root.display(),
                path.display()
            )
        })?;
        eprintln!("{}: created from {}", path.display(), root.display());
    }
    let file = path
        .to_str()
        .filter(|p| !p.contains(','))
        .ok_or("--disk-file: the path must be UTF-8 without commas (QEMU's -drive syntax)")?;
    o.extra_qemu_args.extend([
        "-drive".to_string(),
        format!("file={file},if=none,format=raw,id=svcdisk"),
        "-device".to_string(),
        format!("virtio-blk-pci,drive=svcdisk,addr={DISK_SLOT}.0"),
    ]);
    Ok(())
}

/// Adds a virtio-net device at [`NET_SLOT`] on QEMU's user network;
/// `rest` goes after `user,id=up0` as it is (`,hostfwd=...` or nothing).
pub(crate) fn attach_uplink(o: &mut RunOptions, rest: &str) {
    o.extra_qemu_args.extend([
        "-netdev".to_string(),
        format!("user,id=up0{rest}"),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=up0,addr={NET_SLOT}.0"),
    ]);
}

/// [`linux_plan`] with devices assigned to the service domain: its
/// module options get `pci=` and `directmap=` (and its memory the
/// region), its command line `pci=` and `vdisk=ID` (the first Linux's
/// `xvda` is the virtio disk); with an uplink the Linux domains' addresses
/// are on QEMU's user network (10.0.2.15 up, gateway 10.0.2.2).
#[allow(clippy::too_many_arguments)]
pub fn linux_plan_with(
    domains: u32,
    mem_mib: u32,
    vcpus: u32,
    service: bool,
    words: &str,
    disks: &[&Path],
    service_last: bool,
    net: bool,
    devices: PassThrough,
) -> Result<Vec<Module>, String> {
    let net = net && service;
    let devices = if service {
        devices
    } else {
        PassThrough::default()
    };
    let disks = &disks[..disks.len().min(domains as usize)];
    let disk = match disks {
        [] => None,
        [d] => Some(d.to_path_buf()),
        _ => Some(target_dir().join("linux-disks.img")),
    };
    let mut modules = Vec::new();
    // An interactive shell is not told to power off.
    let scripted = !words.contains("pvhshell");
    let first = if service && !service_last { 2 } else { 1 };
    if service {
        let mut options = String::from(if scripted {
            "shutdown-when=data/done"
        } else {
            ""
        });
        let mut svc_mem = SERVICE_MEM_MIB;
        if devices.any() {
            options.push_str(&format!(" pci={}", devices.pci()));
            svc_mem += DIRECTMAP_MIB;
        }
        if devices.disk {
            options.push_str(&format!(" vdisk={first}"));
        }
        if let [d] = disks {
            options.push_str(&format!(" disk={first}"));
            svc_mem += disks_mib(&[d])?;
        } else if let Some(all) = &disk {
            let mut bytes = Vec::new();
            for (i, d) in disks.iter().enumerate() {
                let data = std::fs::read(d).map_err(|e| format!("disk {}: {e}", d.display()))?;
                let id = first + i as u32;
                options.push_str(&format!(" disk={id}@{}+{}", bytes.len(), data.len()));
                bytes.extend_from_slice(&data);
                bytes.resize(bytes.len().next_multiple_of(4096), 0);
            }
            std::fs::write(all, &bytes).map_err(|e| format!("{}: {e}", all.display()))?;
            svc_mem +=
                u32::try_from(bytes.len().div_ceil(1 << 20)).map_err(|_| "disks too large")?;
        }
        let mut m = service_module_mem(options.trim(), svc_mem)?;
        if devices.any() {
            m.cmdline = m.cmdline.replacen(
                " service ",
                &format!(" service pci={} directmap={DIRECTMAP_MIB} ", devices.pci()),
                1,
            );
        }
        modules.push(m);
        if let Some(d) = &disk {
            modules.push(Module {
                path: d.to_path_buf(),
                cmdline: "ramdisk".into(),
            });
        }
    }
    for i in 0..domains {
        let name = if domains == 1 {
            "linux".to_string()
        } else {
            format!("linux{}", i + 1)
        };
        let mut w = String::from(words);
        if service && scripted {
            w.push_str(" pvhwait");
            if domains == 2 {
                w.push_str(&format!(" pvhpeer={}", first + (1 - i)));
            }
        }
        if net && devices.uplink {
            w.push_str(&format!(
                " pvhip=10.0.2.{}/24 pvhgw=10.0.2.2",
                USER_NET_FIRST + i
            ));
            if domains == 2 {
                w.push_str(&format!(" pvhping=10.0.2.{}", USER_NET_FIRST + (1 - i)));
            }
        } else if net {
            w.push_str(&format!(" pvhip=10.0.0.{}/24", first + i));
            if domains == 2 {
                w.push_str(&format!(" pvhping=10.0.0.{}", first + (1 - i)));
            }
        }
        let mut m = linux_modules(&name, mem_mib, vcpus, w.trim());
        if net {
            m[0].cmdline = m[0].cmdline.replacen("kernel ", "kernel vif ", 1);
        }
        modules.extend(m);
    }
    if service && service_last {
        let n = if disk.is_some() { 2 } else { 1 };
        modules.rotate_left(n);
    }
    Ok(modules)
}

/// Builds the release image and returns its path.
pub fn build_image() -> Result<PathBuf, String> {
    let built = build_bare_metal("hypervisor")?;
    let out_dir = root().join("target/image");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("hypervisor.elf");
    std::fs::copy(&built, &out).map_err(|e| format!("copy {}: {e}", built.display()))?;
    check_flat_layout(&out)?;
    Ok(out)
}

/// Builds a package's binary for bare metal (release) and returns its path.
fn build_bare_metal(package: &str) -> Result<PathBuf, String> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        "x86_64-unknown-none",
        "-p",
        package,
    ]);
    run(c)?;
    Ok(target_dir()
        .join("x86_64-unknown-none/release")
        .join(package))
}

/// Builds our PVH test guest and returns its path.
pub fn build_test_guest() -> Result<PathBuf, String> {
    build_bare_metal("pvh-test-guest")
}

/// The target of the 32-bit test guest: i686's `core` (rustup's
/// `i686-unknown-linux-gnu`), linked freestanding by rust-lld with the
/// guest's linker script, no libc, no unwinding.
pub const GUEST32_TARGET: &str = "i686-unknown-linux-gnu";
/// Its flags: static, no unwinding, linked without a C toolchain.
pub const GUEST32_RUSTFLAGS: &str =
    "-C panic=abort -C relocation-model=static -C linker=rust-lld -C linker-flavor=ld.lld";

/// Builds the 32-bit PVH test guest (tests/pvh-guest32) and returns its path.
pub fn build_test_guest32() -> Result<PathBuf, String> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--target",
        GUEST32_TARGET,
        "-p",
        "pvh-test-guest32",
    ]);
    c.env(
        "CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        GUEST32_RUSTFLAGS,
    );
    run(c)?;
    Ok(target_dir()
        .join(GUEST32_TARGET)
        .join("release/pvh-test-guest32"))
}

/// Builds the service domain's kernel and returns its path.
pub fn build_service_domain() -> Result<PathBuf, String> {
    build_bare_metal("service-domain")
}

/// The service domain's module: its kernel, with the `service` role (the
/// hypervisor appends the `domains=` list it serves) and `options` for it
/// (crates/service-domain/src/cmdline.rs).
pub fn service_module(options: &str) -> Result<Module, String> {
    service_module_mem(options, SERVICE_MEM_MIB)
}

/// The MiB the disk files take (rounded up).
pub fn disks_mib(disks: &[&Path]) -> Result<u32, String> {
    let mut total = 0u64;
    for d in disks {
        let len = std::fs::metadata(d)
            .map_err(|e| format!("disk {}: {e}", d.display()))?
            .len();
        total += len.next_multiple_of(4096);
    }
    u32::try_from(total.div_ceil(1 << 20)).map_err(|_| "disks too large".into())
}

/// The service domain's memory without a disk, MiB.
const SERVICE_MEM_MIB: u32 = 32;

/// [`service_module`] with `mem_mib` of memory.
fn service_module_mem(options: &str, mem_mib: u32) -> Result<Module, String> {
    Ok(Module {
        path: build_service_domain()?,
        cmdline: format!("kernel name=svc mem={mem_mib}M service -- {options}")
            .trim_end()
            .to_string(),
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// `cargo xtask image [--vendor amd|intel]`.
pub fn image(args: &[&str]) -> Result<(), String> {
    let (o, _) = parse_options(args)?;
    let out = build_image()?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("{} ({size} bytes)", out.display());
    if o.vendor == Vendor::Intel {
        let made = build_iso(&out, &o, "exit=bochs")?;
        let iso = root().join("target/image/hypervisor.iso");
        std::fs::rename(&made, &iso).map_err(|e| format!("{}: {e}", iso.display()))?;
        println!("{}", iso.display());
    }
    Ok(())
}

/// `cargo xtask run [options]`: boots the image with the console live.
pub fn run_cmd(args: &[&str]) -> Result<(), String> {
    let (mut o, g) = parse_options(args)?;
    let image = build_image()?;
    let guest_mem = g.guest_mem.unwrap_or(if g.linux { 256 } else { 64 });
    if g.linux {
        crate::linux::linux(&[])?;
        // `--guest-cmdline` words go to every Linux (`pvhpersist`, ...).
        let words = [
            if g.shell { "pvhshell" } else { "" },
            g.guest_cmdline.as_deref().unwrap_or(""),
        ]
        .join(" ");
        let words = words.trim();
        // `--disk FILE` for the first Linux, else a copy of the root
        // image for each.
        let root = crate::linux::root_image_path();
        let disks: Vec<&Path> = match (&g.disk, g.no_disk || !g.service() || g.disk_file.is_some())
        {
            (_, true) => Vec::new(),
            (Some(d), false) => vec![d.as_path()],
            (None, false) if root.is_file() => vec![root.as_path(); g.domains as usize],
            (None, false) => Vec::new(),
        };
        let devices = PassThrough {
            disk: g.disk_file.is_some(),
            uplink: g.net.is_some(),
        };
        if let Some(path) = &g.disk_file {
            attach_disk_file(&mut o, path)?;
        }
        if let Some(rest) = &g.net {
            attach_uplink(&mut o, rest);
        }
        o.modules.extend(linux_plan_with(
            g.domains,
            guest_mem,
            g.vcpus,
            g.service(),
            words,
            &disks,
            false,
            // Two or more domains, or an uplink: each a vif on the switch.
            g.domains >= 2 || devices.uplink,
            devices,
        )?);
        if !g.host_mem_given && devices.any() {
            o.mem_mib += DIRECTMAP_MIB;
        }
        // The disks are a boot module (held by the hypervisor) and then
        // live in the service domain's memory: twice their size.
        if !g.host_mem_given {
            o.mem_mib += 2 * disks_mib(&disks)?;
            // The base covers one Linux's kernel and initramfs modules
            // (the hypervisor keeps them); each further one needs room.
            let (k, i) = linux_files();
            if g.domains > 1 {
                o.mem_mib += (g.domains - 1) * disks_mib(&[k.as_path(), i.as_path()])?;
            }
        }
        if g.shell {
            o.input = SerialInput::Terminal;
            eprintln!("The busybox shell runs on hvc0; `poweroff -f` (or exit) ends the machine.");
        }
        if o.timeout.is_none() && !g.shell {
            o.timeout = Some(Duration::from_secs(900));
        }
    } else if let Some(k) = &g.guest {
        o.modules.push(Module {
            path: k.clone(),
            cmdline: kernel_cmdline(guest_mem, g.vcpus, g.guest_cmdline.as_deref().unwrap_or("")),
        });
        if let Some(i) = &g.initrd {
            o.modules.push(Module {
                path: i.clone(),
                cmdline: "ramdisk".into(),
            });
        }
    } else if o.modules.is_empty() {
        // The demo: two test-guest domains whose checks print as they run;
        // they share a page by grant and ping-pong over an event channel.
        let guest = build_test_guest()?;
        let extra = g.guest_cmdline.as_deref().unwrap_or("");
        // Domain ids count from 1 in module order; the service domain, if
        // any, comes first.
        let first = if g.service() { 2 } else { 1 };
        let roles = [
            format!("role=ping peer={}", first + 1),
            format!("role=pong peer={first}"),
        ];
        for role in &roles {
            o.modules.push(Module {
                path: guest.clone(),
                cmdline: kernel_cmdline(guest_mem, g.vcpus, &format!("{role} {extra}")),
            });
        }
    }
    if g.service() && !g.linux {
        o.modules.insert(0, service_module("")?);
    }
    let (ok, serial) = match o.vendor {
        Vendor::Amd => {
            let outcome = boot_qemu(&image, &o, true)?;
            match outcome.status {
                Some(QEMU_EXIT_SUCCESS) => (Ok(()), outcome.serial),
                Some(QEMU_EXIT_FAILURE) => (
                    Err(
                        "the hypervisor reported a failure (a domain did not power off cleanly)"
                            .into(),
                    ),
                    outcome.serial,
                ),
                Some(s) => (
                    Err(format!("the machine stopped with status {s}")),
                    outcome.serial,
                ),
                None => (
                    Err("the machine did not stop in time".into()),
                    outcome.serial,
                ),
            }
        }
        Vendor::Intel => {
            let outcome = boot_bochs(&image, &o, true)?;
            let r = if outcome.serial.contains(STOP_OK) {
                Ok(())
            } else if outcome.serial.contains(STOP_FAILED) {
                Err("the hypervisor reported a failure".into())
            } else {
                Err("the machine did not stop cleanly".into())
            };
            (r, outcome.serial)
        }
    };
    ok?;
    if g.linux && !g.shell {
        for want in ["Linux version", LINUX_MARKER] {
            if !serial.contains(want) {
                return Err(format!("the Linux boot never printed `{want}`"));
            }
        }
    }
    Ok(())
}

/// What the busybox `/init` prints once userspace runs (xtask/src/linux.rs).
pub const LINUX_MARKER: &str = "PVH-LINUX-INIT: up, cpus=";

/// The hypervisor's last line on success (crates/hypervisor/src/machine.rs).
pub const STOP_OK: &str = "(XEN) machine stop: success";
/// Its last line on failure.
pub const STOP_FAILED: &str = "(XEN) machine stop: FAILURE";

/// Builds a GRUB rescue ISO that boots `image` by Multiboot2, with the
/// hypervisor command line and modules from `o`.
pub fn build_iso(image: &std::path::Path, o: &RunOptions, exit: &str) -> Result<PathBuf, String> {
    let dir = root().join(format!("target/image/iso-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let boot = dir.join("boot");
    std::fs::create_dir_all(boot.join("grub")).map_err(|e| e.to_string())?;
    std::fs::copy(image, boot.join("hypervisor.elf")).map_err(|e| e.to_string())?;
    let mut cmdline = String::from(exit);
    if !o.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&o.cmdline);
    }
    let mut cfg = format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_output serial\n\
         menuentry \"hypervisor\" {{\n  multiboot2 /boot/hypervisor.elf {cmdline}\n"
    );
    for (i, m) in o.modules.iter().enumerate() {
        let name = format!("module{i}");
        std::fs::copy(&m.path, boot.join(&name))
            .map_err(|e| format!("{}: {e}", m.path.display()))?;
        cfg.push_str(&format!("  module2 /boot/{name} {}\n", m.cmdline));
    }
    cfg.push_str("  boot\n}\n");
    std::fs::write(boot.join("grub/grub.cfg"), cfg).map_err(|e| e.to_string())?;
    let iso = root().join(format!(
        "target/image/hypervisor-{}.iso",
        std::process::id()
    ));
    let mut c = Command::new("grub-mkrescue");
    c.arg("-o")
        .arg(&iso)
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let made = run(c).map_err(|e| format!("{e} (apt-get install grub-pc-bin xorriso mtools)"));
    let _ = std::fs::remove_dir_all(&dir);
    made?;
    Ok(iso)
}

/// Boots `image` from a GRUB ISO under Bochs with an Intel VMX CPU model.
/// Bochs has no exit status: the outcome is read from the serial line.
pub fn boot_bochs(image: &std::path::Path, o: &RunOptions, live: bool) -> Result<Outcome, String> {
    let iso = build_iso(image, o, "exit=bochs")?;
    let dir = root().join(format!("target/image/bochs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Bochs is given short relative names: it runs in `dir`.
    std::fs::rename(&iso, dir.join("hv.iso")).map_err(|e| e.to_string())?;
    let serial = dir.join("serial.txt");
    let _ = std::fs::remove_file(&serial);
    let rc = dir.join("rc.txt");
    std::fs::write(&rc, "c\n").map_err(|e| e.to_string())?;
    let bochsrc = dir.join("bochsrc");
    std::fs::write(
        &bochsrc,
        format!(
            "megs: {mem}\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
             vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
             cpu: model={cpu}, count={smp}, ips=100000000\n\
             ata0-master: type=cdrom, path={iso}, status=inserted\n\
             boot: cdrom\n\
             com1: enabled=1, mode=file, dev={serial}\n\
             port_e9_hack: enabled=1\n\
             display_library: rfb, options=\"timeout=0\"\n\
             log: {log}\n\
             panic: action=fatal\nerror: action=report\ninfo: action=report\ndebug: action=ignore\n\
             clock: sync=none, time0=local\n\
             speaker: enabled=0\nsound: driver=dummy\n",
            mem = o.mem_mib,
            cpu = o.bochs_cpu,
            smp = o.smp,
            iso = "hv.iso",
            serial = "serial.txt",
            log = "bochs.log",
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut c = Command::new("bochs");
    c.arg("-q").arg("-f").arg(&bochsrc).arg("-rc").arg(&rc);
    c.current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    eprintln!("\n==> {c:?}");
    let mut child = c.spawn().map_err(|e| {
        format!("cannot start bochs (apt-get install bochs bochsbios vgabios): {e}")
    })?;
    let start = Instant::now();
    let timeout = o.timeout.unwrap_or(Duration::from_secs(600));
    let mut shown = 0;
    let status = loop {
        if live
            && let Ok(text) = std::fs::read(&serial)
            && text.len() > shown
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&text[shown..]);
            let _ = out.flush();
            shown = text.len();
        }
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read(&serial).unwrap_or_default();
    if live && text.len() > shown {
        let _ = std::io::stdout().write_all(&text[shown..]);
    }
    // The ISO can be large (a Linux kernel); keep the log and serial copy.
    let _ = std::fs::remove_file(dir.join("hv.iso"));
    Ok(Outcome {
        serial: String::from_utf8_lossy(&text).into_owned(),
        status,
    })
}

/// What a boot printed and how it ended.
pub struct Outcome {
    /// Everything the serial line carried.
    pub serial: String,
    /// QEMU's exit status, or None if it was killed at the timeout.
    pub status: Option<i32>,
}

/// QEMU's `-initrd` for Multiboot: one item per module, `FILE ARGS`,
/// items separated by commas. QEMU splits the list as it splits option
/// values (`get_opt_value`): `,,` stands for a literal comma, so every
/// comma of a path or command line is doubled. QEMU hands each module the
/// whole item, file name first (the hypervisor drops that word, as Xen
/// does); the file name ends at the first blank, so paths with blanks are
/// refused.
pub fn multiboot_initrd(modules: &[Module]) -> Result<String, String> {
    let mut items = Vec::new();
    for m in modules {
        let path = m.path.to_str().ok_or("a module path is not UTF-8")?;
        if path.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!(
                "module `{path}`: QEMU's Multiboot loader cannot take a path with blanks"
            ));
        }
        let mut item = path.replace(',', ",,");
        if !m.cmdline.is_empty() {
            item.push(' ');
            item.push_str(&m.cmdline.replace(',', ",,"));
        }
        items.push(item);
    }
    Ok(items.join(","))
}

/// The image as QEMU's PVH loader must see it: a copy
/// (`target/image/hypervisor-pvh-PID.elf`) with the Multiboot (v1) magic
/// wiped, since QEMU's `-kernel` takes a Multiboot header before the PVH
/// note. A kernel without the header (a bare PVH guest) is used as it is.
pub fn pvh_image(image: &Path) -> Result<(PathBuf, bool), String> {
    let mut bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    // QEMU looks for the magic, 4-aligned, in the first 8 KiB, and takes
    // it when the checksum adds up.
    let end = bytes.len().min(8192).saturating_sub(12);
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut found = false;
    for i in (0..end).step_by(4) {
        let (magic, flags, sum) = (word(&bytes, i), word(&bytes, i + 4), word(&bytes, i + 8));
        if magic == 0x1BAD_B002 && magic.wrapping_add(flags).wrapping_add(sum) == 0 {
            bytes[i..i + 4].fill(0);
            found = true;
        }
    }
    if !found {
        return Ok((image.to_path_buf(), false));
    }
    let out = root().join(format!(
        "target/image/hypervisor-pvh-{}.elf",
        std::process::id()
    ));
    std::fs::write(&out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((out, true))
}

/// Checks what the Multiboot header's address fields need (see
/// crates/hypervisor/src/boot.rs): QEMU copies the file flat from the
/// first loaded byte, so every loadable segment's file offset must sit at
/// the same distance from its address.
fn check_flat_layout(image: &Path) -> Result<(), String> {
    let b = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let u16_at = |i: usize| {
        b.get(i..i + 2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]) as usize)
    };
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
    };
    let bad = || format!("{}: not a 64-bit ELF", image.display());
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let (phentsize, phnum) = (u16_at(0x36).ok_or_else(bad)?, u16_at(0x38).ok_or_else(bad)?);
    let mut delta = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let ty = b.get(ph..ph + 4).ok_or_else(bad)?;
        if ty != 1u32.to_le_bytes() {
            continue; // not PT_LOAD
        }
        let (off, vaddr) = (
            u64_at(ph + 8).ok_or_else(bad)?,
            u64_at(ph + 16).ok_or_else(bad)?,
        );
        let d = vaddr.wrapping_sub(off);
        if *delta.get_or_insert(d) != d {
            return Err(format!(
                "{}: segment {i} at file offset {off:#x} breaks the flat layout that the \
                 Multiboot header's address fields need (crates/hypervisor/link.ld)",
                image.display()
            ));
        }
    }
    Ok(())
}

/// The QEMU that boots the hypervisor: `qemu-system-x86_64` from the
/// PATH, or the binary `PVH_QEMU` names (a QEMU built from source, e.g.
/// one without the multi-threaded TCG race of docs/architecture.md §10;
/// it gets the system's firmware directories and no default NIC, which a
/// build tree lacks).
pub fn qemu_command() -> Command {
    match std::env::var_os("PVH_QEMU") {
        Some(q) => {
            let mut c = Command::new(q);
            c.args([
                "-L",
                "/usr/share/qemu",
                "-L",
                "/usr/share/seabios",
                "-net",
                "none",
            ]);
            c
        }
        None => Command::new("qemu-system-x86_64"),
    }
}

/// QEMU's `-accel` value: single-threaded TCG unless `mttcg`.
///
/// QEMU's multi-threaded TCG (7.2 and 10.0 alike) has a data race that
/// breaks SVM on the boot CPU: any vCPU that restores x87 state
/// (FXRSTOR, XRSTOR, FRSTOR, FLDENV with no pending x87 error) runs
/// `cpu_clear_ignne()`, a plain read-modify-write of the *first* CPU's
/// `env->hflags2` from its own thread. When it straddles the boot CPU's
/// VMRUN or #VMEXIT, the boot CPU's nested-paging, GIF and virtual
/// interrupt flags go back to their old values: after a #VMEXIT the host
/// keeps walking its page tables through the guest's nested tables (the
/// reserved-bit #PF and triple fault right after `vmrun`, docs/architecture.md
/// "The QEMU host reset"), and during a guest run the guest's accesses can
/// bypass the nested tables. Hardware and single-threaded TCG have no
/// such race; `--mttcg` keeps the parallel mode for reproducing it.
pub fn qemu_accel(mttcg: bool) -> &'static str {
    if mttcg { "tcg" } else { "tcg,thread=single" }
}

/// Boots `image` under QEMU with SVM; echoes the serial line when `live`.
/// `o.qemu_boot` says how QEMU loads it (Multiboot by default).
pub fn boot_qemu(image: &std::path::Path, o: &RunOptions, live: bool) -> Result<Outcome, String> {
    let mut cmdline = String::from("exit=isa-debug-exit");
    if !o.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&o.cmdline);
    }
    let mut c = qemu_command();
    c.args(["-accel", qemu_accel(o.mttcg), "-cpu", "qemu64,+svm,+npt"])
        .args(["-m", &o.mem_mib.to_string()])
        .args(["-smp", &o.smp.to_string()])
        .args(["-display", "none", "-no-reboot"])
        .args(if o.debugcon {
            ["-debugcon", "stdio", "-serial", "none"]
        } else {
            ["-serial", "stdio", "-debugcon", "null"]
        })
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(&o.extra_qemu_args)
        .stdout(Stdio::piped());
    // A file made for this run only (an ISO, a PVH copy), removed after it.
    let mut made = None;
    match o.qemu_boot {
        QemuBoot::Multiboot => {
            let kernel = image.to_str().ok_or("the image path is not UTF-8")?;
            if kernel.contains(char::is_whitespace) {
                return Err(format!("`{kernel}`: the image path must have no blanks"));
            }
            c.arg("-kernel").arg(image).args(["-append", &cmdline]);
            if !o.modules.is_empty() {
                c.arg("-initrd").arg(multiboot_initrd(&o.modules)?);
            }
        }
        QemuBoot::Pvh => {
            if o.modules.len() > 1 || o.modules.iter().any(|m| !m.cmdline.is_empty()) {
                return Err("QEMU's PVH loader takes one module without a command line".to_string());
            }
            let (kernel, copy) = pvh_image(image)?;
            c.arg("-kernel").arg(&kernel).args(["-append", &cmdline]);
            if let Some(m) = o.modules.first() {
                c.arg("-initrd").arg(&m.path);
            }
            made = copy.then_some(kernel);
        }
        QemuBoot::Grub => {
            let iso = build_iso(image, o, "exit=isa-debug-exit")?;
            c.arg("-cdrom").arg(&iso);
            made = Some(iso);
        }
    }
    if o.gdb {
        c.args(["-s", "-S"]);
        eprintln!("QEMU waits for gdb on localhost:1234");
    }
    c.stdin(match o.input {
        SerialInput::None => Stdio::null(),
        SerialInput::Terminal => Stdio::inherit(),
        SerialInput::Script(_) => Stdio::piped(),
    });
    eprintln!("\n==> {c:?}");
    let mut child = c.spawn().map_err(|e| {
        format!("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86): {e}")
    })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if live {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    seen2.lock().expect("reader").extend_from_slice(&buf[..n]);
                }
            }
        }
    });
    let mut script: Vec<(String, String)> = match &o.input {
        SerialInput::Script(s) => s.iter().rev().cloned().collect(),
        _ => Vec::new(),
    };
    let mut stdin = child.stdin.take();
    let start = Instant::now();
    let status = loop {
        if let Some((trigger, text)) = script.last() {
            let hit =
                String::from_utf8_lossy(&seen.lock().expect("reader")).contains(trigger.as_str());
            if hit {
                if let Some(w) = stdin.as_mut() {
                    // Type it slowly, as a person would: the guest's
                    // input ring holds 1 KiB and the UART FIFO 16 bytes.
                    for b in text.bytes() {
                        let _ = w.write_all(&[b]);
                        let _ = w.flush();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                script.pop();
            }
        }
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s.code();
        }
        if o.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let _ = reader.join();
    if let Some(f) = &made {
        let _ = std::fs::remove_file(f);
    }
    let serial = seen.lock().expect("reader").clone();
    Ok(Outcome {
        serial: String::from_utf8_lossy(&serial).into_owned(),
        status,
    })
}

/// One end-to-end boot: what to pass and what must come out.
struct E2eCase {
    name: &'static str,
    vendor: Vendor,
    /// For Bochs runs: the CPU model.
    bochs_cpu: &'static str,
    /// Boot the PVH test guest directly (no hypervisor) instead of the image.
    bare_guest: bool,
    /// How QEMU loads it (QEMU cases).
    qemu_boot: QemuBoot,
    cmdline: &'static str,
    expect: &'static [&'static str],
    status: i32,
    /// Host CPUs (QEMU's `-smp`, Bochs' count).
    cpus: u32,
}

const E2E_CASES: &[E2eCase] = &[
    // The hypervisor boots by QEMU's Multiboot loader (`-kernel`, as QEMU
    // boots Xen; AMD SVM model, 2 CPUs) and runs the test guest as a
    // domain: every check must pass and the guest must power off, which
    // ends the machine with success. The command line comes without the
    // image's file name that QEMU puts first.
    E2eCase {
        name: "qemu-svm-test-guest",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: false,
        qemu_boot: QemuBoot::Multiboot,
        cpus: 2,
        cmdline: "loglvl=debug",
        expect: &[
            "hypervisor 0.1.0 starting (Multiboot boot)",
            "command line: \"exit=isa-debug-exit loglvl=debug\"",
            "module 0: ",
            "RAM: ",
            "memory: image 0x100000-",
            "TSC: ",
            "CPU1 online (APIC id 1)",
            "2 CPUs online",
            "SVM enabled",
            "(d1) CHECK start_info: PASS",
            "(d1) CHECK xen_cpuid: PASS",
            "(d1) CHECK console_io: PASS",
            "(d1) CHECK xen_version: PASS",
            "(d1) CHECK memory_map: PASS",
            "(d1) CHECK shared_info: PASS",
            "(d1) CHECK register_vcpu_info: PASS",
            "(d1) CHECK upcall_self_event: PASS",
            "(d1) CHECK expand_array: PASS",
            "(d1) CHECK block_woken_by_event: PASS",
            "(d1) CHECK hostile_efault: PASS",
            "(d1) CHECK hostile_enosys: PASS",
            "(d1) CHECK hostile_ring3_eperm: PASS",
            "(d1) CHECK singleshot_timer: PASS",
            "(d1) CHECK timer_while_spinning: PASS",
            "(d1) CHECK block_timer_wakeup: PASS",
            "(d1) CHECK poll_timeout: PASS",
            "(d1) CHECK pvclock_monotonic: PASS",
            "(d1) CHECK grant_self: PASS",
            "(d1) CHECK unbacked_mmio: PASS",
            "(d1) CHECK cr4_unoffered_gp: PASS",
            "(d1) CHECK cr0_invalid_gp: PASS",
            "(d1) CHECK efer_unoffered_gp: PASS",
            "(d1) XSAVE not offered: XSETBV must be #UD",
            "(d1) CHECK xcr0_invalid: PASS",
            "(d1) CHECK apic_modes: PASS",
            "(d1) VERDICT: PASS 25/25",
            "d1: shutdown (Poweroff)",
            "all domains shut down (cleanly)",
        ],
        status: QEMU_EXIT_SUCCESS,
    },
    // The same through the image's PVH entry: QEMU's `-kernel` prefers the
    // Multiboot header, so this boots a copy with the Multiboot magic wiped
    // (`pvh_image`) and reaches `pvh_entry` by the Xen ELF note.
    //
    // One CPU: with a second one idle, that CPU fires the guest's timers
    // and kicks the running vCPU out of guest mode; alone, a CPU must end
    // the vCPU's run by its own host timer (`timer_while_spinning`).
    E2eCase {
        name: "qemu-svm-pvh-boot",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: false,
        qemu_boot: QemuBoot::Pvh,
        cpus: 1,
        cmdline: "loglvl=debug",
        expect: &[
            "hypervisor 0.1.0 starting (Pvh boot)",
            "command line: \"exit=isa-debug-exit loglvl=debug\"",
            "module 0: ",
            "1 CPUs online",
            "(d1) CHECK timer_while_spinning: PASS",
            "(d1) CHECK start_info: PASS",
            "(d1) VERDICT: PASS 25/25",
            "all domains shut down (cleanly)",
        ],
        status: QEMU_EXIT_SUCCESS,
    },
    // The same from a GRUB ISO on QEMU's CD-ROM: the Multiboot2 entry, as
    // Bochs boots it, on QEMU.
    E2eCase {
        name: "qemu-svm-grub-multiboot2",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: false,
        qemu_boot: QemuBoot::Grub,
        cpus: 2,
        cmdline: "loglvl=debug",
        expect: &[
            "hypervisor 0.1.0 starting (Multiboot2 boot)",
            "command line: \"exit=isa-debug-exit loglvl=debug\"",
            "module 0: ",
            "2 CPUs online",
            "(d1) CHECK start_info: PASS",
            "(d1) VERDICT: PASS 25/25",
            "all domains shut down (cleanly)",
        ],
        status: QEMU_EXIT_SUCCESS,
    },
    E2eCase {
        name: "qemu-fault-report",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: false,
        qemu_boot: QemuBoot::Multiboot,
        cpus: 2,
        cmdline: "selftest=ud",
        expect: &[
            "FATAL on CPU0: other CPUs parked: 1/1",
            "FATAL hypervisor exception 6 (#UD invalid opcode) on CPU0",
            "rip 0x",
            "r8 0x",
        ],
        status: QEMU_EXIT_FAILURE,
    },
    // An AP runs off the bottom of its stack: the unmapped guard page turns
    // that into a double fault on the AP (IST stack), whose report comes
    // after the boot CPU was stopped by NMI, as whole lines.
    E2eCase {
        name: "qemu-ap-stack-guard",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: false,
        qemu_boot: QemuBoot::Multiboot,
        cpus: 2,
        cmdline: "selftest=ap-stack",
        expect: &[
            "CPU1: selftest: overflowing the stack at 0x",
            "FATAL on CPU1: other CPUs parked: 1/1",
            "FATAL hypervisor exception 8 (#DF double fault) on CPU1",
            "r8 0x",
        ],
        status: QEMU_EXIT_FAILURE,
    },
    // GRUB and Multiboot2 on Bochs' Intel model (x2APIC, both CPUs): the
    // VMX backend (EPT, VPID, unrestricted guest) runs the test guest, which
    // passes its checks and powers off.
    E2eCase {
        name: "bochs-vmx-test-guest",
        vendor: Vendor::Intel,
        bochs_cpu: "corei7_skylake_x",
        bare_guest: false,
        qemu_boot: QemuBoot::Grub, // Bochs boots GRUB in any case
        cpus: 2,
        cmdline: "loglvl=debug",
        expect: &[
            "hypervisor 0.1.0 starting (Multiboot2 boot)",
            "command line: \"exit=bochs loglvl=debug\"",
            "module 0: ",
            "(X2Apic)",
            "CPU1 online (APIC id 1)",
            "2 CPUs online",
            "VMX enabled: EPT, unrestricted guest, VPID true",
            "(d1) CHECK unbacked_mmio: PASS",
            "(d1) CHECK cr4_unoffered_gp: PASS",
            "(d1) CHECK cr0_invalid_gp: PASS",
            "(d1) CHECK efer_unoffered_gp: PASS",
            "(d1) XSAVE offered, XCR0 components 0x7",
            "(d1) CHECK xcr0_invalid: PASS",
            "(d1) CHECK apic_modes: PASS",
            "(d1) VERDICT: PASS",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
        // Bochs always exits with 1; the verdict is the serial line's.
        status: 1,
    },
    // The same image on Bochs' AMD model (SVM with NRIP save, which QEMU's
    // TCG lacks), booted by GRUB, runs the test guest.
    E2eCase {
        name: "bochs-ryzen-test-guest",
        vendor: Vendor::Intel,
        bochs_cpu: "ryzen",
        bare_guest: false,
        qemu_boot: QemuBoot::Grub, // Bochs boots GRUB in any case
        cpus: 2,
        cmdline: "",
        expect: &[
            "hypervisor 0.1.0 starting (Multiboot2 boot)",
            "2 CPUs online",
            "nrip true",
            "(d1) CHECK start_info: PASS",
            "(d1) CHECK xen_cpuid: PASS",
            "(d1) CHECK console_io: PASS",
            "(d1) CHECK xen_version: PASS",
            "(d1) CHECK memory_map: PASS",
            "(d1) CHECK shared_info: PASS",
            "(d1) CHECK register_vcpu_info: PASS",
            "(d1) CHECK upcall_self_event: PASS",
            "(d1) CHECK expand_array: PASS",
            "(d1) CHECK block_woken_by_event: PASS",
            "(d1) CHECK hostile_efault: PASS",
            "(d1) CHECK hostile_enosys: PASS",
            "(d1) CHECK hostile_ring3_eperm: PASS",
            "(d1) CHECK singleshot_timer: PASS",
            "(d1) CHECK timer_while_spinning: PASS",
            "(d1) CHECK block_timer_wakeup: PASS",
            "(d1) CHECK poll_timeout: PASS",
            "(d1) CHECK pvclock_monotonic: PASS",
            "(d1) CHECK grant_self: PASS",
            "(d1) CHECK unbacked_mmio: PASS",
            "(d1) CHECK cr4_unoffered_gp: PASS",
            "(d1) CHECK cr0_invalid_gp: PASS",
            "(d1) CHECK efer_unoffered_gp: PASS",
            "(d1) XSAVE offered, XCR0 components 0x7",
            "(d1) CHECK xcr0_invalid: PASS",
            "(d1) CHECK apic_modes: PASS",
            "(d1) VERDICT: PASS 25/25",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
        status: 1,
    },
    // The test guest on bare QEMU's PVH loader, where there is no Xen:
    // proves the test kernel itself (boot, start_info, report) and that its
    // checks can fail.
    E2eCase {
        name: "test-guest-bare-qemu",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        bare_guest: true,
        qemu_boot: QemuBoot::Pvh,
        cpus: 2,
        cmdline: "",
        expect: &[
            "CHECK start_info: PASS",
            "CHECK xen_cpuid: FAIL no XenVMMXenVMM signature",
            "VERDICT: FAIL 1/2",
        ],
        status: QEMU_EXIT_FAILURE,
    },
];

/// How a round of e2e cases runs, and what it found.
struct Ctx {
    /// Host CPUs for the QEMU cases (`--smp` of `cargo xtask stress`);
    /// `None`: each case's own.
    smp: Option<u32>,
    /// `cargo xtask stress`: the directory and run number under which
    /// QEMU's `-d cpu_reset,int,guest_errors` log of each case goes
    /// ([`qemu_log_path`]); `None`: no log.
    qemu_log: Option<(PathBuf, u32)>,
    /// QEMU cases on multi-threaded TCG (`cargo xtask stress --mttcg`).
    mttcg: bool,
    /// Every case run: name, outcome and what was missing (empty: passed).
    results: Vec<CaseResult>,
}

/// One case's run.
struct CaseResult {
    name: &'static str,
    serial: String,
    status: Option<i32>,
    missing: Vec<String>,
}

impl Ctx {
    fn e2e() -> Self {
        Self {
            smp: None,
            mttcg: false,
            qemu_log: None,
            results: Vec::new(),
        }
    }

    /// The host CPUs of a QEMU case whose own count is `own`.
    fn qemu_smp(&self, own: u32) -> u32 {
        self.smp.unwrap_or(own)
    }

    /// An expected line, adjusted for a `--smp` override of a QEMU case
    /// that runs with 2 host CPUs by default: the CPU count, the CPUs the
    /// fatal path parks, and the last AP (CPU1 of two; `selftest=ap-stack`
    /// picks the last AP).
    fn expect(&self, vendor: Vendor, e: &str) -> String {
        match (self.smp, vendor) {
            (Some(n), Vendor::Amd) => {
                let last = n.saturating_sub(1);
                e.replace("2 CPUs online", &format!("{n} CPUs online"))
                    .replace("1 CPUs online", &format!("{n} CPUs online"))
                    .replace("parked: 1/1", &format!("parked: {last}/{last}"))
                    .replace("CPU1: selftest", &format!("CPU{last}: selftest"))
                    .replace("on CPU1", &format!("on CPU{last}"))
            }
            _ => e.to_string(),
        }
    }

    /// Checks `out` against `expect` (and whatever else the caller found
    /// missing), prints the verdict and records it.
    fn record(
        &mut self,
        name: &'static str,
        vendor: Vendor,
        expect: &[&str],
        out: Outcome,
        mut missing: Vec<String>,
    ) {
        let mut absent: Vec<String> = expect
            .iter()
            .map(|e| self.expect(vendor, e))
            .filter(|e| !out.serial.contains(e.as_str()))
            .collect();
        absent.append(&mut missing);
        if vendor == Vendor::Amd && out.status == Some(0) && !out.serial.contains("machine stop") {
            absent.push("no host reset (the machine reset in mid-run)".into());
        }
        if absent.is_empty() {
            eprintln!("e2e: {name} passed");
        } else if self.qemu_log.is_none() {
            eprintln!("e2e: {name} serial output:\n{}", out.serial);
            eprintln!(
                "e2e: {name} FAILED: missing {absent:?} (status {:?})",
                out.status
            );
        }
        self.results.push(CaseResult {
            name,
            serial: out.serial,
            status: out.status,
            missing: absent,
        });
    }

    fn failures(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| !r.missing.is_empty())
            .map(|r| r.name)
            .collect()
    }
}

/// Where `cargo xtask stress` keeps QEMU's log of run `run` of case `name`.
fn qemu_log_path(dir: &std::path::Path, name: &str, run: u32) -> PathBuf {
    dir.join(format!("{name}-{run}.qemu.log"))
}

/// Boots the image for an e2e case under QEMU (single-threaded TCG unless
/// `cargo xtask stress --mttcg`, see [`qemu_accel`]). A run that resets
/// the machine fails its case like any other failure.
fn boot_qemu_e2e(
    ctx: &Ctx,
    image: &std::path::Path,
    o: &mut RunOptions,
    name: &str,
) -> Result<Outcome, String> {
    if let Some((dir, run)) = &ctx.qemu_log {
        let path = qemu_log_path(dir, name, *run);
        let _ = std::fs::remove_file(&path);
        o.extra_qemu_args.extend([
            "-d".into(),
            "cpu_reset,int,guest_errors".into(),
            "-D".into(),
            path.display().to_string(),
        ]);
    }
    o.mttcg = ctx.mttcg;
    boot_qemu(image, o, false)
}

/// Boots an e2e case on its vendor: QEMU through [`boot_qemu_e2e`] (with
/// the `--smp` override), Bochs as it is.
fn boot_case(
    ctx: &Ctx,
    image: &std::path::Path,
    o: &mut RunOptions,
    name: &str,
) -> Result<Outcome, String> {
    match o.vendor {
        Vendor::Amd => {
            o.smp = ctx.qemu_smp(o.smp);
            boot_qemu_e2e(ctx, image, o, name)
        }
        Vendor::Intel => boot_bochs(image, o, false),
    }
}

/// The end-to-end checks that `cargo xtask test` runs.
pub fn e2e() -> Result<(), String> {
    e2e_only(None)
}

/// `cargo xtask e2e [NAME]`: every case, or those whose name contains NAME.
pub fn e2e_cmd(args: &[&str]) -> Result<(), String> {
    match args {
        [] => e2e_only(None),
        [name] => e2e_only(Some(name)),
        _ => Err("e2e takes at most one case-name filter".into()),
    }
}

/// Whether case `name` runs under `filter`.
fn selected(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// Every e2e case name, in the order they run.
fn case_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = E2E_CASES.iter().map(|c| c.name).collect();
    v.extend(PVH32_CASES.iter().map(|(n, _)| *n));
    v.extend(MULTI_DOMAIN_CASES.iter().map(|(n, _)| *n));
    v.extend(XENSTORE_CASES.iter().map(|c| c.name));
    v.extend(BLK_CASES.iter().map(|(n, _)| *n));
    v.extend(NET_HOSTILE_CASES.iter().map(|(n, _)| *n));
    v.extend(LINUX_CASES.iter().map(|c| c.name));
    v.extend(SHELL_CASES.iter().map(|c| c.name));
    v.extend(devcases::CASES);
    v.extend(crate::xen::CASES);
    v
}

fn e2e_only(filter: Option<&str>) -> Result<(), String> {
    let image = build_image()?;
    let guest = build_test_guest()?;
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    let mut ctx = Ctx::e2e();
    run_cases(&mut ctx, &image, &guest, filter)?;
    eprintln!("e2e: image {size} bytes");
    let failures = ctx.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("e2e failures: {failures:?}"))
    }
}

/// Runs every case `filter` selects once, recording the verdicts in `ctx`.
fn run_cases(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    for case in E2E_CASES.iter().filter(|c| selected(filter, c.name)) {
        let mut o = RunOptions {
            cmdline: case.cmdline.into(),
            modules: vec![Module::plain(guest.to_path_buf())],
            timeout: Some(Duration::from_secs(300)),
            debugcon: case.bare_guest,
            bochs_cpu: case.bochs_cpu.into(),
            qemu_boot: case.qemu_boot,
            smp: case.cpus,
            ..Default::default()
        };
        let out = match case.vendor {
            Vendor::Amd if case.bare_guest => boot_qemu(guest, &o, false)?,
            Vendor::Amd => {
                o.smp = ctx.qemu_smp(o.smp);
                boot_qemu_e2e(ctx, image, &mut o, case.name)?
            }
            Vendor::Intel => boot_bochs(image, &o, false)?,
        };
        let mut missing = Vec::new();
        if out.status != Some(case.status) {
            missing.push(format!("the exit status {}", case.status));
        }
        ctx.record(case.name, case.vendor, case.expect, out, missing);
    }
    pvh32_e2e(ctx, image, filter)?;
    multi_domain_e2e(ctx, image, guest, filter)?;
    xenstore_e2e(ctx, image, guest, filter)?;
    blk_e2e(ctx, image, guest, filter)?;
    pci_e2e(ctx, image, guest, filter)?;
    net_hostile_e2e(ctx, image, guest, filter)?;
    linux_e2e(ctx, image, filter)?;
    devcases::run(ctx, image, filter)?;
    xen_e2e(ctx, guest, filter)?;
    Ok(())
}

/// The differential cases on Xen 4.17 (xtask/src/xen.rs): the same test
/// guest as Xen's PVH dom0 must pass every check it passes on us.
fn xen_e2e(ctx: &mut Ctx, guest: &std::path::Path, filter: Option<&str>) -> Result<(), String> {
    if selected(filter, "xen-qemu-pvh-guest") {
        let (serial, missing) = crate::xen::pvh_guest_case(guest)?;
        let out = Outcome {
            serial,
            status: None,
        };
        ctx.record("xen-qemu-pvh-guest", Vendor::Amd, &[], out, missing);
    }
    if selected(filter, "xen-qemu-cr0-nw") {
        let (serial, missing) = crate::xen::cr0_nw_case(guest)?;
        let out = Outcome {
            serial,
            status: None,
        };
        ctx.record("xen-qemu-cr0-nw", Vendor::Amd, &[], out, missing);
    }
    Ok(())
}

/// `cargo xtask stress [CASE] --runs N [--smp N]`: boots the e2e cases
/// whose names contain CASE (all by default) N times each, never repeating
/// a run that reset, and reports every failure with its serial log and
/// QEMU's `-d cpu_reset,int,guest_errors` log (under `target/stress/`).
pub fn stress_cmd(args: &[&str]) -> Result<(), String> {
    let mut filter = None;
    let mut runs = 20u32;
    let mut smp = None;
    let mut log = true;
    let mut mttcg = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u32, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{name} takes a positive number"))
        };
        match *a {
            "--runs" => runs = num("--runs")?,
            "--smp" => smp = Some(num("--smp")?),
            // QEMU's -d log slows the emulation down, which hides
            // timing-sensitive failures.
            "--no-qemu-log" => log = false,
            // QEMU's multi-threaded TCG, whose SVM race resets the machine
            // (see `qemu_accel`).
            "--mttcg" => mttcg = true,
            f if !f.starts_with('-') && filter.is_none() => filter = Some(f),
            other => return Err(format!("stress: unknown argument `{other}`")),
        }
    }
    let names: Vec<&str> = case_names()
        .into_iter()
        .filter(|n| selected(filter, n))
        .collect();
    if names.is_empty() {
        return Err(format!(
            "stress: no e2e case matches {filter:?}; cases: {:?}",
            case_names()
        ));
    }
    let image = build_image()?;
    let guest = build_test_guest()?;
    let dir = root().join("target/stress");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Per case: (runs, failures).
    let mut tally: std::collections::BTreeMap<&str, (u32, u32)> =
        names.iter().map(|n| (*n, (0, 0))).collect();
    let start = Instant::now();
    for run in 1..=runs {
        let mut ctx = Ctx {
            smp,
            mttcg,
            qemu_log: log.then(|| (dir.clone(), run)),
            results: Vec::new(),
        };
        run_cases(&mut ctx, &image, &guest, filter)?;
        for r in &ctx.results {
            let qemu_log = qemu_log_path(&dir, r.name, run);
            let t = tally.entry(r.name).or_default();
            t.0 += 1;
            if r.missing.is_empty() {
                let _ = std::fs::remove_file(&qemu_log);
                continue;
            }
            t.1 += 1;
            let serial = dir.join(format!("{}-{run}.serial.log", r.name));
            std::fs::write(&serial, &r.serial).map_err(|e| format!("{}: {e}", serial.display()))?;
            eprintln!(
                "stress: {}: run {run}/{runs} FAILED (status {:?}; missing {:?}): serial log {}{}",
                r.name,
                r.status,
                r.missing,
                serial.display(),
                if qemu_log.exists() {
                    format!(", QEMU log {}", qemu_log.display())
                } else {
                    String::new()
                }
            );
        }
    }
    let mut total = 0;
    for (name, (ran, f)) in &tally {
        if *ran == 0 {
            eprintln!("stress: {name}: not run (skipped: see above)");
        } else {
            eprintln!("stress: {name}: {ran} runs, {f} failures");
        }
        total += f;
    }
    eprintln!(
        "stress: {:.0} s{}, QEMU on {} TCG",
        start.elapsed().as_secs_f64(),
        smp.map(|n| format!(", QEMU cases with -smp {n}"))
            .unwrap_or_default(),
        if mttcg {
            "multi-threaded"
        } else {
            "single-threaded"
        }
    );
    if total == 0 {
        Ok(())
    } else {
        Err(format!("stress: {total} failed runs"))
    }
}

/// The unmodified Debian kernel as a domain: banner, `/init`'s marker with
/// the number of online CPUs, then `poweroff -f` (ACPI S5) ending the
/// machine with success. With the service domain, the plan of
/// [`linux_plan`]: xenstore, and an orderly shutdown through
/// `control/shutdown`.
struct LinuxCase {
    name: &'static str,
    vendor: Vendor,
    /// For Bochs runs: the CPU model ("" for the default Intel one).
    bochs_cpu: &'static str,
    vcpus: u32,
    /// Host CPUs.
    smp: u32,
    /// The service domain starts first (xenstore for Linux).
    service: bool,
    /// The service domain's module comes after the Linux domain's (one
    /// Linux only): Linux starts first and waits for the store.
    service_last: bool,
    /// Linux domains, of `mem` MiB each.
    domains: u32,
    mem: u32,
    /// The first Linux gets `target/linux/root.ext4` as `xvda`.
    disk: bool,
    /// Words for every Linux's `/init` (xtask/src/linux.rs).
    words: &'static str,
    /// Each Linux gets a vif on the service domain's switch, an address
    /// and (two domains) the other's to ping.
    net: bool,
    /// The test kernel joins as a network peer after the other domains
    /// (`role=net-peer`, its vif from its module option with a MAC of its
    /// own, address 10.0.0.ID), and Linux pings it (one Linux).
    net_peer: bool,
    expect: &'static [&'static str],
}

const LINUX_CASES: &[LinuxCase] = &[
    // Linux (d2) boots from a Xen virtual disk: the service domain (d1)
    // holds `target/linux/root.ext4` (its ramdisk module) and serves it
    // through blkback; xen-blkfront in the initramfs connects, /init mounts
    // /dev/xvda and switches root to it; from there it checks the size,
    // writes 4 MiB, syncs, drops the page cache and reads the same sha256
    // back, then is powered off through control/shutdown: / remounted
    // read-only and checked with Debian's `fsck.ext4 -fn`.
    LinuxCase {
        name: "qemu-svm-linux-xvda",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: true,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) service-domain: d2 xvda: the boot module, 32 MiB",
            "(d1) service-domain: blkback: d2 vbd 51712 connected (1 ring pages, port",
            "(d2) PVH-LINUX-INIT: switching root to /dev/xvda",
            "(d2) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux, root=/dev/xvda",
            "(d2) PVH-LINUX-INIT: xvda 65536 sectors, 512-byte blocks",
            "(d2) PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 ",
            "(d1) service-domain: xenstore: every domain wrote data/done; asking d2 to power off",
            "(d2) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d2) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "d2: shutdown (Poweroff)",
            "(d1) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
        ],
    },
    // A disk outlives its guest's reboot: Linux (d2) writes /persist and
    // its hash, checks the filesystem and reboots; the hypervisor destroys
    // it and builds it again (on_reboot=restart, the default) under the
    // same id; the service domain sees the new unique_id, releases the old
    // domain (xenstore connection, vbd ring) and offers the new one the
    // same disk, from which the new Linux boots and reads the hash back.
    LinuxCase {
        name: "qemu-svm-linux-persist",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: true,
        words: "pvhpersist",
        net: false,
        net_peer: false,
        expect: &[
            "(d2) PVH-LINUX-INIT: /persist written: sha256 ",
            "(d2) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "d2: shutdown (Reboot)",
            "d2: rebooting (on_reboot=restart)",
            "(d1) service-domain: xenstore: d2 (linux) released",
            "(d1) service-domain: blkback: d2 vbd 51712: domain gone; disk kept",
            "(d1) service-domain: blkback: d2 vbd 51712 (module) offered",
            "d2: introduced by its xenstore domain; unpaused",
            "(d2) PVH-LINUX-INIT: xvda was linux, now linux's",
            "(d2) PVH-LINUX-INIT: after the reboot /persist reads back: sha256 ",
            "(d2) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "d2: shutdown (Poweroff)",
            "(d1) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
        ],
    },
    // The service domain (d1) serves xenstore to two Linux domains (d2,
    // d3): their xenbus waits for it (late init), their `/init` reads its
    // name with Debian's xenstore-read, and each sees, by a watch, a node
    // the other writes (permission given with xenstore-chmod). When both
    // are done the service domain writes their `control/shutdown`; Linux
    // runs /sbin/poweroff (orderly_poweroff), and once both are down the
    // service domain, told by VIRQ_DOM_EXC, stops too. Two host CPUs, so
    // the three domains run in parallel (this case was one of those that
    // showed QEMU's host reset and its doubled vector, docs/architecture.md
    // section 10).
    LinuxCase {
        name: "qemu-svm-linux-service",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 2,
        service: true,
        service_last: false,
        domains: 2,
        mem: 160,
        disk: false,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) service-domain: xenstore: d2 (linux1) connected on port",
            "(d1) service-domain: xenstore: d3 (linux2) connected on port",
            "(d1) service-domain: xenstore ready",
            "(d1) service-domain: xenstore: d2 sent its first request",
            "(d1) service-domain: xenstore: d3 sent its first request",
            "(d2) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux1",
            "(d3) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux2",
            "(d2) PVH-LINUX-INIT: xenbus: /sys/bus/xen/devices /sys/bus/xen/drivers",
            "(d2) PVH-LINUX-INIT: xenstore watch saw d3: hello-from-d3",
            "(d3) PVH-LINUX-INIT: xenstore watch saw d2: hello-from-d2",
            "(d1) service-domain: xenstore: every domain wrote data/done; asking d2 to power off",
            "(d1) service-domain: xenstore: every domain wrote data/done; asking d3 to power off",
            "(d2) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d3) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "d2: shutdown (Poweroff)",
            "d3: shutdown (Poweroff)",
            "(d1) service-domain: xenstore: d2 shut down (",
            "(d1) service-domain: xenstore: d3 shut down (",
            "(d1) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
        ],
    },
    // Two Linux domains (d2, d3) on the service domain's switch: each
    // gets a vif (`vif=ID`, Xen's 00:16:3e MAC), xen-netfront in the
    // initramfs connects to netback, /init brings eth0 up as 10.0.0.ID/24
    // and pings the other until it answers; d3 then sends d2 16 MiB over
    // TCP with busybox nc (TSO/GSO packets through the switch) and d2
    // checks the sha256 d3 published in xenstore; then both are powered
    // off as in qemu-svm-linux-service.
    LinuxCase {
        name: "qemu-svm-linux-net",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 2,
        service: true,
        service_last: false,
        domains: 2,
        mem: 160,
        disk: false,
        words: "pvhnc=16",
        net: true,
        net_peer: false,
        expect: &[
            "(d1) service-domain: d2 vif 0: 00:16:3e:00:00:02 on the switch",
            "(d1) service-domain: d3 vif 0: 00:16:3e:00:00:03 on the switch",
            "(d1) service-domain: netback: d2 vif 0 connected",
            "(d1) service-domain: netback: d3 vif 0 connected",
            "(d2) PVH-LINUX-NET: eth0 00:16:3e:00:00:02 10.0.0.2/24",
            "(d3) PVH-LINUX-NET: eth0 00:16:3e:00:00:03 10.0.0.3/24",
            "(d2) PVH-LINUX-NET: ping 10.0.0.3 ok",
            "(d3) PVH-LINUX-NET: ping 10.0.0.2 ok",
            "(d3) PVH-LINUX-NET: nc sent 16 MiB to 10.0.0.2 in ",
            "(d2) PVH-LINUX-NET: nc received 16 MiB from d3: sha256 matches",
            "(d2) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d3) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d1) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
        ],
    },
    // Intel VMX under Bochs: one Linux (d1) and the service domain after
    // it (d2): Linux starts first and its xenbus waits for the store (late
    // init); it reads its name and is powered off through control/shutdown.
    // Its network: Linux's vif (module option `vif`, 00:16:3e:00:00:01)
    // and the test kernel's (d3, `role=net-peer`, module option
    // `vif=00:16:3e:5e:00:03`) on the switch; Linux pings 10.0.0.3 and
    // the test kernel answers its ARP and echo requests (a second Linux
    // domain would double the case's Bochs time).
    LinuxCase {
        name: "bochs-vmx-linux-service",
        vendor: Vendor::Intel,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: true,
        domains: 1,
        mem: 256,
        disk: false,
        words: "",
        net: true,
        net_peer: true,
        expect: &[
            "(d2) service-domain: d1 vif 0: 00:16:3e:00:00:01 on the switch",
            "(d2) service-domain: d3 vif 0: 00:16:3e:5e:00:03 on the switch",
            "(d2) service-domain: xenstore ready",
            "(d2) service-domain: xenstore: d1 sent its first request",
            "(d1) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux",
            "(d2) service-domain: netback: d1 vif 0 connected",
            "(d2) service-domain: netback: d3 vif 0 connected",
            "(d3) CHECK net_peer_connect: PASS",
            "(d3) net-peer: 00:16:3e:5e:00:03 10.0.0.3 serving",
            "(d1) PVH-LINUX-NET: eth0 00:16:3e:00:00:01 10.0.0.1/24",
            "(d1) PVH-LINUX-NET: ping 10.0.0.3 ok",
            "(d1) PVH-LINUX-INIT: xenbus: /sys/bus/xen/devices /sys/bus/xen/drivers",
            "(d2) service-domain: xenstore: every domain wrote data/done; asking d1 to power off",
            "(d1) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d2) service-domain: xenstore: every domain wrote data/done; asking d3 to power off",
            "(d3) CHECK net_peer: PASS",
            "(d3) VERDICT: PASS",
            "d3: shutdown (Poweroff)",
            "(d2) service-domain: xenstore: d1 shut down (",
            "(d2) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
    },
    // Two Linux domains (d2, d3), each booting from its own copy of the
    // root image (one module of the service domain, two ranges): each
    // finds its disk unclaimed, claims it, checks it.
    LinuxCase {
        name: "qemu-svm-linux-xvda-two",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: false,
        domains: 2,
        mem: 160,
        disk: true,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) service-domain: d2 xvda: the boot module, 32 MiB",
            "(d1) service-domain: d3 xvda: the boot module, 32 MiB",
            "(d1) service-domain: blkback: d2 vbd 51712 connected",
            "(d1) service-domain: blkback: d3 vbd 51712 connected",
            "(d2) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux1, root=/dev/xvda",
            "(d3) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux2, root=/dev/xvda",
            "(d2) PVH-LINUX-INIT: xvda was unclaimed, now linux1's",
            "(d3) PVH-LINUX-INIT: xvda was unclaimed, now linux2's",
            "(d2) PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 ",
            "(d3) PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 ",
            "(d2) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "(d3) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "all domains shut down (cleanly)",
        ],
    },
    // The same with a 16-page ring (blkfront's max_ring_page_order=4,
    // mapped at 16 consecutive frames) and 12 MiB of O_DIRECT I/O timed.
    LinuxCase {
        name: "qemu-svm-linux-xvda-ring16",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: true,
        words: "xen_blkfront.max_ring_page_order=4 pvhblkbench=12",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) service-domain: blkback: d2 vbd 51712 connected (16 ring pages, port",
            "(d2) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux, root=/dev/xvda",
            "(d2) PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 ",
            "(d2) PVH-LINUX-INIT: blkbench n=12 MiB write=",
            "(d2) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "all domains shut down (cleanly)",
        ],
    },
    // The same on Intel VMX under Bochs, the service domain after Linux
    // (d1 boots from the disk d2 serves), with the reboot of
    // qemu-svm-linux-persist: d1 is built again and reads /persist back.
    LinuxCase {
        name: "bochs-vmx-linux-xvda",
        vendor: Vendor::Intel,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: true,
        service_last: true,
        domains: 1,
        mem: 256,
        disk: true,
        words: "pvhpersist",
        net: false,
        net_peer: false,
        expect: &[
            "(d2) service-domain: d1 xvda: the boot module, 32 MiB",
            "(d2) service-domain: blkback: d1 vbd 51712 connected (1 ring pages, port",
            "(d1) PVH-LINUX-INIT: switching root to /dev/xvda",
            "(d1) PVH-LINUX-INIT: up, cpus=1, xenstore name=linux, root=/dev/xvda",
            "(d1) PVH-LINUX-INIT: xvda 65536 sectors, 512-byte blocks",
            "(d1) PVH-LINUX-INIT: blktest 4 MiB written, synced, read back: sha256 ",
            "(d1) PVH-LINUX-INIT: /persist written: sha256 ",
            "d1: rebooting (on_reboot=restart)",
            "(d2) service-domain: blkback: d1 vbd 51712: domain gone; disk kept",
            "d1: introduced by its xenstore domain; unpaused",
            "(d1) PVH-LINUX-INIT: after the reboot /persist reads back: sha256 ",
            "(d2) service-domain: xenstore: every domain wrote data/done; asking d1 to power off",
            "(d1) PVH-LINUX-INIT: orderly poweroff (control/shutdown)",
            "(d1) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
            "(d2) service-domain: every served domain has shut down; stopping",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
    },
    // Without the service domain: no xenstore, Linux boots as before.
    LinuxCase {
        name: "qemu-svm-linux-1vcpu",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 1,
        smp: 2,
        service: false,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: false,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) [    0.000000] Linux version 6.1",
            "Booting kernel on Xen PVH",
            "xen:events: Using FIFO-based ABI",
            "printk: console [hvc0] enabled",
            "clocksource: Switched to clocksource xen",
            "Run /init as init process",
            "(d1) PVH-LINUX-INIT: up, cpus=1\r\n",
            "reboot: Power down",
            "d1: shutdown (Poweroff)",
            "all domains shut down (cleanly)",
        ],
    },
    // Intel VMX under Bochs: slow (minutes), one vCPU.
    LinuxCase {
        name: "bochs-vmx-linux-1vcpu",
        vendor: Vendor::Intel,
        bochs_cpu: "",
        vcpus: 1,
        smp: 1,
        service: false,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: false,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) [    0.000000] Linux version 6.1",
            "x86/fpu: Enabled xstate features 0x7",
            "(d1) PVH-LINUX-INIT: up, cpus=1",
            "reboot: Power down",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
    },
    // Linux on Bochs' AMD model (SVM with NRIP save but no DecodeAssists:
    // every CR0/CR4 write is decoded by hv-core; XSAVE with AVX offered).
    LinuxCase {
        name: "bochs-ryzen-linux-1vcpu",
        vendor: Vendor::Intel,
        bochs_cpu: "ryzen",
        vcpus: 1,
        smp: 1,
        service: false,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: false,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) [    0.000000] Linux version 6.1",
            "x86/fpu: Enabled xstate features 0x7",
            "(d1) PVH-LINUX-INIT: up, cpus=1",
            "reboot: Power down",
            "all domains shut down (cleanly)",
            STOP_OK,
        ],
    },
    LinuxCase {
        name: "qemu-svm-linux-2vcpus",
        vendor: Vendor::Amd,
        bochs_cpu: "",
        vcpus: 2,
        smp: 2,
        service: false,
        service_last: false,
        domains: 1,
        mem: 256,
        disk: false,
        words: "",
        net: false,
        net_peer: false,
        expect: &[
            "(d1) [    0.000000] Linux version 6.1",
            "smpboot: Allowing 2 CPUs",
            "d1v1: started at",
            "smp: Brought up 1 node, 2 CPUs",
            "(d1) PVH-LINUX-INIT: up, cpus=2",
            "reboot: Power down",
            "all domains shut down (cleanly)",
        ],
    },
];

/// Runs [`LINUX_CASES`] when `cargo xtask linux` has cached the kernel;
/// with `PVH_REQUIRE_LINUX=1` (CI) a missing kernel is a failure.
/// The test kernel as a network peer (`role=net-peer`) after the domains
/// of `case` (one Linux and the service domain): its vif from its module
/// option, `00:16:3e:5e:00:ID`, address `10.0.0.ID`, and the Linux told to
/// ping it.
fn add_net_peer(modules: &mut Vec<Module>, case: &LinuxCase) -> Result<(), String> {
    let id = case.domains + 2;
    let svc = if case.service_last {
        case.domains + 1
    } else {
        1
    };
    let linux = modules
        .iter_mut()
        .find(|m| m.cmdline.starts_with("kernel vif name=linux"))
        .ok_or("no Linux kernel module with a vif")?;
    linux.cmdline.push_str(&format!(" pvhping=10.0.0.{id}"));
    modules.push(Module {
        path: build_test_guest()?,
        cmdline: format!(
            "kernel name=net-peer mem=32M vif=00:16:3e:5e:00:{id:02x} -- role=net-peer peer={svc} ip=10.0.0.{id}"
        ),
    });
    Ok(())
}

fn linux_e2e(ctx: &mut Ctx, image: &std::path::Path, filter: Option<&str>) -> Result<(), String> {
    if !LINUX_CASES.iter().any(|c| selected(filter, c.name))
        && !SHELL_CASES.iter().any(|c| selected(filter, c.name))
    {
        return Ok(());
    }
    let (kernel, initrd) = linux_files();
    if !kernel.exists() || !initrd.exists() {
        if std::env::var("PVH_REQUIRE_LINUX").is_ok_and(|v| v == "1") {
            return Err("PVH_REQUIRE_LINUX=1 but no cached kernel: run `cargo xtask linux`".into());
        }
        eprintln!("e2e: Linux cases skipped (run `cargo xtask linux` first)");
        return Ok(());
    }
    for case in LINUX_CASES.iter().filter(|c| selected(filter, c.name)) {
        let root = crate::linux::root_image_path();
        let disks: Vec<&Path> = if case.disk {
            vec![root.as_path(); case.domains as usize]
        } else {
            Vec::new()
        };
        let mut modules = linux_plan(
            case.domains,
            case.mem,
            case.vcpus,
            case.service,
            case.words,
            &disks,
            case.service_last,
            case.net,
        )?;
        if case.net_peer {
            add_net_peer(&mut modules, case)?;
        }
        let mut o = RunOptions {
            vendor: case.vendor,
            modules,
            mem_mib: (case.mem * case.domains + 256).max(512) + 2 * disks_mib(&disks)?,
            smp: case.smp,
            timeout: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        if !case.bochs_cpu.is_empty() {
            o.bochs_cpu = case.bochs_cpu.into();
        }
        let start = Instant::now();
        let out = boot_case(ctx, image, &mut o, case.name)?;
        let mut missing = Vec::new();
        if case.vendor == Vendor::Amd && out.status != Some(QEMU_EXIT_SUCCESS) {
            missing.push("the success exit status".to_string());
        }
        eprintln!(
            "e2e: {} ran in {:.1} s",
            case.name,
            start.elapsed().as_secs_f64()
        );
        // Figures the guest measured, and netback's counters.
        for l in out.serial.lines().filter(|l| {
            l.contains("PVH-LINUX-INIT: blkbench")
                || l.contains("PVH-LINUX-NET: nc sent")
                || l.contains("rtt min/avg/max")
                || l.contains("events sent")
                || l.contains("net-peer: ")
        }) {
            eprintln!("e2e: {}: {l}", case.name);
        }
        ctx.record(case.name, case.vendor, case.expect, out, missing);
    }
    // The interactive shell, typed at through the serial line: input goes
    // COM1 -> the hypervisor -> the domain's PV console ring -> hvc0. Then
    // the ways a Linux domain ends: poweroff, reboot, and a kernel panic.
    for case in SHELL_CASES.iter().filter(|c| selected(filter, c.name)) {
        let mut modules = linux_modules("linux", 256, 1, "pvhshell");
        if !case.kernel_opts.is_empty() {
            modules[0].cmdline =
                modules[0]
                    .cmdline
                    .replacen("kernel ", &format!("kernel {} ", case.kernel_opts), 1);
        }
        let mut o = RunOptions {
            modules,
            mem_mib: 512,
            timeout: Some(Duration::from_secs(600)),
            input: SerialInput::Script(
                case.script
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        o.smp = ctx.qemu_smp(o.smp);
        let out = boot_qemu_e2e(ctx, image, &mut o, case.name)?;
        let mut missing = Vec::new();
        if out.status != Some(case.status) {
            missing.push(format!("the exit status {}", case.status));
        }
        ctx.record(case.name, Vendor::Amd, case.expect, out, missing);
    }
    Ok(())
}

/// A Linux boot with the shell, driven by typed commands.
struct ShellCase {
    name: &'static str,
    /// (when the output contains this, type that).
    script: &'static [(&'static str, &'static str)],
    /// Launch-plan options of the kernel module (`on_reboot=destroy`).
    kernel_opts: &'static str,
    expect: &'static [&'static str],
    status: i32,
}

const SHELL_CASES: &[ShellCase] = &[
    ShellCase {
        name: "qemu-svm-linux-shell",
        script: &[
            (LINUX_MARKER, "echo hello-$((40+2))\r"),
            ("hello-42", "poweroff -f\r"),
        ],
        kernel_opts: "",
        expect: &[
            "hello-42",
            "d1: shutdown (Poweroff)",
            "all domains shut down (cleanly)",
        ],
        status: QEMU_EXIT_SUCCESS,
    },
    ShellCase {
        name: "qemu-svm-linux-reboot",
        // Left shut down (the restart is qemu-svm-linux-persist's).
        script: &[(LINUX_MARKER, "reboot -f\r")],
        kernel_opts: "on_reboot=destroy",
        expect: &[
            "d1: shutdown (Reboot)",
            "d1: not restarted (on_reboot=destroy, or the service domain)",
            "d1: destroyed",
            "all domains shut down (NOT cleanly)",
        ],
        status: QEMU_EXIT_FAILURE,
    },
    ShellCase {
        name: "qemu-svm-linux-panic",
        script: &[(LINUX_MARKER, "echo c > /proc/sysrq-trigger\r")],
        kernel_opts: "",
        expect: &[
            "Kernel panic",
            "d1: shutdown (Crash)",
            "all domains shut down (NOT cleanly)",
        ],
        status: QEMU_EXIT_FAILURE,
    },
];

/// Several test-guest domains from one GRUB ISO (hyperlaunch): d1 pings
/// d2 over an interdomain event channel, then maps, copies into and out of
/// a page d2 granted it and fails to map what d2 did not grant; d3
/// triple-faults on purpose. The two survivors must pass every check and
/// power off; d3's crash must be reported and stop only d3, so the machine
/// ends "not cleanly". Run on AMD SVM under QEMU (`qemu-svm-three-domains`)
/// and on Intel VMX under Bochs (`bochs-vmx-three-domains`), each when
/// `filter` selects it.
/// The multi-domain cases: name and vendor.
const MULTI_DOMAIN_CASES: &[(&str, Vendor)] = &[
    ("qemu-svm-three-domains", Vendor::Amd),
    ("bochs-vmx-three-domains", Vendor::Intel),
];

fn multi_domain_e2e(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    // d1 has two vCPUs: its checks start the second with
    // VCPUOP_initialise/up (`vcpu_up`).
    let m = |vcpus: u32, cmd: &str| Module {
        path: guest.to_path_buf(),
        cmdline: kernel_cmdline(32, vcpus, cmd),
    };
    let expect = [
        "(d1) CHECK vcpu_up: PASS",
        "d1v1: started at ",
        "(d1) CHECK interdomain_ping: PASS",
        "(d1) CHECK grant_shared: PASS",
        "(d1) CHECK grant_copy: PASS",
        "(d1) CHECK hostile_map_without_grant: PASS",
        "(d1) VERDICT: PASS 30/30",
        "(d2) CHECK interdomain_pong: PASS",
        "(d2) CHECK grant_shared: PASS",
        "(d2) VERDICT: PASS 27/27",
        "(d3) VERDICT: PASS 25/25",
        "d3: crashed: triple fault",
        "d1: shutdown (Poweroff)",
        "d2: shutdown (Poweroff)",
        "all domains shut down (NOT cleanly)",
    ];
    for &(name, vendor) in MULTI_DOMAIN_CASES {
        if !selected(filter, name) {
            continue;
        }
        let mut o = RunOptions {
            vendor,
            modules: vec![
                m(2, "role=ping peer=2"),
                m(1, "role=pong peer=1"),
                m(1, "role=crash"),
            ],
            mem_mib: 512,
            smp: 2,
            bochs_cpu: "corei7_skylake_x".into(),
            timeout: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let out = boot_case(ctx, image, &mut o, name)?;
        let mut missing = Vec::new();
        match vendor {
            Vendor::Amd if out.status != Some(QEMU_EXIT_FAILURE) => {
                missing.push("the failure exit status (d3 crashed)".to_string());
            }
            // Bochs has no exit status: the machine's last line says it.
            Vendor::Intel if !out.serial.contains(STOP_FAILED) => {
                missing.push(STOP_FAILED.to_string())
            }
            _ => {}
        }
        ctx.record(name, vendor, &expect, out, missing);
    }
    Ok(())
}

/// The 32-bit test guest (tests/pvh-guest32) as the only domain: it stays
/// in 32-bit protected mode, so every hypercall is a 32-bit one with Xen's
/// compat layouts. Every check must pass and the guest power off; on AMD
/// SVM under QEMU (`qemu-svm-pvh32`) and Intel VMX under Bochs
/// (`bochs-vmx-pvh32`).
const PVH32_CASES: &[(&str, Vendor)] = &[
    ("qemu-svm-pvh32", Vendor::Amd),
    ("bochs-vmx-pvh32", Vendor::Intel),
];

fn pvh32_e2e(ctx: &mut Ctx, image: &std::path::Path, filter: Option<&str>) -> Result<(), String> {
    if !PVH32_CASES.iter().any(|(n, _)| selected(filter, n)) {
        return Ok(());
    }
    let guest = build_test_guest32()?;
    let mut expect: Vec<String> = [
        "xen_cpuid",
        "console_io",
        "xen_version",
        "memory_map",
        "shared_info",
        "upcall_self_event",
        "expand_array",
        "grant_table",
        "grant_copy",
        "reservation",
        "runstate",
        "poll",
        "singleshot_timer",
        "timer_virq",
        "hostile_handles",
        "unbacked_mmio",
        "cr4_unoffered_gp",
        "cr0_invalid_gp",
        "apic_modes",
    ]
    .iter()
    .map(|c| format!("(d1) CHECK {c}: PASS"))
    .collect();
    expect.push("(d1) VERDICT: PASS 19/19".into());
    expect.push("d1: shutdown (Poweroff)".into());
    expect.push("all domains shut down (cleanly)".into());
    for &(name, vendor) in PVH32_CASES {
        if !selected(filter, name) {
            continue;
        }
        let mut o = RunOptions {
            vendor,
            modules: vec![Module::plain(guest.clone())],
            bochs_cpu: "corei7_skylake_x".into(),
            timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let out = boot_case(ctx, image, &mut o, name)?;
        let mut missing = Vec::new();
        match vendor {
            Vendor::Amd if out.status != Some(QEMU_EXIT_SUCCESS) => {
                missing.push(format!("the exit status {QEMU_EXIT_SUCCESS}"));
            }
            Vendor::Intel if !out.serial.contains(STOP_OK) => missing.push(STOP_OK.to_string()),
            _ => {}
        }
        if out.serial.contains(": FAIL") {
            missing.push("no failed check".into());
        }
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        ctx.record(name, vendor, &expect, out, missing);
    }
    Ok(())
}

/// The service domain (d1) against hostile xenstore clients: test-guest
/// domains with `role=xs-hostile kind=K` (d2, d3, ...) each break their
/// ring's protocol and must be cut off alone (the page's `error` set, the
/// service domain's `cut off` line), then tell the well-behaved
/// `role=xs-client` domain (the last) so; only then does the client try
/// the service domain's privileged calls (each refused as Xen refuses
/// them) and talk xenstore over its ring. Every domain powers off and the
/// service domain stops after them.
struct XenstoreCase {
    name: &'static str,
    vendor: Vendor,
    /// The hostile domains' kinds, d2 onwards.
    kinds: &'static [&'static str],
}

const XENSTORE_CASES: &[XenstoreCase] = &[
    XenstoreCase {
        name: "qemu-xenstore-hostile-ring",
        vendor: Vendor::Amd,
        kinds: &["indices", "oversize", "garbage"],
    },
    // Bochs is slow: one hostile domain.
    XenstoreCase {
        name: "bochs-vmx-xenstore-hostile-ring",
        vendor: Vendor::Intel,
        kinds: &["indices"],
    },
];

/// The service domain's log line for a domain cut off for `kind`.
fn cut_off_line(domid: usize, kind: &str) -> String {
    let why = match kind {
        "indices" => "Ring(Overflow",
        "oversize" => "PayloadTooLong(5000)",
        _ => "PayloadTooLong(",
    };
    format!("(d1) service-domain: xenstore: d{domid} cut off: {why}")
}

/// `qemu-blk-hostile`: the test kernel as a hostile block front end (d2,
/// `role=blk-hostile`) of a 1 MiB disk the service domain (d1) serves: it
/// connects, writes and reads back a page, gets an error for each bad
/// request (segment count, sector ranges, past the disk, an ungranted ref,
/// a ref granted to another domain, an unknown operation) and two answers
/// for a reused id, then claims 100 requests on a 32-slot ring: the back
/// end closes that vbd (state 5) and goes on serving xenstore, to it and to
/// a well-behaved client (d3).
/// `bochs-vmx-blk-hostile` is the same on Intel VMX under Bochs.
fn blk_e2e(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    for (name, vendor) in BLK_CASES {
        if selected(filter, name) {
            blk_case(ctx, image, guest, name, *vendor)?;
        }
    }
    Ok(())
}

/// The hostile block front-end cases: name and vendor.
const BLK_CASES: &[(&str, Vendor)] = &[
    ("qemu-blk-hostile", Vendor::Amd),
    ("bochs-vmx-blk-hostile", Vendor::Intel),
];

fn blk_case(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    name: &'static str,
    vendor: Vendor,
) -> Result<(), String> {
    let disk = target_dir().join("blk-hostile.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).map_err(|e| format!("{}: {e}", disk.display()))?;
    let modules = vec![
        service_module_mem("disk=2", SERVICE_MEM_MIB + 1)?,
        Module {
            path: disk,
            cmdline: "ramdisk".into(),
        },
        Module {
            path: guest.to_path_buf(),
            cmdline: "kernel name=blk-hostile mem=32M -- role=blk-hostile peer=1".into(),
        },
        Module {
            path: guest.to_path_buf(),
            cmdline: "kernel name=xs-client mem=32M -- role=xs-client xsname=xs-client".into(),
        },
    ];
    let mut expect = vec![
        "(d1) service-domain: d2 xvda: the boot module, 1 MiB",
        "(d1) service-domain: blkback: d2 vbd 51712 connected (1 ring pages, port",
        "(d2) CHECK blk_initwait: PASS",
        "(d2) CHECK blk_connect: PASS",
        "(d2) CHECK blk_write_read: PASS",
        "(d2) CHECK blk_hostile_requests: PASS",
        "(d1) service-domain: blkback: d2 vbd 51712: ring broken",
        "(d2) blk-hostile: the back end closed the vbd (state 5)",
        "(d2) CHECK blk_hostile_ring: PASS",
        "(d2) VERDICT: PASS",
        "d2: shutdown (Poweroff)",
        "(d3) CHECK xenstore_read_name: PASS",
        "(d3) CHECK xenstore_watch: PASS",
        "(d3) VERDICT: PASS",
        "d3: shutdown (Poweroff)",
        "(d1) service-domain: every served domain has shut down; stopping",
        "all domains shut down (cleanly)",
    ];
    if vendor == Vendor::Intel {
        expect.push(STOP_OK);
    }
    let mut o = RunOptions {
        vendor,
        modules,
        mem_mib: 512,
        smp: 2,
        bochs_cpu: "corei7_skylake_x".into(),
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let start = Instant::now();
    let out = boot_case(ctx, image, &mut o, name)?;
    let mut missing = Vec::new();
    if vendor == Vendor::Amd && out.status != Some(QEMU_EXIT_SUCCESS) {
        missing.push("the success exit status".to_string());
    }
    eprintln!("e2e: {name} ran in {:.1} s", start.elapsed().as_secs_f64());
    ctx.record(name, vendor, &expect, out, missing);
    Ok(())
}

/// `qemu-svm-pci-isolation` (issue 17): QEMU's virtio-blk-pci at 00:04.0
/// (a 1 MiB raw file) is assigned with `pci=00:04.0` to a test-guest
/// domain (d1, `role=pci-owner`), which sees it, reads its virtio common
/// configuration through its identity-mapped memory BAR and its legacy
/// registers through its forwarded I/O BAR, and maps and binds its GSI as
/// a pirq. An unprivileged domain assigned nothing (d2, `role=pci-probe`)
/// sees no function on bus 0, cannot wake the device's command register,
/// reads all-ones from the same BAR and ports (its writes dropped), and is
/// refused `PHYSDEVOP_map_pirq` of the GSI (`-EPERM`). The addresses are
/// SeaBIOS's placement on this machine (`-net none`, i440fx); the owner
/// checks them and says which to use if they move.
const PCI_CASE: &str = "qemu-svm-pci-isolation";
/// The virtio-blk function's modern BAR (common configuration at +0).
const PCI_BAR: &str = "0xfe000000";
/// Its legacy I/O BAR.
const PCI_IO: &str = "0xc000";
/// Its GSI: interrupt line 11 on QEMU's i440fx (the MADT maps it to 11).
const PCI_GSI: &str = "11";

fn pci_e2e(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    if !selected(filter, PCI_CASE) {
        return Ok(());
    }
    let name = PCI_CASE;
    let disk = target_dir().join("pci-isolation.img");
    // Sector 0 starts with what the owner's DMA read must find
    // (tests/pvh-guest `checks::pci::DISK_MARK`).
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..22].copy_from_slice(b"pvh pci-isolation disk");
    std::fs::write(&disk, bytes).map_err(|e| format!("{}: {e}", disk.display()))?;
    let args = format!("dev=04 bar={PCI_BAR} io={PCI_IO} gsi={PCI_GSI}");
    let modules = vec![
        Module {
            path: guest.to_path_buf(),
            cmdline: format!(
                "kernel name=pci-owner service mem=32M pci=00:04.0 directmap=2 -- role=pci-owner {args}"
            ),
        },
        Module {
            path: guest.to_path_buf(),
            cmdline: format!("kernel name=pci-probe mem=32M -- role=pci-probe {args}"),
        },
    ];
    let expect = [
        "d1: PCI function 00:04.0 assigned",
        "(d1) CHECK pci_owner_config: PASS",
        "(d1) CHECK pci_owner_bars: PASS",
        "(d1) CHECK pci_owner_pirq: PASS",
        "(d1) CHECK pci_owner_dma_irq: PASS",
        "(d1) VERDICT: PASS",
        "(d2) CHECK pci_probe_config: PASS",
        "(d2) CHECK pci_probe_command: PASS",
        "(d2) CHECK pci_probe_bars: PASS",
        "(d2) CHECK pci_probe_pirq: PASS",
        "(d2) VERDICT: PASS",
        "all domains shut down (cleanly)",
    ];
    let mut o = RunOptions {
        vendor: Vendor::Amd,
        modules,
        mem_mib: 256,
        smp: 2,
        timeout: Some(Duration::from_secs(300)),
        extra_qemu_args: vec![
            "-drive".into(),
            format!("file={},format=raw,if=none,id=pcidisk", disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=pcidisk,addr=04.0".into(),
        ],
        ..Default::default()
    };
    let out = boot_case(ctx, image, &mut o, name)?;
    let mut missing = Vec::new();
    if out.status != Some(QEMU_EXIT_SUCCESS) {
        missing.push("the success exit status".to_string());
    }
    if out.serial.contains(": FAIL") {
        missing.push("no failed check".into());
    }
    ctx.record(name, Vendor::Amd, &expect, out, missing);
    Ok(())
}

/// `qemu-svm-net-hostile`: the test kernel as a hostile network front end
/// (d2, `role=net-hostile`) on the service domain's switch with two Linux
/// domains (d3, d4): it connects, sends a good frame, gets an error for
/// each bad packet (a slot past its page, an ungranted ref, a ref granted
/// to another domain, a GSO extra with MSS 0, a runt, sizes that do not
/// add up) and OKAY for the good ones after them, never posts a receive
/// buffer, then publishes a packet cut short: netback closes that vif
/// (state 5) and the two Linux domains still ping each other through the
/// switch. Needs `cargo xtask linux` (skipped without the kernel).
/// `bochs-vmx-net-hostile` is the hostile front end alone on Intel VMX
/// under Bochs (two Linux domains would take too long there).
const NET_HOSTILE_CASES: &[(&str, Vendor)] = &[
    ("qemu-svm-net-hostile", Vendor::Amd),
    ("bochs-vmx-net-hostile", Vendor::Intel),
];

fn net_hostile_e2e(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    for &(name, vendor) in NET_HOSTILE_CASES {
        if selected(filter, name) {
            net_hostile_case(ctx, image, guest, name, vendor)?;
        }
    }
    Ok(())
}

fn net_hostile_case(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    name: &'static str,
    vendor: Vendor,
) -> Result<(), String> {
    let linux = vendor == Vendor::Amd;
    let (kernel, initrd) = linux_files();
    if linux && (!kernel.exists() || !initrd.exists()) {
        if std::env::var("PVH_REQUIRE_LINUX").is_ok_and(|v| v == "1") {
            return Err("PVH_REQUIRE_LINUX=1 but no cached kernel: run `cargo xtask linux`".into());
        }
        eprintln!("e2e: {name} skipped (run `cargo xtask linux` first)");
        return Ok(());
    }
    let mut modules = vec![
        service_module(if linux {
            "shutdown-when=data/done vif=2 vif=3 vif=4"
        } else {
            "vif=2"
        })?,
        Module {
            path: guest.to_path_buf(),
            cmdline: "kernel name=net-hostile mem=32M -- role=net-hostile peer=1".into(),
        },
    ];
    for (me, peer) in [(3, 4), (4, 3)].into_iter().filter(|_| linux) {
        modules.extend(linux_modules(
            &format!("linux{}", me - 2),
            160,
            1,
            &format!("pvhwait pvhpeer={peer} pvhip=10.0.0.{me}/24 pvhping=10.0.0.{peer}"),
        ));
    }
    let mut expect = vec![
        "(d1) service-domain: netback: d2 vif 0 connected",
        "(d2) CHECK net_connect: PASS",
        "(d2) CHECK net_tx_good: PASS",
        "(d2) CHECK net_tx_hostile: PASS",
        "(d1) service-domain: netback: d2 vif 0: Protocol(\"packet cut short\"); disconnected",
        "(d2) net-hostile: the back end closed the vif (state 5)",
        "(d2) CHECK net_hostile_ring: PASS",
        "(d2) VERDICT: PASS",
        "d2: shutdown (Poweroff)",
    ];
    if linux {
        expect.extend([
            "(d3) PVH-LINUX-NET: ping 10.0.0.4 ok",
            "(d4) PVH-LINUX-NET: ping 10.0.0.3 ok",
        ]);
    }
    expect.extend([
        "(d1) service-domain: every served domain has shut down; stopping",
        "all domains shut down (cleanly)",
    ]);
    if vendor == Vendor::Intel {
        expect.push(STOP_OK);
    }
    let mut o = RunOptions {
        vendor,
        modules,
        mem_mib: if linux { 704 } else { 512 },
        smp: 1,
        bochs_cpu: "corei7_skylake_x".into(),
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let start = Instant::now();
    let out = boot_case(ctx, image, &mut o, name)?;
    let mut missing = Vec::new();
    if vendor == Vendor::Amd && out.status != Some(QEMU_EXIT_SUCCESS) {
        missing.push("the success exit status".to_string());
    }
    eprintln!("e2e: {name} ran in {:.1} s", start.elapsed().as_secs_f64());
    for l in out.serial.lines().filter(|l| l.contains("events sent")) {
        eprintln!("e2e: {name}: {l}");
    }
    ctx.record(name, vendor, &expect, out, missing);
    Ok(())
}

fn xenstore_e2e(
    ctx: &mut Ctx,
    image: &std::path::Path,
    guest: &std::path::Path,
    filter: Option<&str>,
) -> Result<(), String> {
    for case in XENSTORE_CASES.iter().filter(|c| selected(filter, c.name)) {
        let client = case.kinds.len() + 2;
        let hostile: Vec<usize> = (2..client).collect();
        let wait: Vec<String> = hostile.iter().map(|d| d.to_string()).collect();
        let mut modules = vec![service_module("")?];
        for kind in case.kinds.iter() {
            modules.push(Module {
                path: guest.to_path_buf(),
                cmdline: format!(
                    "kernel name=xs-{kind} mem=32M -- role=xs-hostile kind={kind} peer={client}"
                ),
            });
        }
        modules.push(Module {
            path: guest.to_path_buf(),
            cmdline: format!(
                "kernel name=xs-client mem=32M -- role=xs-client wait={} xsname=xs-client",
                wait.join(",")
            ),
        });
        let mut expect: Vec<String> = vec!["(d1) service-domain: xenstore ready".into()];
        for (kind, d) in case.kinds.iter().zip(&hostile) {
            expect.push(format!(
                "(d1) service-domain: xenstore: d{d} (xs-{kind}) connected"
            ));
            expect.push(cut_off_line(*d, kind));
            expect.push(format!("(d{d}) CHECK xenstore_hostile: PASS"));
            expect.push(format!("(d{d}) CHECK xenstore_hostile_signal: PASS"));
            expect.push(format!("(d{d}) VERDICT: PASS 27/27"));
            expect.push(format!("d{d}: shutdown (Poweroff)"));
        }
        for check in [
            "xenstore_hostile_cut_off",
            "unpriv_getdomaininfo",
            "unpriv_getdomaininfolist",
            "unpriv_bind_virq_dom_exc",
            "unpriv_map_store_grant",
            "unpriv_bind_store_port",
            "xenstore_connect",
            "xenstore_read_name",
            "xenstore_read_domid",
            "xenstore_write_read",
            "xenstore_watch",
        ] {
            expect.push(format!("(d{client}) CHECK {check}: PASS"));
        }
        expect.extend([
            format!("(d{client}) VERDICT: PASS 36/36"),
            format!("d{client}: shutdown (Poweroff)"),
            "(d1) service-domain: every served domain has shut down; stopping".into(),
            "d1: shutdown (Poweroff)".into(),
            "all domains shut down (cleanly)".into(),
        ]);
        if case.vendor == Vendor::Intel {
            expect.push(STOP_OK.into());
        }
        let mut o = RunOptions {
            vendor: case.vendor,
            modules,
            mem_mib: 512,
            smp: 2,
            bochs_cpu: "corei7_skylake_x".into(),
            timeout: Some(Duration::from_secs(900)),
            ..Default::default()
        };
        let start = Instant::now();
        let out = boot_case(ctx, image, &mut o, case.name)?;
        let mut missing = Vec::new();
        if case.vendor == Vendor::Amd && out.status != Some(QEMU_EXIT_SUCCESS) {
            missing.push("the success exit status".to_string());
        }
        // The client's xenstore work comes after every cut-off.
        let first_client_xs = out
            .serial
            .find(&format!("(d{client}) CHECK xenstore_connect:"));
        for (kind, d) in case.kinds.iter().zip(&hostile) {
            let cut = out.serial.find(&cut_off_line(*d, kind));
            if let (Some(c), Some(x)) = (cut, first_client_xs)
                && c > x
            {
                missing.push(format!("d{d} cut off before d{client}'s xenstore checks"));
            }
        }
        eprintln!(
            "e2e: {} ran in {:.1} s",
            case.name,
            start.elapsed().as_secs_f64()
        );
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        ctx.record(case.name, case.vendor, &expect, out, missing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiboot_initrd_doubles_commas_and_joins_modules() {
        let m = |p: &str, c: &str| Module {
            path: p.into(),
            cmdline: c.into(),
        };
        let got = multiboot_initrd(&[
            m("/t/svc", "kernel service -- vif=2,mac=00:16:3e:00:00:02"),
            m("/t/a,b.img", ""),
            m("/t/vmlinux", "kernel -- x"),
        ])
        .unwrap();
        assert_eq!(
            got,
            "/t/svc kernel service -- vif=2,,mac=00:16:3e:00:00:02,/t/a,,b.img,/t/vmlinux kernel -- x"
        );
    }

    #[test]
    fn disk_file_and_net_options() {
        let (_, g) = parse_options(&[
            "--linux",
            "--disk-file",
            "/tmp/d.img",
            "--net",
            "user,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80",
        ])
        .unwrap();
        assert_eq!(g.disk_file.as_deref(), Some(Path::new("/tmp/d.img")));
        assert_eq!(
            g.net.as_deref(),
            Some(",hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80")
        );
        assert_eq!(
            parse_options(&["--linux", "--net", "user"])
                .unwrap()
                .1
                .net
                .as_deref(),
            Some("")
        );
        for bad in [
            &["--linux", "--net", "tap"][..],
            &["--linux", "--net", "username"],
            &["--disk-file", "/tmp/d.img"],
            &["--linux", "--no-service", "--net", "user"],
            &[
                "--linux",
                "--disk-file",
                "/tmp/d.img",
                "--disk",
                "/tmp/e.img",
            ],
        ] {
            assert!(parse_options(bad).is_err(), "{bad:?}");
        }
        let e = parse_options(&["--vendor", "intel", "--linux", "--disk-file", "/tmp/d.img"])
            .unwrap_err();
        assert!(e.contains("Bochs"), "{e}");
        assert!(parse_options(&["--vendor", "intel", "--linux", "--net", "user"]).is_err());
        let p = PassThrough {
            disk: true,
            uplink: true,
        };
        assert_eq!(p.pci(), "00:04.0,00:05.0");
        assert_eq!(
            PassThrough {
                disk: false,
                uplink: true
            }
            .pci(),
            "00:05.0"
        );
    }

    #[test]
    fn multiboot_initrd_refuses_paths_with_blanks() {
        let m = Module::plain("/t/my disk.img".into());
        assert!(multiboot_initrd(&[m]).is_err());
    }
}
