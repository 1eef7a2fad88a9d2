//! Artifactory's security REST calls: users (`/api/security/users`), groups
//! (`/api/security/groups`), permission targets (`/api/v2/security/permissions`) and access
//! tokens (`/access/api/v1/tokens`). The service decides who may call them; these handlers
//! only translate. No answer carries a password, a password hash or a token's secret, but the
//! one that creates a token, once.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use stowage_metadata::{GroupRecord, TokenRecord, UserRecord};
use stowage_service::security::{Caller, GroupChange, TargetJson, TokenRequest, UserChange};

use super::{ApiError, AppState, created_or_ok};

type Caller_ = axum::Extension<Caller>;

fn user_json(base: &str, user: &UserRecord) -> Value {
    json!({
        "name": user.name,
        "email": user.email,
        "admin": user.admin,
        "disabled": user.disabled,
        "groups": user.groups,
        "realm": "internal",
        "uri": format!("{base}/api/security/users/{}", user.name),
    })
}

fn group_json(base: &str, group: &GroupRecord) -> Value {
    json!({
        "name": group.name,
        "description": group.description,
        "autoJoin": group.auto_join,
        "userNames": group.members,
        "realm": "internal",
        "uri": format!("{base}/api/security/groups/{}", group.name),
    })
}

fn token_json(token: &TokenRecord) -> Value {
    json!({
        "token_id": token.id,
        "subject": token.user,
        "scope": token.scope,
        "description": token.description,
        "issued_at": token.created_ms / 1000,
        "expiry": token.expires_ms.map(|e| e / 1000),
        "revoked": token.revoked,
        "refreshable": token.refreshable,
    })
}

/// A JSON body, with a 400 that says what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    admin: Option<bool>,
    disabled: Option<bool>,
    groups: Option<Vec<String>>,
    // Accepted for compatibility with Artifactory's clients; they change nothing here.
    #[serde(rename = "profileUpdatable")]
    _profile_updatable: Option<bool>,
    #[serde(rename = "internalPasswordDisabled")]
    _internal_password_disabled: Option<bool>,
}

impl UserBody {
    fn change(self, name: &str) -> Result<UserChange, ApiError> {
        if self.name.as_deref().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the body's name differs from the URL's",
            ));
        }
        Ok(UserChange {
            email: self.email,
            password: self.password,
            admin: self.admin,
            disabled: self.disabled,
            groups: self.groups,
        })
    }
}

/// `GET /api/security/users`.
pub(crate) async fn list_users(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let users = state.stowage.security().users(&caller).await?;
    let list: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "realm": "internal",
                "uri": format!("{base}/api/security/users/{}", u.name),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/security/users/{name}`.
pub(crate) async fn get_user(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = state.stowage.security().user(&caller, &name).await?;
    Ok(Json(user_json(&state.base_url(&headers), &user)).into_response())
}

/// `PUT /api/security/users/{name}`: creates the user (201); 409 when it exists.
pub(crate) async fn create_user(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let change = parse::<UserBody>(&body)?.change(&name)?;
    state
        .stowage
        .security()
        .put_user(&caller, &name, change, true)
        .await?;
    Ok(StatusCode::CREATED.into_response())
}

/// `POST /api/security/users/{name}`: changes the fields given (200).
pub(crate) async fn update_user(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let change = parse::<UserBody>(&body)?.change(&name)?;
    state
        .stowage
        .security()
        .put_user(&caller, &name, change, false)
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /api/security/users/{name}`.
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.stowage.security().delete_user(&caller, &name).await?;
    Ok(format!("User '{name}' has been removed successfully.").into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: Option<String>,
    description: Option<String>,
    #[serde(rename = "autoJoin")]
    auto_join: Option<bool>,
    #[serde(rename = "userNames")]
    user_names: Option<Vec<String>>,
    #[serde(rename = "adminPrivileges")]
    admin_privileges: Option<bool>,
}

/// `GET /api/security/groups`.
pub(crate) async fn list_groups(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let groups = state.stowage.security().groups(&caller).await?;
    let list: Vec<Value> = groups.iter().map(|g| group_json(&base, g)).collect();
    Ok(Json(list).into_response())
}

/// `GET /api/security/groups/{name}`.
pub(crate) async fn get_group(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let groups = state.stowage.security().groups(&caller).await?;
    let group = groups
        .iter()
        .find(|g| g.name == name)
        .ok_or_else(|| ApiError::not_found(format!("group {name}")))?;
    Ok(Json(group_json(&state.base_url(&headers), group)).into_response())
}

/// `PUT` (create or replace) or `POST` (change) `/api/security/groups/{name}`.
pub(crate) async fn put_group(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: GroupBody = parse(&body)?;
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the body's name differs from the URL's",
        ));
    }
    if body.admin_privileges == Some(true) {
        return Err(ApiError::bad_request(
            "adminPrivileges is not supported: make the users administrators instead",
        ));
    }
    let change = GroupChange {
        description: body.description,
        auto_join: body.auto_join,
        members: body.user_names,
    };
    let created = state
        .stowage
        .security()
        .put_group(&caller, &name, change)
        .await?;
    Ok(created_or_ok(created).into_response())
}

