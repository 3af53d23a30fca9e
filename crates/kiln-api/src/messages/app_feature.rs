//! `PATCH /v3/apps/:guid/features/:name`: CC's `AppFeatureUpdateMessage`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppFeature {
    pub enabled: bool,
}
