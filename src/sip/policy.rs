//! Who may talk to the gateway and what it answers by itself (RFC 3261 §8.2, §11): the trust
//! check for requests that start calls or messages, the 501/405 for methods we do not do, the
//! answer to OPTIONS. Pure functions over addresses and methods.

use std::net::IpAddr;

use rsip::Method;

/// Methods the user agent implements (RFC 3261 §20.5 `Allow`). MESSAGE: RFC 3428.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE";
/// Bodies we understand (RFC 3261 §20.1 `Accept`).
pub const ACCEPT: &str = "application/sdp, text/plain";
/// Extensions we support (RFC 3261 §20.37); none yet beyond the core.
pub const SUPPORTED: &str = "";

/// What to do with an incoming out-of-dialog request before any handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Accept,
    /// `403 Forbidden`: the sender is neither the registrar/proxy nor in `[sip] trusted`.
    Forbidden,
    /// `405 Method Not Allowed` (with Allow): a SIP method we know but do not serve here.
    NotAllowed,
    /// `501 Not Implemented`: a method we do not know at all (RFC 3261 §8.2.1).
    NotImplemented,
}

/// The trust list: the registrar and outbound proxy addresses plus `[sip] trusted`.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub servers: Vec<IpAddr>,
    pub networks: Vec<ipnet::IpNet>,
}

impl Trust {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.servers.iter().any(|s| canonical(*s) == ip)
            || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) compares as IPv4, so a dual-stack socket does not
/// defeat an IPv4 trust entry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Decides on an out-of-dialog request from `source`. OPTIONS is answered for anyone (it is
/// how peers and monitoring probe us, and reveals nothing a scan would not); requests that
/// would start a call or a message need trust.
pub fn out_of_dialog(method: &Method, source: IpAddr, trust: &Trust) -> Verdict {
    match method {
        Method::Options => Verdict::Accept,
        Method::Invite | Method::Message => {
            if trust.allows(source) {
                Verdict::Accept
            } else {
                Verdict::Forbidden
            }
        }
        // In-dialog or transaction-bound methods reaching us without a dialog are answered
        // 481 by the dialog layer, not here; ACK is never answered.
        Method::Ack | Method::Bye | Method::Cancel => Verdict::Accept,
        // Known SIP methods we are not a server for (we are not a registrar, presence server
        // or REFER target yet).
        Method::Register
        | Method::Subscribe
        | Method::Notify
        | Method::Publish
        | Method::Refer
        | Method::Info
        | Method::PRack
        | Method::Update => Verdict::NotAllowed,
    }
}

/// Method token of a request rsip could not parse because it does not know the method:
/// such a request gets 501 rather than 400.
pub fn is_unknown_method(token: &str) -> bool {
    !Method::all()
        .iter()
        .any(|m| m.to_string().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust() {
        let t = Trust {
            servers: vec!["127.0.0.1".parse().unwrap()],
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(t.allows("127.0.0.1".parse().unwrap()));
        assert!(t.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.allows("10.1.2.3".parse().unwrap()));
        assert!(!t.allows("192.0.2.1".parse().unwrap()));
        let any: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(out_of_dialog(&Method::Invite, any, &t), Verdict::Forbidden);
        assert_eq!(out_of_dialog(&Method::Message, any, &t), Verdict::Forbidden);
        assert_eq!(out_of_dialog(&Method::Options, any, &t), Verdict::Accept);
        assert_eq!(
            out_of_dialog(&Method::Register, any, &t),
            Verdict::NotAllowed
        );
        assert_eq!(
            out_of_dialog(&Method::Invite, "10.9.9.9".parse().unwrap(), &t),
            Verdict::Accept
        );
    }

    #[test]
    fn unknown_methods() {
        assert!(is_unknown_method("FOO"));
        assert!(!is_unknown_method("invite"));
        assert!(!is_unknown_method("PRACK"));
    }
}
