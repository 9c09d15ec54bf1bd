//! Errors of the object store client, turned into the library's typed errors naming the
//! object, the bucket and the endpoint.

use crate::error::Error;

/// Where a failed request went, for the messages.
pub(super) struct Target<'a> {
    /// `s3://bucket/prefix`.
    pub(super) location: &'a str,
    /// The bucket.
    pub(super) bucket: &'a str,
    /// The endpoint (`https://s3.<region>.amazonaws.com` when none is set).
    pub(super) endpoint: &'a str,
    /// The access key id the requests are signed with (never the secret).
    pub(super) access_key: &'a str,
}

/// The HTTP status and body of the request behind `e`, when the server answered (read from
/// the error chain's text: the client's request error type is not public).
fn answer(e: &object_store::Error) -> (Option<u16>, String) {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        text.push('\n');
        source = s.source();
    }
    let status = ["status code: ", "status: "].iter().find_map(|m| {
        let at = text.find(m)? + m.len();
        text[at..].get(..3)?.parse::<u16>().ok()
    });
    (status, text)
}

/// The typed error for a failed request on the object `key` (empty: the bucket itself).
pub(super) fn map(target: &Target<'_>, key: &str, e: object_store::Error) -> Error {
    let (status, body) = answer(&e);
    let detail = first_line(&e.to_string());
    if body.contains("NoSuchBucket") {
        return Error::BucketMissing {
            bucket: target.bucket.to_string(),
            endpoint: target.endpoint.to_string(),
        };
    }
    match e {
        object_store::Error::NotFound { .. } => Error::BlobMissing {
            key: key.to_string(),
        },
        object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
            key: key.to_string(),
        },
        object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
            Error::Precondition {
                key: key.to_string(),
            }
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => access_denied(target, &body, detail),
        // A listing's refusal arrives as a generic error with its status.
        _ if matches!(status, Some(401 | 403)) => access_denied(target, &body, detail),
        _ if status.is_none() => Error::Unreachable {
            engine: "s3",
            address: target.endpoint.to_string(),
            detail: format!("{detail} (object {key:?} of {})", target.location),
        },
        _ => Error::Remote {
            location: if key.is_empty() {
                target.location.to_string()
            } else {
                format!("{}/{key}", target.location)
            },
            endpoint: target.endpoint.to_string(),
            status,
            detail: body_code(&body).unwrap_or(detail),
        },
    }
}

fn access_denied(target: &Target<'_>, body: &str, detail: String) -> Error {
    Error::AccessDenied {
        engine: "s3",
        address: format!("{} at {}", target.location, target.endpoint),
        user: target.access_key.to_string(),
        detail: body_code(body).unwrap_or(detail),
    }
}

/// `Code: Message` of an S3 XML error body.
fn body_code(body: &str) -> Option<String> {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{t}>"))? + start;
        Some(body[start..end].to_string())
    };
    let code = tag("Code")?;
    Some(match tag("Message") {
        Some(m) => format!("{code}: {m}"),
        None => code,
    })
}

/// The first line of a long chained message, shortened.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.len() > 400 {
        let mut end = 400;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_body_is_read() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce \
                    your request rate.</Message></Error>";
        assert_eq!(
            body_code(body).as_deref(),
            Some("SlowDown: Please reduce your request rate.")
        );
        assert_eq!(body_code("plain text"), None);
    }
}
