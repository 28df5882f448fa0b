//! What every domain service shares: the typed error all of them return, the strict input
//! they accept, and the typed list they answer with.
//!
//! The services live with their domain (`tenancy::service`, `tokens::service`, …). Each takes
//! the caller ([`crate::auth::Authed`]) and typed input, decides with
//! [`crate::tenancy::authz`], changes the store and writes the audit entry in one transaction,
//! and returns typed values. The management API (`api`) and the admin UI (`admin`) are two
//! transports over them: they parse, call a service, and render; neither calls the other.

pub mod error;
pub mod input;

pub use error::Error;

use serde::Serialize;

/// A page of a list: `{"object":"list","data":[…],"has_more":…}`.
#[derive(Debug, Clone, Serialize)]
pub struct List<T> {
    /// Always `list`.
    pub object: &'static str,
    /// The entries, by id.
    pub data: Vec<T>,
    /// Whether entries after the last one exist (ask again with `after` = its id).
    pub has_more: bool,
}

impl<T> List<T> {
    /// The first `page.limit` of `rows` (fetched with one more than the limit), each as `T`.
    pub fn page<R>(mut rows: Vec<R>, page: input::Page) -> Self
    where
        T: for<'a> From<&'a R>,
    {
        let has_more = rows.len() as i64 > page.limit;
        rows.truncate(usize::try_from(page.limit).unwrap_or(100));
        Self { object: "list", data: rows.iter().map(T::from).collect(), has_more }
    }
}

/// A list's schema: `data` holds `T`s (by reference, so `T` joins the document's components).
impl<T: utoipa::ToSchema> utoipa::PartialSchema for List<T> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        use utoipa::openapi::Ref;
        ObjectBuilder::new()
            .property("object", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["list"])))
            .property("data", ArrayBuilder::new().items(Ref::from_schema_name(T::name())))
            .property("has_more", ObjectBuilder::new().schema_type(Type::Boolean))
            .required("object")
            .required("data")
            .required("has_more")
            .into()
    }
}

impl<T: utoipa::ToSchema> utoipa::ToSchema for List<T> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("ListOf{}", T::name()).into()
    }

    fn schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
}
