//! The configuration file parser: TOML into `Config` (serde, with the byte sizes, durations
//! and addresses it parses), then `Config::validate`, then what the server derives from a
//! valid configuration.
//!
//! Input: the file's text (inputs that are not UTF-8 are skipped: `Config::load` refuses
//! them before parsing).
//!
//! Property: nothing panics, whatever the text; a configuration that validates yields its
//! listen addresses, limits and RESP settings without panicking.

use sessiond::Config;

/// Checks the properties above on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    std::hint::black_box((
        config.listen_addrs(),
        config.exposed_without_auth(),
        config.limits(),
        config.resp_settings(),
        config.auth_enabled(),
        config.tls_unused(),
        config.tls_files(),
    ));
}
