"""Node and join tokens: scoped to one node, expiring, each accepted only on its own RPCs."""

from __future__ import annotations

from styx.common.auth import mint_join_token, mint_node_token, node_of_join_token, node_of_token, token_accepted

SECRET = "s3cret-shared-token"


def test_node_token_names_its_node_and_verifies() -> None:
    token = mint_node_token(SECRET, "node-abc")
    assert SECRET not in token
    assert node_of_token(SECRET, token) == "node-abc"
    assert node_of_token("other-secret", token) is None  # rotating the shared token revokes it


def test_tampered_or_expired_tokens_are_refused() -> None:
    token = mint_node_token(SECRET, "node-abc")
    prefix, node, expiry, sig = token.split(".")
    assert node_of_token(SECRET, f"{prefix}.node-xyz.{expiry}.{sig}") is None
    assert node_of_token(SECRET, f"{prefix}.{node}.{int(expiry) + 9999}.{sig}") is None
    old = mint_node_token(SECRET, "node-abc", ttl_s=-10)
    assert node_of_token(SECRET, old) is None
    assert node_of_token(SECRET, "garbage") is None


def test_node_tokens_only_open_agent_rpcs() -> None:
    token = mint_node_token(SECRET, "node-abc")
    assert token_accepted(SECRET, token, "/styx.v1.AgentGateway/WorkStream")
    assert token_accepted(SECRET, token, "/styx.v1.ResourceBroker/Heartbeat")
    assert not token_accepted(SECRET, token, "/styx.v1.Scheduler/SubmitJob")
    assert not token_accepted(SECRET, token, "/styx.v1.ResourceBroker/Allocate")
    assert token_accepted(SECRET, SECRET, "/styx.v1.Scheduler/SubmitJob")
    assert not token_accepted(SECRET, "wrong", "/styx.v1.AgentGateway/WorkStream")


def test_boot_script_quotes_values_and_roundtrips() -> None:
    from styx.provisioner.bootstrap import agent_env, parse_startup_env, startup_script

    env = agent_env("node-1", "aws", "10.0.0.1:50051", "10.0.0.1:50052", SECRET, region="us-east-1")
    env["STYX_AGENT_LABELS"] = "a b; rm -rf /"
    script = startup_script(env, install="true")
    assert SECRET not in script
    assert "'a b; rm -rf /'" in script  # quoted, never executed
    assert parse_startup_env(script) == env
    assert "STYX_TOKEN" not in env
    assert node_of_join_token(SECRET, parse_startup_env(script)["STYX_JOIN_TOKEN"]) == "node-1"


def test_join_tokens_open_only_join_node_and_are_no_node_tokens() -> None:
    join = mint_join_token(SECRET, "node-abc")
    assert node_of_join_token(SECRET, join) == "node-abc"
    assert node_of_token(SECRET, join) is None  # a different signature domain
    assert node_of_join_token(SECRET, mint_node_token(SECRET, "node-abc")) is None
    assert token_accepted(SECRET, join, "/styx.v1.ResourceBroker/JoinNode")
    assert not token_accepted(SECRET, join, "/styx.v1.ResourceBroker/Heartbeat")
    assert not token_accepted(SECRET, join, "/styx.v1.AgentGateway/WorkStream")
    assert not token_accepted(SECRET, mint_node_token(SECRET, "node-abc"), "/styx.v1.ResourceBroker/JoinNode")
    assert node_of_join_token(SECRET, mint_join_token(SECRET, "node-abc", ttl_s=-10)) is None


def test_boot_script_installs_the_control_planes_ca_when_it_serves_tls() -> None:
    from styx.provisioner.bootstrap import CA_FILE, agent_env, parse_startup_env, startup_script

    pem = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"
    env = agent_env("node-1", "aws", "10.0.0.1:50051", "10.0.0.1:50052", SECRET)
    script = startup_script(env, install="true", ca_pem=pem)
    assert parse_startup_env(script)["STYX_TLS_CA"] == CA_FILE
    assert f"cat > {CA_FILE} <<'STYX_CA'\n{pem}\nSTYX_CA\n" in script
    assert "STYX_TLS_CA" not in parse_startup_env(startup_script(env, install="true"))
