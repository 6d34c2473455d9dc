//! HTTPS (issue 14), with certificates made in the test: the CA's clients get in over TLS
//! 1.3 and 1.2, plain HTTP to the port gets nothing, a certificate replaced on disk is
//! served after SIGHUP (or by itself within seconds) while the ledger goes on, a broken
//! replacement changes nothing, and with a client CA only its certificates get in.

use e2e::server::{eventually, invoice, metric, small_grant, Options, Server, Tokens};
use e2e::tls::{der, HttpsClient, TestCa};
use std::time::Duration;

/// A server with tokens serving HTTPS from a certificate of `ca` (and its tokens, which must
/// outlive it).
fn tls_server(dir: &std::path::Path, ca: &TestCa, extra: &[&str]) -> (Server, e2e::tls::Issued, Tokens) {
    let cert = ca.issue(dir, "server", "ledger one", &["localhost", "127.0.0.1"]);
    let mut args: Vec<String> = vec!["--tls-cert".into(), cert.cert.display().to_string(), "--tls-key".into(), cert.key.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), args, ..Options::default() });
    (server, cert, tokens)
}

#[test]
fn https_with_the_ca_over_tls_13_and_12_and_nothing_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (server, cert, _tokens) = tls_server(dir.path(), &ca, &[]);
    assert!(server.stdout.lock().unwrap().contains("listening on https://127.0.0.1:"));
    let client = HttpsClient { token: server.token.clone(), ..HttpsClient::trusting(&ca.pem) };
    let reply = client.get(server.port, "/healthz").expect("HTTPS with the CA");
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("ok")));
    assert_eq!(reply.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(reply.server_cert, der(&cert.cert_pem));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    let tls12 = HttpsClient { tls12_only: true, ..client.clone() };
    let reply = tls12.call(server.port, "POST", "/v1/events", Some(&small_grant("c").to_string())).expect("TLS 1.2");
    assert_eq!((reply.status, reply.version), (201, Some(rustls::ProtocolVersion::TLSv1_2)), "{}", reply.body);
    // A client that does not trust the CA refuses the server; plain HTTP gets no answer.
    let stranger = HttpsClient::trusting(&TestCa::new("another CA").pem);
    let err = stranger.get(server.port, "/healthz").expect_err("an untrusted certificate");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    let plain = server.try_call("GET", "/healthz", &[], None);
    assert!(plain.is_err() || plain.as_ref().is_ok_and(|r| r.status >= 400), "plain HTTP to the TLS port: {plain:?}");
    // Counted when the server's side of each handshake ends.
    eventually("both failed handshakes counted", Duration::from_secs(20), || {
        (metric(&client_metrics(&client, server.port), "tls_handshake_failures_total").unwrap_or(0.0) >= 2.0).then_some(())
    });
}

fn client_metrics(client: &HttpsClient, port: u16) -> String {
    client.get(port, "/metrics").expect("metrics").body
}

#[test]
fn a_replaced_certificate_is_served_after_sighup_and_the_ledger_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (server, first, _tokens) = tls_server(dir.path(), &ca, &[]);
    let client = HttpsClient { token: server.token.clone(), ..HttpsClient::trusting(&ca.pem) };
    let post = |body: String| client.call(server.port, "POST", "/v1/events", Some(&body)).expect("append");
    assert_eq!(post(small_grant("c").to_string()).status, 201);
    let pid = server.pid();

    // A new certificate (and key) written over the old files, then SIGHUP.
    let second = ca.issue(dir.path(), "rotated", "ledger two", &["localhost"]);
    std::fs::copy(&second.key, &first.key).unwrap();
    std::fs::copy(&second.cert, &first.cert).unwrap();
    server.sighup();
    eventually("the new certificate served", Duration::from_secs(20), || (client.get(server.port, "/healthz").ok()?.server_cert == der(&second.cert_pem)).then_some(()));
    assert_eq!(server.pid(), pid, "the same process");
    let reply = post(invoice("c", "AFTER-ROTATION", "1.00").to_string());
    assert_eq!((reply.status, reply.json()["seq"].as_u64()), (201, Some(2)), "{}", reply.body);
    assert!(server.stderr().contains("TLS certificate reloaded (SIGHUP)"), "{}", server.stderr());

    // A broken replacement is refused; the certificate in force stays.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    server.sighup();
    eventually("the failed reload counted", Duration::from_secs(20), || (metric(&client_metrics(&client, server.port), "tls_reload_failures_total")? >= 1.0).then_some(()));
    assert_eq!(client.get(server.port, "/healthz").unwrap().server_cert, der(&second.cert_pem));

    // Without a signal: the files are watched.
    let third = ca.issue(dir.path(), "third", "ledger three", &["localhost"]);
    std::fs::copy(&third.key, &first.key).unwrap();
    std::fs::copy(&third.cert, &first.cert).unwrap();
    eventually("the changed files picked up", Duration::from_secs(20), || (client.get(server.port, "/healthz").ok()?.server_cert == der(&third.cert_pem)).then_some(()));
    let head = client.get(server.port, "/v1/chain/head").unwrap().json();
    assert_eq!(head["seq"], 2, "nothing lost across three certificates");
}

#[test]
fn with_a_client_ca_only_its_certificates_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let client_ca = clients.write(dir.path(), "clients.pem");
    let (server, _, _tokens) = tls_server(dir.path(), &ca, &["--tls-client-ca", client_ca.to_str().unwrap()]);
    let base = HttpsClient { token: server.token.clone(), ..HttpsClient::trusting(&ca.pem) };
    // No certificate; one from another CA: refused during the handshake.
    let err = base.get(server.port, "/healthz").expect_err("no client certificate");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let rogue = TestCa::new("rogue CA").issue(dir.path(), "rogue", "rogue", &["rogue"]);
    let with_rogue = HttpsClient { identity: Some((rogue.cert_pem.clone(), rogue.key_pem.clone())), ..base.clone() };
    assert!(with_rogue.get(server.port, "/healthz").is_err(), "a certificate from another CA");
    // The client CA's certificate gets in (the token still decides the role).
    let machine = clients.issue(dir.path(), "machine", "billing-service", &["billing-service"]);
    let with_cert = HttpsClient { identity: Some((machine.cert_pem.clone(), machine.key_pem.clone())), ..base.clone() };
    let reply = with_cert.get(server.port, "/v1/chain/head").expect("mutual TLS");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let no_token = HttpsClient { token: None, ..with_cert };
    assert_eq!(no_token.get(server.port, "/v1/chain/head").unwrap().status, 401);
}
