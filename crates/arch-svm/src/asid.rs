//! ASIDs: tags that keep each guest's TLB entries apart from the host's
//! (ASID 0) and from each other.
//!
//! Per physical CPU, as Xen and Linux do: ASIDs are handed out from 1 up; a
//! vCPU keeps its ASID while it stays on the CPU and the CPU's generation
//! is unchanged. When the ASIDs run out, the generation moves on, every
//! vCPU gets a new one at its next entry, and that first entry flushes the
//! whole TLB. A vCPU whose nested tables changed (see
//! [`TlbEpoch`](crate::npt::TlbEpoch)) simply takes a fresh ASID: fresh
//! ASIDs carry no stale entries.

/// One CPU's ASID state. Touched only by its own CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidAllocator {
    next: u32,
    max: u32,
    generation: u64,
}

/// What a vCPU remembers of its last ASID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuAsid {
    /// The ASID (0: none yet).
    pub asid: u32,
    /// The generation it belongs to.
    pub generation: u64,
    /// The CPU it belongs to.
    pub cpu: u32,
}

/// The ASID to enter with, and whether the entry must flush the TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidChoice {
    /// The ASID.
    pub asid: u32,
    /// Flush every ASID's TLB entries at this entry.
    pub flush_all: bool,
}

impl AsidAllocator {
    /// An allocator for a CPU with `count` ASIDs (CPUID 8000_000A EBX),
    /// ASID 0 being the host's. `count` below 2 is treated as 2.
    pub const fn new(count: u32) -> Self {
        let max = if count < 2 { 1 } else { count - 1 };
        Self {
            next: 1,
            max,
            // Generation 0 never matches a vCPU's default state... except
            // a default `VcpuAsid` has asid 0, which never matches either.
            generation: 1,
        }
    }

    /// Rebuilds an allocator from [`AsidAllocator::parts`].
    pub const fn from_parts(next: u32, max: u32, generation: u64) -> Self {
        Self {
            next,
            max,
            generation,
        }
    }

    /// `(next, max, generation)`, for storage in atomics.
    pub const fn parts(&self) -> (u32, u32, u64) {
        (self.next, self.max, self.generation)
    }

    /// The ASID for `vcpu` entering on CPU `cpu`; updates `vcpu`.
    /// `fresh` forces a new ASID (its nested tables changed).
    pub fn choose(&mut self, vcpu: &mut VcpuAsid, cpu: u32, fresh: bool) -> AsidChoice {
        let current = vcpu.asid != 0 && vcpu.cpu == cpu && vcpu.generation == self.generation;
        if current && !fresh {
            return AsidChoice {
                asid: vcpu.asid,
                flush_all: false,
            };
        }
        let mut flush_all = false;
        if self.next > self.max {
            self.generation += 1;
            self.next = 1;
            flush_all = true;
        }
        // The first ASID of a generation flushes: entries of every earlier
        // owner of these numbers go.
        if self.next == 1 {
            flush_all = true;
        }
        *vcpu = VcpuAsid {
            asid: self.next,
            generation: self.generation,
            cpu,
        };
        self.next += 1;
        AsidChoice {
            asid: vcpu.asid,
            flush_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_asid_until_exhausted() {
        let mut a = AsidAllocator::new(4); // ASIDs 1..=3
        let mut v1 = VcpuAsid::default();
        let mut v2 = VcpuAsid::default();
        let c = a.choose(&mut v1, 0, false);
        assert_eq!(
            c,
            AsidChoice {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            a.choose(&mut v1, 0, false),
            AsidChoice {
                asid: 1,
                flush_all: false
            }
        );
        assert_eq!(
            a.choose(&mut v2, 0, false),
            AsidChoice {
                asid: 2,
                flush_all: false
            }
        );
        // Tables changed: fresh ASID, no flush needed.
        assert_eq!(
            a.choose(&mut v1, 0, true),
            AsidChoice {
                asid: 3,
                flush_all: false
            }
        );
        // Exhausted: new generation, flush, everyone renumbers.
        assert_eq!(
            a.choose(&mut v2, 0, true),
            AsidChoice {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            a.choose(&mut v1, 0, false),
            AsidChoice {
                asid: 2,
                flush_all: false
            }
        );
        assert_eq!(
            a.choose(&mut v2, 0, false),
            AsidChoice {
                asid: 1,
                flush_all: false
            }
        );
    }

    #[test]
    fn moving_cpu_takes_a_new_asid() {
        let mut a0 = AsidAllocator::new(16);
        let mut a1 = AsidAllocator::new(16);
        let mut v = VcpuAsid::default();
        a0.choose(&mut v, 0, false);
        let c = a1.choose(&mut v, 1, false);
        assert_eq!(c.asid, 1);
        assert_eq!(v.cpu, 1);
        // Back on CPU 0: its ASID 1 there may belong to someone else now.
        let c = a0.choose(&mut v, 0, false);
        assert_eq!(
            c,
            AsidChoice {
                asid: 2,
                flush_all: false
            }
        );
    }

    #[test]
    fn tiny_asid_space() {
        let mut a = AsidAllocator::new(1);
        let mut v = VcpuAsid::default();
        let mut w = VcpuAsid::default();
        assert_eq!(a.choose(&mut v, 0, false).asid, 1);
        assert_eq!(
            a.choose(&mut w, 0, false),
            AsidChoice {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            a.choose(&mut v, 0, false),
            AsidChoice {
                asid: 1,
                flush_all: true
            }
        );
    }
}
