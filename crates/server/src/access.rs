//! Access control: what a connection may run, for both protocols, decided in one place.
//!
//! Every command carries a [`Category`] in its protocol's command table (`cmd::category` for
//! the native protocol, `Spec::category` for RESP); [`allows`] is the one table of which role
//! may run which category. An [`Access`] is a connection's state (authenticated or not, as
//! whom), and [`Access::check`] is what both protocols call before they dispatch a command.
//! Commands themselves never check permissions.
//!
//! | category     | examples                                           | app | monitor | admin |
//! |--------------|----------------------------------------------------|-----|---------|-------|
//! | `Handshake`  | HELLO, AUTH, PING, QUIT (also before AUTH)         | yes | yes     | yes   |
//! | `Connection` | SELECT 0, CLIENT, ECHO, COMMAND                    | yes | yes     | yes   |
//! | `Session`    | GET, SET, TOUCH, DEL, EXPIRE, TTL, GETEX, MGET     | yes | no      | yes   |
//! | `Owner`      | LIST_SESSIONS, END_ALL (SESSIOND.SESSIONS, .ENDALL) | yes | no      | yes   |
//! | `Stats`      | STATS, INFO (without its keyspace section), SLOWLOG GET/LEN | no | yes | yes |
//! | `Keyspace`   | SCAN, DBSIZE, INFO keyspace, CONFIG, FLUSHDB/ALL, SLOWLOG RESET | no | no | yes |
//!
//! The `app` role is deliberately stricter than a Redis user with `+@read +@write`: it
//! cannot enumerate keys, so that a leaked application password does not leak every session
//! id (a session id is a bearer credential). `Owner` is the one exception, and a narrow one:
//! it lists the session ids of one owner the caller names, which is what a "your devices"
//! page needs to end one device. A leaked application password therefore reveals the ids of
//! owners whose ids the attacker knows or guesses; it still cannot walk the keyspace.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::auth::{Authenticator, Role, DEFAULT_USER, THROTTLE_DELAY};
use crate::stats::Stats;

/// What kind of thing a command does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Starting, authenticating, checking and ending a connection; allowed before `AUTH`.
    Handshake,
    /// Per-connection settings and introspection that reveal no data.
    Connection,
    /// Reading or writing sessions by key.
    Session,
    /// Listing and ending the sessions of an owner: reveals the session ids of that owner.
    Owner,
    /// Server counters.
    Stats,
    /// Enumerating or wiping the keyspace, and server configuration.
    Keyspace,
}

/// THE table: whether `role` may run commands of `category`.
pub fn allows(role: Role, category: Category) -> bool {
    use Category::*;
    match (role, category) {
        (_, Handshake | Connection) => true,
        (Role::Admin, _) => true,
        (Role::App, Session | Owner) => true,
        (Role::Monitor, Stats) => true,
        (Role::App, Stats | Keyspace) | (Role::Monitor, Session | Owner | Keyspace) => false,
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The connection has not authenticated and the command is not a handshake command.
    AuthRequired,
    /// The connection's role may not run the command.
    NoPermission {
        /// The user the connection is authenticated as.
        user: Arc<str>,
        /// Their role.
        role: Role,
    },
}

/// A failed `AUTH`: the answer must wait `delay` when the client's address is over its
/// budget of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailed {
    /// How long to wait before answering, if at all.
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone)]
enum State {
    Unauthenticated,
    Authenticated { user: Arc<str>, role: Role },
}

/// One connection's access state.
#[derive(Debug, Clone)]
pub struct Access {
    state: State,
    /// Whether the server requires authentication at all.
    required: bool,
    /// When an unauthenticated connection is closed.
    deadline: Option<Instant>,
    /// The client's address, for the per-address limit on failures.
    peer: IpAddr,
}

impl Access {
    /// The state of a connection just accepted from `peer`: authenticated as the admin
    /// `default` when the server has no users (every connection may do everything, as
    /// before authentication existed), otherwise unauthenticated until the auth deadline.
    pub fn new(auth: &Authenticator, peer: IpAddr) -> Access {
        if !auth.required() {
            return Access {
                state: State::Authenticated {
                    user: Arc::from(DEFAULT_USER),
                    role: Role::Admin,
                },
                required: false,
                deadline: None,
                peer,
            };
        }
        Access {
            state: State::Unauthenticated,
            required: true,
            // No deadline if `auth.timeout` is past what an `Instant` can hold (the
            // configuration does not bound it): a deadline that far off is never reached.
            deadline: Instant::now().checked_add(auth.timeout),
            peer,
        }
    }

