//! The BBS's one error type, closed: every variant is plain data, so the
//! same value a caller matches on in process arrives unchanged over HTTP.
//! Storage and decoding failures are carried as text (`Store`), never as
//! the storage crate's own error types.

use kiln_model::TransitionError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BbsError {
    #[error("{kind} {guid} not found")]
    NotFound { kind: &'static str, guid: String },
    #[error("{kind} {guid} already exists")]
    AlreadyExists { kind: &'static str, guid: String },
    #[error("{kind} {guid}: {source}")]
    InvalidTransition {
        kind: &'static str,
        guid: String,
        #[source]
        source: TransitionError,
    },
    /// The caller does not hold the instance it reports on (another cell
    /// claimed it, or it was re-placed).
    #[error("actual lrp {process_guid}/{index} is not held by instance {instance_guid}")]
    InstanceMismatch {
        process_guid: String,
        index: u32,
        instance_guid: String,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The BBS's database failed or held a record it cannot read.
    #[error("bbs store: {0}")]
    Store(String),
    /// The BBS could not be reached or did not answer; worth retrying.
    #[error("bbs unavailable: {0}")]
    Unavailable(String),
    /// The caller's credentials are missing, forged or expired.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Another live cell heartbeats under this id (a different session).
    #[error("cell id {cell_id} is in use by a live cell")]
    CellIdInUse { cell_id: String },
}

impl BbsError {
    /// The HTTP status the BBS server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            BbsError::NotFound { .. } => 404,
            BbsError::AlreadyExists { .. }
            | BbsError::InvalidTransition { .. }
            | BbsError::InstanceMismatch { .. }
            | BbsError::CellIdInUse { .. } => 409,
            BbsError::InvalidRequest(_) => 400,
            BbsError::Unauthorized(_) => 401,
            BbsError::Store(_) => 500,
            BbsError::Unavailable(_) => 503,
        }
    }
}

impl Serialize for BbsError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        wire::BbsErrorWire::from(self.clone()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BbsError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        wire::BbsErrorWire::deserialize(deserializer).map(BbsError::from)
    }
}

impl From<serde_json::Error> for BbsError {
    fn from(error: serde_json::Error) -> BbsError {
        BbsError::Store(format!("record decode: {error}"))
    }
}

