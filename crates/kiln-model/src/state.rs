//! Every resource with a life cycle, and the one function per resource that
//! says which moves are legal. Handlers, stores and loops call
//! `transition_to` instead of writing a state column directly, so the rules
//! live here and are tested here as a table.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("{resource} cannot move from {from} to {to}")]
    Illegal {
        resource: &'static str,
        from: &'static str,
        to: &'static str,
    },
    #[error("unknown {resource} state {value:?}")]
    Unknown {
        resource: &'static str,
        value: String,
    },
}

/// Declares a state enum spelled exactly as the API spells it, with
/// `as_str`, `Display`, `FromStr` and serde in that spelling.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident, $resource:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            #[allow(dead_code)] // AppState has no transition rules
            fn illegal(self, to: $name) -> TransitionError {
                TransitionError::Illegal { resource: $resource, from: self.as_str(), to: to.as_str() }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = TransitionError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(TransitionError::Unknown { resource: $resource, value: other.to_string() }),
                }
            }
        }
    };
}

states!(
    /// Desired state of an app (`STARTED` or `STOPPED`); any move is legal.
    AppState, "app" { Started = "STARTED", Stopped = "STOPPED" }
);

states!(
    /// A package: bits are uploaded into it, then it is `READY` to stage.
    PackageState, "package" {
        AwaitingUpload = "AWAITING_UPLOAD",
        ProcessingUpload = "PROCESSING_UPLOAD",
        Ready = "READY",
        Failed = "FAILED",
        Expired = "EXPIRED",
    }
);

impl PackageState {
    pub fn transition_to(self, to: PackageState) -> Result<PackageState, TransitionError> {
        use PackageState::*;
        let ok = matches!(
            (self, to),
            (AwaitingUpload, ProcessingUpload)
                | (AwaitingUpload, Ready)
                | (ProcessingUpload, Ready)
                | (ProcessingUpload, Failed)
                // The blobstore did not answer: the same upload may be
                // sent again.
                | (ProcessingUpload, AwaitingUpload)
                | (Ready, Expired)
                | (Failed, Expired)
        );
        if ok { Ok(to) } else { Err(self.illegal(to)) }
    }
}

states!(
    /// A build: one staging of one package.
    BuildState, "build" { Staging = "STAGING", Staged = "STAGED", Failed = "FAILED" }
);

impl BuildState {
    pub fn transition_to(self, to: BuildState) -> Result<BuildState, TransitionError> {
        use BuildState::*;
        match (self, to) {
            (Staging, Staged) | (Staging, Failed) => Ok(to),
            _ => Err(self.illegal(to)),
        }
    }
}

states!(
    /// A droplet: the staged result of a build.
    DropletState, "droplet" {
        AwaitingUpload = "AWAITING_UPLOAD",
        ProcessingUpload = "PROCESSING_UPLOAD",
        Staged = "STAGED",
        Failed = "FAILED",
        Expired = "EXPIRED",
    }
);

impl DropletState {
    pub fn transition_to(self, to: DropletState) -> Result<DropletState, TransitionError> {
        use DropletState::*;
        let ok = matches!(
            (self, to),
            (AwaitingUpload, ProcessingUpload)
                | (AwaitingUpload, Staged)
                | (AwaitingUpload, Failed)
                | (ProcessingUpload, Staged)
                | (ProcessingUpload, Failed)
                | (Staged, Expired)
                | (Failed, Expired)
        );
        if ok { Ok(to) } else { Err(self.illegal(to)) }
    }
}

states!(
    /// A Diego Task (`bbs:models/task.proto`).
    TaskState, "task" {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Resolving = "RESOLVING",
    }
);

impl TaskState {
    /// Diego's task life: PENDING → RUNNING → COMPLETED → RESOLVING. A task
    /// may complete straight from PENDING (cancelled, or failed to place), and
    /// a RESOLVING task whose consumer went away goes back to COMPLETED.
    pub fn transition_to(self, to: TaskState) -> Result<TaskState, TransitionError> {
        use TaskState::*;
        match (self, to) {
            (Pending, Running)
            | (Pending, Completed)
            | (Running, Completed)
            | (Completed, Resolving)
            | (Resolving, Completed) => Ok(to),
            _ => Err(self.illegal(to)),
        }
    }
}

states!(
    /// A Diego ActualLrp (`bbs:models/actual_lrp.go`).
    ActualLrpState, "actual lrp" {
        Unclaimed = "UNCLAIMED",
        Claimed = "CLAIMED",
        Running = "RUNNING",
        Crashed = "CRASHED",
    }
);

impl ActualLrpState {
    /// Diego's `AllowsTransitionTo`, without the instance-key checks (those
    /// need the keys and live with the BBS): UNCLAIMED may be claimed or
    /// started; CLAIMED may be unclaimed, re-claimed, started or crash;
    /// RUNNING may be unclaimed, re-claimed, re-started or crash; CRASHED may
    /// be unclaimed, claimed or started again.
    pub fn transition_to(self, to: ActualLrpState) -> Result<ActualLrpState, TransitionError> {
        use ActualLrpState::*;
        let ok = match self {
            Unclaimed => matches!(to, Unclaimed | Claimed | Running),
            Claimed => matches!(to, Unclaimed | Claimed | Running | Crashed),
            Running => matches!(to, Unclaimed | Claimed | Running | Crashed),
            Crashed => matches!(to, Unclaimed | Claimed | Running),
        };
        if ok { Ok(to) } else { Err(self.illegal(to)) }
    }
}

