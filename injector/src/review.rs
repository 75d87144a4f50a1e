//! One AdmissionReview request body in, the HTTP status and body out.
//!
//! The webhook must never keep a pod from being created because of itself:
//! a review it can read but whose pod it cannot understand is allowed
//! unchanged (with a warning for whoever created it); a body that is not an
//! AdmissionReview at all gets a 400 with the reason, which the API server
//! treats as a failed call, and the chart's `failurePolicy: Ignore` lets the
//! pod through.

use crate::mutate::{mutate, Config, Decision};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;

/// The most a review may weigh (the API server's own request limit is 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// What to answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// One line for the log.
    pub summary: String,
}

/// Answers one review.
pub fn answer(body: &[u8], cfg: &Config) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return invalid(format!("not an AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return invalid(format!("an AdmissionReview without a request: {e}")),
    };
    let who = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or("-"),
        request.object.as_ref().and_then(|o| o.metadata.name.as_deref()).unwrap_or(&request.name)
    );
    let allow = AdmissionResponse::from(&request);
    if request.kind.kind != "Pod" || !request.kind.group.is_empty() {
        return allowed(allow, format!("{who}: not a Pod ({}), left alone", request.kind.kind), None);
    }
    let pod: Option<Pod> = request
        .object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(pod) = pod else {
        let why = "the object could not be read as a Pod; left unchanged by the nettap injector";
        return allowed(allow, format!("{who}: {why}"), Some(why.to_string()));
    };
    match mutate(&pod, cfg) {
        Decision::Skip(why) => allowed(allow, format!("{who}: not injected: {why}"), None),
        Decision::Inject { patch, containers } => {
            let summary = format!("{who}: injected the JVM agent into {}", containers.join(", "));
            let patch: json_patch::Patch = match serde_json::from_value(serde_json::Value::Array(patch)) {
                Ok(p) => p,
                Err(e) => {
                    return allowed(AdmissionResponse::from(&request), format!("{who}: bad patch: {e}"), None)
                }
            };
            match allow.with_patch(patch) {
                Ok(r) => respond(r, summary),
                Err(e) => allowed(
                    AdmissionResponse::from(&request),
                    format!("{who}: patch not serialised: {e}"),
                    None,
                ),
            }
        }
    }
}

fn allowed(mut r: AdmissionResponse, summary: String, warning: Option<String>) -> Answer {
    r.warnings = warning.map(|w| vec![w]);
    respond(r, summary)
}

fn respond(r: AdmissionResponse, summary: String) -> Answer {
    let body = serde_json::to_vec(&r.into_review()).expect("a review serialises");
    Answer { status: 200, body, summary }
}

/// A 400 carrying an AdmissionReview that says why.
pub fn invalid(why: String) -> Answer {
    let body =
        serde_json::to_vec(&AdmissionResponse::invalid(&why).into_review()).expect("a review serialises");
    Answer { status: 400, body, summary: why }
}
