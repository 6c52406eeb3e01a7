use std::{ffi::OsString, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use super::{values::resolve_secret_from, *};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Gateway {
    grpc_server: GrpcServer,
    #[serde(default)]
    stream_instances: Vec<Instance>,
    #[serde(default)]
    reconnect_delay: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct GrpcServer {
    listen: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    allowed_clients: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Instance {
    label: String,
    port: u16,
}

const FILE: &str = "/x/gw.yaml";

fn load(text: &str) -> Result<Gateway, ConfigError> {
    ConfigFile::from_text(Path::new(FILE), text).section("gateway")
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn loads_section_and_ignores_other_top_level_keys() {
    let text = "\
destination:
  whatever: [1, 2]
  not_checked: true
gateway:
  grpc_server:
    listen: 0.0.0.0:7000
    allowed_clients: [destination]
  stream_instances:
    - label: rs1
      port: 3301
  reconnect_delay: 1500ms
";
    let gw = load(text).unwrap();
    assert_eq!(gw.grpc_server.listen, "0.0.0.0:7000");
    assert_eq!(gw.stream_instances.len(), 1);
    assert_eq!(
        gw.reconnect_delay.map(ConfigDuration::get),
        Some(Duration::from_millis(1500))
    );
}

#[test]
fn unknown_key_names_file_line_parent_and_expected_keys() {
    let text = "\
# comment
gateway:
  grpc_server:
    lisen: 0.0.0.0:7000
";
    assert_eq!(
        err(text),
        "config /x/gw.yaml line 4: gateway.grpc_server: unknown field 'lisen', \
         expected one of listen, insecure, allowed_clients"
    );
    let e = load(text).unwrap_err();
    assert_eq!(e.line(), Some(4));
    assert_eq!(e.key(), Some("gateway.grpc_server"));
}

#[test]
fn missing_key_points_at_its_parent() {
    let text = "\
gateway:
  stream_instances: []
  grpc_server:
    insecure: true
";
    assert_eq!(
        err(text),
        "config /x/gw.yaml line 3: gateway.grpc_server: missing required field 'listen'"
    );
}

#[test]
fn bad_duration_names_key_and_line() {
    let text = "\
gateway:
  grpc_server: {listen: a}
  reconnect_delay: 20 seconds
";
    let e = err(text);
    assert!(
        e.starts_with("config /x/gw.yaml line 3: gateway.reconnect_delay: invalid duration"),
        "{e}"
    );
    assert!(e.contains("20s, 1500ms"), "{e}");
}

#[test]
fn wrong_type_in_a_list_item_has_index_in_path() {
    let text = "\
gateway:
  grpc_server: {listen: a}
  stream_instances:
    - label: rs1
      port: 3301
    - label: rs2
      port: lots
";
    assert_eq!(
        err(text),
        "config /x/gw.yaml line 7: gateway.stream_instances[1].port: invalid value 'lots', \
         expected u16"
    );
}

#[test]
fn wrong_shape_and_empty_section() {
    assert_eq!(
        err("gateway:\n  grpc_server: {listen: a}\n  stream_instances: {a: 1}\n"),
        "config /x/gw.yaml line 3: gateway.stream_instances: expected a list, found '{a: 1}'"
    );
    assert_eq!(
        err("gateway:\n"),
        "config /x/gw.yaml line 1: gateway: expected a mapping (key: value lines), found nothing"
    );
}

#[test]
fn missing_section_and_empty_file() {
    assert_eq!(
        err("destination:\n  a: 1\n"),
        "config /x/gw.yaml: missing top-level section 'gateway'"
    );
    assert_eq!(
        err(""),
        "config /x/gw.yaml: missing top-level section 'gateway'"
    );
    assert!(matches!(
        load("# nothing\n").unwrap_err(),
        ConfigError::MissingSection { .. }
    ));
}

#[test]
fn invalid_yaml_and_duplicate_keys() {
    let e = err("gateway:\n\tgrpc_server: {}\n");
    assert!(
        e.starts_with("config /x/gw.yaml line 2: invalid YAML: "),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    assert_eq!(
        err("gateway:\n  grpc_server: {listen: a}\n  grpc_server: {listen: b}\n"),
        "config /x/gw.yaml line 3: gateway: duplicate key 'grpc_server'"
    );
}

#[test]
fn load_section_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(
        &path,
        "gateway:\n  grpc_server:\n    listen: a\n    bad: 1\n",
    )
    .unwrap();
    let e = load_section::<Gateway>(&path, "gateway").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "config {} line 4: gateway.grpc_server: unknown field 'bad', expected one of \
             listen, insecure, allowed_clients",
            path.display()
        )
    );
    let missing = dir.path().join("nope.yaml");
    let e = load_section::<Gateway>(&missing, "gateway").unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "config {}: cannot read the file: ",
            missing.display()
        )),
        "{e}"
    );
}