states!(
    /// A task as Cloud Controller shows it (`TaskModel`'s states), apart
    /// from the BBS Task that runs it.
    AppTaskState, "task" {
        Pending = "PENDING",
        Running = "RUNNING",
        Canceling = "CANCELING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
);

impl AppTaskState {
    /// RUNNING once the BBS has it; a cancel passes CANCELING; the BBS's
    /// outcome ends it, whichever state it reaches first (a task may
    /// complete before the API marks it running, or while cancelling).
    pub fn transition_to(self, to: AppTaskState) -> Result<AppTaskState, TransitionError> {
        use AppTaskState::*;
        let ok = matches!(
            (self, to),
            (Pending, Running | Canceling | Succeeded | Failed)
                | (Running, Canceling | Succeeded | Failed)
                | (Canceling, Succeeded | Failed)
        );
        if ok { Ok(to) } else { Err(self.illegal(to)) }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, AppTaskState::Succeeded | AppTaskState::Failed)
    }
}

states!(
    /// A deployment (Cloud Controller's `DeploymentModel` states): a rolling
    /// or canary replacement of an app's web process.
    DeploymentState, "deployment" {
        Deploying = "DEPLOYING",
        Paused = "PAUSED",
        Deployed = "DEPLOYED",
        Canceling = "CANCELING",
        Canceled = "CANCELED",
    }
);

impl DeploymentState {
    /// A canary pauses and continues; an active deployment finishes
    /// (DEPLOYED, also when a newer one supersedes it) or is cancelled
    /// (CANCELING while the previous droplet comes back, then CANCELED).
    pub fn transition_to(self, to: DeploymentState) -> Result<DeploymentState, TransitionError> {
        use DeploymentState::*;
        let ok = matches!(
            (self, to),
            (Deploying, Paused)
                | (Deploying, Deployed)
                | (Deploying, Canceling)
                | (Paused, Deploying)
                | (Paused, Deployed)
                | (Paused, Canceling)
                | (Canceling, Canceled)
        );
        if ok { Ok(to) } else { Err(self.illegal(to)) }
    }

    /// Deploying or paused: it still owns the app's web process.
    pub fn is_active(self) -> bool {
        matches!(self, DeploymentState::Deploying | DeploymentState::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a transition function against a table of every legal move;
    /// every pair not in the table must be refused.
    fn check<S: Copy + PartialEq + fmt::Debug>(
        all: &[S],
        legal: &[(S, S)],
        f: impl Fn(S, S) -> Result<S, TransitionError>,
    ) {
        for &from in all {
            for &to in all {
                let expected = legal.contains(&(from, to));
                assert_eq!(f(from, to).is_ok(), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn app_task_transitions() {
        use AppTaskState::*;
        check(
            AppTaskState::ALL,
            &[
                (Pending, Running),
                (Pending, Canceling),
                (Pending, Succeeded),
                (Pending, Failed),
                (Running, Canceling),
                (Running, Succeeded),
                (Running, Failed),
                (Canceling, Succeeded),
                (Canceling, Failed),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn deployment_transitions() {
        use DeploymentState::*;
        check(
            DeploymentState::ALL,
            &[
                (Deploying, Paused),
                (Deploying, Deployed),
                (Deploying, Canceling),
                (Paused, Deploying),
                (Paused, Deployed),
                (Paused, Canceling),
                (Canceling, Canceled),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn build_transitions() {
        use BuildState::*;
        check(
            BuildState::ALL,
            &[(Staging, Staged), (Staging, Failed)],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn package_transitions() {
        use PackageState::*;
        check(
            PackageState::ALL,
            &[
                (AwaitingUpload, ProcessingUpload),
                (AwaitingUpload, Ready),
                (ProcessingUpload, Ready),
                (ProcessingUpload, Failed),
                (ProcessingUpload, AwaitingUpload),
                (Ready, Expired),
                (Failed, Expired),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn droplet_transitions() {
        use DropletState::*;
        check(
            DropletState::ALL,
            &[
                (AwaitingUpload, ProcessingUpload),
                (AwaitingUpload, Staged),
                (AwaitingUpload, Failed),
                (ProcessingUpload, Staged),
                (ProcessingUpload, Failed),
                (Staged, Expired),
                (Failed, Expired),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn task_transitions() {
        use TaskState::*;
        check(
            TaskState::ALL,
            &[
                (Pending, Running),
                (Pending, Completed),
                (Running, Completed),
                (Completed, Resolving),
                (Resolving, Completed),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn actual_lrp_transitions() {
        use ActualLrpState::*;
        check(
            ActualLrpState::ALL,
            &[
                (Unclaimed, Unclaimed),
                (Unclaimed, Claimed),
                (Unclaimed, Running),
                (Claimed, Unclaimed),
                (Claimed, Claimed),
                (Claimed, Running),
                (Claimed, Crashed),
                (Running, Unclaimed),
                (Running, Claimed),
                (Running, Running),
                (Running, Crashed),
                (Crashed, Unclaimed),
                (Crashed, Claimed),
                (Crashed, Running),
            ],
            |a, b| a.transition_to(b),
        );
    }

    #[test]
    fn states_round_trip_through_their_api_spelling() {
        for s in ActualLrpState::ALL {
            assert_eq!(s.as_str().parse::<ActualLrpState>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("staged".parse::<BuildState>().is_err());
    }
}