/// `DELETE /api/security/groups/{name}`.
pub(crate) async fn delete_group(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .stowage
        .security()
        .delete_group(&caller, &name)
        .await?;
    Ok(format!("Group '{name}' has been removed successfully.").into_response())
}

/// `GET /api/v2/security/permissions`.
pub(crate) async fn list_permissions(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let base = state.base_url(&headers);
    let targets = state.stowage.security().permissions(&caller).await?;
    let list: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "uri": format!("{base}/api/v2/security/permissions/{}", t.name),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/v2/security/permissions/{name}`.
pub(crate) async fn get_permission(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let targets = state.stowage.security().permissions(&caller).await?;
    let target = targets
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::not_found(format!("permission target {name}")))?;
    Ok(Json(target).into_response())
}

/// `PUT` or `POST /api/v2/security/permissions/{name}`: creates (201) or replaces (200).
pub(crate) async fn put_permission(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json: TargetJson = parse(&body)?;
    let created = state
        .stowage
        .security()
        .put_permission(&caller, &name, json)
        .await?;
    Ok(created_or_ok(created).into_response())
}

/// `DELETE /api/v2/security/permissions/{name}`.
pub(crate) async fn delete_permission(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .stowage
        .security()
        .delete_permission(&caller, &name)
        .await?;
    Ok(format!("Permission Target '{name}' has been removed successfully.").into_response())
}

#[derive(Debug, Default, Deserialize)]
struct TokenBody {
    username: Option<String>,
    scope: Option<String>,
    expires_in: Option<u64>,
    description: Option<String>,
    refreshable: Option<bool>,
    /// `refresh_token` to replace a refreshable token by a new one.
    grant_type: Option<String>,
    refresh_token: Option<String>,
    /// Sent by Artifactory's clients with a refresh; the refresh token alone decides.
    #[serde(rename = "access_token")]
    _access_token: Option<String>,
}

/// `POST /access/api/v1/tokens`, as JSON or as a form: the token, shown this once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body: TokenBody = if body.is_empty() {
        TokenBody::default()
    } else if form {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid form body: {e}")))?
    } else {
        parse(&body)?
    };
    let security = state.stowage.security();
    let token = match body.grant_type.as_deref() {
        Some("refresh_token") => {
            let refresh = body.refresh_token.ok_or_else(|| {
                ApiError::bad_request("grant_type=refresh_token needs refresh_token")
            })?;
            security.refresh_token(&refresh, &caller.source).await?
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "grant_type {other:?} is not supported (refresh_token is)"
            )));
        }
        None => {
            let request = TokenRequest {
                user: body.username,
                scope: body.scope,
                expires_in: body.expires_in.map(Duration::from_secs),
                description: body.description.unwrap_or_default(),
                refreshable: body.refreshable.unwrap_or(false),
            };
            security.issue_token(&caller, request).await?
        }
    };
    let expires_in = token
        .record
        .expires_ms
        .map(|e| (e - token.record.created_ms).max(0) / 1000);
    let mut answer = json!({
        "token_id": token.record.id,
        "access_token": token.secret,
        "expires_in": expires_in,
        "scope": token.record.scope,
        "token_type": "Bearer",
    });
    if let Some(refresh) = token.refresh {
        answer["refresh_token"] = Value::String(refresh);
    }
    Ok(Json(answer).into_response())
}

/// `GET /access/api/v1/tokens`: every token for an administrator, a user's own otherwise.
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
) -> Result<Response, ApiError> {
    let tokens = state.stowage.security().tokens(&caller).await?;
    let list: Vec<Value> = tokens.iter().map(token_json).collect();
    Ok(Json(json!({ "tokens": list })).into_response())
}

/// `DELETE /access/api/v1/tokens/{id}`: revokes it (200), everywhere within seconds.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.stowage.security().revoke(&caller, &id).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/audit?after=<seq>&limit=<n>` (administrators): the audit trail in order, each
/// entry with the hash chaining it to the one before; `next` is where to go on from.
pub(crate) async fn audit(
    State(state): State<AppState>,
    axum::Extension(caller): Caller_,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let after = q.after.unwrap_or(0);
    let entries = state
        .stowage
        .security()
        .audit_entries(&caller, after, q.limit.unwrap_or(100))
        .await?;
    let next = entries.last().map_or(after, |e| e.seq);
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "time": super::json::iso(e.at_ms),
                "node": e.event.node,
                "actor": e.event.actor,
                "source": e.event.source,
                "action": e.event.action,
                "target": e.event.target,
                "detail": e.event.detail,
                "prevHash": e.prev_hash,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": list, "next": next })).into_response())
}