#[test]
fn invalid_gets_file_and_line_from_key() {
    let text = "\
gateway:
  grpc_server:
    listen: nowhere
  stream_instances:
    - label: rs1
      port: 1
    - label: rs2
      port: 2
";
    let file = ConfigFile::from_text(Path::new(FILE), text);
    let e = parse_listen("gateway.grpc_server.listen", "nowhere")
        .unwrap_err()
        .in_file(&file);
    assert_eq!(e.line(), Some(3));
    assert!(
        e.to_string().starts_with(
            "config /x/gw.yaml line 3: gateway.grpc_server.listen: invalid listen address 'nowhere'"
        ),
        "{e}"
    );
    let e = file.invalid("gateway.stream_instances[1].label", "duplicate label");
    assert_eq!(
        e.to_string(),
        "config /x/gw.yaml line 7: gateway.stream_instances[1].label: duplicate label"
    );
    // Without a file: still one clear line.
    assert_eq!(
        ConfigError::invalid("worker.etcd", "no endpoints").to_string(),
        "config: worker.etcd: no endpoints"
    );
}

#[test]
fn find_key_line_cases() {
    let text = "\
gateway:
  grpc_server:
    # listen: commented out
    tls:
      cert_file: a
    listen: 1
  stream_instances:
  - label: rs1
    uris: [a]
  - label: rs2
    uris:
      - x
      - y
destination:
  grpc_server:
    listen: 2
";
    assert_eq!(find_key_line(text, "gateway"), Some(1));
    assert_eq!(find_key_line(text, "gateway.grpc_server.listen"), Some(6));
    assert_eq!(
        find_key_line(text, "gateway.grpc_server.tls.cert_file"),
        Some(5)
    );
    assert_eq!(
        find_key_line(text, "destination.grpc_server.listen"),
        Some(16)
    );
    assert_eq!(
        find_key_line(text, "gateway.stream_instances[0].label"),
        Some(8)
    );
    assert_eq!(
        find_key_line(text, "gateway.stream_instances[1].label"),
        Some(10)
    );
    assert_eq!(
        find_key_line(text, "gateway.stream_instances[1].uris[1]"),
        Some(13)
    );
    // Missing leaf: the deepest found prefix.
    assert_eq!(find_key_line(text, "gateway.grpc_server.missing"), Some(2));
    assert_eq!(find_key_line(text, "gateway.stream_instances[5]"), Some(7));
    assert_eq!(find_key_line(text, "worker.x"), None);
}

