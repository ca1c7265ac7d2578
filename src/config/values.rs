//! Parsers and formatters for the values a config file holds: URLs, hosts,
//! output names, regexes, selectors, durations and sizes. Each parser
//! returns the complete message on failure, so every reader words a bad
//! value the same way.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use super::AllowRule;

/// An output's name is part of its URL (`/o/<name>.atom`), so it is short
/// and needs no escaping.
pub(super) const MAX_OUTPUT_NAME_LEN: usize = 64;

/// Hints repeated in several messages, kept in one place so they agree.
pub(super) const DURATION_HINT: &str = "write it as 30s, 15m, 1h or 1h30m";
pub(super) const SIZE_HINT: &str = "write it as 512KB, 10MB, 1GiB or a number of bytes";
pub(super) const SELECTOR_HINT: &str =
    "write a CSS selector such as \"article\", \".post-body\" or \"div#content > p\"";
pub(super) const OUTPUT_NAME_HINT: &str = "a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\", as it becomes the output's URL (/o/<name>.atom)";
pub(super) const WEBSUB_HUB_EXAMPLE: &str = "https://pubsubhubbub.appspot.com/";

/// An absolute http(s) URL with a host.
pub(super) fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| {
        format!("invalid URL \"{s}\": {e}; write it in full, e.g. https://example.com/feed.xml")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid URL \"{s}\": only http and https URLs are supported"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL \"{s}\": it has no host"));
    }
    Ok(url)
}

/// A `proxy` URL: http or https, with a host; it may carry a user name
/// and password (`http://user:secret@proxy.lan:3128`).
pub fn parse_proxy(s: &str) -> Result<String, String> {
    let url = Url::parse(s.trim()).map_err(|e| {
        format!("invalid proxy URL: {e}; write it in full, e.g. http://proxy.lan:3128")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported proxy scheme \"{}\": use an http:// or https:// proxy",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("invalid proxy URL: it has no host".to_owned());
    }
    Ok(url.to_string())
}

/// Headers a `headers` table may not set: they describe the message
/// itself, or have their own key.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("host", "it is always the URL's host"),
    ("content-length", "a GET has no body"),
    ("transfer-encoding", "a GET has no body"),
    ("connection", "the HTTP client manages connections"),
    ("user-agent", "use the user_agent key"),
];

/// One `name = "value"` of a `headers` table: a legal header name that is
/// not reserved, and a legal header value. The error is the message.
pub fn parse_header(name: &str, value: &str) -> Result<(String, String), String> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "invalid header name \"{name}\": use letters, digits and '-', e.g. Cookie or X-Api-Key"
        ));
    }
    if let Some((_, why)) = RESERVED_HEADERS
        .iter()
        .find(|(reserved, _)| name.eq_ignore_ascii_case(reserved))
    {
        return Err(format!("header {name} cannot be set here: {why}"));
    }
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        // The value may be a secret: it is not repeated.
        return Err(format!(
            "invalid value for header {name}: a header value is one line of visible ASCII"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `[server] websub_hub`: an absolute http(s) URL without a fragment.
pub(super) fn parse_websub_hub(s: &str) -> Result<Url, String> {
    if let Err(e) = Url::parse(s.trim()) {
        return Err(format!(
            "invalid URL \"{s}\": {e}; write the hub's address in full, e.g. {WEBSUB_HUB_EXAMPLE}"
        ));
    }
    let url = parse_http_url(s)?;
    if url.fragment().is_some() {
        return Err(format!(
            "invalid URL \"{s}\": a hub URL cannot have a fragment (#…)"
        ));
    }
    Ok(url)
}

/// The `name` of an `[[output]]`: 1 to [`MAX_OUTPUT_NAME_LEN`] characters
/// of `a-z`, `0-9`, `-` and `_`, so it can stand in a URL as it is.
pub(super) fn parse_output_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let invalid = |why: String| {
        Err(format!(
            "invalid output name \"{s}\": {why}; {OUTPUT_NAME_HINT}"
        ))
    };
    if !name.chars().all(allowed) {
        // Uppercase is the likely slip; name the first other character
        // when there is one, else suggest the lowercase spelling.
        let lowercase = name.to_ascii_lowercase();
        return match lowercase.chars().find(|&c| !allowed(c)) {
            Some(bad) => invalid(format!("{bad:?} is not allowed")),
            None => invalid(format!(
                "uppercase letters are not allowed, write \"{lowercase}\""
            )),
        };
    }
    if name.len() > MAX_OUTPUT_NAME_LEN {
        return invalid(format!(
            "it is {} characters long, at most {MAX_OUTPUT_NAME_LEN} are allowed",
            name.len()
        ));
    }
    Ok(name.to_owned())
}

/// An `include` or `exclude` regular expression, kept as written (spaces
/// matter in a regex, so it is not trimmed); compiling it here means a typo
/// is a config error, not a filter that silently never matches.
pub fn parse_regex(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "must not be empty: an empty regex matches every entry; leave the key out instead"
                .to_owned(),
        );
    }
    match regex::Regex::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!(
            "invalid regex \"{s}\": {}",
            describe_regex_error(&e.to_string())
        )),
    }
}

