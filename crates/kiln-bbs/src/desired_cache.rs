//! Decoded DesiredLrps, kept between passes and keyed by process guid and
//! modification tag: a pass reads every guid's tag (two small columns) and
//! decodes only the definitions that changed since it last looked.

use crate::BbsError;
use crate::store;
use kiln_model::bbs::DesiredLrp;
use kiln_store::Pool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Above this many stale entries one full read beats many small ones.
const FULL_READ_THRESHOLD: usize = 1000;

#[derive(Default)]
pub struct DesiredCache {
    entries: Mutex<HashMap<String, (i64, Arc<DesiredLrp>)>>,
}

pub type DesiredSnapshot = HashMap<String, Arc<DesiredLrp>>;

impl DesiredCache {
    /// These DesiredLrps (the ones that exist), current as of this call.
    pub async fn get_many(
        &self,
        pool: &Pool,
        process_guids: &[&str],
    ) -> Result<DesiredSnapshot, BbsError> {
        let tags = store::desired_tags_of(pool, process_guids).await?;
        self.refresh(pool, &tags, false).await?;
        let entries = self.lock();
        Ok(tags
            .into_iter()
            .filter_map(|(guid, _)| entries.get(&guid).map(|(_, d)| (guid, d.clone())))
            .collect())
    }

    pub fn forget(&self, process_guid: &str) {
        self.lock().remove(process_guid);
    }

    async fn refresh(
        &self,
        pool: &Pool,
        tags: &[(String, i64)],
        complete: bool,
    ) -> Result<(), BbsError> {
        let stale: Vec<&str> = {
            let mut entries = self.lock();
            if complete {
                let live: std::collections::HashSet<&str> =
                    tags.iter().map(|(g, _)| g.as_str()).collect();
                entries.retain(|guid, _| live.contains(guid.as_str()));
            }
            tags.iter()
                .filter(|(guid, tag)| entries.get(guid).is_none_or(|(t, _)| t != tag))
                .map(|(guid, _)| guid.as_str())
                .collect()
        };
        if stale.is_empty() {
            return Ok(());
        }
        let fresh = if stale.len() > FULL_READ_THRESHOLD {
            store::desired_with_tags(pool, None).await?
        } else {
            store::desired_with_tags(pool, Some(&stale)).await?
        };
        let mut entries = self.lock();
        for (tag, d) in fresh {
            let newer = entries.get(&d.process_guid).is_none_or(|(t, _)| *t <= tag);
            if newer {
                entries.insert(d.process_guid.clone(), (tag, Arc::new(d)));
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Arc<DesiredLrp>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
