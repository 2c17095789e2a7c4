//! `metav1.Status` error bodies, shaped exactly like kube-apiserver 1.32 sends them.

use serde_json::{Map, Value, json};

/// An API error: the HTTP status plus the `Status` body the real server would send.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
    /// Extra response headers (e.g. `Retry-After` for injected 429s).
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        let mut body = Map::new();
        body.insert("kind".into(), json!("Status"));
        body.insert("apiVersion".into(), json!("v1"));
        body.insert("metadata".into(), json!({}));
        body.insert("status".into(), json!("Failure"));
        body.insert("message".into(), json!(message.into()));
        if !reason.is_empty() {
            body.insert("reason".into(), json!(reason));
        }
        if let Some(d) = details {
            body.insert("details".into(), d);
        }
        body.insert("code".into(), json!(code));
        ApiError {
            code,
            body: Value::Object(body),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    #[cfg(test)]
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// `nodes "x" not found` with `details {name, [group], kind: <plural>}`.
    pub fn not_found(res: &ResourceName<'_>, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.qualified(), name),
            Some(res.details(name)),
        )
    }

    pub fn already_exists(res: &ResourceName<'_>, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.qualified(), name),
            Some(res.details(name)),
        )
    }

    /// The optimistic-concurrency conflict (stale resourceVersion).
    pub fn conflict(res: &ResourceName<'_>, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified(),
                name
            ),
            Some(res.details(name)),
        )
    }

    /// A failed DELETE precondition; note the singular Kind here, as the real server does.
    pub fn precondition_conflict(
        kind: &str,
        name: &str,
        what: &str,
        want: &str,
        have: &str,
    ) -> Self {
        let tail = if what == "UID" {
            "The object might have been deleted and then recreated"
        } else {
            "The object might have been modified"
        };
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the {what} in the precondition ({want}) does not match the {what} in record ({have}). {tail}"
            ),
            Some(json!({"name": name, "kind": kind})),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "415: Unsupported Media Type",
            Some(json!({})),
        )
    }

    pub fn unsupported_patch_for_custom_resource() -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            None,
        )
    }

    /// 422 with field causes. `kind_qualified` is `Node` or `MachineConfig.machineconfiguration.openshift.io`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[Cause]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = Map::new();
        if !name.is_empty() {
            details.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(kind));
        details.insert(
            "causes".into(),
            Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            ),
        );
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {summary}"),
            Some(Value::Object(details)),
        )
    }

    /// The generic 422 a failing JSON-patch `test` op gives.
    pub fn invalid_generic() -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
            Some(json!({})),
        )
    }

    pub fn too_many_requests(message: &str, causes: Option<Value>) -> Self {
        let details = causes.map(|c| json!({"causes": c}));
        Self::new(429, "TooManyRequests", message, details)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message, None)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message, None)
    }

    /// An error the server did not classify: only the code and the message (e.g. a plain Go error
    /// turned into a 500).
    pub fn unclassified(code: u16, message: impl Into<String>) -> Self {
        Self::new(code, "", message, None)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized", None)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(
            504,
            "Timeout",
            message,
            Some(json!({"retryAfterSeconds": 1})),
        )
    }

    /// An injected fault: the reason the real server uses for that status.
    pub fn injected(code: u16, message: Option<&str>) -> Self {
        let (reason, default_msg) = match code {
            400 => ("BadRequest", "injected bad request"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden (injected)"),
            404 => (
                "NotFound",
                "the server could not find the requested resource",
            ),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            410 => ("Expired", "too old resource version (injected)"),
            422 => ("Invalid", "injected validation failure"),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            500 => ("InternalError", "Internal error occurred: injected fault"),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            _ => ("", "injected fault"),
        };
        let mut err = Self::new(
            code,
            reason,
            message.unwrap_or(default_msg),
            Some(json!({})),
        );
        if code == 429 {
            err.body["details"] = json!({"retryAfterSeconds": 1});
            err = err.with_header("retry-after", "1");
        }
        err
    }
}

/// One `details.causes[]` entry.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How a resource is named in error messages: `nodes`, `poddisruptionbudgets.policy`, ...
#[derive(Debug, Clone, Copy)]
pub struct ResourceName<'a> {
    pub plural: &'a str,
    pub group: &'a str,
}

impl ResourceName<'_> {
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(self.plural));
        Value::Object(d)
    }
}

/// `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}`.
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// The Status a DELETE of a non-pod object answers with.
pub fn deleted(res: &ResourceName<'_>, name: &str, uid: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !res.group.is_empty() {
        details.insert("group".into(), json!(res.group));
    }
    details.insert("kind".into(), json!(res.plural));
    details.insert("uid".into(), json!(uid));
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
