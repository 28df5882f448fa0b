//! The UI's stylesheet and script, embedded in the binary and served under a name that carries
//! a hash of their content, so browsers may cache them for a year and still see every change.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const CSS: &str = include_str!("../../../admin-ui/static/app.css");
const JS: &str = include_str!("../../../admin-ui/static/app.js");

fn hashed(stem: &str, ext: &str, content: &str) -> String {
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    format!("/ui/static/{stem}.{}.{ext}", &digest[..12])
}

static CSS_URL: LazyLock<String> = LazyLock::new(|| hashed("app", "css", CSS));
static JS_URL: LazyLock<String> = LazyLock::new(|| hashed("app", "js", JS));

/// URL of the stylesheet.
pub fn css_url() -> &'static str {
    &CSS_URL
}

/// URL of the script.
pub fn js_url() -> &'static str {
    &JS_URL
}

/// `GET /ui/static/{file}`: the current asset under its hashed name (cached a year, immutable);
/// anything else 404.
pub async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/ui/static/{file}");
    let (body, ctype) = if path == css_url() {
        (CSS, "text/css; charset=utf-8")
    } else if path == js_url() {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")], "Not found.").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
