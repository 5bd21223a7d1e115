//! Hypercall entry for guest kernels (feature `guest`, x86_64 only).
//!
//! A guest reaches Xen with VMCALL (Intel) or VMMCALL (AMD, Hygon), the
//! number in RAX and up to five arguments in RDI, RSI, RDX, R10 and R8; the
//! result comes back in RAX, negative errno on failure. Older guests call
//! into a hypercall page the hypervisor fills after a write to the MSR
//! named by CPUID leaf `base + 2`. [`Hypercall`] does either.
//!
//! The raw entry points are `unsafe`: a hypercall can change the guest's
//! memory (unmap, remap, transfer pages). The typed wrappers are safe only
//! when the operation reads or writes nothing but the Rust values passed
//! to it.

use core::arch::asm;
use core::arch::x86_64::__cpuid;

use crate::*;

/// Number of bytes per stub in a hypercall page (32-byte stubs).
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Number of stubs in a 4 KiB hypercall page.
pub const HYPERCALL_PAGE_STUBS: u32 = (4096 / HYPERCALL_STUB_SIZE) as u32;

/// The instruction a guest uses to enter the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsn {
    /// Intel VMX: `vmcall`.
    Vmcall,
    /// AMD SVM: `vmmcall`.
    Vmmcall,
}

