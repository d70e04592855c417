//! Status codes of the Binding Acknowledgement and the Binding Error.

use std::fmt;

/// Defines a status newtype whose unknown values survive a decode/encode
/// round trip, with a name for each assigned value.
macro_rules! status_codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$cmeta:meta])* $konst:ident = $value:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$cmeta])* pub const $konst: $name = $name($value);)*

            /// Every assigned value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name($value)),*];

            /// The registered name of this status, `None` if unassigned.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(text) => write!(f, "{} ({})", self.0, text),
                    None => write!(f, "{} (unassigned)", self.0),
                }
            }
        }
    };
}

status_codes! {
    /// Binding Acknowledgement status (RFC 6275 §6.1.8, RFC 3963 §4.2,
    /// RFC 4285 §8). Values below 128 accept the Binding Update.
    BaStatus {
        /// 0: Binding Update accepted.
        ACCEPTED = 0, "Binding Update accepted";
        /// 1: accepted but prefix discovery necessary.
        ACCEPTED_PREFIX_DISCOVERY = 1, "Accepted but prefix discovery necessary";
        /// 128: reason unspecified.
        REASON_UNSPECIFIED = 128, "Reason unspecified";
        /// 129: administratively prohibited.
        ADMINISTRATIVELY_PROHIBITED = 129, "Administratively prohibited";
        /// 130: insufficient resources.
        INSUFFICIENT_RESOURCES = 130, "Insufficient resources";
        /// 131: home registration not supported.
        HOME_REGISTRATION_NOT_SUPPORTED = 131, "Home registration not supported";
        /// 132: not home subnet.
        NOT_HOME_SUBNET = 132, "Not home subnet";
        /// 133: not home agent for this mobile node.
        NOT_HOME_AGENT = 133, "Not home agent for this mobile node";
        /// 134: Duplicate Address Detection failed.
        DAD_FAILED = 134, "Duplicate Address Detection failed";
        /// 135: sequence number out of window.
        SEQUENCE_OUT_OF_WINDOW = 135, "Sequence number out of window";
        /// 136: expired home nonce index.
        EXPIRED_HOME_NONCE_INDEX = 136, "Expired home nonce index";
        /// 137: expired care-of nonce index.
        EXPIRED_CARE_OF_NONCE_INDEX = 137, "Expired care-of nonce index";
        /// 138: expired nonces.
        EXPIRED_NONCES = 138, "Expired nonces";
        /// 139: registration type change disallowed.
        REGISTRATION_TYPE_CHANGE_DISALLOWED = 139, "Registration type change disallowed";
        /// 140: mobile router operation not permitted (RFC 3963).
        MOBILE_ROUTER_NOT_PERMITTED = 140, "Mobile Router Operation not permitted";
        /// 141: invalid prefix (RFC 3963).
        INVALID_PREFIX = 141, "Invalid Prefix";
        /// 142: not authorized for prefix (RFC 3963).
        NOT_AUTHORIZED_FOR_PREFIX = 142, "Not Authorized for Prefix";
        /// 143: forwarding setup failed, prefixes missing (RFC 3963).
        FORWARDING_SETUP_FAILED = 143, "Forwarding Setup failed (prefixes missing)";
        /// 144: MIPV6-ID-MISMATCH, a stale or replayed timestamp (RFC 4285 §6).
        ID_MISMATCH = 144, "MIPV6-ID-MISMATCH";
        /// 145: MIPV6-MESG-ID-REQD, a timestamp is required (RFC 4285 §6).
        MESG_ID_REQUIRED = 145, "MIPV6-MESG-ID-REQD";
        /// 146: MIPV6-AUTH-FAIL, authentication failed (RFC 4285 §5.1.1).
        AUTH_FAIL = 146, "MIPV6-AUTH-FAIL";
        /// 174: invalid care-of address (RFC 6275 §6.1.8).
        INVALID_CARE_OF_ADDRESS = 174, "Invalid Care-of Address";
    }
}

impl BaStatus {
    /// True when the Binding Update was accepted (status below 128).
    pub fn is_accepted(self) -> bool {
        self.0 < 128
    }
}

status_codes! {
    /// Binding Error status (RFC 6275 §6.1.9).
    BeStatus {
        /// 1: unknown binding for Home Address destination option.
        UNKNOWN_BINDING = 1, "Unknown binding for Home Address destination option";
        /// 2: unrecognized MH Type value.
        UNRECOGNIZED_MH_TYPE = 2, "Unrecognized MH Type value";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ba_status_has_its_rfc_value_and_name() {
        let expected: &[(u8, &str)] = &[
            (0, "Binding Update accepted"),
            (1, "Accepted but prefix discovery necessary"),
            (128, "Reason unspecified"),
            (129, "Administratively prohibited"),
            (130, "Insufficient resources"),
            (131, "Home registration not supported"),
            (132, "Not home subnet"),
            (133, "Not home agent for this mobile node"),
            (134, "Duplicate Address Detection failed"),
            (135, "Sequence number out of window"),
            (136, "Expired home nonce index"),
            (137, "Expired care-of nonce index"),
            (138, "Expired nonces"),
            (139, "Registration type change disallowed"),
            (140, "Mobile Router Operation not permitted"),
            (141, "Invalid Prefix"),
            (142, "Not Authorized for Prefix"),
            (143, "Forwarding Setup failed (prefixes missing)"),
            (144, "MIPV6-ID-MISMATCH"),
            (145, "MIPV6-MESG-ID-REQD"),
            (146, "MIPV6-AUTH-FAIL"),
            (174, "Invalid Care-of Address"),
        ];
        assert_eq!(BaStatus::ALL.len(), expected.len());
        for (status, (value, name)) in BaStatus::ALL.iter().zip(expected) {
            assert_eq!(status.0, *value);
            assert_eq!(status.name(), Some(*name));
        }
        assert_eq!(BaStatus(150).name(), None);
        assert!(BaStatus::ACCEPTED_PREFIX_DISCOVERY.is_accepted());
        assert!(!BaStatus::REASON_UNSPECIFIED.is_accepted());
        assert_eq!(BaStatus::AUTH_FAIL.to_string(), "146 (MIPV6-AUTH-FAIL)");
    }

    #[test]
    fn binding_error_statuses() {
        assert_eq!(BeStatus::UNRECOGNIZED_MH_TYPE.0, 2);
        assert_eq!(BeStatus::UNKNOWN_BINDING.0, 1);
        assert_eq!(BeStatus(9).to_string(), "9 (unassigned)");
    }
}
