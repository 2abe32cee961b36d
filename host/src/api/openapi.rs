//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// The error envelope every route uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case code, e.g. `hash_mismatch`.
    pub code: String,
    /// What failed and what to do.
    pub message: String,
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lumilio host",
        description = "Self-hosted photo ingest: upload, process through WASM stages, retrieve."
    ),
    paths(
        super::health,
        document,
        super::metrics::metrics,
        super::upload::single,
        super::upload::batch,
        super::upload::check,
        super::assets::list,
        super::assets::get_one,
        super::assets::remove,
        super::assets::reprocess,
        super::files::original,
        super::files::rendition,
        super::jobs::get_job,
        super::search::search,
        super::search::similar,
        super::files::sidecar,
        super::web::index,
        super::web::file,
        super::events::events,
        super::status::status,
        super::favorite::set_favorite,
        super::immich::well_known,
        super::immich::users_me,
        super::immich::api_key_me,
        super::immich::media_types,
        super::immich::version,
        super::immich::ping,
        super::immich::statistics,
        super::immich::bulk_upload_check,
        super::immich::upload_asset,
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "service", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_documented() {
        let doc = ApiDoc::openapi();
        for (method, path, _) in super::super::routes() {
            let item = doc
                .paths
                .paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is served but not in the OpenAPI document"));
            let documented = match method {
                "GET" => item.get.is_some(),
                "POST" => item.post.is_some(),
                "DELETE" => item.delete.is_some(),
                other => panic!("unexpected method {other}"),
            };
            assert!(documented, "{method} {path} is served but not documented");
        }
        let served: usize = super::super::routes().len();
        let documented: usize = doc
            .paths
            .paths
            .values()
            .map(|i| {
                [
                    i.get.is_some(),
                    i.post.is_some(),
                    i.delete.is_some(),
                    i.put.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count()
            })
            .sum();
        assert_eq!(
            served, documented,
            "the document lists operations the router does not serve"
        );
    }
}
