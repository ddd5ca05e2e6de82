//! What an actor's name may be, pure: every name a node registers travels in its gossip
//! state to every member, and is printed by operators' tools and in logs.
//!
//! A name is 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 with no control characters, no
//! bidirectional-text controls and no invisible format characters, and no whitespace at
//! either end. A longer name would not fit a gossip datagram (and froze a node's gossip
//! state); a control character would break the lines of `duologue members` and of logs;
//! a bidi control would make one name read as another.

/// The longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The longest protocol name an actor may serve, in bytes (it is published beside its
/// name).
pub const MAX_PROTOCOL_BYTES: usize = 1024;

/// Why a name is refused, or `Ok`.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a name is not empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("a name is at most 255 bytes");
    }
    if name.trim() != name {
        return Err("a name does not start or end with whitespace");
    }
    if name.chars().any(char::is_control) {
        return Err("a name has no control characters");
    }
    if name.chars().any(invisible) {
        return Err("a name has no bidirectional-text controls or invisible characters");
    }
    Ok(())
}

/// Why a protocol name is refused, or `Ok`.
pub(crate) fn check_protocol(protocol: &str) -> Result<(), &'static str> {
    if protocol.len() > MAX_PROTOCOL_BYTES {
        return Err("a protocol name is at most 1024 bytes");
    }
    if protocol.chars().any(|c| c.is_control() || invisible(c)) {
        return Err("a protocol name has no control or invisible characters");
    }
    Ok(())
}

/// Bidirectional-text controls and zero-width or invisible format characters.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// `name` as it may be shown in a line of text: control and invisible characters
/// escaped, and at most `max` characters (then an ellipsis). For names from peers, which
/// may not have been checked.
pub fn printable(name: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in name.chars().enumerate() {
        if shown == max {
            out.push('…');
            break;
        }
        if c.is_control() || invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_the_rest_say_why() {
        for ok in [
            "room",
            "cart-42",
            "général",
            "a b",
            "x".repeat(255).as_str(),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
        let long = "x".repeat(256);
        for bad in [
            "",
            long.as_str(),
            " room",
            "room\n",
            "ro\0om",
            "evil\u{202E}moor",
            "zero\u{200B}width",
            "\u{FEFF}bom",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_protocol(&"p".repeat(1025)).is_err());
        assert_eq!(check_protocol("chat.v1.A->chat.v1.B"), Ok(()));
    }

    #[test]
    fn names_from_peers_print_on_one_line() {
        assert_eq!(printable("a\nb\u{202E}c", 80), "a\\u{a}b\\u{202e}c");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
