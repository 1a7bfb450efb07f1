"""Which user-data source this pod VM has, decided from cheap local facts.

Order (upstream's): the config drive file, then Azure, AWS, GCP, Alibaba Cloud. Upstream
reads the CPUID hypervisor vendor (``MSVM`` for Azure, ``KVM`` plus a metadata probe for
GCP); here the SMBIOS/DMI strings the kernel exports under ``/sys/class/dmi/id`` stand in
for it, so detection never sends a request:

- Azure (Hyper-V): ``chassis_asset_tag`` is Azure's ``7783-7084-3265-9085-8269-3286-77``, or
  ``sys_vendor`` is ``Microsoft Corporation``;
- AWS: ``sys_vendor`` is ``Amazon EC2`` (upstream's DMI system manufacturer test);
- GCP: ``sys_vendor`` is ``Google`` or ``product_name`` is ``Google Compute Engine``;
- Alibaba Cloud: ``sys_vendor`` is ``Alibaba Cloud``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from forwarder.userdata.config import ProvisionConfig
from forwarder.userdata.sources import (
    AlibabaSource,
    AwsSource,
    AzureSource,
    FileSource,
    GcpSource,
    UserDataSource,
)

log = logging.getLogger(__name__)

AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
_DMI_KEYS = ("sys_vendor", "product_name", "chassis_asset_tag")


def read_dmi(dmi_dir: Path) -> dict[str, str]:
    """The DMI strings we look at; unreadable or missing ones are left out."""
    values: dict[str, str] = {}
    for key in _DMI_KEYS:
        try:
            values[key] = (dmi_dir / key).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
    return values


def cloud_from_dmi(dmi: Mapping[str, str]) -> str | None:
    """``azure``, ``aws``, ``gcp``, ``alibaba`` or ``None``, checked in upstream's order."""
    vendor = dmi.get("sys_vendor", "")
    if dmi.get("chassis_asset_tag") == AZURE_ASSET_TAG or vendor == "Microsoft Corporation":
        return "azure"
    if vendor == "Amazon EC2":
        return "aws"
    if vendor == "Google" or dmi.get("product_name") == "Google Compute Engine":
        return "gcp"
    if vendor == "Alibaba Cloud":
        return "alibaba"
    return None


def _has_user_data_file(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # exists but unreadable: let the fetch report why
    return True


def detect_source(
    config: ProvisionConfig, session: aiohttp.ClientSession
) -> UserDataSource | None:
    """The source to fetch from, or ``None`` when this machine has no user-data source."""
    user_data_file = config.cidata_dir / "user-data"
    if _has_user_data_file(user_data_file):
        return FileSource(user_data_file)
    cloud = cloud_from_dmi(read_dmi(config.dmi_dir))
    if cloud == "azure":
        return AzureSource(session, config.azure_imds_url)
    if cloud == "aws":
        return AwsSource(session, config.aws_imds_url)
    if cloud == "gcp":
        return GcpSource(session, config.gcp_metadata_url)
    if cloud == "alibaba":
        return AlibabaSource(session, config.alibaba_metadata_url)
    return None
