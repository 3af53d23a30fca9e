//! Which process holds a cell id. Locket gives each rep a presence lock
//! with an owner; here a cell's heartbeats carry a session (random per
//! cell process) and a cell id heartbeated by one session is refused to
//! any other until the first has been silent for the cell TTL. The same
//! process heartbeating again, or a restarted cell once its predecessor's
//! presence has expired, is accepted.

use crate::{Bbs, BbsError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct CellSessions {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl CellSessions {
    /// Records `session` as the holder of `cell_id`, or refuses it while
    /// another session's heartbeat is younger than `ttl`.
    pub fn claim(&self, cell_id: &str, session: &str, ttl: Duration) -> Result<(), BbsError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((holder, seen)) = held.get(cell_id)
            && holder != session
            && seen.elapsed() <= ttl
        {
            return Err(BbsError::CellIdInUse {
                cell_id: cell_id.into(),
            });
        }
        held.insert(cell_id.into(), (session.into(), Instant::now()));
        Ok(())
    }
}

impl CellSessions {
    /// Whether `session` may act for `cell_id` (report on its work,
    /// evacuate it): refused only when another session holds the id. An id
    /// no session holds yet (a BBS that just restarted) is let through.
    pub fn check(&self, cell_id: &str, session: Option<&str>) -> Result<(), BbsError> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.get(cell_id) {
            Some((holder, _)) if Some(holder.as_str()) != session => Err(BbsError::Unauthorized(
                format!("cell {cell_id} is held by another cell process"),
            )),
            _ => Ok(()),
        }
    }
}

impl Bbs {
    /// How long a cell stays present without a heartbeat.
    pub fn cell_ttl(&self) -> Duration {
        self.inner.config.cell_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_cell_id_is_refused_to_another_session() {
        let sessions = CellSessions::default();
        let ttl = Duration::from_secs(60);
        sessions.claim("c1", "s1", ttl).unwrap();
        sessions.claim("c1", "s1", ttl).unwrap();
        assert_eq!(
            sessions.claim("c1", "s2", ttl),
            Err(BbsError::CellIdInUse {
                cell_id: "c1".into()
            })
        );
        sessions.claim("c2", "s2", ttl).unwrap();
        // Once the holder has been silent for the TTL, the id is free.
        std::thread::sleep(Duration::from_millis(2));
        sessions.claim("c1", "s2", Duration::ZERO).unwrap();
        assert!(sessions.claim("c1", "s1", ttl).is_err());
    }
}
