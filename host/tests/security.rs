//! The security model against a real host and agents on real sockets: agent identity is
//! (org, id), duplicate links do not flap, enrollment and revocation (also across a restart),
//! roles, tokens (`kid`, `nbf`, `aud`, JWKS), and the audit trail.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use logfleet_host::jwt::JwtConfig;
use logfleet_protocol::agent::{CLOSE_REVOKED, CLOSE_SUPERSEDED, HostFrame};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use testkit::raw_agent::{RawAgent, hello};
use testkit::{
    Api, InProcessAgent, LogDir, SECRET, Stack, TestHost, WsClient, agent_config, wait_for,
};
use uuid::Uuid;

/// Connects as an agent speaking the real protocol: hello, then the host's session set (its
/// ids). The HTTP status when the host refuses the upgrade.
async fn raw_agent(host: &TestHost, token: &str) -> Result<(RawAgent, Vec<String>), u16> {
    let mut agent = match RawAgent::connect(&host.agent_url(), token).await {
        Ok(agent) => agent,
        Err(e) => match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            Some(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(resp.status().as_u16());
            }
            _ => panic!("agent connect: {e}"),
        },
    };
    agent.send(&hello("raw", "raw.local", &[])).await.unwrap();
    loop {
        if let HostFrame::Sessions(specs) = agent.expect_frame().await {
            return Ok((agent, specs.into_iter().map(|s| s.id).collect()));
        }
    }
}

/// The close code the host ends a raw agent link with.
async fn close_code(agent: &mut RawAgent) -> u16 {
    u16::from(agent.expect_close().await.expect("a close frame").code)
}

/// Another org's agent token carrying an acme agent's UUID is another agent: it neither
/// takes over acme's link nor receives acme's sessions, and acme's session gets only acme's
/// lines (the cross-tenant injection the review reproduced).
#[tokio::test]
async fn another_orgs_token_with_the_same_uuid_touches_nothing_of_acme() {
    let stack = Stack::new().await;
    let session = stack
        .api
        .start_session(json!({"agent_id": "edge-1", "timeout_seconds": 60}))
        .await;
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        stack.api.token(),
        None,
    )
    .await;

    // evil's agent, same UUID, tailing its own machine's log.
    let evil_logs = LogDir::new();
    let forged = evil_logs.create("app.log", &[]);
    let evil_token = stack.host.agent_token("evil", stack.agent_id, "edge-1");
    let evil_agent = InProcessAgent::start(agent_config(
        &stack.host,
        evil_token.clone(),
        &[("nginx", &forged)],
    ));
    let evil = stack.host.api("evil", "mallory");
    evil.wait_agent_status(&stack.agent_id.to_string(), "online")
        .await;
    // A raw link with evil's token is told about no session at all.
    let (_evil_raw, specs) = raw_agent(&stack.host, &evil_token).await.unwrap();
    assert!(
        specs.is_empty(),
        "evil's link got acme's sessions: {specs:?}"
    );

    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    evil_logs
        .append("app.log", &["forged line from another tenant"])
        .await;
    stack.logs.append("nginx.log", &["genuine line"]).await;
    let log = client.expect_log().await;
    assert_eq!(log["message"], "genuine line", "{log}");
    stack
        .api
        .wait_agent_status(&stack.agent_id.to_string(), "online")
        .await;
    let (_, sessions) = evil.get("/api/v1/stream/sessions").await;
    assert_eq!(sessions["total"], 0, "{sessions}");
    let (status, _) = evil
        .post("/api/v1/stream/stop", &json!({"session_id": session["id"]}))
        .await;
    assert_eq!(status, 404);

    // Nothing of evil's, and no link flapping (`agent_disconnected` would come first: the
    // next message must be the log), reached acme's client.
    stack
        .logs
        .append("nginx.log", &["second genuine line"])
        .await;
    let log = client.expect_log().await;
    assert_eq!(log["message"], "second genuine line", "{log}");
    evil_agent.stop().await;
}

/// Two live links with one identity do not flap: the older is closed with 4009 and the
/// newer keeps the agent's sessions.
#[tokio::test]
async fn a_second_link_of_one_agent_supersedes_the_first_with_its_own_code() {
    let host = TestHost::start().await;
    let id = Uuid::new_v4();
    let token = host.agent_token("acme", id, "edge");
    let (mut first, _) = raw_agent(&host, &token).await.unwrap();
    let (_second, _) = raw_agent(&host, &token).await.unwrap();
    assert_eq!(close_code(&mut first).await, CLOSE_SUPERSEDED);
    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api
        .start_session(json!({"agent_id": id.to_string(), "timeout_seconds": 30}))
        .await;
    assert_eq!(session["status"], "active");
}

