//! An Ethernet (layer 2) learning switch: the ports are the vifs of
//! [`crate::netback`]. It learns which port each source MAC address was
//! seen on, sends a frame to its destination's port when known, and
//! floods broadcast, multicast and unknown destinations to every port but
//! the one the frame came from.
//!
//! The table is bounded ([`Switch::new`]'s `capacity`): when full, the
//! least recently seen address is forgotten, so a domain sending from
//! many made-up addresses only costs the others flooding, never their
//! traffic. Fair service between ports is the caller's job (netback serves
//! every vif with a budget per pass, in turn).

use alloc::collections::BTreeMap;

/// A MAC address.
pub type Mac = [u8; 6];

/// Default capacity of the MAC table.
pub const MAC_TABLE_SIZE: usize = 1024;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To this port only.
    Port(u32),
    /// To every port but the source.
    Flood,
    /// Nowhere (runt frame, or a destination on the source's own port).
    Drop,
}

/// Whether `mac` is a group (broadcast or multicast) address.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// The learning switch.
pub struct Switch {
    /// Address -> (port, last seen).
    table: BTreeMap<Mac, (u32, u64)>,
    capacity: usize,
    clock: u64,
}

impl Switch {
    /// A switch remembering at most `capacity` addresses (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            table: BTreeMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The port `mac` was last seen on.
    pub fn lookup(&self, mac: &Mac) -> Option<u32> {
        self.table.get(mac).map(|&(p, _)| p)
    }

    /// Records that `mac` sent from `port` (group addresses are never
    /// learnt). Evicts the least recently seen address when full.
    pub fn learn(&mut self, mac: Mac, port: u32) {
        if is_group(&mac) || mac == [0; 6] {
            return;
        }
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self.table.get_mut(&mac) {
            *e = (port, now);
            return;
        }
        if self.table.len() >= self.capacity {
            // O(n), only when full and a new address arrives.
            if let Some(old) = self
                .table
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(m, _)| *m)
            {
                self.table.remove(&old);
            }
        }
        self.table.insert(mac, (port, now));
    }

    /// Learns the source of `frame`, which came in on `port`, and says
    /// where it goes.
    pub fn forward(&mut self, port: u32, frame: &[u8]) -> Forward {
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            return Forward::Drop;
        };
        if frame.len() < 14 {
            return Forward::Drop;
        }
        self.learn(src, port);
        if is_group(&dst) {
            return Forward::Flood;
        }
        match self.lookup(&dst) {
            Some(p) if p == port => Forward::Drop,
            Some(p) => Forward::Port(p),
            None => Forward::Flood,
        }
    }

    /// Forgets every address learnt on `port` (its vif went away).
    pub fn forget_port(&mut self, port: u32) {
        self.table.retain(|_, &mut (p, _)| p != port);
    }
}

fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f
    }

    const A: Mac = [0, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0, 0x16, 0x3e, 0, 0, 2];
    const BCAST: Mac = [0xff; 6];

    #[test]
    fn learns_then_forwards_unicast() {
        let mut s = Switch::new(16);
        assert_eq!(s.forward(0, &frame(B, A)), Forward::Flood, "B unknown");
        assert_eq!(s.lookup(&A), Some(0));
        assert_eq!(s.forward(1, &frame(A, B)), Forward::Port(0));
        assert_eq!(s.forward(0, &frame(B, A)), Forward::Port(1));
        // A moves to port 2.
        assert_eq!(s.forward(2, &frame(B, A)), Forward::Port(1));
        assert_eq!(s.forward(1, &frame(A, B)), Forward::Port(2));
        // A frame for an address on its own port goes nowhere.
        assert_eq!(s.forward(1, &frame(B, B)), Forward::Drop);
    }

    #[test]
    fn floods_group_and_drops_runts() {
        let mut s = Switch::new(16);
        s.learn(B, 1);
        assert_eq!(s.forward(0, &frame(BCAST, A)), Forward::Flood);
        let mcast = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(s.forward(0, &frame(mcast, A)), Forward::Flood);
        assert_eq!(s.forward(0, &frame(B, A)[..13]), Forward::Drop);
        assert_eq!(s.forward(0, &[]), Forward::Drop);
        // Group and zero sources are never learnt.
        s.forward(3, &frame(A, mcast));
        s.forward(3, &frame(A, [0; 6]));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn table_is_bounded_and_evicts_the_oldest() {
        let mut s = Switch::new(8);
        s.learn(A, 0);
        for i in 0..1000u32 {
            let b = i.to_be_bytes();
            s.learn([0x02, 0, b[0], b[1], b[2], b[3]], 1);
            // A keeps talking: it stays.
            if i % 4 == 0 {
                s.learn(A, 0);
            }
            assert!(s.len() <= 8);
        }
        assert_eq!(s.len(), 8);
        assert_eq!(s.lookup(&A), Some(0));
        assert_eq!(s.lookup(&[0x02, 0, 0, 0, 0, 0]), None, "oldest gone");
        s.forget_port(1);
        assert_eq!(s.len(), 1);
    }
}
