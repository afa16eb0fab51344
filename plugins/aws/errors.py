"""EC2 / botocore errors -> ``ProviderError`` kinds the broker fails over on.

CAPACITY and QUOTA make the broker try the next ranked offer (zone, then region, then
provider); AUTH disables the provider for a while; INVALID is the caller's mistake.
Messages carry the EC2 error code and AWS's own message (which never holds credentials),
truncated, and never the request (its user data holds the node token).
"""

from __future__ import annotations

from styx.provider import ErrorCodes, ProviderError, ProviderErrorKind, clip, unexpected

# EC2 error codes, by kind (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientCapacityOnHost",
        "SpotMaxPriceTooLow",
        # "Your requested instance type is not supported in your requested Availability
        # Zone": another zone may have it, so fail over like a capacity shortage.
        "Unsupported",
    }
)
QUOTA_CODES = frozenset(
    {
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "ResourceLimitExceeded",
        "VolumeLimitExceeded",
        "InsufficientFreeAddressesInSubnet",
        "AddressLimitExceeded",
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "Blocked",
        "ExpiredToken",
        "RequestExpired",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "PendingVerification",
    }
)
EC2_CODES = ErrorCodes(
    capacity=CAPACITY_CODES,
    quota=QUOTA_CODES,
    auth=AUTH_CODES,
    invalid=frozenset({"MissingParameter", "IdempotentParameterMismatch", "DryRunOperation"}),
    patterns=(("Invalid.*", ProviderErrorKind.INVALID),),
)


def kind_of_code(code: str) -> ProviderErrorKind:
    """The kind of an EC2 error code."""
    return EC2_CODES.kind_of([code])


def kind_of_state_reason(code: str) -> ProviderErrorKind:
    """The kind of an instance's StateReason code (why it went away during launch)."""
    if "InsufficientInstanceCapacity" in code or "SpotInstanceTermination" in code:
        return ProviderErrorKind.CAPACITY
    if "VolumeLimitExceeded" in code:
        return ProviderErrorKind.QUOTA
    return ProviderErrorKind.INTERNAL


def error_code(exc: BaseException) -> str:
    """The EC2 error code of a botocore ClientError; "" for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "") or "")
    return ""


def classify(exc: BaseException, doing: str) -> ProviderError:
    """Turn a botocore exception raised while ``doing`` (e.g. "RunInstances in us-east-1")
    into a ProviderError; unknown exceptions become INTERNAL without their text."""
    from botocore import exceptions as bce

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, bce.ClientError):
        code = error_code(exc)
        message = clip(str(exc.response.get("Error", {}).get("Message", "") or ""))
        return ProviderError(kind_of_code(code), f"{doing}: {code or 'error'}: {message}".rstrip(": "))
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return ProviderError(
            ProviderErrorKind.AUTH,
            f"{doing}: no usable AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        )
    if isinstance(exc, bce.NoRegionError):
        return ProviderError(ProviderErrorKind.INVALID, f"{doing}: no region; set STYX_AWS_REGIONS")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return ProviderError(
            ProviderErrorKind.INTERNAL, f"{doing}: cannot reach the EC2 endpoint ({type(exc).__name__})"
        )
    if isinstance(exc, bce.BotoCoreError):
        return ProviderError(ProviderErrorKind.INTERNAL, f"{doing}: {type(exc).__name__}")
    return unexpected(exc, doing)