/// The gist of a `regex` error in one line. A syntax error spans several
/// lines (the pattern, a `^` under the fault, then `error: <what>`); only
/// the `<what>` is kept, since a config message is one line and already
/// quotes the pattern.
pub(super) fn describe_regex_error(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .or(lines.first().copied())
        .unwrap_or("it does not compile")
        .to_owned()
}

/// One item of `[network] allow`: a network (`192.168.1.0/24`), a single
/// address (`10.0.0.5`, `::1`) or a host name (`nas.local`).
pub(super) fn parse_allow_rule(s: &str) -> Result<AllowRule, String> {
    let text = s.trim();
    // A URL is a host name written wrongly, not a network with a prefix.
    if text.contains('/') && !text.contains("://") {
        return text
            .parse::<ipnet::IpNet>()
            .map(|net| AllowRule::Net(net.trunc()))
            .map_err(|_| {
                format!(
                    "invalid network \"{s}\": write an address and a prefix length, e.g. \"192.168.1.0/24\" or \"fd00::/8\""
                )
            });
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(AllowRule::Net(ip.into()));
    }
    parse_host_name(
        s,
        "nas.local",
        "list each host name, or allow a network such as \"192.168.1.0/24\"",
    )
    .map(AllowRule::Host)
}

/// The `host` of a `[[site]]`.
pub(super) fn parse_site_host(s: &str) -> Result<String, String> {
    if s.trim().starts_with('.') {
        return Err(format!(
            "invalid host \"{s}\": write it without the leading dot; \"example.com\" already covers its subdomains"
        ));
    }
    parse_host_name(
        s,
        "example.com",
        "write \"example.com\", which already covers its subdomains",
    )
}

/// A bare host name such as `example.com`, lowercased, without a trailing
/// dot, internationalised names in their `xn--` form. The error is a
/// complete message; it spells `example` as the correct form and gives
/// `wildcard_hint` for a `*`.
pub(super) fn parse_host_name(
    s: &str,
    example: &str,
    wildcard_hint: &str,
) -> Result<String, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let invalid = |why: String| Err(format!("invalid host \"{s}\": {why}"));
    if let Some((scheme, _)) = text.split_once("://") {
        return invalid(format!(
            "write only the host name, without \"{scheme}://\", e.g. \"{example}\""
        ));
    }
    if text.contains('/') {
        return invalid(format!(
            "write only the host name, without a path, e.g. \"{example}\""
        ));
    }
    if text.contains(':') {
        return invalid(format!(
            "write only the host name, without a port, e.g. \"{example}\""
        ));
    }
    if text.contains('*') {
        return invalid(format!("wildcards are not supported: {wildcard_hint}"));
    }
    let text = text.strip_suffix('.').unwrap_or(text);
    let host = match url::Host::parse(text) {
        Ok(url::Host::Domain(domain)) => domain,
        Ok(ip) => return Ok(ip.to_string()),
        Err(_) => {
            return invalid(format!(
                "not a valid host name; write it as e.g. \"{example}\""
            ));
        }
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return invalid(format!(
            "not a valid host name: use letters, digits, hyphens and dots, e.g. \"{example}\""
        ));
    }
    Ok(host)
}

