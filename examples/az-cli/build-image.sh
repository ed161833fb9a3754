#!/bin/bash
# Build an Azure Compute Gallery image that provisions itself with
# azure-firstboot, with the az CLI only, then create a test VM from it. See
# docs/image-building.md; every step is also explained there.
#
#   bash examples/az-cli/build-image.sh RESOURCE_GROUP PACKAGE [LOCATION]
#   e.g. bash examples/az-cli/build-image.sh my-images dist/azure-firstboot_0.1.0_all.deb westeurope
#
# The build VM is a Trusted Launch VM (what "az vm create" makes of a Gen2 image):
# Azure cannot capture it into a managed image, so the image goes into a gallery
# image definition that supports Trusted Launch (VMs made from it may be Trusted
# Launch or standard). Boot diagnostics are on for both VMs: their serial console
# shows azure-firstboot's lines (docs/troubleshooting.md).
set -euo pipefail

rg=${1:?resource group}
package=${2:?path of the azure-firstboot .deb or .rpm}
location=${3:-westeurope}
base=${BASE_IMAGE:-Debian:debian-12:12-gen2:latest}   # a Gen2 image (--hyper-v-generation V2 below)
build_vm=${BUILD_VM:-afb-build}
gallery=${GALLERY:-afbImages}
definition=${IMAGE_DEFINITION:-debian-12-afb}
version=${IMAGE_VERSION:-1.0.0}
build_user=builder
admin_user=${ADMIN_USER:-azureuser}
key=${SSH_PUBLIC_KEY:-$HOME/.ssh/id_ed25519.pub}
here=$(cd "$(dirname "$0")" && pwd)

az group create --name "$rg" --location "$location" --output none

# 1. A build VM from a marketplace image (provisioned by that image's own agent).
az vm create --resource-group "$rg" --name "$build_vm" --image "$base" \
    --size Standard_B2s --admin-username "$build_user" --ssh-key-values "$key" \
    --security-type TrustedLaunch --enable-secure-boot true --enable-vtpm true \
    --boot-diagnostics-storage "" --public-ip-sku Standard --output none
ip=$(az vm show --show-details --resource-group "$rg" --name "$build_vm" --query publicIps --output tsv)

# 2. Install the agent, the network configuration and generalize; the script
#    ends with "azure-firstboot check" and fails when the image is not ready.
ssh_opts=(-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$HOME/.ssh/known_hosts.afb-build")
scp "${ssh_opts[@]}" "$package" "$here/../generalize.sh" "$build_user@$ip:/tmp/"
ssh "${ssh_opts[@]}" "$build_user@$ip" \
    "sudo PACKAGE=/tmp/$(basename "$package") sh /tmp/generalize.sh"

# 3. Capture into a gallery image definition that supports Trusted Launch.
az vm deallocate --resource-group "$rg" --name "$build_vm"
az vm generalize --resource-group "$rg" --name "$build_vm"
az sig create --resource-group "$rg" --gallery-name "$gallery" --output none
az sig image-definition create --resource-group "$rg" --gallery-name "$gallery" \
    --gallery-image-definition "$definition" --publisher "${IMAGE_PUBLISHER:-MyCompany}" --offer "$definition" \
    --sku "${IMAGE_SKU:-12-gen2}" --os-type Linux --os-state Generalized --hyper-v-generation V2 \
    --features SecurityType=TrustedLaunchSupported --output none
vm_id=$(az vm show --resource-group "$rg" --name "$build_vm" --query id --output tsv)
az sig image-version create --resource-group "$rg" --gallery-name "$gallery" \
    --gallery-image-definition "$definition" --gallery-image-version "$version" \
    --virtual-machine "$vm_id" --output none
az vm delete --resource-group "$rg" --name "$build_vm" --yes

# 4. A VM from the image: no VM agent (there is none for extensions in it).
image=$(az sig image-definition show --resource-group "$rg" --gallery-name "$gallery" \
    --gallery-image-definition "$definition" --query id --output tsv)
az vm create --resource-group "$rg" --name afb-test --image "$image" \
    --security-type TrustedLaunch --admin-username "$admin_user" --ssh-key-values "$key" \
    --enable-agent false --boot-diagnostics-storage "" --public-ip-sku Standard --output table