#[test]
fn durations() {
    let ok = [
        ("20s", Duration::from_secs(20)),
        ("1500ms", Duration::from_millis(1500)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        (" 10us ", Duration::from_micros(10)),
        ("1d", Duration::from_secs(86400)),
    ];
    for (text, d) in ok {
        assert_eq!(parse_duration(text), Ok(d), "{text}");
    }
    for bad in [
        "20",
        "s",
        "1.5s",
        "-1s",
        "20 sec",
        "",
        "99999999999999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ConfigDuration(Duration::from_millis(1500)).to_string(),
        "1500ms"
    );
    assert_eq!(ConfigDuration(Duration::from_secs(120)).to_string(), "2m");
    assert_eq!(ConfigDuration(Duration::ZERO).to_string(), "0s");
}

#[test]
fn duration_ranges_refuse_zero_and_huge_values_naming_the_key() {
    let range = DurationRange::new(Duration::from_millis(10), Duration::from_secs(60));
    let d = |text: &str| ConfigDuration(parse_duration(text).unwrap());
    assert_eq!(
        range.check("k", d("10ms")).unwrap(),
        Duration::from_millis(10)
    );
    assert_eq!(range.check("k", d("1m")).unwrap(), Duration::from_secs(60));
    for bad in ["0s", "9ms", "61s", "18446744073709551615s"] {
        let e = range.check("worker.poll_interval", d(bad)).unwrap_err();
        assert_eq!(e.key(), Some("worker.poll_interval"), "{bad}");
        let text = e.to_string();
        assert!(text.contains("from 10ms to 1m"), "{text}");
        assert!(!text.contains("off"), "{text}");
    }
    let off = range.or_off();
    assert_eq!(off.check("k", d("0s")).unwrap(), Duration::ZERO);
    let e = off.check("k", d("1h")).unwrap_err().to_string();
    assert!(
        e.contains("1h is out of range") && e.contains("(or 0s: off)"),
        "{e}"
    );
}

#[test]
fn listen_addresses() {
    let ok = [
        ("0.0.0.0:8080", "0.0.0.0:8080"),
        ("[::1]:9", "[::1]:9"),
        ("localhost:7000", "127.0.0.1:7000"),
        ("*:80", "0.0.0.0:80"),
        (":0", "0.0.0.0:0"),
    ];
    for (text, want) in ok {
        let want: SocketAddr = want.parse().unwrap();
        assert_eq!(parse_listen("k", text).unwrap(), want, "{text}");
    }
    for bad in ["8080", "example.com:80", "1.2.3.4:99999", "1.2.3.4"] {
        let e = parse_listen("gateway.http_server.listen", bad).unwrap_err();
        assert_eq!(e.key(), Some("gateway.http_server.listen"), "{bad}");
    }
}

#[test]
fn connect_addresses() {
    let ok = [
        ("10.0.0.5:3301", "10.0.0.5:3301"),
        ("[::1]:3301", "[::1]:3301"),
        (" tnt-1.dc1:3301 ", "tnt-1.dc1:3301"),
        ("localhost:3301", "localhost:3301"),
    ];
    for (text, want) in ok {
        assert_eq!(parse_host_port("k", text).unwrap(), want, "{text}");
    }
    for bad in [
        "3301",
        "host",
        "h:0",
        "h:70000",
        ":3301",
        "a b:1",
        "-h:1",
        "::1:3301x",
    ] {
        let e = parse_host_port("gateway.stream_instances[0].uri", bad).unwrap_err();
        assert_eq!(e.key(), Some("gateway.stream_instances[0].uri"), "{bad}");
    }
}

#[test]
fn endpoints() {
    let uri = parse_endpoint("k", "https://gw-a.example:8443").unwrap();
    assert_eq!(uri.host(), Some("gw-a.example"));
    assert_eq!(uri.port_u16(), Some(8443));
    assert!(parse_endpoint("k", "http://127.0.0.1:2379/").is_ok());
    for bad in [
        "127.0.0.1:2379",
        "ftp://h:1",
        "http://h",
        "http://h:1/path",
        "http://u:p@h:1",
        "http://h:1?q=1",
        "",
    ] {
        let e = parse_endpoint("worker.etcd.endpoints[0]", bad).unwrap_err();
        assert!(
            e.to_string().contains("worker.etcd.endpoints[0]"),
            "{bad}: {e}"
        );
    }
}

fn no_env(_: &str) -> Option<OsString> {
    None
}

#[test]
fn secret_is_hidden() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?} {s}"), "*** ***");
    assert_eq!(s.expose(), "hunter2");
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct User {
        password: Secret,
    }
    let u: User = serde_saphyr::from_str("password: hunter2\n").unwrap();
    assert_eq!(format!("{u:?}"), "User { password: *** }");
}

#[test]
fn secret_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "  from-file\n").unwrap();
    let env = |name: &str| (name == "TCF_PW").then(|| OsString::from("from-env"));
    let key = "destination.replication_user.password";

    // The variable wins over inline and over file.
    let s = resolve_secret_from(key, Some(Secret::new("inline")), None, "TCF_PW", env).unwrap();
    assert_eq!(s.expose(), "from-env");
    let s = resolve_secret_from(key, None, Some(&file), "TCF_PW", env).unwrap();
    assert_eq!(s.expose(), "from-env");
    // Unset variable: inline, else the trimmed file.
    let s = resolve_secret_from(key, Some(Secret::new("inline")), None, "OTHER", env).unwrap();
    assert_eq!(s.expose(), "inline");
    let s = resolve_secret_from(key, None, Some(&file), "", env).unwrap();
    assert_eq!(s.expose(), "from-file");

    // Both inline and file: an error even when the variable is set.
    let e =
        resolve_secret_from(key, Some(Secret::new("x")), Some(&file), "TCF_PW", env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config: destination.replication_user.password: give either 'password' or \
         'password_file', not both"
    );
    // None at all.
    let e = resolve_secret_from(key, None, None, "TCF_PW_UNSET", no_env).unwrap_err();
    assert!(e.to_string().contains("TCF_PW_UNSET"), "{e}");
    // Empty variable, unreadable file, empty file.
    let empty = |_: &str| Some(OsString::new());
    assert!(resolve_secret_from(key, None, Some(&file), "TCF_PW", empty).is_err());
    let e = resolve_secret_from(key, None, Some(&dir.path().join("nope")), "", no_env).unwrap_err();
    assert_eq!(e.key(), Some("destination.replication_user.password_file"));
    std::fs::write(&file, " \n").unwrap();
    assert!(resolve_secret_from(key, None, Some(&file), "", no_env).is_err());
    // The real environment is consulted by resolve_secret (PATH is set).
    let s = resolve_secret(key, Some(Secret::new("inline")), None, "PATH").unwrap();
    assert_ne!(s.expose(), "inline");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithSecrets {
    #[allow(dead_code)]
    replication_password: Option<Secret>,
    #[allow(dead_code)]
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[allow(dead_code)]
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    #[allow(dead_code)]
    token: Secret,
}

