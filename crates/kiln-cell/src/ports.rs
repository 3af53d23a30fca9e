//! Host ports for instances: each instance gets a port of its own from the
//! cell's range, DNATed to its 8080 (or, with `--cell-network none`, the
//! port it listens on in the host's network). A port is handed out only when
//! the caller takes it, in the same step (the cell network binds it; without
//! one, a bind test), and it is held until the instance's container is
//! destroyed.

use std::collections::HashSet;
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

    /// The next port in rotation that `take` takes, with what `take`
    /// returned for it. Taking is the test: a port found free and bound
    /// later could be gone in between (another cell on the machine hands
    /// out the same range), or be free by one bind's rules and not by the
    /// other's.
    pub fn allocate<T>(&self, mut take: impl FnMut(u16) -> Option<T>) -> Option<(u16, T)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.range.len();
        for i in 0..len {
            let offset = (usize::from(state.next - self.range.start) + i) % len;
            let port = self.range.start + offset as u16;
            if state.in_use.contains(&port) {
                continue;
            }
            if let Some(taken) = take(port) {
                state.in_use.insert(port);
                let after = offset + 1;
                state.next = self.range.start + (after % len) as u16;
                return Some((port, taken));
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
    use std::net::TcpListener;

    fn bind(port: u16) -> Option<TcpListener> {
        TcpListener::bind(("0.0.0.0", port)).ok()
    }

    #[test]
    fn hands_out_ports_it_takes_once_and_skips_busy_ones() {
        // A window of three free ports below the kernel's ephemeral range
        // (32768+), so no outgoing connection of a concurrent test can take
        // one meanwhile, and below the e2e tests' (28000..32000); its
        // first port is held busy.
        let (_busy, port) = (20000..28000u16)
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
        let (a, held_a) = allocator.allocate(bind).unwrap();
        let (b, _held_b) = allocator.allocate(bind).unwrap();
        assert_ne!(a, port);
        assert_ne!(b, port);
        assert_ne!(a, b);
        assert!(allocator.allocate(bind).is_none());
        // Released, and no longer bound: it is handed out again.
        drop(held_a);
        allocator.release(a);
        assert_eq!(allocator.allocate(bind).map(|(p, _)| p), Some(a));
    }

    #[test]
    fn a_port_the_taker_refuses_stays_free() {
        let allocator = PortAllocator::new(40..42);
        assert_eq!(
            allocator.allocate(|p| (p == 41).then_some(())),
            Some((41, ()))
        );
        // 40 was refused, not handed out: it is the next one taken.
        assert_eq!(allocator.allocate(Some), Some((40, 40)));
        assert_eq!(allocator.allocate(Some), None);
    }
}
