//! The web application: the two routes of the Flask example, `/logout`, and the routes of a
//! login that sessiond's owner binding makes exact: `/login/<user>`, `/devices` and
//! `/logout-everywhere`.
//!
//! Each handler loads the session from the request's `Cookie` headers, works on it, saves
//! it, and sends back the `Set-Cookie` header the save asks for. Errors become status codes:
//! a version conflict is `409 Conflict` (another request changed the session first; retrying
//! is safe), a user over the per-user session limit `429`, an owner name the store cannot
//! take `400`, an unreachable sessiond `503`, anything else `500`.
//!
//! `/login/<user>` trusts the name in the path: this app shows what happens to sessions at
//! a login, not how to check a password. A real application authenticates first and then
//! makes the same one call, [`Sessions::login`], which binds the session to the user and
//! moves it to a new id (so an id planted in the browser before the login is worthless).

use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sessiond_client::{Device, Error, Session, SessionError, Sessions, SetCookie};

/// The session entry holding the user name, as the Flask example's `session["username"]`.
const USERNAME: &str = "username";

/// The application's routes.
pub fn router(sessions: Sessions) -> Router {
    Router::new()
        .route("/", get(set))
        .route("/get", get(read))
        .route("/logout", get(logout))
        .route("/login/{user}", get(login))
        .route("/devices", get(devices))
        .route("/logout-everywhere", get(logout_everywhere))
        .with_state(sessions)
}

/// What a handler answers: a body and the cookie to set, or why it failed.
type Outcome = Result<(Option<SetCookie>, String), Failure>;

/// Why a request failed: the session layer's errors, or a request that needs a login.
enum Failure {
    Session(SessionError),
    NotLoggedIn,
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Failure {
        Failure::Session(e)
    }
}

/// `session["username"] = "Alice"`
async fn set(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let mut session = sessions.load(cookies(&headers)).await?;
        session.insert(USERNAME, "Alice")?;
        let cookie = sessions.save(&mut session).await?;
        Ok((cookie, "Session data set!".to_string()))
    };
    respond(result.await)
}

/// `session.get("username", "not set")`
async fn read(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let mut session = sessions.load(cookies(&headers)).await?;
        let username = session
            .get::<String>(USERNAME)?
            .unwrap_or_else(|| "not set".into());
        // Nothing changed, but saving re-sends a permanent cookie so that its expiry
        // slides with the session's.
        let cookie = sessions.save(&mut session).await?;
        Ok((cookie, format!("Username: {username}")))
    };
    respond(result.await)
}

/// Deletes the session and its cookie.
async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let mut session = sessions.load(cookies(&headers)).await?;
        let cookie = sessions.destroy(&mut session).await?;
        Ok((Some(cookie), "Logged out".to_string()))
    };
    respond(result.await)
}

/// Logs the browser in as `user`: the session (with whatever it held before) is bound to
/// the user and moves to a new id, in one step on the server.
async fn login(
    State(sessions): State<Sessions>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let mut session = sessions.load(cookies(&headers)).await?;
        session.insert(USERNAME, &user)?;
        let cookie = sessions.login(&mut session, &user).await?;
        Ok((Some(cookie), format!("Logged in as {user}")))
    };
    respond(result.await)
}

/// The logged-in user's sessions: one line each, this browser's marked, by fingerprint
/// (never by id: the ids of the other devices are their bearer secrets).
async fn devices(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let (mut session, user) = logged_in(&sessions, &headers).await?;
        let devices = sessions.sessions_of(&user).await?;
        let now = SystemTime::now();
        let mut body = format!("{} sessions of {user}\n", devices.len());
        for device in &devices {
            let this = session.id() == Some(&device.id);
            body.push_str(&device_line(device, now, this));
        }
        let cookie = sessions.save(&mut session).await?;
        Ok((cookie, body))
    };
    respond(result.await)
}

/// Ends every session of the logged-in user, this one included, on every instance.
async fn logout_everywhere(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let (mut session, user) = logged_in(&sessions, &headers).await?;
        let ended = sessions.end_all(&user, None).await?;
        // This session was among them; what is left is removing its cookie.
        let cookie = sessions.destroy(&mut session).await?;
        Ok((Some(cookie), format!("Ended {ended} sessions of {user}")))
    };
    respond(result.await)
}

/// The request's session and the user it is logged in as, or [`Failure::NotLoggedIn`].
async fn logged_in(sessions: &Sessions, headers: &HeaderMap) -> Result<(Session, String), Failure> {
    let session = sessions.load(cookies(headers)).await?;
    match session.owner().map(str::to_string) {
        Some(user) => Ok((session, user)),
        None => Err(Failure::NotLoggedIn),
    }
}

/// `fingerprint  created 5m ago, last used 10s ago, expires in 30days[, this device]`
fn device_line(device: &Device, now: SystemTime, this: bool) -> String {
    let ago = |at: SystemTime| whole_seconds(now.duration_since(at).unwrap_or_default());
    let mut line = format!(
        "{}  created {} ago, last used {} ago, expires in {}",
        device.id.fingerprint(),
        ago(device.created),
        ago(device.last_access),
        whole_seconds(device.expires_in),
    );
    if let Some(deadline) = device.absolute_deadline {
        let left = deadline.duration_since(now).unwrap_or_default();
        line.push_str(&format!(" (at the latest in {})", whole_seconds(left)));
    }
    if this {
        line.push_str(", this device");
    }
    line.push('\n');
    line
}

fn whole_seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// Every `Cookie` header value (HTTP/2 clients may send several).
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
}

fn respond(result: Outcome) -> Response {
    match result {
        Ok((cookie, body)) => {
            let mut response = body.into_response();
            if let Some(cookie) = cookie {
                // Built from an id, a signature and fixed attributes, all ASCII; a failure
                // here would be a bug, answered rather than panicked on.
                match HeaderValue::from_str(cookie.as_str()) {
                    Ok(value) => {
                        response.headers_mut().append(SET_COOKIE, value);
                    }
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
            response
        }
        Err(Failure::NotLoggedIn) => (StatusCode::UNAUTHORIZED, "Not logged in.").into_response(),
        Err(Failure::Session(e)) => session_error(e),
    }
}

fn session_error(e: SessionError) -> Response {
    match e {
        SessionError::Conflict { .. } => (
            StatusCode::CONFLICT,
            "The session was changed by another request; try again.",
        )
            .into_response(),
        SessionError::OwnerLimitReached => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sessions: log out on another device first.",
        )
            .into_response(),
        SessionError::Client(Error::InvalidArgument(message)) => {
            (StatusCode::BAD_REQUEST, message).into_response()
        }
        // The node holding this visitor's session is down (or the store is unreachable).
        // This app answers 503; an app that would rather serve the page can treat the
        // visitor as logged out for this request instead (docs/SCALING.md).
        SessionError::Unavailable(e) | SessionError::Client(e) if e.is_transient() => {
            eprintln!("session store unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Session store unavailable.",
            )
                .into_response()
        }
        e => {
            eprintln!("session error: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
