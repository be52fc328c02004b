//! StartWorkflowExecution's `completion_callbacks` (docs/nexus.md): checked as Temporal's
//! callback validator checks them with no callback addresses configured, so only Temporal's
//! system callback (a Nexus operation whose caller is this same server) is accepted.

use chronicle_proto::temporal::api::common::v1::{Callback, callback};
use chronicle_types::ApiError;

/// Temporal's defaults: callbacks per execution, URL length, header bytes.
const MAX_CALLBACKS_PER_EXECUTION: usize = 32;
const MAX_URL_LENGTH: usize = 1000;
const MAX_HEADER_SIZE: usize = 8192;
/// The callback URL of operations this server calls on itself.
const SYSTEM_CALLBACK_URL: &str = "temporal://system";

/// Checks the callbacks and lowercases their header keys (as Temporal stores them).
pub fn validate(callbacks: &mut [Callback]) -> Result<(), ApiError> {
    if callbacks.len() > MAX_CALLBACKS_PER_EXECUTION {
        return Err(ApiError::invalid_argument(format!(
            "cannot attach more than {MAX_CALLBACKS_PER_EXECUTION} callbacks to an execution"
        )));
    }
    for cb in callbacks.iter_mut() {
        match &mut cb.variant {
            Some(callback::Variant::Nexus(nexus)) => {
                if nexus.url.len() > MAX_URL_LENGTH {
                    return Err(ApiError::invalid_argument(format!(
                        "invalid url: url length longer than max length allowed of {MAX_URL_LENGTH}"
                    )));
                }
                check_url(&nexus.url)?;
                let size: usize = nexus.header.iter().map(|(k, v)| k.len() + v.len()).sum();
                if size > MAX_HEADER_SIZE {
                    return Err(ApiError::invalid_argument(format!(
                        "invalid header: header size longer than max allowed size of {MAX_HEADER_SIZE}"
                    )));
                }
                nexus.header = std::mem::take(&mut nexus.header)
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
            }
            _ => {
                return Err(ApiError::new(
                    tonic::Code::Unimplemented,
                    "unknown callback variant",
                ));
            }
        }
    }
    Ok(())
}

/// Drops the request's links that a Nexus callback carries too (SDKs send them in both places
/// for older servers; Temporal keeps them on the callback only).
pub fn dedup_links(
    links: &mut Vec<chronicle_proto::temporal::api::common::v1::Link>,
    callbacks: &[Callback],
) {
    let on_callbacks: Vec<&chronicle_proto::temporal::api::common::v1::Link> = callbacks
        .iter()
        .filter(|cb| matches!(cb.variant, Some(callback::Variant::Nexus(_))))
        .flat_map(|cb| cb.links.iter())
        .collect();
    links.retain(|l| !on_callbacks.contains(&l));
}

/// Only the system URL: Chronicle makes no outbound calls, so no address is allowed (Temporal's
/// `callback.allowedAddresses` is empty by default).
fn check_url(url: &str) -> Result<(), ApiError> {
    if url == SYSTEM_CALLBACK_URL {
        return Ok(());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(ApiError::invalid_argument(format!(
            "invalid url: unknown scheme: {url}"
        )));
    };
    if scheme != "http" && scheme != "https" {
        return Err(ApiError::invalid_argument(format!(
            "invalid url: unknown scheme: {url}"
        )));
    }
    if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
        return Err(ApiError::invalid_argument("invalid url: missing host"));
    }
    Err(ApiError::invalid_argument(format!(
        "invalid url: url does not match any configured callback address: {url}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronicle_proto::temporal::api::common::v1::callback::Nexus;

    fn nexus(url: &str) -> Callback {
        Callback {
            variant: Some(callback::Variant::Nexus(Nexus {
                url: url.into(),
                header: [("Temporal-Callback-Token".to_string(), "x".to_string())].into(),
            })),
            links: vec![],
        }
    }

    #[test]
    fn only_the_system_callback_is_accepted() {
        let mut ok = vec![nexus("temporal://system")];
        validate(&mut ok).expect("accepted");
        let Some(callback::Variant::Nexus(n)) = &ok[0].variant else {
            panic!("nexus");
        };
        assert!(n.header.contains_key("temporal-callback-token"));
        for (url, text) in [
            (
                "http://example.com/cb",
                "does not match any configured callback address",
            ),
            ("ftp://example.com", "unknown scheme"),
            ("http:///path", "missing host"),
            ("nonsense", "unknown scheme"),
        ] {
            let err = validate(&mut [nexus(url)]).expect_err(url);
            assert_eq!(err.code, tonic::Code::InvalidArgument);
            assert!(err.message.contains(text), "{url}: {}", err.message);
        }
        let mut many = vec![nexus("temporal://system"); 33];
        assert!(validate(&mut many).is_err());
        let mut empty = vec![Callback::default()];
        assert_eq!(
            validate(&mut empty).expect_err("no variant").code,
            tonic::Code::Unimplemented
        );
    }
}
