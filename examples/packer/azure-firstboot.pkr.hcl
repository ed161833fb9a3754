# Build an Azure Compute Gallery image version that provisions itself with
# azure-firstboot (no waagent, no cloud-init), from a Trusted Launch build VM.
# See docs/image-building.md.
#
# Needs Packer 1.14.0 or later: "packer init" installs the current azure plugin
# (2.x) only from there on (Debian 12's packer 1.6.6 cannot read this file).
# The gallery and the image definition must exist, the definition created with
# "--features SecurityType=TrustedLaunchSupported" (docs/image-building.md, or
# examples/az-cli/build-image.sh).
#
#   az login
#   packer init examples/packer
#   packer build -var subscription_id=$(az account show --query id -o tsv) \
#       -var resource_group=my-images -var gallery_name=afbImages \
#       -var image_definition=debian-12-afb -var image_version=1.0.0 \
#       -var package=dist/azure-firstboot_0.1.0_all.deb examples/packer
#
# Then create VMs with "az vm create ... --security-type TrustedLaunch --enable-agent false".
# A managed image instead: remove the three security settings (a standard build
# VM: a Trusted Launch VM cannot be captured into a managed image) and replace
# shared_image_gallery_destination with managed_image_resource_group_name and
# managed_image_name.

packer {
  required_version = ">= 1.14.0"
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.6.0"
    }
  }
}

variable "subscription_id" {
  type = string
}

variable "resource_group" {
  type        = string
  description = "existing resource group of the gallery"
}

variable "gallery_name" {
  type        = string
  description = "existing Azure Compute Gallery"
}

variable "image_definition" {
  type        = string
  description = "existing image definition in the gallery (Linux, Generalized, V2, SecurityType=TrustedLaunchSupported)"
  default     = "debian-12-afb"
}

variable "image_version" {
  type    = string
  default = "1.0.0"
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "package" {
  type        = string
  description = "the azure-firstboot .deb (Debian/Ubuntu) or .rpm (Fedora/RHEL/Azure Linux) to install"
  default     = "dist/azure-firstboot_0.1.0_all.deb"
}

# Base image: any marketplace image of a distribution the package supports.
# For an .rpm, e.g. image_publisher "almalinux", image_offer "almalinux-x86_64",
# image_sku "9-gen2".
variable "image_publisher" {
  type    = string
  default = "Debian"
}

variable "image_offer" {
  type    = string
  default = "debian-12"
}

variable "image_sku" {
  type    = string
  default = "12-gen2"
}

source "azure-arm" "image" {
  use_azure_cli_auth = true
  subscription_id    = var.subscription_id
  location           = var.location
  vm_size            = "Standard_B2s"

  os_type         = "Linux"
  image_publisher = var.image_publisher
  image_offer     = var.image_offer
  image_sku       = var.image_sku

  # A Trusted Launch build VM (what "az vm create" makes of a Gen2 image): it
  # boots through Secure Boot as the VMs made from the image will.
  security_type       = "TrustedLaunch"
  secure_boot_enabled = true
  vtpm_enabled        = true

  # Captured into a gallery image version (Packer deallocates and generalizes).
  shared_image_gallery_destination {
    subscription   = var.subscription_id
    resource_group = var.resource_group
    gallery_name   = var.gallery_name
    image_name     = var.image_definition
    image_version  = var.image_version
  }
}

build {
  sources = ["source.azure-arm.image"]

  provisioner "file" {
    source      = var.package
    destination = "/tmp/${basename(var.package)}"
  }

  # The last provisioner: installs the agent (which replaces waagent), purges
  # cloud-init, installs the network configuration of examples/network/, runs
  # "azure-firstboot deprovision --user --yes", which also removes the build user
  # (the account that ran sudo), and "azure-firstboot check" (a problem fails the
  # build). No "waagent -deprovision" anywhere: waagent is gone by then.
  provisioner "shell" {
    execute_command  = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    environment_vars = ["PACKAGE=/tmp/${basename(var.package)}"]
    script           = "${path.root}/../generalize.sh"
    # the build user no longer exists afterwards; the script removes itself
    skip_clean = true
  }
}
