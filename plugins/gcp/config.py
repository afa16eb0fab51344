"""Settings of the GCP provider, read from the environment, and its credentials.

Nothing here imports google-cloud-compute (about 2.5 s of CPU): only ``google.auth`` is
imported, and only when credentials are resolved.

Environment:
- ``STYX_GCP_PROJECT``: project to create instances in (else ``GOOGLE_CLOUD_PROJECT``, else
  the project of the default credentials).
- ``STYX_GCP_COMPUTE_ENDPOINT``: Compute Engine API endpoint, e.g. a Private Service Connect
  endpoint ``https://compute-myendpoint.p.googleapis.com``; tests point it at a local fake
  (``http://127.0.0.1:PORT``). Empty: the public ``compute.googleapis.com``.
- ``STYX_GCP_ANONYMOUS=1``: send no credentials. Honoured ONLY together with
  ``STYX_GCP_COMPUTE_ENDPOINT`` (a test fake or an endpoint that authenticates otherwise);
  against the public API it is refused, so a stray variable can never disable auth there.
- ``STYX_GCP_IMAGE``: boot image (default ``DEFAULT_IMAGE``, the Debian 12 family);
  ``STYX_GCP_GPU_IMAGE``: image for offers with GPUs (default: ``STYX_GCP_IMAGE``).
- ``STYX_GCP_DISK_GB`` (default 50), ``STYX_GCP_DISK_TYPE`` (default pd-balanced).
- ``STYX_GCP_NETWORK`` (default ``global/networks/default``), ``STYX_GCP_SUBNETWORK``
  (optional), ``STYX_GCP_EXTERNAL_IP`` (default 1: an ephemeral public IP so the agent can
  reach the control plane and the package index; 0 when the VPC has Cloud NAT).
- ``STYX_GCP_SERVICE_ACCOUNT``: service account e-mail for the VMs (default: none, so the
  VMs hold no Google credentials).
- ``STYX_GCP_CREATE_TIMEOUT_SECONDS`` (default 600): bound on create (operation + RUNNING);
  ``STYX_GCP_DELETE_TIMEOUT_SECONDS`` (default 300).
- ``STYX_GCP_CONFIG_FILE``: a YAML / JSON file with any of these settings (``project: p``);
  the environment wins over it (``styx.provider.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from styx.provider import ConfigError, ProviderConfig

#: Debian 12 from Google's public image project; any image with python3 and pip works.
DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
DEFAULT_NETWORK = "global/networks/default"
DEFAULT_DISK_TYPE = "pd-balanced"
COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"
INSTALL_HINT = "pip install 'styx[gcp]'"
CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service-account key file, or run on a GCP VM with a service account"
)


__all__ = ["ConfigError", "GcpSettings", "resolve_credentials"]


@dataclass(frozen=True)
class GcpSettings:
    """Everything the provider reads from the environment (credentials aside)."""

    project: str
    endpoint: str
    anonymous: bool
    image: str
    gpu_image: str
    disk_gb: int
    disk_type: str
    network: str
    subnetwork: str
    external_ip: bool
    service_account: str
    create_timeout_s: float
    delete_timeout_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GcpSettings:
        """Read the settings from ``environ`` (default os.environ); raises ConfigError naming
        the variable at fault.
        """
        env = ProviderConfig.load("STYX_GCP_", environ)
        endpoint = env.get("STYX_GCP_COMPUTE_ENDPOINT").rstrip("/")
        anonymous = env.flag("STYX_GCP_ANONYMOUS", False)
        if anonymous and not endpoint:
            raise ConfigError(
                "STYX_GCP_ANONYMOUS is set but STYX_GCP_COMPUTE_ENDPOINT is not: anonymous access is "
                "only allowed against an endpoint override",
                "unset STYX_GCP_ANONYMOUS to use your Google credentials",
            )
        image = env.get("STYX_GCP_IMAGE", DEFAULT_IMAGE)
        return cls(
            project=env.get("STYX_GCP_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT"),
            endpoint=endpoint,
            anonymous=anonymous,
            image=image,
            gpu_image=env.get("STYX_GCP_GPU_IMAGE", image),
            disk_gb=env.integer("STYX_GCP_DISK_GB", 50, positive=True),
            disk_type=env.get("STYX_GCP_DISK_TYPE", DEFAULT_DISK_TYPE),
            network=env.get("STYX_GCP_NETWORK", DEFAULT_NETWORK),
            subnetwork=env.get("STYX_GCP_SUBNETWORK"),
            external_ip=env.flag("STYX_GCP_EXTERNAL_IP", True),
            service_account=env.get("STYX_GCP_SERVICE_ACCOUNT"),
            create_timeout_s=env.number("STYX_GCP_CREATE_TIMEOUT_SECONDS", 600, positive=True),
            delete_timeout_s=env.number("STYX_GCP_DELETE_TIMEOUT_SECONDS", 300, positive=True),
        )


def resolve_credentials(settings: GcpSettings) -> tuple[Any, str]:
    """Credentials and project: google-auth's standard chain (ADC), or anonymous when allowed.

    Returns ``(credentials, project)``. Raises ConfigError when no credentials are found or
    no project is known. Imports google.auth lazily (it is cheap; compute_v1 is not).
    """
    try:
        import google.auth
        from google.auth import exceptions as auth_exceptions
        from google.auth.credentials import AnonymousCredentials
    except ImportError as exc:
        raise ConfigError(f"google-auth is not installed ({exc.name})", INSTALL_HINT) from exc
    project = settings.project
    if settings.anonymous:
        credentials: Any = AnonymousCredentials()
    else:
        try:
            credentials, default_project = google.auth.default(scopes=[COMPUTE_SCOPE])
        except auth_exceptions.DefaultCredentialsError as exc:
            reason = "no Google credentials found (application default credentials)"
            raise ConfigError(reason, CREDENTIALS_HINT) from exc
        project = project or (default_project or "")
    if not project:
        raise ConfigError(
            "no GCP project configured",
            "set STYX_GCP_PROJECT (or GOOGLE_CLOUD_PROJECT, or `gcloud config set project ...`)",
        )
    return credentials, project
