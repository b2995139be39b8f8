//! RFC 5176 Dynamic Authorization packets, as the FreeRADIUS adapter sends them to a NAS for a
//! live session: a Disconnect-Request (code 40) ends it, a CoA-Request (code 43) changes its
//! rate. Only what the adapter needs: encoding the request with its Request Authenticator
//! (`MD5(Code + Identifier + Length + 16 zero octets + Attributes + Secret)`, RFC 5176 §3.5),
//! and reading the answer (ACK or NAK, an `Error-Cause`) after checking its Response
//! Authenticator (`MD5(Code + Identifier + Length + Request Authenticator + Attributes +
//! Secret)`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use md5::{Digest, Md5};

/// Disconnect-Request.
pub(crate) const DISCONNECT_REQUEST: u8 = 40;
const DISCONNECT_ACK: u8 = 41;
const DISCONNECT_NAK: u8 = 42;
/// CoA-Request.
pub(crate) const COA_REQUEST: u8 = 43;
const COA_ACK: u8 = 44;
const COA_NAK: u8 = 45;

const USER_NAME: u8 = 1;
const NAS_IP_ADDRESS: u8 = 4;
const FRAMED_IP_ADDRESS: u8 = 8;
const VENDOR_SPECIFIC: u8 = 26;
const ACCT_SESSION_ID: u8 = 44;
const ERROR_CAUSE: u8 = 101;
/// `Error-Cause = Session-Context-Not-Found`: the NAS has no such session (already gone).
pub(crate) const SESSION_CONTEXT_NOT_FOUND: u32 = 503;

/// One attribute: a standard one, or a vendor's inside Vendor-Specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attribute {
    Text(u8, String),
    Address(u8, Ipv4Addr),
    Vendor {
        vendor: u32,
        kind: u8,
        value: String,
    },
}