    /// Whether the connection may run a command of `category`.
    pub fn check(&self, category: Category) -> Result<(), Denied> {
        match &self.state {
            State::Unauthenticated if category == Category::Handshake => Ok(()),
            State::Unauthenticated => Err(Denied::AuthRequired),
            State::Authenticated { role, .. } if allows(*role, category) => Ok(()),
            State::Authenticated { user, role } => Err(Denied::NoPermission {
                user: user.clone(),
                role: *role,
            }),
        }
    }

    /// Whether the connection has authenticated (always, on a server without users).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated { .. })
    }

    /// Whether the server requires authentication.
    pub fn required(&self) -> bool {
        self.required
    }

    /// When the connection must be closed if it has not authenticated by then.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Unauthenticated => self.deadline,
            State::Authenticated { .. } => None,
        }
    }

    /// Authenticates as `user` with `password`. On success the connection becomes that user
    /// (switching users if it was already authenticated); on failure it stays as it was, the
    /// failure is counted and logged (without the password), and the answer is delayed if
    /// the client's address has failed too often. A server without users accepts any
    /// credentials as the admin: a client configured with a password can still talk to it.
    pub fn login(
        &mut self,
        auth: &Authenticator,
        stats: &Stats,
        user: &str,
        password: &[u8],
    ) -> Result<Role, LoginFailed> {
        if !self.required {
            return Ok(Role::Admin);
        }
        if let Some(role) = auth.verify(user, password) {
            self.state = State::Authenticated {
                user: Arc::from(user),
                role,
            };
            return Ok(role);
        }
        Stats::bump(&stats.auth_failures);
        let throttled = auth.failed(self.peer);
        if throttled {
            Stats::bump(&stats.auth_throttled);
        }
        // The user name is logged (it is not a secret, and it is what an operator needs to
        // see a misconfigured client); the password never is.
        info!(peer = %self.peer, user = %user.escape_debug(), throttled, "authentication failed");
        Err(LoginFailed {
            delay: throttled.then_some(THROTTLE_DELAY),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret, UserConfig};

    const ALL: [Category; 6] = [
        Category::Handshake,
        Category::Connection,
        Category::Session,
        Category::Owner,
        Category::Stats,
        Category::Keyspace,
    ];

    #[test]
    fn the_table() {
        let row = |role| ALL.map(|c| allows(role, c));
        assert_eq!(row(Role::App), [true, true, true, true, false, false]);
        assert_eq!(row(Role::Monitor), [true, true, false, false, true, false]);
        assert_eq!(row(Role::Admin), [true; 6]);
    }

    fn authenticator() -> Authenticator {
        let mut config = Config::default();
        config.resp.password = Some(Secret::new("pw"));
        config.auth.users.push(UserConfig {
            name: "app".into(),
            role: Role::App,
            password_hash: None,
            password_file: None,
            password_env: Some("SESSIOND_ACCESS_TEST_PW".into()),
        });
        std::env::set_var("SESSIOND_ACCESS_TEST_PW", "app-pw");
        Authenticator::from_config(&config).unwrap()
    }

    #[tokio::test]
    async fn before_auth_only_the_handshake_is_allowed() {
        let auth = authenticator();
        let stats = Stats::new();
        let mut access = Access::new(&auth, [127, 0, 0, 1].into());
        assert!(access.deadline().is_some());
        assert_eq!(access.check(Category::Handshake), Ok(()));
        assert_eq!(
            access.check(Category::Connection),
            Err(Denied::AuthRequired)
        );
        assert!(access.login(&auth, &stats, "app", b"nope").is_err());
        assert!(!access.is_authenticated());
        assert_eq!(access.login(&auth, &stats, "app", b"app-pw"), Ok(Role::App));
        assert_eq!(access.deadline(), None);
        assert_eq!(access.check(Category::Session), Ok(()));
        assert!(matches!(
            access.check(Category::Keyspace),
            Err(Denied::NoPermission {
                role: Role::App,
                ..
            })
        ));
        // A failed switch keeps the user; a successful one changes it.
        assert!(access.login(&auth, &stats, "default", b"wrong").is_err());
        assert_eq!(access.check(Category::Session), Ok(()));
        assert_eq!(
            access.login(&auth, &stats, "default", b"pw"),
            Ok(Role::Admin)
        );
        assert_eq!(access.check(Category::Keyspace), Ok(()));
        assert_eq!(
            stats
                .auth_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn without_users_everything_is_allowed() {
        let auth = Authenticator::open();
        let mut access = Access::new(&auth, [127, 0, 0, 1].into());
        assert!(ALL.iter().all(|c| access.check(*c).is_ok()));
        assert_eq!(access.deadline(), None);
        let stats = Stats::new();
        assert_eq!(access.login(&auth, &stats, "x", b"y"), Ok(Role::Admin));
    }
}