/// A CSS selector as the article cleaner will use it; compiling it here
/// means a typo is a config error, not a rule that silently never matches.
pub fn parse_selector(s: &str) -> Result<String, String> {
    match dom_query::Matcher::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!(
            "invalid CSS selector \"{s}\": {}; {SELECTOR_HINT}",
            describe_selector_error(&format!("{:?}", e.kind))
        )),
    }
}

/// Turns the `Debug` form of a selector parse error
/// (`Custom(UnsupportedPseudoClassOrElement)`,
/// `Basic(UnexpectedToken(Delim('!')))`) into words ("unsupported pseudo
/// class or element", "unexpected token Delim('!')"): the selector crates
/// give their errors no `Display`.
pub(super) fn describe_selector_error(debug: &str) -> String {
    let inner = ["Basic(", "Custom("]
        .iter()
        .find_map(|wrapper| debug.strip_prefix(wrapper)?.strip_suffix(')'))
        .unwrap_or(debug);
    let (name, detail) = match inner.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')').unwrap_or(rest)),
        None => (inner, ""),
    };
    let mut words = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    if words == "end of input" {
        "it ends too early".to_owned()
    } else if detail.is_empty() {
        words
    } else {
        format!("{words} {detail}")
    }
}

/// Parses a duration such as `30s`, `15m`, `1h`, `1d`, `1h30m` or `500ms`.
///
/// A duration is one or more `<integer><unit>` parts, summed; spaces between
/// parts are allowed. Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`. A number
/// without a unit, a fraction, a sign or an unknown unit is an error. The
/// error is a complete message (`invalid duration "5x": write it as …`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration \"{s}\": {DURATION_HINT}");
    let text = s.trim();
    if text.starts_with('-') {
        return Err(format!("invalid duration \"{s}\": must not be negative"));
    }
    if text.is_empty() {
        return Err(invalid());
    }
    let too_large = || format!("invalid duration \"{s}\": too large");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| too_large())?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_end] {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(60 * 60).map(Duration::from_secs),
            "d" => n.checked_mul(24 * 60 * 60).map(Duration::from_secs),
            _ => return Err(invalid()),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(too_large)?;
        rest = rest[unit_end..].trim_start();
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, largest units
/// first: 5400s → `1h30m`, 90s → `1m30s`, 0 → `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// Parses a size such as `10MB`, `512KB`, `1GB`, `1MiB` or a plain number of
/// bytes (`1048576`).
///
/// Decimal units are powers of 1000 (`KB`, `MB`, `GB`, `TB`), binary units
/// powers of 1024 (`KiB`, `MiB`, `GiB`, `TiB`); `B` is bytes. Units are
/// case-insensitive and may follow a space. The error is a complete message.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size \"{s}\": {SIZE_HINT}");
    let text = s.trim();
    if text.starts_with('-') {
        return Err(format!("invalid size \"{s}\": must not be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(invalid());
    }
    let too_large = || format!("invalid size \"{s}\": too large");
    let n: u64 = text[..digits_end].parse().map_err(|_| too_large())?;
    let multiplier: u64 = match text[digits_end..]
        .trim_start()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    n.checked_mul(multiplier).ok_or_else(too_large)
}

/// A byte count for people, in decimal units with one decimal: `1.5 MB`,
/// `830 KB`, `12 B`. For display; [`parse_size`] reads whole numbers only.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = (n as u128 * 10 + size as u128 / 2) / size as u128;
            return match tenths % 10 {
                0 => format!("{} {unit}", tenths / 10),
                t => format!("{}.{t} {unit}", tenths / 10),
            };
        }
    }
    format!("{n} B")
}
