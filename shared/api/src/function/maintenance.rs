//! The metadata function under Lambda takes two kinds of event: the HTTP API's requests, and
//! the maintenance events a schedule sends (`{"stowage_maintenance": "gc"}`, what the
//! Terraform module's EventBridge schedules put into their `input`). A Lambda deployment has
//! no primary node whose own schedule would collect garbage, purge the trash past its
//! retention or balance the shards; these events do it.
//!
//! A maintenance event answers with the task's report (the JSON of `POST
//! /api/system/storage/gc`), or fails the invocation with the error, which the function's
//! error alarm reports. An event that is neither is refused with what was expected.

use std::sync::Arc;

use lambda_http::lambda_runtime::{Diagnostic, LambdaEvent, Service};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context};
use serde::de::Error as _;
use serde_json::value::RawValue;
use stowage_service::tasks::{self, Maintenance, MaintenanceReport};
use stowage_service::{Cluster, Stowage};

use crate::http::figures;

/// The key a maintenance event carries its task under.
pub(super) const KEY: &str = "stowage_maintenance";

/// An event the metadata function was invoked with.
#[derive(Debug)]
pub(super) enum Event {
    /// A scheduled maintenance task.
    Maintenance(Maintenance),
    /// A request of the HTTP API (API Gateway, an ALB).
    Http(Box<LambdaRequest>),
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Scheduled {
            stowage_maintenance: Option<String>,
        }
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        // A maintenance event is a small object; an HTTP event never has the key.
        if let Ok(Scheduled {
            stowage_maintenance: Some(task),
        }) = serde_json::from_str::<Scheduled>(raw.get())
        {
            return task
                .parse()
                .map(Event::Maintenance)
                .map_err(D::Error::custom);
        }
        serde_json::from_str::<LambdaRequest>(raw.get())
            .map(|r| Event::Http(Box::new(r)))
            .map_err(|_| {
                D::Error::custom(format!(
                    "the metadata function takes HTTP API requests and maintenance events \
                     ({{\"{KEY}\": \"gc\"}} or {{\"{KEY}\": \"balance\"}}); this event is neither"
                ))
            })
    }
}

/// What the function answers: the HTTP response event, or the maintenance report (JSON
/// written once; lambda_http does not name its response type).
pub(super) type Answer = Box<RawValue>;

fn failed(error_type: &str, message: impl std::fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: error_type.into(),
        error_message: message.to_string(),
    }
}

/// The metadata function's handler: HTTP requests go to the router, maintenance events to
/// the service's tasks.
#[derive(Clone)]
pub(super) struct Handler {
    app: axum::Router,
    stowage: Arc<Stowage>,
    cluster: Arc<Cluster>,
}

impl Handler {
    pub(super) fn new(app: axum::Router, stowage: Arc<Stowage>, cluster: Arc<Cluster>) -> Self {
        Self {
            app,
            stowage,
            cluster,
        }
    }
}

/// The JSON of a maintenance report, as the HTTP API shows the same reports.
fn report(task: Maintenance, report: &MaintenanceReport) -> serde_json::Value {
    let name = match task {
        Maintenance::Gc => "gc",
        Maintenance::Balance => "balance",
    };
    let body = match report {
        MaintenanceReport::Gc(r) => figures::gc_report(r),
        MaintenanceReport::Balance(Some(r)) => figures::balance_report(r),
        MaintenanceReport::Balance(None) => {
            serde_json::json!({ "message": "the filestore is not sharded: nothing to balance" })
        }
    };
    serde_json::json!({ "task": name, "report": body })
}

impl Service<LambdaEvent<Event>> for Handler {
    type Response = Answer;
    type Error = Diagnostic;
    type Future = futures::future::BoxFuture<'static, Result<Answer, Diagnostic>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: LambdaEvent<Event>) -> Self::Future {
        let LambdaEvent { payload, context } = event;
        let this = self.clone();
        Box::pin(async move {
            match payload {
                Event::Http(request) => http(this.app, *request, context).await,
                Event::Maintenance(task) => {
                    tracing::info!(?task, "scheduled maintenance");
                    match tasks::run_maintenance(&this.stowage, &this.cluster, task).await {
                        Ok(r) => {
                            let answer = report(task, &r);
                            tracing::info!(%answer, "maintenance finished");
                            serde_json::value::to_raw_value(&answer)
                                .map_err(|e| failed("StowageAnswerUnwritable", e))
                        }
                        Err(e) => Err(failed("StowageMaintenanceFailed", e)),
                    }
                }
            }
        })
    }
}

/// One HTTP request, through the same adapter `lambda_http::run` uses.
async fn http(
    app: axum::Router,
    request: LambdaRequest,
    context: Context,
) -> Result<Answer, Diagnostic> {
    let answering = Adapter::from(app).call(LambdaEvent::new(request, context));
    let response = answering.await?;
    serde_json::value::to_raw_value(&response).map_err(|e| failed("StowageAnswerUnwritable", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart() {
        let gc: Event = serde_json::from_str(r#"{"stowage_maintenance": "gc"}"#).expect("gc");
        assert!(matches!(gc, Event::Maintenance(Maintenance::Gc)));
        let balance: Event =
            serde_json::from_str(r#"{"stowage_maintenance": "balance"}"#).expect("balance");
        assert!(matches!(balance, Event::Maintenance(Maintenance::Balance)));

        let unknown = serde_json::from_str::<Event>(r#"{"stowage_maintenance": "scrub"}"#)
            .expect_err("unknown task");
        assert!(unknown.to_string().contains("\"gc\""), "{unknown}");

        let neither = serde_json::from_str::<Event>(r#"{"hello": 1}"#).expect_err("neither");
        assert!(
            neither.to_string().contains("stowage_maintenance"),
            "{neither}"
        );

        let request = serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/api/system/ping",
            "rawQueryString": "",
            "headers": {"host": "x"},
            "requestContext": {
                "accountId": "1", "apiId": "a", "domainName": "x", "domainPrefix": "x",
                "http": {"method": "GET", "path": "/api/system/ping", "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "t"},
                "requestId": "r", "routeKey": "$default", "stage": "$default",
                "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0
            },
            "isBase64Encoded": false
        });
        let http: Event = serde_json::from_value(request).expect("an HTTP API request");
        assert!(matches!(http, Event::Http(_)));
    }
}
