//! The web application: two routes, as in the Flask example, plus `/logout`.
//!
//! Each handler loads the session from the request's `Cookie` headers, works on it, saves
//! it, and sends back the `Set-Cookie` header the save asks for. Errors become status codes:
//! a version conflict is `409 Conflict` (another request changed the session first; retrying
//! is safe), an unreachable sessiond `503`, anything else `500`.

use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sessiond_client::{SessionError, Sessions, SetCookie};

/// The application's routes.
pub fn router(sessions: Sessions) -> Router {
    Router::new()
        .route("/", get(set))
        .route("/get", get(read))
        .route("/logout", get(logout))
        .with_state(sessions)
}

/// `session["username"] = "Alice"`
async fn set(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    let result = async {
        let mut session = sessions.load(cookies(&headers)).await?;
        session.insert("username", "Alice")?;
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
            .get::<String>("username")?
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

/// Every `Cookie` header value (HTTP/2 clients may send several).
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
}

fn respond(result: Result<(Option<SetCookie>, String), SessionError>) -> Response {
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
        Err(SessionError::Conflict { .. }) => (
            StatusCode::CONFLICT,
            "The session was changed by another request; try again.",
        )
            .into_response(),
        Err(SessionError::Client(e)) if e.is_transient() => {
            eprintln!("session store unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Session store unavailable.",
            )
                .into_response()
        }
        Err(e) => {
            eprintln!("session error: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