#[test]
fn a_secret_of_the_wrong_type_is_never_echoed() {
    let section = |text: &str| {
        ConfigFile::from_text(Path::new(FILE), text)
            .section::<WithSecrets>("gateway")
            .unwrap_err()
            .to_string()
    };
    for text in [
        "gateway:\n  replication_password: [hunter2, x]\n",
        "gateway:\n  replication_password: {hunter2: x}\n",
        "gateway:\n  tokens: [hunter2]\n",
        "gateway:\n  tokens: [{token: [hunter2]}]\n",
        "gateway:\n  tokens: [{token: {a: hunter2}}]\n",
    ] {
        let e = section(text);
        assert!(!e.contains("hunter2"), "{text}: {e}");
        assert!(e.contains("gateway."), "{text}: {e}");
    }
    // Other keys still show the value that was wrong.
    let e = section("gateway:\n  port: [notaport]\n");
    assert!(e.contains("gateway.port"), "{e}");
}

#[test]
fn metric_label_names_are_checked() {
    let labels = |names: &[&str]| {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "v".to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(
        check_metric_labels(
            "g.metrics_labels",
            &labels(&["dc", "_x", "a1"]),
            &["gateway"]
        )
        .is_ok()
    );
    for bad in ["", "1dc", "d-c", "__x", "gateway", "dc "] {
        let e = check_metric_labels("g.metrics_labels", &labels(&[bad]), &["gateway"]).unwrap_err();
        assert!(
            e.key().is_some_and(|k| k.starts_with("g.metrics_labels")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn mutate_keeps_utf8_and_applies_each_operation() {
    let base = "a: 1\nb: ж\n";
    assert_eq!(mutate(base, 0, 0, 0, "x"), "xa: 1\nb: ж\n");
    assert_eq!(mutate(base, 0, 1, 3, ""), "1\nb: ж\n");
    assert_eq!(mutate(base, 8, 2, 2, "q"), "a: 1\nb: q\n");
    assert_eq!(mutate(base, 9, 2, 1, "q"), "a: 1\nb: qж\n");
    assert_eq!(mutate(base, 1, 3, 0, ""), "a: 1\na: 1\nb: ж\n");
    // Offsets inside a multi-byte char and past the end are clamped.
    assert!(mutate(base, 10, 2, 1, "z").is_char_boundary(0));
    assert_eq!(mutate(base, 999, 0, 0, "!"), format!("{base}!"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// The YAML loader never panics on mutated input: a short fuzz run.
    #[test]
    fn mutated_yaml_never_panics(
        at in 0usize..300,
        op in 0u8..4,
        len in 0usize..30,
        text in "[ -~\n\t]{0,24}",
    ) {
        let base = "gateway:\n  grpc_server: {listen: \"127.0.0.1:1\", insecure: true}\n  stream_instances: [{label: a, port: 1}]\n  reconnect_delay: 20s\n";
        let _ = load(&mutate(base, at, op, len, &text));
    }
}

#[test]
fn instance_lists_are_normalised_grouped_and_checked_for_duplicates() {
    let e = |rs: &str, uri: &str| InstanceEntry {
        replicaset: rs.into(),
        uri: uri.into(),
    };
    let by = parse_instances(
        "g.stream_instances",
        &[
            e("rs1", " 127.0.0.1:3301 "),
            e("rs2", "[::1]:3302"),
            e("rs1", "tnt-2:3301"),
        ],
    )
    .unwrap();
    assert_eq!(by["rs1"], ["127.0.0.1:3301", "tnt-2:3301"]);
    assert_eq!(by["rs2"], ["[::1]:3302"]);
    let dup = parse_instances("k", &[e("a", "127.0.0.1:1"), e("b", "127.0.0.1:1 ")]).unwrap_err();
    assert_eq!(dup.key(), Some("k[1].uri"), "{dup}");
    let empty = parse_instances("k", &[e(" ", "127.0.0.1:1")]).unwrap_err();
    assert_eq!(empty.key(), Some("k[0].replicaset"));
    assert!(parse_instances("k", &[]).is_err());
}

#[test]
fn seeded_mutations_vary_and_repeat() {
    let base = "gateway:\n  cluster: A\n  poll_interval: 1s\n";
    let a: Vec<String> = mutations(base, 100, 3).collect();
    let distinct: std::collections::HashSet<&String> = a.iter().collect();
    assert!(distinct.len() > 60, "{} distinct of 100", distinct.len());
    assert_eq!(
        a,
        mutations(base, 100, 3).collect::<Vec<_>>(),
        "same seed, same list"
    );
}
