//! Digest authentication (RFC 2617/7616/8760). Being written.
