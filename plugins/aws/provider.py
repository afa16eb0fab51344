"""The AWS provider: each Styx node is one EC2 instance whose user data starts an agent.

What ``create`` does, in order:
1. Looks for a live instance tagged ``styx-request-id=<request_id>`` in the offer's region
   and returns it: a retried create (the provisioner restarted mid-call) never makes a
   second instance, whatever the endpoint does with ClientToken.
2. Otherwise calls RunInstances with ``ClientToken`` derived from the request id (EC2's own
   idempotency), the tags ``styx-node-id``, ``styx-request-id``, ``styx-managed=true``,
   ``Name`` and the request's labels on the instance and its volumes, the shared boot
   script (``styx.provider.boot``) as user data, IMDSv2 required, shutdown from
   inside = terminate, and ``InstanceMarketOptions`` for spot (one-time, terminate on
   interruption).
3. Waits (bounded) until the instance is running; one that dies while launching raises a
   classified ``ProviderError``.

Instance ids are plain EC2 ids (``i-0abc...``). The region of an id is remembered from
create / list_instances; an id not seen yet is looked up in every configured region.
``list_instances`` lists ``styx-managed=true`` instances of every configured region and
raises if any region cannot be listed (a partial answer would make the reconcile loop
think instances vanished). boto3 is imported lazily; see ``config.py`` for settings.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from styx.common.clock import Clock
from styx.provider import ProviderError, ProviderErrorKind, ProviderStatus
from styx.provider.base import ProviderBase
from styx.provider.boot import boot_script
from styx.provider.capabilities import Capabilities
from styx.provider.check import CachedCheck
from styx.provider.config import ConfigError
from styx.provider.hooks import hookimpl
from styx.provider.tags import TAG_MANAGED, TAG_NODE, TAG_REQUEST, TagRules, TextRule, instance_tags, user_tags
from styx.provider.types import PLANE_LABEL, CreateRequest, InstanceStatus, Offer, ProviderInstance
from styx_plugins.aws.config import AwsConfig
from styx_plugins.aws.errors import classify, error_code, kind_of_state_reason

log = logging.getLogger(__name__)

NAME = "aws"
INSTALL_HINT = "pip install 'styx[aws]'"
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run `aws configure` / `aws sso login`"
)
# EC2 tag rules: these characters, keys <= 128 and values <= 256 characters, no "aws:"
# prefix, 50 tags per resource of which Styx uses 4 (its three and "Name").
_TAG_TEXT = r"[^\w .:/=+\-@]"
EC2_TAGS = TagRules(
    key=TextRule(max_len=128, invalid=_TAG_TEXT),
    value=TextRule(max_len=256, invalid=_TAG_TEXT),
    max_tags=50,
    reserved_prefixes=("aws:",),
    reserved_keys=frozenset({"Name"}),
)
# States of an instance that still exists (costs money or may come back).
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
_STATUS = {
    "pending": InstanceStatus.PENDING,
    "running": InstanceStatus.RUNNING,
    # A stopped instance still exists and is still ours; it is not running an agent.
    "stopping": InstanceStatus.PENDING,
    "stopped": InstanceStatus.PENDING,
    "shutting-down": InstanceStatus.TERMINATING,
    "terminated": InstanceStatus.TERMINATED,
}
# A credentials lookup is cached this long: check() runs every reconcile pass and the
# chain may probe the instance metadata service, which is slow off EC2.
_CHECK_TTL_S = 60.0

T = TypeVar("T")


def client_token(request_id: str) -> str:
    """EC2 ClientToken for a request id: deterministic, ASCII, at most 64 characters."""
    return "styx-" + hashlib.sha256(request_id.encode()).hexdigest()[:59]


def sanitize_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels as EC2 tags (see ``EC2_TAGS``); Styx's own tags are never overridden."""
    return user_tags(labels, EC2_TAGS)


