//! The SIP ⇄ Jingle reason mapping (PROTOCOLS.md §2.7): which XEP-0166 `<reason/>` a SIP final
//! response becomes, which SIP status a Jingle reason becomes, and the `<text/>` that carries
//! the SIP code across.
//!
//! | Jingle reason | SIP → Jingle | Jingle → SIP |
//! |---|---|---|
//! | `success` | 2xx (and BYE) | 200 (BYE) |
//! | `busy` | 486, 600 | 486 Busy Here |
//! | `decline` | 603 | 603 Decline |
//! | `cancel` | 487 (and CANCEL) | 487 (CANCEL early, BYE confirmed) |
//! | `gone` | 404, 410, 480, 604 | 480 Temporarily Unavailable |
//! | `timeout` | 408 | 408 Request Timeout |
//! | `failed-application` | 415, 488, 606 | 488 Not Acceptable Here |
//! | `incompatible-parameters`, `unsupported-applications` | – | 488 Not Acceptable Here |
//! | `security-error` | 401, 403, 407 | 403 Forbidden |
//! | `connectivity-error`, `failed-transport` | – | BYE + `Reason: SIP;cause=503` |
//! | `general-error` | any other code | 500 |
//! | `expired`, `media-error`, `alternative-session`, `unsupported-transports` | – | 500 |
//!
//! The SIP code travels in the reason's `<text/>` (`486 Busy Here`), as §2.7 asks.
//!
//! Part of the call layer because it is the one place that knows both protocols: `xmpp::jingle`
//! owns the `<reason/>` wire model, `sip/` the status codes; this module only maps between them.
//! Pure: no I/O, no state.

use crate::xmpp::jingle::{Reason, ReasonCondition};

/// The Jingle reason for a SIP final failure response (PROTOCOLS.md §2.7).
pub fn sip_status_to_reason(code: u16) -> ReasonCondition {
    match code {
        486 | 600 => ReasonCondition::Busy,
        603 => ReasonCondition::Decline,
        404 | 410 | 480 | 604 => ReasonCondition::Gone,
        408 => ReasonCondition::Timeout,
        487 => ReasonCondition::Cancel,
        415 | 488 | 606 => ReasonCondition::FailedApplication,
        401 | 403 | 407 => ReasonCondition::SecurityError,
        200..=299 => ReasonCondition::Success,
        _ => ReasonCondition::GeneralError,
    }
}

/// The SIP status for a Jingle reason (PROTOCOLS.md §2.7). For `connectivity-error` and
/// `failed-transport` the 503 goes into an RFC 3326 `Reason: SIP;cause=503` header of a BYE
/// rather than a response; `cancel` maps to 487 (the caller sends CANCEL or BYE by dialog
/// state); `success` to 200.
pub fn reason_to_sip_status(reason: &ReasonCondition) -> u16 {
    match reason {
        ReasonCondition::Busy => 486,
        ReasonCondition::Decline => 603,
        ReasonCondition::Gone => 480,
        ReasonCondition::Timeout => 408,
        ReasonCondition::FailedApplication
        | ReasonCondition::IncompatibleParameters
        | ReasonCondition::UnsupportedApplications => 488,
        ReasonCondition::SecurityError => 403,
        ReasonCondition::ConnectivityError | ReasonCondition::FailedTransport => 503,
        ReasonCondition::Cancel => 487,
        ReasonCondition::Success => 200,
        _ => 500,
    }
}

/// The `<text/>` carrying a SIP status (PROTOCOLS.md §2.7), e.g. `486 Busy Here`. An empty
/// phrase is replaced by the RFC 3261 §21 default for the code, when we know one.
pub fn reason_text(code: u16, phrase: &str) -> String {
    let phrase = phrase.trim();
    let phrase = if phrase.is_empty() {
        default_phrase(code)
    } else {
        phrase
    };
    if phrase.is_empty() {
        code.to_string()
    } else {
        format!("{code} {phrase}")
    }
}

/// XEP-0166 reason for a SIP status, with the code carried in `<text/>`.
pub fn sip_reason(code: u16, phrase: &str) -> Reason {
    Reason::new(sip_status_to_reason(code)).with_text(reason_text(code, phrase))
}

/// The RFC 3261 §21 reason phrase of the codes we map; empty for the others.
fn default_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        415 => "Unsupported Media Type",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_mapping_both_ways() {
        use ReasonCondition::*;
        for (code, cond) in [
            (486, Busy),
            (600, Busy),
            (603, Decline),
            (404, Gone),
            (410, Gone),
            (480, Gone),
            (604, Gone),
            (408, Timeout),
            (487, Cancel),
            (488, FailedApplication),
            (606, FailedApplication),
            (415, FailedApplication),
            (401, SecurityError),
            (403, SecurityError),
            (407, SecurityError),
            (400, GeneralError),
            (500, GeneralError),
            (503, GeneralError),
            (699, GeneralError),
        ] {
            assert_eq!(sip_status_to_reason(code), cond, "{code}");
        }
        for (cond, code) in [
            (Busy, 486),
            (Decline, 603),
            (Gone, 480),
            (Timeout, 408),
            (FailedApplication, 488),
            (IncompatibleParameters, 488),
            (UnsupportedApplications, 488),
            (SecurityError, 403),
            (ConnectivityError, 503),
            (FailedTransport, 503),
            (Cancel, 487),
            (GeneralError, 500),
            (MediaError, 500),
            (Expired, 500),
        ] {
            assert_eq!(reason_to_sip_status(&cond), code, "{cond}");
        }
        // The codes we send come back as the same condition.
        for cond in [
            Busy,
            Decline,
            Gone,
            Timeout,
            FailedApplication,
            SecurityError,
            Cancel,
        ] {
            assert_eq!(sip_status_to_reason(reason_to_sip_status(&cond)), cond);
        }
        assert_eq!(reason_text(486, "Busy Here"), "486 Busy Here");
        assert_eq!(reason_text(486, ""), "486 Busy Here");
        assert_eq!(reason_text(603, ""), "603 Decline");
        assert_eq!(reason_text(499, " "), "499");
        assert_eq!(
            sip_reason(486, ""),
            Reason::new(Busy).with_text("486 Busy Here")
        );
    }
}
