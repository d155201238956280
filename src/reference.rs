//! Image names and tags as docker and podman parse them (the grammar of
//! github.com/distribution/reference), so that the image's `RepoTags` entry loads.
//!
//! ```text
//! name      := [host[:port]/]component(/component)*      at most 255 characters
//! host      := label(.label)* | [IPv6]                   label: [a-zA-Z0-9], inner `-` allowed
//! component := [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*
//! tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//!
//! As in docker, the first of several `/`-separated parts is a registry host when it
//! holds a `.` or a `:`, or is `localhost`; otherwise it is a path component.

/// Longest name, registry host included.
pub const NAME_MAX: usize = 255;
/// Longest tag.
pub const TAG_MAX: usize = 128;

/// Checks an image name (already lowercased for the repo tag); says what is wrong.
///
/// # Errors
/// The part of the name at fault and the rule it breaks.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the image name is empty".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!("the image name is {} characters long; at most {NAME_MAX} are allowed", name.len()));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost") {
        check_host(first)?;
        parts.remove(0);
    }
    check_path(&parts.join("/"))
}

/// Checks the path of a name (its `/`-separated components, without a registry host).
///
/// # Errors
/// The component at fault and the rule it breaks.
pub fn check_path(path: &str) -> Result<(), String> {
    for part in path.split('/') {
        check_component(part)?;
    }
    Ok(())
}

/// Checks a tag; says what is wrong.
///
/// # Errors
/// The character at fault, or the length.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let Some(first) = tag.chars().next() else {
        return Err("the tag is empty".into());
    };
    if !word(first) {
        return Err(format!("the tag must start with a letter, digit or `_`, not {first:?}"));
    }
    if let Some(bad) = tag.chars().find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!("{bad:?} is not allowed in a tag (only letters, digits, `_`, `.` and `-`)"));
    }
    if tag.len() > TAG_MAX {
        return Err(format!("the tag is {} characters long; at most {TAG_MAX} are allowed", tag.len()));
    }
    Ok(())
}

fn check_component(part: &str) -> Result<(), String> {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = part.as_bytes();
    if bytes.is_empty() {
        return Err("the name has an empty part (`//`, or `/` at either end)".into());
    }
    if let Some(&bad) = bytes.iter().find(|&&c| !(alnum(c) || b"._-".contains(&c))) {
        let hint = match bad {
            b':' => "; a tag goes in `tag`, and a registry port only after a host name",
            b'@' => "; digests cannot be part of the name",
            _ => "",
        };
        return Err(format!(
            "the part {part:?} holds {:?}: only a-z, 0-9 and the separators `.`, `_`, `__`, `-` are allowed{hint}",
            char::from(bad)
        ));
    }
    // Separators: one `.`, one `_`, `__`, or any run of `-`, each between alphanumerics.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let at_edge = start == 0 || i == bytes.len();
        let well_formed = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if at_edge || !well_formed {
            return Err(format!(
                "the part {part:?} has the separator {sep:?} {}: separators are `.`, `_`, `__` or dashes, between letters or digits",
                if at_edge { "at an end" } else { "in the middle" }
            ));
        }
    }
    Ok(())
}

/// Checks a registry host: `name[:port]` or `[IPv6][:port]`.
///
/// # Errors
/// The host or port at fault.
pub fn check_host(part: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("the registry host {part:?} opens `[` without closing it"));
        };
        if inside.is_empty() || !inside.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return Err(format!("the registry host {part:?} is not an IPv6 address in brackets"));
        }
        (None, after.strip_prefix(':').map_or(if after.is_empty() { None } else { Some(after) }, Some))
    } else {
        match part.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(part), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "the registry host {host:?} is not a host name (labels of letters, digits and inner `-`, joined by `.`)"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("the registry port {port:?} in {part:?} is not a number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_docker_accepts() {
        for name in [
            "hello",
            "a",
            "library/hello",
            "my-app",
            "my--app",
            "my__app",
            "my.app_v2",
            "localhost/app",
            "localhost:5000/app",
            "registry.example.com/team/app",
            "127.0.0.1:5000/x/y",
            "[::1]:5000/app",
            "Registry.Example.com/app",
            "a/b/c/d/e",
        ] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
        for tag in ["latest", "v1.2.3", "_x", "1", "a-b_c.d", &"x".repeat(128)] {
            assert_eq!(check_tag(tag), Ok(()), "{tag}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for name in [
            "",
            "foo:bar",
            "foo@sha256",
            "has space",
            "new\nline",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "a._b",
            "/app",
            "app/",
            "a//b",
            "UPPER/app",
            "localhost:/app",
            "localhost:50a/app",
            "-bad.host/app",
            "[::1/app",
            &"a".repeat(256),
        ] {
            assert!(check_name(name).is_err(), "{name:?} was accepted");
        }
        for tag in ["", ".x", "-x", "a:b", "a/b", "a b", "a@b", "a\nb", &"x".repeat(129), "é"] {
            assert!(check_tag(tag).is_err(), "{tag:?} was accepted");
        }
    }
}