/// Enroll → stream → revoke: the revoked agent's sessions end, its link closes with 4010,
/// its token is refused (401) from then on, also after a host restart, and it leaves the
/// list. Users cannot enroll or revoke.
#[tokio::test]
async fn enrolled_agents_stream_and_revoked_ones_are_cut_off_for_good() {
    let mut host = TestHost::start().await;
    let admin = host.admin("acme", "root");
    let user = host.api("acme", "alice");
    let (status, body) = user
        .post("/api/v1/agents", &json!({"name": "edge-7"}))
        .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));

    let (status, enrolled) = admin
        .post(
            "/api/v1/agents",
            &json!({"name": "edge-7", "labels": {"env": "prod"}}),
        )
        .await;
    assert_eq!(status, 201, "{enrolled}");
    let agent_id = enrolled["agent_id"].as_str().unwrap().to_owned();
    let token = enrolled["token"].as_str().unwrap().to_owned();
    let (_, listed) = user.get("/api/v1/agents/edge-7").await;
    assert_eq!(
        listed["agent"]["status"], "offline",
        "listed before it connects"
    );
    assert_eq!(listed["agent"]["labels"]["env"], "prod");

    let logs = LogDir::new();
    let path = logs.create("app.log", &[]);
    let agent = InProcessAgent::start(agent_config(&host, token.clone(), &[("app", &path)]));
    user.wait_agent_status("edge-7", "online").await;
    let session = user
        .start_session(json!({"agent_id": "edge-7", "timeout_seconds": 60}))
        .await;
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        user.token(),
        None,
    )
    .await;
    testkit::sync(
        &logs,
        "app.log",
        |n| format!("hello from edge-7 #{n}"),
        &mut client,
    )
    .await;

    // A second raw link of the same agent, to watch the revocation's close code.
    let (mut raw, _) = raw_agent(&host, &token).await.unwrap();
    let (status, _) = user
        .send_delete(&format!("/api/v1/agents/{agent_id}"))
        .await;
    assert_eq!(status, 403, "a user cannot revoke");
    let (status, revoked) = admin.send_delete("/api/v1/agents/edge-7").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["agent_id"], agent_id.as_str());
    assert_eq!(revoked["sessions_ended"], 1);
    assert_eq!(close_code(&mut raw).await, CLOSE_REVOKED);
    let ended = client.expect_event("session_ended").await;
    assert_eq!(ended["reason"], "stopped");
    assert_eq!(raw_agent(&host, &token).await.err(), Some(401));
    let (status, _) = user.get(&format!("/api/v1/agents/{agent_id}")).await;
    assert_eq!(status, 404, "a revoked agent leaves the list");
    let (status, _) = user
        .post("/api/v1/stream/start", &json!({"agent_id": agent_id}))
        .await;
    assert_eq!(status, 404);
    agent.stop().await;

    host.restart_keeping_data(|_| {}).await;
    assert_eq!(raw_agent(&host, &token).await.err(), Some(401));
    let (_, list) = host.api("acme", "alice").get("/api/v1/agents").await;
    assert_eq!(list["total"], 0, "{list}");

    // An enrolled agent that was not revoked is still listed after the restart.
    let admin = host.admin("acme", "root");
    let (_, kept) = admin
        .post("/api/v1/agents", &json!({"name": "edge-8"}))
        .await;
    host.restart_keeping_data(|_| {}).await;
    let (status, listed) = host
        .api("acme", "alice")
        .get(&format!(
            "/api/v1/agents/{}",
            kept["agent_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((status, &listed["agent"]["name"]), (200, &json!("edge-8")));
    let (status, _) = host
        .admin("acme", "root")
        .post("/api/v1/agents", &json!({"name": ""}))
        .await;
    assert_eq!(status, 400);
}

/// A link that upgraded before its agent was revoked, and says hello only afterwards, is
/// closed with 4010 and never listed: revocation cannot be outrun by holding a connection open.
#[tokio::test]
async fn a_link_that_says_hello_after_its_revocation_is_closed() {
    let host = TestHost::start().await;
    let admin = host.admin("acme", "root");
    let (_, enrolled) = admin
        .post("/api/v1/agents", &json!({"name": "edge-5"}))
        .await;
    let token = enrolled["token"].as_str().unwrap();
    // Upgraded (the token was still good), hello held back.
    let mut agent = RawAgent::connect(&host.agent_url(), token).await.unwrap();
    let (status, _) = admin.send_delete("/api/v1/agents/edge-5").await;
    assert_eq!(status, 200);
    agent
        .send(&hello("edge-5", "edge-5.local", &[]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut agent).await, CLOSE_REVOKED);
    let (_, list) = host.api("acme", "alice").get("/api/v1/agents").await;
    assert_eq!(list["total"], 0, "{list}");
}

/// A UUID this host has never seen can be revoked (a stolen token refused before its agent
/// connects here); another org's revocation of the same UUID does not touch this org's agent.
#[tokio::test]
async fn revocation_is_per_org_and_works_for_unseen_agents() {
    let host = TestHost::start().await;
    let id = Uuid::new_v4();
    let (status, _) = host
        .admin("evil", "mallory")
        .send_delete(&format!("/api/v1/agents/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        raw_agent(&host, &host.agent_token("evil", id, "x"))
            .await
            .err(),
        Some(401)
    );
    let acme = raw_agent(&host, &host.agent_token("acme", id, "x")).await;
    assert!(acme.is_ok(), "acme's agent of that UUID still connects");
    let (status, _) = host
        .admin("acme", "root")
        .send_delete("/api/v1/agents/no-such-name")
        .await;
    assert_eq!(status, 404);
}

/// Roles: plugin upload/delete and the audit trail are admin-only (403 `forbidden` for a
/// user); a user stops only the sessions it started, an admin any of the org.
#[tokio::test]
async fn users_stop_their_own_sessions_and_admins_any() {
    let stack = Stack::new().await;
    let bob = stack.host.api("acme", "bob");
    for (status, body) in [
        bob.post_raw("/api/v1/plugins?name=x", b"not wasm".to_vec())
            .await,
        bob.send_delete("/api/v1/plugins/x").await,
        bob.get("/api/v1/audit").await,
    ] {
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("forbidden")),
            "{body}"
        );
    }

    let start = json!({"agent_id": "edge-1", "timeout_seconds": 60});
    let first = stack.api.start_session(start.clone()).await;
    let stop = |s: &Value| json!({"session_id": s["id"]});
    let (status, body) = bob.post("/api/v1/stream/stop", &stop(&first)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let (status, _) = stack.api.post("/api/v1/stream/stop", &stop(&first)).await;
    assert_eq!(status, 200, "alice stops her own session");
    let second = stack.api.start_session(start).await;
    let (status, _) = stack
        .admin
        .post("/api/v1/stream/stop", &stop(&second))
        .await;
    assert_eq!(status, 200, "an admin stops anyone's session");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(org: &str, role: &str, extra: Value) -> Value {
    let mut c =
        json!({"sub": "idp-user", "org": org, "role": role, "exp": now() + 300, "aud": "logfleet"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens: `kid` picks the HS256 secret (rotation), `nbf` in the future is refused, `aud` is
/// required when the host has an audience, and RS256/ES256 user tokens from an identity
/// provider's JWKS are accepted — bound to their org, never as agents, never with the
/// algorithm swapped.
#[tokio::test]
async fn tokens_with_kid_nbf_aud_and_jwks_keys_behave_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = "rotated-secret-rotated-secret-0123456789";
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        json!({"signing_kid": "2026-12", "secrets": {"2026-12": rotated}}).to_string(),
    )
    .unwrap();

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let ec_key = EncodingKey::from_ec_der(pkcs8.as_ref());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let rsa_key =
        EncodingKey::from_rsa_der(&std::fs::read(fixtures.join("rsa-test-key.der")).unwrap());
    let rsa_jwk: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("rsa-test-key.jwk.json")).unwrap())
            .unwrap();
    let jwks = dir.path().join("jwks.json");
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "idp-ec", "org": "acme",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    std::fs::write(&jwks, json!({"keys": [ec_jwk, rsa_jwk]}).to_string()).unwrap();

    let mut jwt = JwtConfig::default();
    jwt.load_secrets_file(&secrets).unwrap();
    jwt.load_jwks_file(&jwks).unwrap();
    jwt.audience = Some("logfleet".into());
    let host = TestHost::start_with(move |c| c.jwt = jwt).await;
    let call = |token: String| {
        let api = Api::new(&host.base, Some(token));
        async move { api.get("/api/v1/agents").await }
    };
    let status = |token: String| async move { call(token).await.0 };
    let primary = EncodingKey::from_secret(SECRET.as_bytes());
    let rotated_key = EncodingKey::from_secret(rotated.as_bytes());

    let hs = |kid, key: &EncodingKey, c: &Value| sign(Algorithm::HS256, kid, key, c);
    let user = claims("acme", "user", json!({}));
    assert_eq!(
        status(hs(None, &primary, &user)).await,
        200,
        "primary secret, no kid"
    );
    assert_eq!(
        status(hs(Some("2026-12"), &rotated_key, &user)).await,
        200,
        "kid"
    );
    assert_eq!(
        status(hs(Some("2026-06"), &rotated_key, &user)).await,
        401,
        "unknown kid"
    );
    assert_eq!(
        status(hs(Some("2026-12"), &primary, &user)).await,
        401,
        "wrong key for kid"
    );
    let (code, body) = call(hs(
        None,
        &primary,
        &claims("acme", "user", json!({"nbf": now() + 600})),
    ))
    .await;
    assert_eq!(
        (code, body["error"]["message"].as_str()),
        (401, Some("token is not valid yet (nbf)"))
    );
    let mut no_aud = user.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        status(hs(None, &primary, &no_aud)).await,
        401,
        "aud required"
    );
    assert_eq!(
        status(hs(
            None,
            &primary,
            &claims("acme", "user", json!({"aud": "other"}))
        ))
        .await,
        401
    );
    let mut no_exp = user.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        status(hs(None, &primary, &no_exp)).await,
        401,
        "exp required"
    );

    // The host's own minting uses the signing kid.
    let minted = host.user_token("acme", "alice");
    assert_eq!(status(minted).await, 401, "testkit mints without aud");

    let es = |kid, c: &Value| sign(Algorithm::ES256, kid, &ec_key, c);
    assert_eq!(
        status(es(Some("idp-ec"), &user)).await,
        200,
        "ES256 from the JWKS"
    );
    let admin = claims("acme", "admin", json!({}));
    let (code, _) = Api::new(&host.base, Some(es(Some("idp-ec"), &admin)))
        .get("/api/v1/audit")
        .await;
    assert_eq!(code, 200, "an identity provider may mint admins of its org");
    assert_eq!(
        status(es(Some("idp-ec"), &claims("evil", "user", json!({})))).await,
        401,
        "a key bound to acme mints for acme only"
    );
    assert_eq!(
        status(sign(Algorithm::RS256, Some("idp-rsa"), &rsa_key, &user)).await,
        200,
        "RS256 from the JWKS"
    );
    assert_eq!(
        status(sign(Algorithm::RS256, Some("idp-ec"), &rsa_key, &user)).await,
        401,
        "alg must fit the key the kid names"
    );
    // Algorithm confusion: the RSA public key used as an HMAC secret.
    let public_as_secret = EncodingKey::from_secret(rsa_jwk_n(&fixtures).as_bytes());
    assert_eq!(
        status(hs(Some("idp-rsa"), &public_as_secret, &user)).await,
        401
    );
    let agent_claims = claims("acme", "agent", json!({"sub": Uuid::new_v4().to_string()}));
    assert_eq!(
        raw_agent(&host, &es(Some("idp-ec"), &agent_claims))
            .await
            .err(),
        Some(401),
        "identity-provider tokens never connect agents"
    );
}

