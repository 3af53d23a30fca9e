//! Host ports for instances: each instance gets a port of its own from the
//! cell's range, DNATed to its 8080 (or, with `--cell-network none`, the
//! port it listens on in the host's network). A port is handed out only if
//! nothing on the host listens on it (bind test), and it is held until the
//! instance's container is destroyed.

use std::collections::HashSet;
use std::net::TcpListener;
use std::ops::Range;
use std::sync::Mutex;

pub struct PortAllocator {
    range: Range<u16>,
    state: Mutex<State>,
}

struct State {
    in_use: HashSet<u16>,
    /// Where the next search starts: ports are rotated rather than reused
    /// at once, so a late request for a stopped instance does not reach
    /// its successor.
    next: u16,
}

impl PortAllocator {
    pub fn new(range: Range<u16>) -> PortAllocator {
        PortAllocator {
            state: Mutex::new(State {
                in_use: HashSet::new(),
                next: range.start,
            }),
            range,
        }
    }

    pub fn allocate(&self) -> Option<u16> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.range.len();
        for i in 0..len {
            let offset = (usize::from(state.next - self.range.start) + i) % len;
            let port = self.range.start + offset as u16;
            if state.in_use.contains(&port) {
                continue;
            }
            // Dropped at once: the test only asks whether the port is free.
            if TcpListener::bind(("0.0.0.0", port)).is_ok() {
                state.in_use.insert(port);
                let after = offset + 1;
                state.next = self.range.start + (after % len) as u16;
                return Some(port);
            }
        }
        None
    }

    pub fn release(&self, port: u16) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_free_ports_once_and_skips_busy_ones() {
        // A window of three free ports below the kernel's ephemeral range
        // (32768+), so no outgoing connection of a concurrent test can take
        // one meanwhile; its first port is held busy.
        let (_busy, port) = (20000..30000u16)
            .step_by(3)
            .find_map(|base| {
                let held: Vec<_> = (base..base + 3)
                    .map(|p| TcpListener::bind(("0.0.0.0", p)))
                    .collect::<Result<_, _>>()
                    .ok()?;
                let mut held = held.into_iter();
                held.next().map(|busy| (busy, base))
            })
            .expect("a free window of three ports");
        let allocator = PortAllocator::new(port..port.saturating_add(3));
        let a = allocator.allocate().unwrap();
        let b = allocator.allocate().unwrap();
        assert_ne!(a, port);
        assert_ne!(b, port);
        assert_ne!(a, b);
        assert_eq!(allocator.allocate(), None);
        allocator.release(a);
        assert_eq!(allocator.allocate(), Some(a));
    }
}
