//! Host name ranges: `px[1:8]-ops`, `px[1,2,3,4]-ops`, `node[01:12]`, `px[1:3,7]`.
//!
//! One bracket group per name holds comma-separated items; an item is a number or an inclusive
//! range `start:end`. A range whose start has a leading zero keeps the width of the start
//! (`node[01:12]` gives `node01` … `node12`); a single number is kept as written.

/// The most names one entry may expand to: a guard against typos such as `px[1:10000000]`.
pub const MAX_EXPANSION: usize = 10_000;

/// Expands a host name with at most one `[...]` group into the names it stands for, in order.
///
/// A name without brackets is returned as is. Errors are messages meant for the user, such as
/// `empty range px[3:1]: 3 is greater than 1`.
///
/// ```
/// # use roll::inventory::expand_range;
/// assert_eq!(expand_range("px[1:3]-ops").unwrap(), ["px1-ops", "px2-ops", "px3-ops"]);
/// assert_eq!(expand_range("node[09:10]").unwrap(), ["node09", "node10"]);
/// ```
pub fn expand_range(name: &str) -> Result<Vec<String>, String> {
    let Some(open) = name.find('[') else {
        if name.contains(']') {
            return Err(format!("malformed host name {name}: ']' without '['"));
        }
        return Ok(vec![name.to_string()]);
    };
    let prefix = &name[..open];
    if prefix.contains(']') {
        return Err(format!("malformed host name {name}: ']' before '['"));
    }
    let rest = &name[open + 1..];
    let Some(close) = rest.find(']') else {
        return Err(format!("malformed range in {name}: missing ']'"));
    };
    let body = &rest[..close];
    let suffix = &rest[close + 1..];
    if body.contains('[') {
        return Err(format!("malformed range in {name}: nested '['"));
    }
    if suffix.contains('[') || suffix.contains(']') {
        return Err(format!(
            "malformed host name {name}: only one [...] range is allowed per name"
        ));
    }
    if body.trim().is_empty() {
        return Err(format!(
            "malformed range in {name}: nothing between the brackets"
        ));
    }
    let mut names = Vec::new();
    for item in body.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("malformed range in {name}: empty item in the list"));
        }
        for number in expand_item(item, name)? {
            if names.len() >= MAX_EXPANSION {
                return Err(format!(
                    "range in {name} gives more than {MAX_EXPANSION} hosts"
                ));
            }
            names.push(format!("{prefix}{number}{suffix}"));
        }
    }
    Ok(names)
}

/// The numbers, as text, of one list item: `7` or `1:8` or `01:12`.
fn expand_item(item: &str, name: &str) -> Result<Vec<String>, String> {
    let Some((start_text, end_text)) = item.split_once(':') else {
        bound(item, name)?;
        return Ok(vec![item.to_string()]);
    };
    if end_text.contains(':') {
        return Err(format!(
            "malformed range {item:?} in {name}: expected start:end"
        ));
    }
    let (start_text, end_text) = (start_text.trim(), end_text.trim());
    let start = bound(start_text, name)?;
    let end = bound(end_text, name)?;
    if start > end {
        return Err(format!("empty range {name}: {start} is greater than {end}"));
    }
    // `end - start` cannot overflow (start <= end); `+ 1` could, for px[0:18446744073709551615].
    if end - start >= MAX_EXPANSION as u64 {
        return Err(format!(
            "range in {name} gives more than {MAX_EXPANSION} hosts"
        ));
    }
    let width = if start_text.len() > 1 && start_text.starts_with('0') {
        start_text.len()
    } else {
        0
    };
    Ok((start..=end).map(|n| format!("{n:0width$}")).collect())
}

/// One bound of a range: decimal digits only.
fn bound(text: &str, name: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err(format!("malformed range in {name}: missing number"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid range bound {text:?} in {name}: expected a number"
        ));
    }
    text.parse()
        .map_err(|_| format!("invalid range bound {text:?} in {name}: number too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str) -> Vec<String> {
        match expand_range(name) {
            Ok(names) => names,
            Err(err) => panic!("{name}: {err}"),
        }
    }

    fn err(name: &str) -> String {
        match expand_range(name) {
            Ok(names) => panic!("{name} should fail, gave {names:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn plain_name() {
        assert_eq!(ok("pxatx1-ops"), ["pxatx1-ops"]);
    }

    #[test]
    fn inclusive_range() {
        assert_eq!(
            ok("px[1:4]-ops"),
            ["px1-ops", "px2-ops", "px3-ops", "px4-ops"]
        );
        assert_eq!(ok("px[5:5]"), ["px5"]);
        assert_eq!(ok("[1:2]x"), ["1x", "2x"]);
    }

    #[test]
    fn list() {
        assert_eq!(
            ok("bunny[1,2]-dev.cmc"),
            ["bunny1-dev.cmc", "bunny2-dev.cmc"]
        );
        assert_eq!(ok("px[4,1, 3]"), ["px4", "px1", "px3"]);
    }

    #[test]
    fn list_with_ranges() {
        assert_eq!(ok("px[1:3,7]"), ["px1", "px2", "px3", "px7"]);
    }

    #[test]
    fn zero_padded() {
        let names = ok("node[01:12]");
        assert_eq!(names.len(), 12);
        assert_eq!(names[0], "node01");
        assert_eq!(names[8], "node09");
        assert_eq!(names[11], "node12");
        assert_eq!(ok("n[098:100]"), ["n098", "n099", "n100"]);
        assert_eq!(ok("n[0:2]"), ["n0", "n1", "n2"]);
        assert_eq!(ok("n[007,8]"), ["n007", "n8"]);
        assert_eq!(ok("n[8:010]"), ["n8", "n9", "n10"]);
    }

    #[test]
    fn empty_range() {
        assert_eq!(err("px[3:1]"), "empty range px[3:1]: 3 is greater than 1");
        assert_eq!(
            err("px[1,5:2]"),
            "empty range px[1,5:2]: 5 is greater than 2"
        );
    }

    #[test]
    fn malformed() {
        assert!(err("px[1:4").contains("missing ']'"));
        assert!(err("px1:4]").contains("']' without '['"));
        assert!(err("px[]").contains("nothing between the brackets"));
        assert!(err("px[1][2]").contains("only one [...] range"));
        assert!(err("px[[1]]").contains("nested"));
        assert!(err("px]1[").contains("']' before '['"));
        assert!(err("px[1,,2]").contains("empty item"));
        assert!(err("px[1:2:3]").contains("expected start:end"));
        assert!(err("px[:3]").contains("missing number"));
        assert!(err("px[1:]").contains("missing number"));
    }

    #[test]
    fn non_numeric() {
        assert_eq!(
            err("px[a:3]"),
            "invalid range bound \"a\" in px[a:3]: expected a number"
        );
        assert!(err("px[1:b]").contains("\"b\""));
        assert!(err("px[-1:3]").contains("\"-1\""));
        assert!(err("px[x]").contains("expected a number"));
        assert!(err("px[99999999999999999999999]").contains("too large"));
    }

    #[test]
    fn too_many() {
        assert!(err("px[1:10001]").contains("more than 10000"));
        assert!(err("px[1:5000,1:5001]").contains("more than 10000"));
        assert_eq!(ok("px[1:10000]").len(), 10_000);
        // The widest bounds that parse: the count must not overflow (it panicked).
        assert!(err("px[0:18446744073709551615]").contains("more than 10000"));
        assert_eq!(
            ok("px[18446744073709551615:18446744073709551615]"),
            ["px18446744073709551615"]
        );
    }
}
