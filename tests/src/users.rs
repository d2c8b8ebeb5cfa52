//! Users for authentication tests: an `[auth]` section whose passwords are in files (the
//! `password_file` form, which needs no hashing), kept in a temporary directory that lives
//! as long as the [`TestUsers`].

/// The password of the `app` user of [`TestUsers::standard`].
pub const APP_PASSWORD: &str = "app-secret-4f1c";
/// The password of the `monitor` user of [`TestUsers::standard`].
pub const MONITOR_PASSWORD: &str = "monitor-secret-77ad";
/// The password of the `admin` user of [`TestUsers::standard`].
pub const ADMIN_PASSWORD: &str = "admin-secret-c3e0";

/// Users, each with a role and a password file.
pub struct TestUsers {
    config: String,
    dir: tempfile::TempDir,
}

impl TestUsers {
    /// One user per role, named after it: `app`, `monitor`, `admin`, with the passwords
    /// above.
    pub fn standard() -> TestUsers {
        TestUsers::new(&[
            ("app", "app", APP_PASSWORD),
            ("monitor", "monitor", MONITOR_PASSWORD),
            ("admin", "admin", ADMIN_PASSWORD),
        ])
    }

    /// The users `(name, role, password)`.
    pub fn new(users: &[(&str, &str, &str)]) -> TestUsers {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = String::from("[auth]\n");
        for (name, role, password) in users {
            let file = dir.path().join(format!("{name}.password"));
            // The trailing newline `echo` writes is not part of the password.
            std::fs::write(&file, format!("{password}\n")).expect("write password file");
            config.push_str(&format!(
                "[[auth.users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_file = {file:?}\n"
            ));
        }
        TestUsers { config, dir }
    }

    /// The file holding `name`'s password (with a trailing newline), for clients that read
    /// it from a file too.
    pub fn password_file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.password"))
    }

    /// The `[auth]` section that defines the users.
    pub fn config(&self) -> &str {
        &self.config
    }
}