/// Picks the instruction from the vendor string of CPUID leaf 0 (EBX, EDX,
/// ECX): VMMCALL for "AuthenticAMD" and "HygonGenuine", VMCALL otherwise.
pub const fn hypercall_insn_for_vendor(ebx: u32, ecx: u32, edx: u32) -> HypercallInsn {
    // "Auth" "enti" "cAMD" and "Hygo" "nGen" "uine" as little-endian words.
    let amd = ebx == 0x6874_7541 && edx == 0x6974_6e65 && ecx == 0x444d_4163;
    let hygon = ebx == 0x6f67_7948 && edx == 0x6e65_476e && ecx == 0x656e_6975;
    if amd || hygon {
        HypercallInsn::Vmmcall
    } else {
        HypercallInsn::Vmcall
    }
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = __cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads the CPU vendor with CPUID and picks the hypercall instruction.
pub fn detect_hypercall_insn() -> HypercallInsn {
    let [_, ebx, ecx, edx] = cpuid(0);
    hypercall_insn_for_vendor(ebx, ecx, edx)
}

/// Scans the candidate CPUID bases (0x40000000 to 0x4000ff00) for Xen's
/// signature. `None` when not running on a Xen-compatible hypervisor.
pub fn find_xen_cpuid_base() -> Option<XenCpuidBase> {
    (XEN_CPUID_FIRST_LEAF..XEN_CPUID_BASE_END)
        .step_by(XEN_CPUID_BASE_STEP as usize)
        .find_map(|base| xen_cpuid_base_check(base, cpuid(base)).ok())
}

/// This domain's id, from the HVM leaf (base + 4: ECX when EAX has
/// `XEN_HVM_CPUID_DOMID_PRESENT`).
pub fn own_domid() -> Option<Domid> {
    let b = find_xen_cpuid_base()?;
    let leaf = b.base + crate::cpuid::XEN_CPUID_LEAF_HVM;
    if leaf > b.max_leaf {
        return None;
    }
    let [flags, _, domid, _] = cpuid(leaf);
    (flags & crate::cpuid::XEN_HVM_CPUID_DOMID_PRESENT != 0)
        .then(|| Domid::try_from(domid).ok())
        .flatten()
}

/// The MSR that installs a hypercall page, from the hypercall leaf's EBX.
pub fn hypercall_page_msr(base: &XenCpuidBase) -> Option<u32> {
    base.leaf(XEN_CPUID_LEAF_HYPERCALL)
        .map(|leaf| cpuid(leaf)[1])
}

/// Asks the hypervisor to fill a hypercall page: writes the page's
/// guest-physical address to `msr`.
///
/// # Safety
/// 1. `msr` must be the MSR reported by [`hypercall_page_msr`], and the
///    code must run at CPL 0.
/// 2. `page_gpa` must be the guest-physical address of a 4 KiB page the
///    caller owns and that nothing else uses: the hypervisor overwrites it.
pub unsafe fn install_hypercall_page(msr: u32, page_gpa: u64) {
    // SAFETY: duty 1 makes the WRMSR legal (right MSR, ring 0); duty 2
    // means the hypervisor's write to the page clobbers nothing we own.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") page_gpa as u32,
            in("edx") (page_gpa >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Insn(HypercallInsn),
    Page(usize),
}

/// A way into the hypervisor, plus typed wrappers for common operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypercall {
    entry: Entry,
}

fn ret(raw: i64) -> Result<u64, Errno> {
    Errno::from_ret(raw)
}

fn unit(raw: i64) -> Result<(), Errno> {
    Errno::from_ret(raw).map(|_| ())
}

fn ptr<T>(arg: &mut T) -> u64 {
    core::ptr::from_mut(arg) as u64
}

impl Hypercall {
    /// Enters with the given instruction.
    pub const fn with_insn(insn: HypercallInsn) -> Self {
        Self {
            entry: Entry::Insn(insn),
        }
    }

    /// Enters with the instruction the CPU vendor calls for.
    pub fn detect() -> Self {
        Self::with_insn(detect_hypercall_insn())
    }

    /// Enters through the hypercall page at virtual address `page`.
    ///
    /// # Safety
    /// `page` must be the mapped, executable address of a page the
    /// hypervisor filled through [`install_hypercall_page`], kept mapped for
    /// as long as the returned value is used.
    pub const unsafe fn with_page(page: usize) -> Self {
        Self {
            entry: Entry::Page(page),
        }
    }

    /// Issues hypercall `nr` with five arguments and returns RAX.
    ///
    /// # Safety
    /// 1. The arguments must be what hypercall `nr` expects; every pointer
    ///    among them must be valid for the reads and writes the hypercall
    ///    performs, for its whole duration.
    /// 2. The operation must not invalidate memory Rust still uses (e.g.
    ///    unmapping or replacing pages that back live references).
    pub unsafe fn call(&self, nr: u32, args: [u64; 5]) -> i64 {
        let [a1, a2, a3, a4, a5] = args;
        let mut rax = u64::from(nr);
        match self.entry {
            Entry::Insn(HypercallInsn::Vmcall) => {
                // SAFETY: duties 1-2 cover what the hypervisor does with
                // the arguments. Xen may clobber the argument registers, so
                // all are outputs; memory is assumed read and written.
                unsafe {
                    asm!(
                        "vmcall",
                        inlateout("rax") rax,
                        inlateout("rdi") a1 => _,
                        inlateout("rsi") a2 => _,
                        inlateout("rdx") a3 => _,
                        inlateout("r10") a4 => _,
                        inlateout("r8") a5 => _,
                        options(nostack),
                    );
                }
            }
            Entry::Insn(HypercallInsn::Vmmcall) => {
                // SAFETY: as for VMCALL above.
                unsafe {
                    asm!(
                        "vmmcall",
                        inlateout("rax") rax,
                        inlateout("rdi") a1 => _,
                        inlateout("rsi") a2 => _,
                        inlateout("rdx") a3 => _,
                        inlateout("r10") a4 => _,
                        inlateout("r8") a5 => _,
                        options(nostack),
                    );
                }
            }
            Entry::Page(page) => {
                if nr >= HYPERCALL_PAGE_STUBS {
                    return ENOSYS_RET;
                }
                let stub = page.wrapping_add(nr as usize * HYPERCALL_STUB_SIZE);
                // SAFETY: `with_page`'s contract makes `stub` the start of a
                // hypervisor-written stub (mov eax, nr; vm(m)call; ret) that
                // returns with only RAX and the argument registers changed.
                // The CALL pushes a return address, so `nostack` is not
                // given and the compiler keeps the stack usable below RSP.
                unsafe {
                    asm!(
                        "call {stub}",
                        stub = in(reg) stub,
                        inlateout("rax") rax,
                        inlateout("rdi") a1 => _,
                        inlateout("rsi") a2 => _,
                        inlateout("rdx") a3 => _,
                        inlateout("r10") a4 => _,
                        inlateout("r8") a5 => _,
                    );
                }
            }
        }
        rax as i64
    }

    /// Writes bytes to the hypervisor console (`console_io`, `CONSOLEIO_write`).
    pub fn console_write(&self, bytes: &[u8]) -> Result<u64, Errno> {
        let args = [
            u64::from(CONSOLEIO_write),
            bytes.len() as u64,
            bytes.as_ptr() as u64,
            0,
            0,
        ];
        // SAFETY: the hypervisor only reads `bytes.len()` bytes from a live slice.
        ret(unsafe { self.call(__HYPERVISOR_console_io, args) })
    }

    /// The hypervisor version as (major, minor) (`xen_version`, `XENVER_version`).
    pub fn xen_version(&self) -> Result<(u16, u16), Errno> {
        // SAFETY: XENVER_version takes no buffer.
        let v = ret(unsafe { self.call(__HYPERVISOR_xen_version, [0; 5]) })?;
        Ok(xen_version_split(v as u32))
    }

    /// One 32-bit word of the `XENFEAT_*` bitmap (`xen_version`, `XENVER_get_features`).
    pub fn xen_get_features(&self, submap_idx: u32) -> Result<u32, Errno> {
        let mut fi = XenFeatureInfo {
            submap_idx,
            submap: 0,
        };
        let args = [u64::from(XENVER_get_features), ptr(&mut fi), 0, 0, 0];
        // SAFETY: the hypervisor writes only the 8-byte struct we own.
        ret(unsafe { self.call(__HYPERVISOR_xen_version, args) })?;
        Ok(fi.submap)
    }

    /// Raw `memory_op`.
    ///
    /// # Safety
    /// As for [`Hypercall::call`]: `arg` must be the structure `cmd`
    /// expects, and the operation must not take away memory Rust uses.
    pub unsafe fn memory_op(&self, cmd: u32, arg: *mut u8) -> Result<u64, Errno> {
        // SAFETY: forwarded to the caller.
        ret(unsafe {
            self.call(
                __HYPERVISOR_memory_op,
                [u64::from(cmd), arg as u64, 0, 0, 0],
            )
        })
    }

    /// Fills `buf` with the domain's memory map (`XENMEM_memory_map`) and
    /// returns the number of entries written (never more than `buf.len()`).
    pub fn memory_map(&self, buf: &mut [E820Entry]) -> Result<usize, Errno> {
        let cap = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let mut map = XenMemoryMap {
            nr_entries: cap,
            pad: 0,
            buffer: buf.as_mut_ptr() as u64,
        };
        // SAFETY: the hypervisor writes at most `cap` entries into `buf`
        // and updates `map`; both are ours for the call.
        unsafe { self.memory_op(XENMEM_memory_map, ptr(&mut map) as *mut u8)? };
        Ok((map.nr_entries as usize).min(buf.len()))
    }

    /// `XENMEM_add_to_physmap`: makes a hypervisor page (shared info, a
    /// grant frame) appear at `xatp.gpfn`.
    ///
    /// # Safety
    /// Whatever was at `xatp.gpfn` is replaced: no Rust value may live in
    /// that frame.
    pub unsafe fn add_to_physmap(&self, xatp: &mut XenAddToPhysmap) -> Result<(), Errno> {
        // SAFETY: the frame contract is the caller's; the struct is ours.
        unsafe { self.memory_op(XENMEM_add_to_physmap, ptr(xatp) as *mut u8) }.map(|_| ())
    }

    /// `XENMEM_add_to_physmap_batch`: `gpfns.len()` frames of `space`
    /// (e.g. `XENMAPSPACE_gmfn_foreign` with the frames `idxs` of
    /// `foreign_domid`) appear at `gpfns` in `domid`'s physmap. Each entry
    /// reports its own result in `errs` (0 or a negative errno).
    ///
    /// Returns `E2BIG` if the slices differ in length or hold more than
    /// `u16::MAX` entries.
    ///
    /// # Safety
    /// Whatever was at the frames in `gpfns` is replaced: no Rust value may
    /// live in them.
    pub unsafe fn add_to_physmap_batch(
        &self,
        domid: Domid,
        space: u16,
        foreign_domid: Domid,
        idxs: &[u64],
        gpfns: &[u64],
        errs: &mut [i32],
    ) -> Result<(), Errno> {
        let size = u16::try_from(idxs.len()).map_err(|_| E2BIG_ERRNO)?;
        if gpfns.len() != idxs.len() || errs.len() != idxs.len() {
            return Err(E2BIG_ERRNO);
        }
        let mut a = XenAddToPhysmapBatch {
            domid,
            space,
            size,
            foreign_domid,
            idxs: idxs.as_ptr() as u64,
            gpfns: gpfns.as_ptr() as u64,
            errs: errs.as_mut_ptr() as u64,
        };
        // SAFETY: the hypervisor reads the struct and the two live input
        // slices and writes at most `size` ints into `errs`, all ours for
        // the call; the frame contract is the caller's.
        unsafe { self.memory_op(XENMEM_add_to_physmap_batch, ptr(&mut a) as *mut u8) }.map(|_| ())
    }

    /// Reads an HVM parameter of this domain (`HVMOP_get_param`).
    pub fn hvm_get_param(&self, index: u32) -> Result<u64, Errno> {
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value: 0,
        };
        let args = [u64::from(HVMOP_get_param), ptr(&mut p), 0, 0, 0];
        // SAFETY: the hypervisor writes only the 16-byte struct we own.
        ret(unsafe { self.call(__HYPERVISOR_hvm_op, args) })?;
        Ok(p.value)
    }

    /// The hypervisor's system time in nanoseconds (`HVMOP_get_time`), the
    /// clock that timer deadlines and pvclock use.
    pub fn hvm_get_time(&self) -> Result<u64, Errno> {
        let mut t = XenHvmGetTime { now: 0 };
        let args = [u64::from(HVMOP_get_time), ptr(&mut t), 0, 0, 0];
        // SAFETY: the hypervisor writes only the 8-byte struct we own.
        ret(unsafe { self.call(__HYPERVISOR_hvm_op, args) })?;
        Ok(t.now)
    }

    /// Sets an HVM parameter of this domain (`HVMOP_set_param`), e.g.
    /// `HVM_PARAM_CALLBACK_IRQ` with [`hvm_callback_vector`].
    pub fn hvm_set_param(&self, index: u32, value: u64) -> Result<(), Errno> {
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value,
        };
        let args = [u64::from(HVMOP_set_param), ptr(&mut p), 0, 0, 0];
        // SAFETY: the hypervisor reads the struct; no guest memory changes.
        unit(unsafe { self.call(__HYPERVISOR_hvm_op, args) })
    }

    /// Raw `vcpu_op`.
    ///
    /// # Safety
    /// As for [`Hypercall::call`]. Registration commands make the
    /// hypervisor write guest memory later, after the call returns.
    pub unsafe fn vcpu_op(&self, cmd: u32, vcpu: u32, arg: *mut u8) -> Result<u64, Errno> {
        let args = [u64::from(cmd), u64::from(vcpu), arg as u64, 0, 0];
        // SAFETY: forwarded to the caller.
        ret(unsafe { self.call(__HYPERVISOR_vcpu_op, args) })
    }

    /// Arms the one-shot timer (`VCPUOP_set_singleshot_timer`).
    pub fn vcpu_set_singleshot_timer(
        &self,
        vcpu: u32,
        timeout_abs_ns: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        let mut t = VcpuSetSingleshotTimer {
            timeout_abs_ns,
            flags,
            pad: 0,
        };
        // SAFETY: the hypervisor reads the struct during the call only.
        unsafe { self.vcpu_op(VCPUOP_set_singleshot_timer, vcpu, ptr(&mut t) as *mut u8) }
            .map(|_| ())
    }

    /// Cancels the one-shot timer (`VCPUOP_stop_singleshot_timer`).
    pub fn vcpu_stop_singleshot_timer(&self, vcpu: u32) -> Result<(), Errno> {
        // SAFETY: no argument structure.
        unsafe { self.vcpu_op(VCPUOP_stop_singleshot_timer, vcpu, core::ptr::null_mut()) }
            .map(|_| ())
    }

    /// Moves `vcpu`'s `vcpu_info` to byte `offset` of guest frame `gfn`
    /// (`VCPUOP_register_vcpu_info`). The hypervisor copies the current
    /// contents there and from then on writes event and time state into
    /// that copy instead of the shared info slot. Works once per vCPU.
    ///
    /// # Safety
    /// The 64 bytes at `gfn << 12 | offset` must stay reserved for the
    /// hypervisor's `vcpu_info` for the rest of the domain's life: no Rust
    /// value may live there, and the guest must only touch them with
    /// atomic or volatile accesses.
    pub unsafe fn vcpu_register_vcpu_info(
        &self,
        vcpu: u32,
        gfn: u64,
        offset: u32,
    ) -> Result<(), Errno> {
        let mut a = VcpuRegisterVcpuInfo {
            mfn: gfn,
            offset,
            rsvd: 0,
        };
        // SAFETY: the hypervisor reads the struct during the call; the
        // later writes to the frame are covered by the caller's contract.
        unsafe { self.vcpu_op(VCPUOP_register_vcpu_info, vcpu, ptr(&mut a) as *mut u8) }.map(|_| ())
    }

    /// Stops the periodic timer (`VCPUOP_stop_periodic_timer`).
    pub fn vcpu_stop_periodic_timer(&self, vcpu: u32) -> Result<(), Errno> {
        // SAFETY: no argument structure.
        unsafe { self.vcpu_op(VCPUOP_stop_periodic_timer, vcpu, core::ptr::null_mut()) }.map(|_| ())
    }

    /// Whether a vCPU is up (`VCPUOP_is_up`).
    pub fn vcpu_is_up(&self, vcpu: u32) -> Result<bool, Errno> {
        // SAFETY: no argument structure.
        unsafe { self.vcpu_op(VCPUOP_is_up, vcpu, core::ptr::null_mut()) }.map(|v| v != 0)
    }

    /// Gives up the CPU (`SCHEDOP_yield`).
    pub fn sched_yield(&self) -> Result<(), Errno> {
        // SAFETY: no argument structure.
        unit(unsafe {
            self.call(
                __HYPERVISOR_sched_op,
                [u64::from(SCHEDOP_yield), 0, 0, 0, 0],
            )
        })
    }

    /// Blocks until an event is pending (`SCHEDOP_block`).
    pub fn sched_block(&self) -> Result<(), Errno> {
        // SAFETY: no argument structure.
        unit(unsafe {
            self.call(
                __HYPERVISOR_sched_op,
                [u64::from(SCHEDOP_block), 0, 0, 0, 0],
            )
        })
    }

    /// Stops the domain (`SCHEDOP_shutdown`). Returns only on failure, or
    /// after a suspend/resume.
    pub fn sched_shutdown(&self, reason: ShutdownReason) -> Result<(), Errno> {
        let mut s = SchedShutdown {
            reason: reason.into(),
        };
        let args = [u64::from(SCHEDOP_shutdown), ptr(&mut s), 0, 0, 0];
        // SAFETY: the hypervisor reads the 4-byte struct.
        unit(unsafe { self.call(__HYPERVISOR_sched_op, args) })
    }

    /// Waits until one of `ports` is pending or the absolute `timeout_ns`
    /// passes (0: no timeout) (`SCHEDOP_poll`).
    pub fn sched_poll(&self, ports: &[EvtchnPort], timeout_ns: u64) -> Result<(), Errno> {
        let nr_ports = u32::try_from(ports.len()).map_err(|_| E2BIG_ERRNO)?;
        let mut p = SchedPoll {
            ports: ports.as_ptr() as u64,
            nr_ports,
            pad: 0,
            timeout: timeout_ns,
        };
        let args = [u64::from(SCHEDOP_poll), ptr(&mut p), 0, 0, 0];
        // SAFETY: the hypervisor reads the struct and the live port slice.
        unit(unsafe { self.call(__HYPERVISOR_sched_op, args) })
    }

    /// Raw `event_channel_op` with a typed argument.
    ///
    /// # Safety
    /// `EVTCHNOP_init_control` and `EVTCHNOP_expand_array` give the
    /// hypervisor guest frames it writes from then on: those frames must
    /// hold no Rust values. The other commands touch only `arg`.
    pub unsafe fn event_channel_op<T: EvtchnOpArg>(&self, arg: &mut T) -> Result<(), Errno> {
        let args = [u64::from(T::CMD), ptr(arg), 0, 0, 0];
        // SAFETY: forwarded to the caller; `arg` is ours for the call.
        unit(unsafe { self.call(__HYPERVISOR_event_channel_op, args) })
    }

    /// Notifies the remote end of `port` (`EVTCHNOP_send`).
    pub fn evtchn_send(&self, port: EvtchnPort) -> Result<(), Errno> {
        // SAFETY: EVTCHNOP_send touches only the argument.
        unsafe { self.event_channel_op(&mut EvtchnSend { port }) }
    }

    /// Binds a virtual IRQ to a new port on `vcpu` (`EVTCHNOP_bind_virq`).
    pub fn evtchn_bind_virq(&self, virq: u32, vcpu: u32) -> Result<EvtchnPort, Errno> {
        let mut a = EvtchnBindVirq {
            virq,
            vcpu,
            port: 0,
        };
        // SAFETY: EVTCHNOP_bind_virq touches only the argument.
        unsafe { self.event_channel_op(&mut a) }?;
        Ok(a.port)
    }

    /// Binds a new inter-vCPU port notifying `vcpu` (`EVTCHNOP_bind_ipi`).
    pub fn evtchn_bind_ipi(&self, vcpu: u32) -> Result<EvtchnPort, Errno> {
        let mut a = EvtchnBindIpi { vcpu, port: 0 };
        // SAFETY: EVTCHNOP_bind_ipi touches only the argument.
        unsafe { self.event_channel_op(&mut a) }?;
        Ok(a.port)
    }

    /// Allocates a port `remote_dom` may bind to (`EVTCHNOP_alloc_unbound`).
    pub fn evtchn_alloc_unbound(&self, remote_dom: Domid) -> Result<EvtchnPort, Errno> {
        let mut a = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom,
            port: 0,
        };
        // SAFETY: EVTCHNOP_alloc_unbound touches only the argument.
        unsafe { self.event_channel_op(&mut a) }?;
        Ok(a.port)
    }

    /// Connects a new local port to `remote_port` of `remote_dom`, which
    /// that domain allocated unbound for us (`EVTCHNOP_bind_interdomain`).
    pub fn evtchn_bind_interdomain(
        &self,
        remote_dom: Domid,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, Errno> {
        let mut a = EvtchnBindInterdomain {
            remote_dom,
            pad: 0,
            remote_port,
            local_port: 0,
        };
        // SAFETY: EVTCHNOP_bind_interdomain touches only the argument.
        unsafe { self.event_channel_op(&mut a) }?;
        Ok(a.local_port)
    }

    /// Closes a port (`EVTCHNOP_close`).
    pub fn evtchn_close(&self, port: EvtchnPort) -> Result<(), Errno> {
        // SAFETY: EVTCHNOP_close touches only the argument.
        unsafe { self.event_channel_op(&mut EvtchnClose { port }) }
    }

    /// Unmasks a port (`EVTCHNOP_unmask`).
    pub fn evtchn_unmask(&self, port: EvtchnPort) -> Result<(), Errno> {
        // SAFETY: EVTCHNOP_unmask touches only the argument.
        unsafe { self.event_channel_op(&mut EvtchnUnmask { port }) }
    }

    /// Raw `grant_table_op` over an array of typed arguments.
    ///
    /// # Safety
    /// As for [`Hypercall::call`]: map and transfer operations change guest
    /// mappings, setup and status-frame queries write through the guest
    /// addresses inside the arguments.
    pub unsafe fn grant_table_op<T: GnttabOpArg>(&self, args: &mut [T]) -> Result<(), Errno> {
        let count = u32::try_from(args.len()).map_err(|_| E2BIG_ERRNO)?;
        let regs = [
            u64::from(T::CMD),
            args.as_mut_ptr() as u64,
            u64::from(count),
            0,
            0,
        ];
        // SAFETY: forwarded to the caller; the slice is ours for the call.
        unit(unsafe { self.call(__HYPERVISOR_grant_table_op, regs) })
    }

    /// Maps grant `gref` of domain `dom` at guest address `host_addr`
    /// (`GNTTABOP_map_grant_ref` for one entry; an auto-translated guest
    /// passes a guest-physical address with `GNTMAP_host_map`). Returns the
    /// entry as the hypervisor left it: `status` (`GNTST_*`) says whether
    /// it mapped, `handle` is for [`Hypercall::gnttab_unmap_grant_ref`].
    ///
    /// # Safety
    /// The frame at `host_addr` is replaced by the granted page: no Rust
    /// value may live there, and the caller must only touch the mapping
    /// with volatile accesses (the granter writes it too).
    pub unsafe fn gnttab_map_grant_ref(
        &self,
        dom: Domid,
        gref: GrantRef,
        host_addr: u64,
        flags: u32,
    ) -> Result<GnttabMapGrantRef, Errno> {
        let mut m = [GnttabMapGrantRef {
            host_addr,
            flags,
            r#ref: gref,
            dom,
            ..Default::default()
        }];
        // SAFETY: the struct is ours for the call; the frame at
        // `host_addr` is covered by the caller's contract.
        unsafe { self.grant_table_op(&mut m) }?;
        Ok(m[0])
    }

    /// Removes the mapping `handle` made at `host_addr`
    /// (`GNTTABOP_unmap_grant_ref` for one entry). Returns its `GNTST_*`
    /// status.
    ///
    /// # Safety
    /// Nothing may use the mapping any more: the frame becomes a hole.
    pub unsafe fn gnttab_unmap_grant_ref(
        &self,
        host_addr: u64,
        handle: GrantHandle,
    ) -> Result<i16, Errno> {
        let mut u = [GnttabUnmapGrantRef {
            host_addr,
            handle,
            ..Default::default()
        }];
        // SAFETY: the struct is ours; the caller gave up the mapping.
        unsafe { self.grant_table_op(&mut u) }?;
        Ok(u[0].status)
    }

    /// Copies between grants and frames (`GNTTABOP_copy`): each entry of
    /// `ops` names its source and destination (a grant reference with
    /// `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`, else a frame of
    /// `DOMID_SELF`) and gets its own `GNTST_*` in `status`.
    ///
    /// # Safety
    /// The hypervisor writes the destination frames behind the compiler's
    /// back: a destination frame of ours must hold no Rust value that is
    /// read other than with volatile accesses.
    pub unsafe fn gnttab_copy(&self, ops: &mut [GnttabCopy]) -> Result<(), Errno> {
        // SAFETY: the slice is ours; the destination frames are the
        // caller's contract.
        unsafe { self.grant_table_op(ops) }
    }

    /// Current and maximum grant table frames (`GNTTABOP_query_size`).
    pub fn gnttab_query_size(&self) -> Result<GnttabQuerySize, Errno> {
        let mut q = [GnttabQuerySize {
            dom: DOMID_SELF,
            ..Default::default()
        }];
        // SAFETY: GNTTABOP_query_size writes only the argument.
        unsafe { self.grant_table_op(&mut q) }?;
        Ok(q[0])
    }

    /// Selects the grant entry format (`GNTTABOP_set_version`); returns the
    /// version in use.
    pub fn gnttab_set_version(&self, version: u32) -> Result<u32, Errno> {
        let mut v = [GnttabSetVersion { version }];
        // SAFETY: GNTTABOP_set_version writes only the argument.
        unsafe { self.grant_table_op(&mut v) }?;
        Ok(v[0].version)
    }

    /// Raw `domctl` on `op` (the caller fills the header and the union).
    ///
    /// # Safety
    /// As for [`Hypercall::call`]: guest handles inside the union must point
    /// at memory the hypervisor may write, for the sizes the command uses.
    pub unsafe fn domctl(&self, op: &mut XenDomctl) -> Result<u64, Errno> {
        // SAFETY: forwarded to the caller; `op` itself is ours.
        ret(unsafe { self.call(__HYPERVISOR_domctl, [ptr(op), 0, 0, 0, 0]) })
    }

    /// Raw `sysctl` on `op`.
    ///
    /// # Safety
    /// As for [`Hypercall::domctl`].
    pub unsafe fn sysctl(&self, op: &mut XenSysctl) -> Result<u64, Errno> {
        // SAFETY: forwarded to the caller; `op` itself is ours.
        ret(unsafe { self.call(__HYPERVISOR_sysctl, [ptr(op), 0, 0, 0, 0]) })
    }

    /// `XEN_DOMCTL_getdomaininfo` for `domid`. As in Xen 4.17, the answer is
    /// about the first domain whose id is at least `domid` (its id is in the
    /// result's `domain`).
    pub fn getdomaininfo(&self, domid: Domid) -> Result<XenDomctlGetdomaininfo, Errno> {
        let mut op = XenDomctl::with(
            XEN_DOMCTL_getdomaininfo,
            domid,
            &XenDomctlGetdomaininfo::default(),
        );
        // SAFETY: this command holds no guest handle; only `op` is written.
        unsafe { self.domctl(&mut op) }?;
        Ok(op.arg())
    }

    /// `XEN_DOMCTL_get_domain_state`: the state of `domid`, or with
    /// [`DOMID_INVALID`] the next domain whose state changed (its id is
    /// returned; `ENOENT` when none is left).
    pub fn get_domain_state(
        &self,
        domid: Domid,
    ) -> Result<(Domid, XenDomctlGetDomainState), Errno> {
        let mut op = XenDomctl::with(
            XEN_DOMCTL_get_domain_state,
            domid,
            &XenDomctlGetDomainState::default(),
        );
        // SAFETY: this command holds no guest handle; only `op` is written.
        unsafe { self.domctl(&mut op) }?;
        Ok((op.domain, op.arg()))
    }

    /// `XEN_SYSCTL_getdomaininfolist`: fills `buf` with the domains whose id
    /// is at least `first`, in id order; returns how many were written.
    pub fn getdomaininfolist(
        &self,
        first: Domid,
        buf: &mut [XenDomctlGetdomaininfo],
    ) -> Result<usize, Errno> {
        let max_domains = u32::try_from(buf.len()).map_err(|_| E2BIG_ERRNO)?;
        let mut op = XenSysctl::with(
            XEN_SYSCTL_getdomaininfolist,
            &XenSysctlGetdomaininfolist {
                first_domain: first,
                max_domains,
                buffer: buf.as_mut_ptr() as u64,
                ..Default::default()
            },
        );
        // SAFETY: the buffer is ours and holds `max_domains` entries, which
        // is all the hypervisor writes besides `op`.
        unsafe { self.sysctl(&mut op) }?;
        let n = op.arg::<XenSysctlGetdomaininfolist>().num_domains as usize;
        Ok(n.min(buf.len()))
    }
}