/// The JSON form: a `code` naming the variant and its fields as strings.
mod wire {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "code", rename_all = "snake_case")]
    pub enum BbsErrorWire {
        NotFound {
            kind: String,
            guid: String,
        },
        AlreadyExists {
            kind: String,
            guid: String,
        },
        InvalidTransition {
            kind: String,
            guid: String,
            transition: TransitionWire,
        },
        InstanceMismatch {
            process_guid: String,
            index: u32,
            instance_guid: String,
        },
        InvalidRequest {
            message: String,
        },
        Store {
            message: String,
        },
        Unavailable {
            message: String,
        },
        Unauthorized {
            message: String,
        },
        CellIdInUse {
            cell_id: String,
        },
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum TransitionWire {
        Illegal {
            resource: String,
            from: String,
            to: String,
        },
        Unknown {
            resource: String,
            value: String,
        },
    }

    impl From<BbsError> for BbsErrorWire {
        fn from(e: BbsError) -> BbsErrorWire {
            match e {
                BbsError::NotFound { kind, guid } => BbsErrorWire::NotFound {
                    kind: kind.into(),
                    guid,
                },
                BbsError::AlreadyExists { kind, guid } => BbsErrorWire::AlreadyExists {
                    kind: kind.into(),
                    guid,
                },
                BbsError::InvalidTransition { kind, guid, source } => {
                    BbsErrorWire::InvalidTransition {
                        kind: kind.into(),
                        guid,
                        transition: match source {
                            TransitionError::Illegal { resource, from, to } => {
                                TransitionWire::Illegal {
                                    resource: resource.into(),
                                    from: from.into(),
                                    to: to.into(),
                                }
                            }
                            TransitionError::Unknown { resource, value } => {
                                TransitionWire::Unknown {
                                    resource: resource.into(),
                                    value,
                                }
                            }
                        },
                    }
                }
                BbsError::InstanceMismatch {
                    process_guid,
                    index,
                    instance_guid,
                } => BbsErrorWire::InstanceMismatch {
                    process_guid,
                    index,
                    instance_guid,
                },
                BbsError::InvalidRequest(message) => BbsErrorWire::InvalidRequest { message },
                BbsError::Store(message) => BbsErrorWire::Store { message },
                BbsError::Unavailable(message) => BbsErrorWire::Unavailable { message },
                BbsError::Unauthorized(message) => BbsErrorWire::Unauthorized { message },
                BbsError::CellIdInUse { cell_id } => BbsErrorWire::CellIdInUse { cell_id },
            }
        }
    }

    impl From<BbsErrorWire> for BbsError {
        fn from(w: BbsErrorWire) -> BbsError {
            match w {
                BbsErrorWire::NotFound { kind, guid } => BbsError::NotFound {
                    kind: known_word(&kind),
                    guid,
                },
                BbsErrorWire::AlreadyExists { kind, guid } => BbsError::AlreadyExists {
                    kind: known_word(&kind),
                    guid,
                },
                BbsErrorWire::InvalidTransition {
                    kind,
                    guid,
                    transition,
                } => BbsError::InvalidTransition {
                    kind: known_word(&kind),
                    guid,
                    source: match transition {
                        TransitionWire::Illegal { resource, from, to } => {
                            TransitionError::Illegal {
                                resource: known_word(&resource),
                                from: known_word(&from),
                                to: known_word(&to),
                            }
                        }
                        TransitionWire::Unknown { resource, value } => TransitionError::Unknown {
                            resource: known_word(&resource),
                            value,
                        },
                    },
                },
                BbsErrorWire::InstanceMismatch {
                    process_guid,
                    index,
                    instance_guid,
                } => BbsError::InstanceMismatch {
                    process_guid,
                    index,
                    instance_guid,
                },
                BbsErrorWire::InvalidRequest { message } => BbsError::InvalidRequest(message),
                BbsErrorWire::Store { message } => BbsError::Store(message),
                BbsErrorWire::Unavailable { message } => BbsError::Unavailable(message),
                BbsErrorWire::Unauthorized { message } => BbsError::Unauthorized(message),
                BbsErrorWire::CellIdInUse { cell_id } => BbsError::CellIdInUse { cell_id },
            }
        }
    }

    /// The error's static words (resource kinds and state names) come from
    /// a closed vocabulary; a word outside it arrives as `"unknown"` rather
    /// than being leaked into a `'static` string.
    fn known_word(word: &str) -> &'static str {
        use kiln_model::{ActualLrpState, TaskState};
        const KINDS: &[&str] = &["task", "desired lrp", "actual lrp", "cell"];
        if let Some(k) = KINDS.iter().find(|k| **k == word) {
            return k;
        }
        if let Ok(state) = word.parse::<TaskState>() {
            return state.as_str();
        }
        if let Ok(state) = word.parse::<ActualLrpState>() {
            return state.as_str();
        }
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_json() {
        let errors = vec![
            BbsError::NotFound {
                kind: "task",
                guid: "t1".into(),
            },
            BbsError::AlreadyExists {
                kind: "desired lrp",
                guid: "p1".into(),
            },
            BbsError::InvalidTransition {
                kind: "actual lrp",
                guid: "p1".into(),
                source: TransitionError::Illegal {
                    resource: "task",
                    from: "COMPLETED",
                    to: "RUNNING",
                },
            },
            BbsError::InstanceMismatch {
                process_guid: "p".into(),
                index: 2,
                instance_guid: "i".into(),
            },
            BbsError::InvalidRequest("bad".into()),
            BbsError::Store("disk".into()),
            BbsError::Unavailable("down".into()),
            BbsError::Unauthorized("forged".into()),
            BbsError::CellIdInUse {
                cell_id: "c".into(),
            },
        ];
        for e in errors {
            let json = serde_json::to_string(&e).unwrap();
            let back: BbsError = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e, "{json}");
            assert_eq!(back.to_string(), e.to_string());
        }
    }

    #[test]
    fn words_outside_the_vocabulary_do_not_become_static_strings() {
        let json = r#"{"code":"not_found","kind":"something else","guid":"g"}"#;
        let e: BbsError = serde_json::from_str(json).unwrap();
        assert_eq!(
            e,
            BbsError::NotFound {
                kind: "unknown",
                guid: "g".into()
            }
        );
    }
}
