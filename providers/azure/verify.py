"""``CLOUD_CONFIG_VERIFY`` for Azure: the resource group, subnet, NSG and image exist, and
the default size is offered in the region (with confidential computing unless
``DISABLECVM``). Creates nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from providers.azure import bodies, errors
from providers.azure.settings import AzureSettings
from providers.base import ConfigError, ProviderError

if TYPE_CHECKING:
    from providers.azure.clients import Clients
    from providers.azure.provider import AzureProvider

CC_CAPABILITY = "ConfidentialComputingType"


def _as_config(what: str):  # type: ignore[no-untyped-def]
    def translate(exc: Exception) -> ProviderError:
        if errors.not_found(exc):
            return ConfigError(f"{what} not found ({errors.error_code(exc) or 'NotFound'})")
        return errors.translate(exc, action=f"checking {what}")

    return translate


async def verify_config(p: AzureProvider, clients: Clients, s: AzureSettings) -> None:
    for name, value in (("AZURE_SUBSCRIPTION_ID", s.subscription_id),
                        ("AZURE_REGION", s.region), ("AZURE_RESOURCE_GROUP", s.resource_group),
                        ("AZURE_SUBNET_ID", s.subnet_id), ("AZURE_IMAGE_ID", s.image_id)):
        if not value:
            raise ConfigError(f"{name} is empty")
    rg = s.resource_group
    await p.call(_first, clients.compute.virtual_machines.list, rg, action="list VMs",
                 translate=_as_config(f"resource group {rg}"))
    await _check_network(p, clients, s)
    await _check_image(p, clients, s)
    await _check_size(p, clients, s)


async def _check_network(p: AzureProvider, clients: Clients, s: AzureSettings) -> None:
    subnet = bodies.parse_resource_id(s.subnet_id)
    if subnet is None or not subnet.name_of("subnets") or not subnet.name_of("virtualNetworks"):
        raise ConfigError(f"AZURE_SUBNET_ID {s.subnet_id!r} is not a subnet resource id")
    await p.call(clients.network.subnets.get, subnet.resource_group,
                 subnet.name_of("virtualNetworks"), subnet.name_of("subnets"),
                 action="get subnet", translate=_as_config(f"subnet {s.subnet_id}"))
    if s.nsg_id:
        nsg = bodies.parse_resource_id(s.nsg_id)
        if nsg is None or not nsg.name_of("networkSecurityGroups"):
            raise ConfigError(f"AZURE_NSG_ID {s.nsg_id!r} is not a network security group id")
        await p.call(clients.network.network_security_groups.get, nsg.resource_group,
                     nsg.name_of("networkSecurityGroups"), action="get NSG",
                     translate=_as_config(f"network security group {s.nsg_id}"))


async def _check_image(p: AzureProvider, clients: Clients, s: AzureSettings) -> None:
    image_id = s.image_id
    translate = _as_config(f"image {image_id}")
    community = bodies.community_image(image_id)
    if community is not None:
        gallery, image, version = community
        if version:
            await p.call(clients.compute.community_gallery_image_versions.get, s.region,
                         gallery, image, version, action="get image", translate=translate)
        else:
            await p.call(clients.compute.community_gallery_images.get, s.region, gallery,
                         image, action="get image", translate=translate)
        return
    parsed = bodies.parse_resource_id(image_id)
    if parsed is not None and parsed.name_of("images") and not parsed.name_of("galleries"):
        await p.call(clients.compute.images.get, parsed.resource_group,
                     parsed.name_of("images"), action="get image", translate=translate)
        return
    if parsed is not None and parsed.name_of("galleries") and parsed.name_of("versions"):
        await p.call(clients.compute.gallery_image_versions.get, parsed.resource_group,
                     parsed.name_of("galleries"), parsed.name_of("images"),
                     parsed.name_of("versions"), action="get image", translate=translate)
        return
    raise ConfigError(
        f"AZURE_IMAGE_ID {image_id!r} is neither a managed image, a gallery image version "
        "nor a community gallery image id"
    )


async def _check_size(p: AzureProvider, clients: Clients, s: AzureSettings) -> None:
    size = s.default_instance_size
    skus = await p.call(_skus, clients, s.region, action="list resource SKUs")
    found = [sku for sku in skus if str(getattr(sku, "name", "")) == size]
    if not found:
        raise ConfigError(f"VM size {size} is not offered in {s.region}")
    if s.disable_cvm:
        return
    capabilities = {str(c.name): str(c.value) for sku in found
                    for c in (getattr(sku, "capabilities", None) or [])}
    if not capabilities.get(CC_CAPABILITY):
        raise ConfigError(
            f"VM size {size} offers no confidential computing in {s.region} "
            "(choose a DC*/EC* size, or set DISABLECVM=true)"
        )


def _first(fn: Any, *args: Any) -> Any:
    return next(iter(fn(*args)), None)


def _skus(clients: Clients, region: str) -> list[Any]:
    return [sku for sku in clients.compute.resource_skus.list(filter=f"location eq '{region}'")
            if str(getattr(sku, "resource_type", "")) == "virtualMachines"]
