//! The route table: one router per resource, merged here.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub mod analytics;
pub mod outcomes;
pub mod procedures;
pub mod robots;

/// A rendered JSON body.
pub struct JsonBody(pub Vec<u8>);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        ([(CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medrobotics api-service",
        description = "Read API over the surgical-robotics database. Wire-compatible with the \
                       Flask service it replaces: dates are HTTP-dates, NUMERIC values are \
                       decimal strings, object keys are sorted.",
    ),
    tags(
        (name = "robots", description = "The robot fleet"),
        (name = "procedures", description = "Surgical procedures"),
        (name = "outcomes", description = "Procedure outcomes"),
        (name = "analytics", description = "Aggregates"),
    ),
    components(schemas(crate::openapi::ErrorBody)),
)]
struct ApiDoc;

/// Every API route with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(robots::router())
        .merge(procedures::router())
        .merge(outcomes::router())
        .merge(analytics::router())
}
