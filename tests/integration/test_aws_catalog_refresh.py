"""sky catalog refresh aws: the provisioner's aws plugin reads EC2's instance types and zone
offerings (boto3 against a moto server, which serves real instance-type data) and the CLI
imports them into the broker's catalog."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.aws_moto import shared_moto
from helpers import run_sky


def test_refresh_imports_the_clouds_catalog(tmp_path: Path) -> None:
    moto = shared_moto()
    env = {**moto.env(), "STYX_AWS_REGIONS": "us-east-1"}
    home = tmp_path / "home"
    try:
        refreshed = run_sky(["catalog", "refresh", "aws"], home, **env)
        assert refreshed.returncode == 0, refreshed.stderr
        assert "aws" in refreshed.stdout
        listed = run_sky(["catalog", "list", "--json"], home, **env)
        aws = next(c for c in json.loads(listed.stdout) if c["provider"] == "aws")
        assert aws["source"] == "imported" and aws["offers"] > 100 and aws["regions"] == 1
        dry = run_sky(["launch", "--dryrun", "--gpus", "A10G:1", "--infra", "aws", "--", "nvidia-smi"], home, **env)
        assert dry.returncode == 0, dry.stderr
        assert "g5." in dry.stdout  # the refreshed catalog knows EC2's A10G instance types
        local = run_sky(["catalog", "refresh", "local"], home, **env)
        assert local.returncode == 1 and "cannot list its catalog" in local.stderr
    finally:
        run_sky(["local", "down"], home, **env)


def test_cluster_launch_and_down_leave_no_instance(tmp_path: Path) -> None:
    """sky launch -c NAME --infra aws creates a tagged EC2 instance; sky down NAME terminates it."""
    from helpers import wait_until

    moto = shared_moto()
    moto.reset()
    env = {**moto.env(), "STYX_AWS_REGIONS": "us-east-1"}
    home = tmp_path / "home"
    try:
        launched = run_sky(
            ["launch", "-c", "awsdev", "--infra", "aws/us-east-1", "--cpus", "4", "-d", "--", "echo", "hi"], home, **env
        )
        assert launched.returncode == 0, launched.stderr
        assert "cluster awsdev:" in launched.stderr
        (instance,) = wait_until(lambda: moto.styx_instances(), timeout=60, message="the cluster's instance")
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["styx-managed"] == "true" and tags["styx-node-id"].startswith("node-")
        down = run_sky(["down", "awsdev"], home, **env)
        assert down.returncode == 0 and "awsdev: DOWN" in down.stdout
        wait_until(lambda: not moto.styx_instances(), timeout=60, message="no live Styx instance")
    finally:
        run_sky(["local", "down"], home, **env)
