use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").expect("defaults");
    assert_eq!(c.server.ws_port, DEFAULT_WS_PORT);
    assert_eq!(c.udpsocket_group.len(), 1);
    assert!(c.demo_enabled());
}

#[test]
fn unknown_key_is_named_with_file_and_line() {
    let e = parse("[server]\nws_port = 1\nbogus = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.toml"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("server.bogus"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse("[server]\nws_port = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.ws_port"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = parse("[server]\nhost = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.host"), "{e}");
    let e = parse("[[udpsocket_group]]\nip = \"1.2.3\"\nsecret_key = \"k\"\n").unwrap_err();
    assert!(e.to_string().contains("udpsocket_group[0].ip"), "{e}");
    let e = parse("[server]\nmax_message_size = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.max_message_size"), "{e}");
}

#[test]
fn tls_files_come_in_pairs() {
    let e = parse("[server]\nssl_cert_file = \"c.pem\"\n").unwrap_err();
    assert!(e.to_string().contains("server.ssl_key_file"), "{e}");
    let e = parse("[server]\nssl_key_file = \"k.pem\"\n").unwrap_err();
    assert!(e.to_string().contains("server.ssl_cert_file"), "{e}");
    let c = parse("[server]\nssl_cert_file = \"c.pem\"\nssl_key_file = \"k.pem\"\n").unwrap();
    assert!(c.tls_enabled());
    assert!(!Config::default().tls_enabled());
}

#[test]
fn proxy_lists_are_checked() {
    let e = parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]\n").unwrap_err();
    assert!(e.to_string().contains("server.trusted_proxies[1]"), "{e}");
    let e = parse("[server]\nmetrics_allow = [\"1.2.3.4/40\"]\n").unwrap_err();
    assert!(e.to_string().contains("server.metrics_allow[0]"), "{e}");
    let e = parse("[server]\nproxy_protocol = true\n").unwrap_err();
    assert!(e.to_string().contains("server.proxy_protocol"), "{e}");
    let c = parse("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true\n").unwrap();
    assert!(c.trusted_proxies().contains("10.2.3.4".parse().unwrap()));
    assert!(Config::default()
        .metrics_allow()
        .contains("127.0.0.1".parse().unwrap()));
}

#[test]
fn a_login_check_must_be_able_to_time_out_before_the_handshake_deadline() {
    let c = parse("").expect("defaults");
    assert!(c.server.task_timeout < c.server.handshake_timeout);
    for text in [
        "[server]\ntask_timeout = 5\n",
        "[server]\nhandshake_timeout = 3\ntask_timeout = 4\n",
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("server.task_timeout"), "{e}");
        assert!(e.contains("server.handshake_timeout"), "{e}");
    }
    parse("[server]\nhandshake_timeout = 2\ntask_timeout = 1\n").expect("1 s below");
}
