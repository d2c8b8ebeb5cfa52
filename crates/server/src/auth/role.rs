//! The roles a user can have.

use serde::Deserialize;

/// What a user may do. Which commands each role may run is decided in one place, the table
/// in [`crate::access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An application: reads and writes sessions by key, but cannot list them, so that a
    /// leaked application password does not leak every session id.
    App,
    /// Monitoring: `PING`, `STATS`, `INFO`; nothing that reads or writes sessions.
    Monitor,
    /// Everything, including listing keys and (where enabled) flushing.
    Admin,
}

impl Role {
    /// The name used in the configuration and in `AUTH` replies.
    pub fn name(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Monitor => "monitor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
