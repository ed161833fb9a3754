#!/bin/bash
# Build an Azure managed image that provisions itself with azure-firstboot,
# with the az CLI only, then create a test VM from it. See
# docs/image-building.md; every step is also explained there.
#
#   bash examples/az-cli/build-image.sh RESOURCE_GROUP PACKAGE [LOCATION]
#   e.g. bash examples/az-cli/build-image.sh my-images dist/azure-firstboot_0.1.0_all.deb westeurope
set -euo pipefail

rg=${1:?resource group}
package=${2:?path of the azure-firstboot .deb or .rpm}
location=${3:-westeurope}
base=${BASE_IMAGE:-Debian:debian-12:12-gen2:latest}   # a Gen2 image (--hyper-v-generation V2 below)
build_vm=${BUILD_VM:-afb-build}
image=${IMAGE_NAME:-debian-12-azure-firstboot}
build_user=builder
admin_user=${ADMIN_USER:-azureuser}
key=${SSH_PUBLIC_KEY:-$HOME/.ssh/id_ed25519.pub}
here=$(cd "$(dirname "$0")" && pwd)

az group create --name "$rg" --location "$location" --output none

# 1. A build VM from a marketplace image (provisioned by that image's own agent).
az vm create --resource-group "$rg" --name "$build_vm" --image "$base" \
    --size Standard_B2s --admin-username "$build_user" --ssh-key-values "$key" \
    --public-ip-sku Standard --output none
ip=$(az vm show --show-details --resource-group "$rg" --name "$build_vm" --query publicIps --output tsv)

# 2. Install the agent and generalize (the same script as the Packer example).
ssh_opts=(-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$HOME/.ssh/known_hosts.afb-build")
scp "${ssh_opts[@]}" "$package" "$here/../generalize.sh" "$build_user@$ip:/tmp/"
ssh "${ssh_opts[@]}" "$build_user@$ip" \
    "sudo PACKAGE=/tmp/$(basename "$package") sh /tmp/generalize.sh"

# 3. Capture.
az vm deallocate --resource-group "$rg" --name "$build_vm"
az vm generalize --resource-group "$rg" --name "$build_vm"
az image create --resource-group "$rg" --name "$image" --source "$build_vm" \
    --hyper-v-generation V2 --output none
az vm delete --resource-group "$rg" --name "$build_vm" --yes

# 4. A VM from the image: no VM agent (there is none for extensions in it).
az vm create --resource-group "$rg" --name afb-test --image "$image" \
    --admin-username "$admin_user" --ssh-key-values "$key" --enable-agent false \
    --public-ip-sku Standard --output table