impl Attribute {
    pub(crate) fn user_name(name: &str) -> Self {
        Attribute::Text(USER_NAME, name.to_owned())
    }
    pub(crate) fn acct_session_id(id: &str) -> Self {
        Attribute::Text(ACCT_SESSION_ID, id.to_owned())
    }
    pub(crate) fn nas_ip(address: Ipv4Addr) -> Self {
        Attribute::Address(NAS_IP_ADDRESS, address)
    }
    pub(crate) fn framed_ip(address: Ipv4Addr) -> Self {
        Attribute::Address(FRAMED_IP_ADDRESS, address)
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CoaError> {
        let too_long = || CoaError::Encode("an attribute longer than 253 octets");
        match self {
            Attribute::Text(kind, value) => {
                let len = u8::try_from(value.len().saturating_add(2)).map_err(|_| too_long())?;
                out.extend_from_slice(&[*kind, len]);
                out.extend_from_slice(value.as_bytes());
            }
            Attribute::Address(kind, address) => {
                out.extend_from_slice(&[*kind, 6]);
                out.extend_from_slice(&address.octets());
            }
            Attribute::Vendor {
                vendor,
                kind,
                value,
            } => {
                let inner = u8::try_from(value.len().saturating_add(2)).map_err(|_| too_long())?;
                let outer = inner.checked_add(6).ok_or_else(too_long)?;
                out.extend_from_slice(&[VENDOR_SPECIFIC, outer]);
                out.extend_from_slice(&vendor.to_be_bytes());
                out.extend_from_slice(&[*kind, inner]);
                out.extend_from_slice(value.as_bytes());
            }
        }
        Ok(())
    }
}

/// Why a request did not get an ACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CoaError {
    #[error("RFC 5176 request cannot be encoded: {0}")]
    Encode(&'static str),
    #[error("no answer from the NAS at {0} (CoA port): {1}")]
    Unanswered(SocketAddr, String),
    #[error("the NAS at {nas} refused the request (code {code}, Error-Cause {cause:?})")]
    Refused {
        nas: SocketAddr,
        code: u8,
        cause: Option<u32>,
    },
    #[error("the NAS at {0} answered with a bad packet: {1}")]
    BadAnswer(SocketAddr, &'static str),
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut hash = Md5::new();
    for part in parts {
        hash.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(hash.finalize().as_slice());
    out
}

/// The request packet: code, identifier, length, authenticator, attributes.
pub(crate) fn encode(
    code: u8,
    identifier: u8,
    attributes: &[Attribute],
    secret: &str,
) -> Result<Vec<u8>, CoaError> {
    let mut body = Vec::new();
    for attribute in attributes {
        attribute.encode(&mut body)?;
    }
    let length = u16::try_from(body.len().saturating_add(20))
        .ok()
        .filter(|l| *l <= 4096)
        .ok_or(CoaError::Encode("a packet longer than 4096 octets"))?;
    let mut packet = Vec::with_capacity(usize::from(length));
    packet.extend_from_slice(&[code, identifier]);
    packet.extend_from_slice(&length.to_be_bytes());
    let authenticator = md5(&[&packet, &[0u8; 16], &body, secret.as_bytes()]);
    packet.extend_from_slice(&authenticator);
    packet.extend_from_slice(&body);
    Ok(packet)
}

/// Reads the answer to `request` from `nas`: `Ok(())` for an ACK, the NAK's `Error-Cause`
/// otherwise.
pub(crate) fn read_answer(
    request: &[u8],
    answer: &[u8],
    secret: &str,
    nas: SocketAddr,
) -> Result<(), CoaError> {
    let bad = |what| CoaError::BadAnswer(nas, what);
    let (Some(&code), Some(&identifier), Some(length), Some(request_auth)) = (
        answer.first(),
        answer.get(1),
        answer.get(2..4),
        request.get(4..20),
    ) else {
        return Err(bad("shorter than a header"));
    };
    if Some(&identifier) != request.get(1) {
        return Err(bad("another identifier"));
    }
    let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
    let (Some(header), Some(response_auth), Some(attributes)) = (
        answer.get(..4),
        answer.get(4..20),
        answer.get(20..length.max(20)),
    ) else {
        return Err(bad("shorter than its length"));
    };
    if md5(&[header, request_auth, attributes, secret.as_bytes()]).as_slice() != response_auth {
        return Err(bad("a wrong Response Authenticator (another secret?)"));
    }
    let mut cause = None;
    let mut rest = attributes;
    while let [kind, len, ..] = rest {
        let len = usize::from(*len);
        let Some(value) = rest.get(2..len.max(2)) else {
            return Err(bad("a truncated attribute"));
        };
        if *kind == ERROR_CAUSE
            && let Ok(bytes) = <[u8; 4]>::try_from(value)
        {
            cause = Some(u32::from_be_bytes(bytes));
        }
        rest = rest.get(len.max(2)..).unwrap_or_default();
    }
    match (request.first().copied(), code) {
        (Some(DISCONNECT_REQUEST), DISCONNECT_ACK) | (Some(COA_REQUEST), COA_ACK) => Ok(()),
        (Some(DISCONNECT_REQUEST), DISCONNECT_NAK) | (Some(COA_REQUEST), COA_NAK) => {
            Err(CoaError::Refused { nas, code, cause })
        }
        _ => Err(bad("not an answer to the request")),
    }
}

/// Sends `packet` to `nas` and reads its answer, trying `attempts` times with `timeout` each.
pub(crate) async fn exchange(
    packet: &[u8],
    nas: SocketAddr,
    secret: &str,
    timeout: Duration,
    attempts: u32,
) -> Result<(), CoaError> {
    let unanswered = |e: String| CoaError::Unanswered(nas, e);
    let local: SocketAddr = match nas.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| unanswered(e.to_string()))?;
    socket
        .connect(nas)
        .await
        .map_err(|e| unanswered(e.to_string()))?;
    let mut buf = [0u8; 4096];
    let mut last = String::from("no attempt");
    for _ in 0..attempts.max(1) {
        socket
            .send(packet)
            .await
            .map_err(|e| unanswered(e.to_string()))?;
        match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => return read_answer(packet, buf.get(..n).unwrap_or_default(), secret, nas),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {timeout:?}"),
        }
    }
    Err(unanswered(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A NAS's answer is untrusted bytes: any answer to any request is an `Ok` or an
        /// error, never a panic.
        #[test]
        fn any_answer_is_read_without_panicking(
            request in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            answer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let nas: SocketAddr = "127.0.0.1:3799".parse().unwrap();
            let _ = read_answer(&request, &answer, "s3cret", nas);
        }

        /// The same past the authenticator check: a correctly signed answer whose attributes
        /// (and length field) are anything.
        #[test]
        fn any_signed_answer_is_read_without_panicking(
            code in proptest::prelude::any::<u8>(),
            length in proptest::prelude::any::<u16>(),
            attributes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let nas: SocketAddr = "127.0.0.1:3799".parse().unwrap();
            let request = encode(COA_REQUEST, 9, &[Attribute::user_name("ada")], "s3cret").unwrap();
            let len = length.to_be_bytes();
            let header = [code, 9, len[0], len[1]];
            let body_end = usize::from(length).clamp(20, 20 + attributes.len()) - 20;
            let auth = md5(&[&header, &request[4..20], &attributes[..body_end], b"s3cret"]);
            let answer = [&header[..], &auth, &attributes].concat();
            let _ = read_answer(&request, &answer, "s3cret", nas);
        }
    }

    #[test]
    fn a_request_carries_its_authenticator_and_an_answer_is_checked() {
        let attributes = [
            Attribute::user_name("ada"),
            Attribute::acct_session_id("s-1"),
            Attribute::nas_ip(Ipv4Addr::LOCALHOST),
            Attribute::Vendor {
                vendor: 14988,
                kind: 8,
                value: "10M/50M".into(),
            },
        ];
        let packet = encode(COA_REQUEST, 7, &attributes, "s3cret").unwrap();
        assert_eq!(&packet[..2], &[43, 7]);
        assert_eq!(
            usize::from(u16::from_be_bytes([packet[2], packet[3]])),
            packet.len()
        );
        // User-Name "ada": type 1, length 5.
        assert_eq!(&packet[20..25], &[1, 5, b'a', b'd', b'a']);
        let mut zeroed = packet.clone();
        zeroed[4..20].fill(0);
        zeroed.extend_from_slice(b"s3cret");
        assert_eq!(&packet[4..20], &md5(&[&zeroed]));

        let nas: SocketAddr = "127.0.0.1:3799".parse().unwrap();
        let answer = |code: u8, attrs: &[u8], secret: &str| {
            let len = u16::try_from(20 + attrs.len()).unwrap().to_be_bytes();
            let header = [code, 7, len[0], len[1]];
            let auth = md5(&[&header, &packet[4..20], attrs, secret.as_bytes()]);
            [&header[..], &auth, attrs].concat()
        };
        assert_eq!(
            read_answer(&packet, &answer(44, &[], "s3cret"), "s3cret", nas),
            Ok(())
        );
        let cause = [101, 6, 0, 0, 1, 247];
        assert_eq!(
            read_answer(&packet, &answer(45, &cause, "s3cret"), "s3cret", nas),
            Err(CoaError::Refused {
                nas,
                code: 45,
                cause: Some(SESSION_CONTEXT_NOT_FOUND)
            })
        );
        assert_eq!(
            read_answer(&packet, &answer(44, &[], "other"), "s3cret", nas),
            Err(CoaError::BadAnswer(
                nas,
                "a wrong Response Authenticator (another secret?)"
            ))
        );
        assert_eq!(
            read_answer(&packet, &answer(41, &[], "s3cret"), "s3cret", nas),
            Err(CoaError::BadAnswer(nas, "not an answer to the request"))
        );
        assert_eq!(
            read_answer(&packet, &[44, 7], "s3cret", nas),
            Err(CoaError::BadAnswer(nas, "shorter than a header"))
        );
    }
}