class AwsProvider(ProviderBase):
    """Creates Styx nodes as EC2 instances. Thread-safe (boto3 clients are; the session
    and the caches are guarded by a lock)."""

    name = NAME
    capabilities = Capabilities(stop_start=True, spot=True, multi_node=True, images=True, catalog=True)

    def __init__(self, config: AwsConfig | None = None, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._config = config
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._region_of: dict[str, str] = {}
        self._credentials_check = CachedCheck(self._probe_credentials, _CHECK_TTL_S, clock=self.clock)

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> AwsConfig:
        """The settings (read from the environment on first use unless given)."""
        with self._lock:
            if self._config is None:
                try:
                    self._config = AwsConfig.from_env()
                except ConfigError as exc:
                    raise ProviderError(ProviderErrorKind.INVALID, exc.reason) from None
            return self._config

    def _boto_session(self) -> Any:
        import boto3

        config = self.config
        with self._lock:
            if self._session is None:
                kwargs: dict[str, str] = {}
                if config.credentials is not None:
                    kwargs = {
                        "aws_access_key_id": config.credentials[0],
                        "aws_secret_access_key": config.credentials[1],
                    }
                self._session = boto3.session.Session(**kwargs)
            return self._session

    def _client(self, region: str) -> Any:
        from botocore.config import Config

        session = self._boto_session()
        config = self.config
        with self._lock:  # Session.client is not thread-safe; the clients it returns are
            client = self._clients.get(region)
            if client is None:
                client = session.client(
                    "ec2",
                    region_name=region,
                    endpoint_url=config.endpoint_url,
                    config=Config(
                        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
                        connect_timeout=10,
                        read_timeout=60,
                        user_agent_extra="styx",
                    ),
                )
                self._clients[region] = client
            return client

    # -- Provider interface ----------------------------------------------------------------

    def check(self) -> ProviderStatus:
        """Enabled when boto3 imports, the settings parse and credentials are found.

        Makes no API call (it runs on every reconcile pass); bad or expired credentials
        show up as AUTH errors from create instead.
        """
        try:
            import boto3  # noqa: F401  (only whether it imports)
        except ImportError:
            return ProviderStatus(False, "boto3 (the AWS SDK) is not installed", INSTALL_HINT)
        try:
            config = self.config
        except ProviderError as exc:
            return ProviderStatus(False, f"bad AWS setting: {exc.message}", "fix the STYX_AWS_* variable named")
        if not config.regions:
            return ProviderStatus(False, "no AWS regions configured", "set STYX_AWS_REGIONS, e.g. us-east-1")
        return self._credentials_check()

    def _probe_credentials(self) -> ProviderStatus:
        try:
            credentials = self._boto_session().get_credentials()
        except Exception as exc:  # a broken profile or config file must not crash the provisioner
            return ProviderStatus(
                False, f"AWS credentials could not be loaded ({type(exc).__name__})", CREDENTIALS_HINT
            )
        if credentials is None:
            with self._lock:
                self._session = None  # a fresh session re-reads the chain next time
            return ProviderStatus(False, "no AWS credentials found", CREDENTIALS_HINT)
        return ProviderStatus(True)

    def create_instance(self, request: CreateRequest) -> str:
        """Create (or find, for a repeated request id) the instance of the request's node."""
        offer, node_id, request_id = request.offer, request.node_id, request.request_id
        if not offer.instance_type:
            raise ProviderError(ProviderErrorKind.INVALID, "offer has no instance type, e.g. t3.medium")
        region = offer.region or self.config.regions[0]
        if region not in self.config.regions:
            raise ProviderError(
                ProviderErrorKind.INVALID,
                f"region {region} is not in STYX_AWS_REGIONS ({','.join(self.config.regions)}); add it there so "
                "Styx can watch instances it creates in it",
            )
        client = self._client(region)
        instance_id = self._find_by_request(client, region, request_id)
        if instance_id:
            log.info("instance exists for this request", extra={"node_id": node_id, "instance_id": instance_id})
        else:
            instance_id = self._run_instance(client, region, request)
        self._remember(instance_id, region)
        self._wait_running(client, region, instance_id)
        return instance_id

    def terminate(self, instance_id: str) -> None:
        """Terminate the instance; one that is gone (or was never there) is fine."""
        _check_instance_id(instance_id)
        region = self._region_of.get(instance_id) or self._locate(instance_id)
        if region is None:
            return
        client = self._client(region)
        try:
            client.terminate_instances(InstanceIds=[instance_id])
        except Exception as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return
            raise classify(exc, f"TerminateInstances {instance_id} in {region}") from None
        log.info("instance terminating", extra={"instance_id": instance_id, "region": region})

    def list_instances(self) -> list[ProviderInstance]:
        """Live ``styx-managed`` instances of every configured region."""
        regions = self.config.regions
        per_region = self._each_region(regions, self._list_region)
        out: list[ProviderInstance] = []
        for region, found in zip(regions, per_region, strict=True):
            for instance in found:
                self._remember(instance.instance_id, region)
                out.append(instance)
        return sorted(out, key=lambda i: i.instance_id)

    # -- optional operations ---------------------------------------------------------------

    def stop(self, instance_id: str) -> None:
        """Stop an on-demand instance (its volume, and cost of it, stays). Spot instances
        created by Styx cannot be stopped (one-time requests): INVALID."""
        self._simple_call(instance_id, "stop_instances", "StopInstances")

    def start(self, instance_id: str) -> None:
        """Start a stopped instance again."""
        self._simple_call(instance_id, "start_instances", "StartInstances")

    def catalog(self, regions: Iterable[str] | None = None, include_unpriced: bool = False) -> list[Offer]:
        """Offers of every instance type offered in each zone of ``regions`` (default: the
        configured ones), from DescribeInstanceTypes + DescribeInstanceTypeOfferings, priced
        from the broker's built-in catalog; types it does not price are left out unless
        ``include_unpriced`` (then at price 0). Feed the result to the broker's
        ImportCatalog to refresh the AWS catalog."""
        from styx_plugins.aws.catalog import build_catalog

        wanted = list(regions or self.config.regions)
        return build_catalog(wanted, self._client, include_unpriced=include_unpriced)

    # -- helpers ---------------------------------------------------------------------------

    def _remember(self, instance_id: str, region: str) -> None:
        with self._lock:
            self._region_of[instance_id] = region

    def _each_region(self, regions: Iterable[str], fn: Callable[[str], T]) -> list[T]:
        regions = list(regions)
        if len(regions) == 1:
            return [fn(regions[0])]
        with ThreadPoolExecutor(max_workers=min(len(regions), 16), thread_name_prefix="aws-region") as pool:
            return list(pool.map(fn, regions))

    def _list_region(self, region: str) -> list[ProviderInstance]:
        client = self._client(region)
        filters = [
            {"Name": f"tag:{TAG_MANAGED}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        found = []
        try:
            for page in client.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        state = inst.get("State", {}).get("Name", "")
                        if state not in LIVE_STATES:
                            continue
                        tags = _tags_of(inst)
                        found.append(
                            ProviderInstance(
                                inst["InstanceId"], tags.get(TAG_NODE, ""), _STATUS[state], tags.get(PLANE_LABEL, "")
                            )
                        )
        except Exception as exc:
            raise classify(exc, f"DescribeInstances in {region}") from None
        return found

    def _find_by_request(self, client: Any, region: str, request_id: str) -> str:
        filters = [
            {"Name": f"tag:{TAG_REQUEST}", "Values": [EC2_TAGS.value.apply(request_id)]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
        try:
            pages = client.get_paginator("describe_instances").paginate(Filters=filters)
            found = [inst for page in pages for r in page.get("Reservations", []) for inst in r.get("Instances", [])]
        except Exception as exc:
            raise classify(exc, f"DescribeInstances in {region}") from None
        if not found:
            return ""
        found.sort(key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))
        if len(found) > 1:
            log.warning("several instances carry request id %s; using the oldest", request_id)
        return str(found[0]["InstanceId"])

    def _run_instance(self, client: Any, region: str, request: CreateRequest) -> str:
        config = self.config
        offer, node_id, spot, request_id = request.offer, request.node_id, request.spot, request.request_id
        tags = {**instance_tags(node_id, request_id, request.labels, EC2_TAGS), "Name": f"styx-{node_id}"}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        token = client_token(request_id)
        params: dict[str, Any] = {
            "ImageId": config.image_for(region, offer.arch),
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": token,
            "UserData": boot_script(NAME, request, region=region),  # boto3 base64-encodes it
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
            # `shutdown` inside the VM ends its billing instead of leaving a stopped instance.
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        subnet = config.subnets.get(offer.zone) if offer.zone else None
        if subnet:
            params["SubnetId"] = subnet  # a subnet lies in one zone: it places the instance
        elif offer.zone:
            params["Placement"] = {"AvailabilityZone": offer.zone}
        if config.security_group_ids:
            params["SecurityGroupIds"] = list(config.security_group_ids)
        if config.key_name:
            params["KeyName"] = config.key_name
        if config.iam_instance_profile:
            key = "Arn" if config.iam_instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: config.iam_instance_profile}
        if config.disk_gb:
            params["BlockDeviceMappings"] = [
                {
                    "DeviceName": self._root_device(client, params["ImageId"]),
                    "Ebs": {"VolumeSize": config.disk_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
                }
            ]
        if spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        doing = f"RunInstances {offer.instance_type} in {offer.zone or region}"
        try:
            reply = client.run_instances(**params)
        except Exception as exc:
            if error_code(exc) == "IdempotentParameterMismatch":
                # The token already made an instance (its user data differed: the node token
                # carries an expiry); that instance is the answer.
                found = self._find_by_token(client, token) or self._find_by_request(client, region, request_id)
                if found:
                    return found
            raise classify(exc, doing) from None
        instance_id = str(reply["Instances"][0]["InstanceId"])
        log.info(
            "instance created",
            extra={"node_id": node_id, "instance_id": instance_id, "zone": offer.zone, "spot": spot},
        )
        return instance_id

    def _find_by_token(self, client: Any, token: str) -> str:
        try:
            reply = client.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])
        except Exception:
            return ""  # not every endpoint supports the filter; the tag lookup follows
        for reservation in reply.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                if inst.get("State", {}).get("Name") != "terminated":
                    return str(inst["InstanceId"])
        return ""

    def _root_device(self, client: Any, image_id: str) -> str:
        if image_id.startswith("resolve:ssm:"):
            return "/dev/sda1"  # the default Ubuntu images' root device
        try:
            images = client.describe_images(ImageIds=[image_id]).get("Images", [])
        except Exception as exc:
            raise classify(exc, f"DescribeImages {image_id}") from None
        if not images:
            raise ProviderError(ProviderErrorKind.INVALID, f"image {image_id} not found; check STYX_AWS_IMAGE_ID")
        return str(images[0].get("RootDeviceName") or "/dev/sda1")

    def _wait_running(self, client: Any, region: str, instance_id: str) -> None:
        deadline = time.monotonic() + self.config.create_timeout_s
        while True:
            try:
                reply = client.describe_instances(InstanceIds=[instance_id])
                instances = [i for r in reply.get("Reservations", []) for i in r.get("Instances", [])]
            except Exception as exc:
                # Right after RunInstances, EC2 may not know the id yet (eventual consistency).
                if error_code(exc) != "InvalidInstanceID.NotFound":
                    raise classify(exc, f"DescribeInstances {instance_id} in {region}") from None
                instances = []
            state = instances[0].get("State", {}).get("Name", "") if instances else ""
            if state in ("running", "stopping", "stopped"):
                return
            if state in ("shutting-down", "terminated"):
                reason = instances[0].get("StateReason", {})
                code = str(reason.get("Code", ""))
                raise ProviderError(
                    kind_of_state_reason(code),
                    f"instance {instance_id} in {region} ended while launching: {reason.get('Message') or code}",
                )
            if time.monotonic() > deadline:
                # It exists and is ours: return it so the provisioner owns (and can clean) it;
                # the broker gives up on a node that never registers.
                log.warning("instance not running yet; returning it anyway", extra={"instance_id": instance_id})
                return
            time.sleep(self.config.poll_s)

    def _locate(self, instance_id: str) -> str | None:
        def probe(region: str) -> bool:
            try:
                reply = self._client(region).describe_instances(InstanceIds=[instance_id])
            except Exception as exc:
                if error_code(exc) == "InvalidInstanceID.NotFound":
                    return False
                raise classify(exc, f"DescribeInstances {instance_id} in {region}") from None
            states = [i.get("State", {}).get("Name") for r in reply.get("Reservations", []) for i in r["Instances"]]
            return any(s != "terminated" for s in states)

        regions = self.config.regions
        for region, found in zip(regions, self._each_region(regions, probe), strict=True):
            if found:
                self._remember(instance_id, region)
                return region
        return None

    def _simple_call(self, instance_id: str, method: str, action: str) -> None:
        _check_instance_id(instance_id)
        region = self._region_of.get(instance_id) or self._locate(instance_id)
        if region is None:
            raise ProviderError(ProviderErrorKind.INVALID, f"instance {instance_id} not found in any Styx region")
        try:
            getattr(self._client(region), method)(InstanceIds=[instance_id])
        except Exception as exc:
            raise classify(exc, f"{action} {instance_id} in {region}") from None


def _tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in instance.get("Tags", []) or []}


def _check_instance_id(instance_id: str) -> None:
    if not re.fullmatch(r"i-[0-9a-zA-Z-]{1,40}", instance_id or ""):
        raise ProviderError(ProviderErrorKind.INVALID, f"{instance_id!r} is not an EC2 instance id (i-...)")


@hookimpl
def styx_provider() -> AwsProvider:
    """Contribute the AWS provider (boto3 is imported only when it is used)."""
    return AwsProvider()
