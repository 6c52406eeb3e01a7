//! Best-effort lookup of the line of a dotted key in YAML text.

/// The 1-based line of a dotted key (`gateway.grpc_server.listen`,
/// `destination.gateways[1].uri`) in YAML `text`, best effort: block-style
/// mappings and sequences only. When the full path is not found, the line of
/// the deepest prefix that is found (so a missing key points at its parent);
/// `None` when not even the first component is found.
pub fn find_key_line(text: &str, dotted_key: &str) -> Option<u64> {
    let steps = parse_steps(dotted_key);
    // Indent of the last matched node; indent of its direct children (keys,
    // or the dashes of its sequence items); items of that sequence seen.
    let mut step = 0usize;
    let mut scope: Option<usize> = None;
    let mut child_indent: Option<usize> = None;
    let mut seen_items = 0usize;
    let mut best = None;
    for (n, raw) in text.lines().enumerate() {
        let lineno = u64::try_from(n).unwrap_or(u64::MAX - 1) + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty()
            || trimmed.starts_with('#')
            || trimmed.starts_with("---")
            || trimmed.starts_with("...")
        {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut content = trimmed;
        // A line `- key: v` is a sequence item whose first key sits at the
        // dash's indent + 2: it is processed twice (the dash, then the key).
        loop {
            let Some(current) = steps.get(step) else {
                return best;
            };
            let dash = content == "-" || content.starts_with("- ");
            match current {
                Step::Index(wanted) => {
                    if dash && scope.is_none_or(|s| indent >= s) {
                        let item_indent = *child_indent.get_or_insert(indent);
                        if indent == item_indent {
                            if seen_items == *wanted {
                                best = Some(lineno);
                                scope = Some(indent);
                                child_indent = None;
                                seen_items = 0;
                                step += 1;
                                let rest = content.get(1..).unwrap_or("");
                                let inner = rest.trim_start();
                                indent += 1 + rest.len() - inner.len();
                                content = inner;
                                if content.is_empty() || content.starts_with('#') {
                                    break;
                                }
                                continue;
                            }
                            seen_items += 1;
                        }
                    } else if scope.is_some_and(|s| indent <= s) {
                        return best;
                    }
                    break;
                }
                Step::Key(name) => {
                    if scope.is_some_and(|s| indent <= s) {
                        return best;
                    }
                    let key_indent = *child_indent.get_or_insert(indent);
                    if indent == key_indent && !dash && yaml_key(content) == Some(*name) {
                        best = Some(lineno);
                        scope = Some(indent);
                        child_indent = None;
                        step += 1;
                    }
                    break;
                }
            }
        }
    }
    best
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[1][2].c` → Key(a), Key(b), Index(1), Index(2), Key(c).
fn parse_steps(dotted_key: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in dotted_key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if !name.is_empty() {
            steps.push(Step::Key(name));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((num, after)) = inner.split_once(']') else {
                break;
            };
            if let Ok(i) = num.parse() {
                steps.push(Step::Index(i));
            }
            rest = after;
        }
    }
    steps
}

/// The key of a `key: value` / `key:` line, unquoted.
fn yaml_key(content: &str) -> Option<&str> {
    let (key, _) = content.split_once(':')?;
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(key);
    Some(key)
}
