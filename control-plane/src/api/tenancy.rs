//! `/api/v1/orgs`, `/teams`, `/teams/{id}/members`, `/users`, `/service-accounts`: parse, call
//! [`crate::tenancy::service`], render.

use super::auth::Authed;
use super::error::Error;
use super::{body, body_or_empty, Body};
use crate::domain::input::{PageQuery, TenancySettings};
use crate::domain::List;
use crate::gateway::Gateway;
use crate::tenancy::service::{self as svc, Member, Org, ServiceAccount, Team, User};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use std::sync::Arc;

type Id = Path<String>;

/// `POST /api/v1/orgs` (admin).
pub async fn create_org(State(gw): State<Arc<Gateway>>, a: Authed, b: Body) -> Result<(StatusCode, Json<Org>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create_org(&gw, &a, body(b)).await?)))
}

/// `GET /api/v1/orgs`: every org for an admin, else the caller's own.
pub async fn list_orgs(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<PageQuery>,
) -> Result<Json<List<Org>>, Error> {
    Ok(Json(svc::list_orgs(&gw, &a, q.page()?).await?))
}

/// `GET /api/v1/orgs/{id}`
pub async fn get_org(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<Json<Org>, Error> {
    Ok(Json(svc::get_org(&gw, &a, &id).await?))
}

/// `PATCH /api/v1/orgs/{id}` (admin).
pub async fn patch_org(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id, b: Body) -> Result<Json<Org>, Error> {
    Ok(Json(svc::update_org(&gw, &a, &id, body(b)).await?))
}

/// `DELETE /api/v1/orgs/{id}` (admin): only an org without live users or teams.
pub async fn delete_org(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<StatusCode, Error> {
    svc::delete_org(&gw, &a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/teams` (admin; org-admin in their org).
pub async fn create_team(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    b: Body,
) -> Result<(StatusCode, Json<Team>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create_team(&gw, &a, body(b)).await?)))
}

/// `GET /api/v1/teams`: all (admin), the org's (org-admin), else the caller's teams.
pub async fn list_teams(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<PageQuery>,
) -> Result<Json<List<Team>>, Error> {
    Ok(Json(svc::list_teams(&gw, &a, q.page()?).await?))
}

/// `GET /api/v1/teams/{id}`
pub async fn get_team(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<Json<Team>, Error> {
    Ok(Json(svc::get_team(&gw, &a, &id).await?))
}

/// `PATCH /api/v1/teams/{id}` (admin; org-admin of its org).
pub async fn patch_team(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id, b: Body) -> Result<Json<Team>, Error> {
    Ok(Json(svc::update_team(&gw, &a, &id, body(b)).await?))
}

/// `DELETE /api/v1/teams/{id}` (admin; org-admin of its org).
pub async fn delete_team(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<StatusCode, Error> {
    svc::delete_team(&gw, &a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/teams/{id}/members/{user_id}` with `{"team_admin": bool}` (the body may be empty).
pub async fn put_member(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path((id, user_id)): Path<(String, String)>,
    b: Body,
) -> Result<(StatusCode, Json<Member>), Error> {
    let (m, created) = svc::put_member(&gw, &a, &id, &user_id, body_or_empty(b)).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(m)))
}

/// `DELETE /api/v1/teams/{id}/members/{user_id}`
pub async fn delete_member(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    svc::delete_member(&gw, &a, &id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users` (admin; org-admin in their org, never creating admins).
pub async fn create_user(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    b: Body,
) -> Result<(StatusCode, Json<User>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create_user(&gw, &a, body(b)).await?)))
}

/// `GET /api/v1/users`
pub async fn list_users(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Query(q): Query<PageQuery>,
) -> Result<Json<List<User>>, Error> {
    Ok(Json(svc::list_users(&gw, &a, q.page()?).await?))
}

/// `GET /api/v1/users/{id}`
pub async fn get_user(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<Json<User>, Error> {
    Ok(Json(svc::get_user(&gw, &a, &id).await?))
}

/// `PATCH /api/v1/users/{id}`
pub async fn patch_user(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id, b: Body) -> Result<Json<User>, Error> {
    Ok(Json(svc::update_user(&gw, &a, &id, body(b)).await?))
}

/// `DELETE /api/v1/users/{id}`
pub async fn delete_user(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<StatusCode, Error> {
    svc::delete_user(&gw, &a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/teams/{id}/service-accounts`: the account and its key (returned once as `key`).
pub async fn create_sa(
    State(gw): State<Arc<Gateway>>,
    Extension(cfg): Extension<TenancySettings>,
    a: Authed,
    Path(id): Id,
    b: Body,
) -> Result<(StatusCode, Json<ServiceAccount>), Error> {
    Ok((StatusCode::CREATED, Json(svc::create_sa(&gw, cfg, &a, &id, body(b)).await?)))
}

/// `GET /api/v1/teams/{id}/service-accounts`
pub async fn list_sas(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Id,
    Query(q): Query<PageQuery>,
) -> Result<Json<List<ServiceAccount>>, Error> {
    let page = q.page()?;
    Ok(Json(svc::list_sas(&gw, &a, &id, page).await?))
}

/// `GET /api/v1/service-accounts/{id}`
pub async fn get_sa(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<Json<ServiceAccount>, Error> {
    Ok(Json(svc::get_sa(&gw, &a, &id).await?))
}

/// `PATCH /api/v1/service-accounts/{id}`
pub async fn patch_sa(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Id,
    b: Body,
) -> Result<Json<ServiceAccount>, Error> {
    Ok(Json(svc::update_sa(&gw, &a, &id, body(b)).await?))
}

/// `DELETE /api/v1/service-accounts/{id}`: marks it deleted and revokes its key.
pub async fn delete_sa(State(gw): State<Arc<Gateway>>, a: Authed, Path(id): Id) -> Result<StatusCode, Error> {
    svc::delete_sa(&gw, &a, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/service-accounts/{id}/transfer` with `{"user_id": "…"}`.
pub async fn transfer_sa(
    State(gw): State<Arc<Gateway>>,
    a: Authed,
    Path(id): Id,
    b: Body,
) -> Result<Json<ServiceAccount>, Error> {
    Ok(Json(svc::transfer_sa(&gw, &a, &id, body(b)).await?))
}