fn rsa_jwk_n(fixtures: &std::path::Path) -> String {
    let jwk: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("rsa-test-key.jwk.json")).unwrap())
            .unwrap();
    jwk["n"].as_str().unwrap().to_owned()
}

/// Who did what is recorded and readable by the org's admins only: session start and stop,
/// plugin and agent changes, refused authentication, with the actor and what was touched.
#[tokio::test]
async fn the_audit_trail_records_who_did_what_per_org() {
    let stack = Stack::new().await;
    let session = stack
        .api
        .start_session(
            json!({"agent_id": "edge-1", "timeout_seconds": 60, "filters": {"level": ["ERROR"]}}),
        )
        .await;
    stack
        .api
        .post("/api/v1/stream/stop", &json!({"session_id": session["id"]}))
        .await;
    let (_, enrolled) = stack
        .admin
        .post("/api/v1/agents", &json!({"name": "edge-9"}))
        .await;
    stack
        .admin
        .send_delete(&format!(
            "/api/v1/agents/{}",
            enrolled["agent_id"].as_str().unwrap()
        ))
        .await;
    let (status, _) = stack
        .host
        .api("acme", "bob")
        .send_delete("/api/v1/plugins/x")
        .await;
    assert_eq!(status, 403);

    let events = wait_for(|| async {
        let (_, page) = stack.admin.get("/api/v1/audit").await;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        (events.len() >= 5).then_some(events)
    })
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "auth_refused",
            "agent_revoke",
            "agent_enroll",
            "session_stop",
            "session_start"
        ],
        "newest first"
    );
    let start = &events[4];
    assert_eq!(start["actor"], "alice");
    assert_eq!(start["org"], "acme");
    assert_eq!(start["details"]["session_id"], session["id"]);
    assert_eq!(start["details"]["filters"]["levels"], json!(["ERROR"]));
    assert_eq!(events[0]["actor"], "bob");

    let (_, filtered) = stack
        .admin
        .get("/api/v1/audit?kind=session_stop&actor=alice")
        .await;
    assert_eq!(
        filtered["events"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    let (status, _) = stack.admin.get("/api/v1/audit?kind=nonsense").await;
    assert_eq!(status, 400);
    let (_, other) = stack
        .host
        .admin("evil", "mallory")
        .get("/api/v1/audit")
        .await;
    assert_eq!(
        other["events"],
        json!([]),
        "another org sees none of acme's trail"
    );
}