/// `-ENOSYS`, for stubs a hypercall page does not have.
const ENOSYS_RET: i64 = -(ENOSYS as i64);

/// `E2BIG` as an [`Errno`], for argument arrays too long to describe.
const E2BIG_ERRNO: Errno = match Errno::new(E2BIG) {
    Some(e) => e,
    None => panic!("E2BIG is in range"),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (w(0), w(8), w(4)) // EBX, ECX, EDX order of the string: EBX EDX ECX
    }

    #[test]
    fn vendor_picks_instruction() {
        let (b, c, d) = words(b"AuthenticAMD");
        assert_eq!(hypercall_insn_for_vendor(b, c, d), HypercallInsn::Vmmcall);
        let (b, c, d) = words(b"HygonGenuine");
        assert_eq!(hypercall_insn_for_vendor(b, c, d), HypercallInsn::Vmmcall);
        let (b, c, d) = words(b"GenuineIntel");
        assert_eq!(hypercall_insn_for_vendor(b, c, d), HypercallInsn::Vmcall);
        assert_eq!(hypercall_insn_for_vendor(0, 0, 0), HypercallInsn::Vmcall);
        // Words in the wrong registers are not AMD.
        let (b, c, d) = words(b"AuthenticAMD");
        assert_eq!(hypercall_insn_for_vendor(b, d, c), HypercallInsn::Vmcall);
    }

    #[test]
    #[cfg(not(miri))]
    fn host_detection_runs() {
        // CPUID is harmless on the host; the result depends on the CPU, so
        // check it agrees with the pure function.
        let [_, b, c, d] = cpuid(0);
        assert_eq!(detect_hypercall_insn(), hypercall_insn_for_vendor(b, c, d));
        if let Some(base) = find_xen_cpuid_base() {
            assert!(base.max_leaf >= base.base + 2);
        }
    }

    #[test]
    fn page_entry_refuses_numbers_past_the_page() {
        // SAFETY: the page address is never called: the number is out of range.
        let h = unsafe { Hypercall::with_page(0x1000) };
        // SAFETY: returns before any call instruction.
        assert_eq!(unsafe { h.call(HYPERCALL_PAGE_STUBS, [0; 5]) }, -38);
        // SAFETY: as above.
        assert_eq!(unsafe { h.call(u32::MAX, [0; 5]) }, -38);
    }
}
