//! Reading the session cookie from `Cookie` headers and writing `Set-Cookie` values.
//!
//! Framework-neutral on purpose: the layer takes header values as strings and returns a
//! header value as a string, so it works with any HTTP stack.

use std::fmt;
use std::time::Duration;

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with same-site requests.
    Strict,
    /// Sent with same-site requests and top-level cross-site navigations (the browser
    /// default when the attribute is absent).
    Lax,
    /// Sent with every request. Browsers require `Secure` with it.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// A `Set-Cookie` header value to send with the response.
#[derive(Clone, PartialEq, Eq)]
pub struct SetCookie(String);

impl SetCookie {
    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this cookie removes the session cookie (logout, emptied session).
    pub fn is_removal(&self) -> bool {
        self.0.contains("; Max-Age=0")
    }
}

impl fmt::Display for SetCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SetCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value is the session id, a bearer secret: show the attributes only.
        let attributes = self.0.split_once(';').map_or("", |(_, rest)| rest);
        write!(f, "SetCookie(<redacted>;{attributes})")
    }
}

/// Cookie attributes other than the name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CookieAttributes {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<SameSite>,
}

impl CookieAttributes {
    /// `name=value` with the attributes; with `max_age`, a persistent cookie (a "permanent"
    /// session), without it a cookie that ends with the browser session.
    pub(crate) fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: Option<Duration>,
    ) -> SetCookie {
        let mut out = format!("{name}={value}");
        if let Some(max_age) = max_age {
            // Max-Age, not Expires: it does not depend on the client's clock, and every
            // current browser honours it (RFC 6265 gives it precedence).
            out.push_str(&format!("; Max-Age={}", max_age.as_secs().max(1)));
        }
        self.push_attributes(&mut out);
        SetCookie(out)
    }

    /// A cookie that makes the browser drop `name`.
    pub(crate) fn removal(&self, name: &str) -> SetCookie {
        let mut out = format!("{name}=; Max-Age=0");
        self.push_attributes(&mut out);
        SetCookie(out)
    }

    fn push_attributes(&self, out: &mut String) {
        out.push_str("; Path=");
        out.push_str(&self.path);
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if self.secure {
            out.push_str("; Secure");
        }
        if let Some(same_site) = self.same_site {
            out.push_str("; SameSite=");
            out.push_str(same_site.as_str());
        }
    }
}

/// Every value of the cookie `name` in `headers` (`Cookie` header values), in order. A
/// browser may send several cookies with one name (set for different paths or domains).
pub(crate) fn values<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Vec<&'a str> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
        .collect()
}

/// Whether `s` may be a cookie name (an RFC 7230 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Whether `s` may be an attribute value (no separators or control characters).
pub(crate) fn is_attribute_value(s: &str) -> bool {
    s.bytes()
        .all(|c| (0x21..0x7f).contains(&c) && c != b';' && c != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes() -> CookieAttributes {
        CookieAttributes {
            path: "/".into(),
            domain: None,
            http_only: true,
            secure: false,
            same_site: Some(SameSite::Lax),
        }
    }

    #[test]
    fn finds_the_named_cookie_among_others_and_across_headers() {
        let headers = ["a=1; session=abc ;b=2", "session=\"def\"", "sessionx=no"];
        assert_eq!(values(headers, "session"), ["abc", "def"]);
        assert!(values([""], "session").is_empty());
        assert!(values(["session"], "session").is_empty());
        assert!(values(None::<&str>, "session").is_empty());
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let mut attrs = attributes();
        assert_eq!(
            attrs
                .set_cookie("session", "v", Some(Duration::from_secs(60)))
                .as_str(),
            "session=v; Max-Age=60; Path=/; HttpOnly; SameSite=Lax"
        );
        attrs.secure = true;
        attrs.http_only = false;
        attrs.domain = Some("example.com".into());
        attrs.same_site = Some(SameSite::None);
        assert_eq!(
            attrs.set_cookie("s", "v", None).as_str(),
            "s=v; Path=/; Domain=example.com; Secure; SameSite=None"
        );
        let removal = attributes().removal("session");
        assert_eq!(
            removal.as_str(),
            "session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
        assert!(removal.is_removal());
        assert!(!format!("{:?}", attributes().set_cookie("s", "secret", None)).contains("secret"));
    }

    #[test]
    fn names_and_attribute_values_are_checked() {
        assert!(is_token("session"));
        assert!(is_token("__Host-id"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a=b"));
        assert!(!is_token("a;b"));
        assert!(is_attribute_value("/app"));
        assert!(!is_attribute_value("/a;b"));
        assert!(!is_attribute_value("/a\nb"));
    }
}
