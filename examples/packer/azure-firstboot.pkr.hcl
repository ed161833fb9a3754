# Build an Azure managed image that provisions itself with azure-firstboot
# (no waagent, no cloud-init). See docs/image-building.md.
#
#   az login
#   packer init examples/packer
#   packer build -var subscription_id=... -var resource_group=my-images \
#       -var package=dist/azure-firstboot_0.1.0_all.deb examples/packer
#
# Then create VMs from it with "az vm create ... --enable-agent false".

packer {
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.0.0"
    }
  }
}

variable "subscription_id" {
  type = string
}

variable "resource_group" {
  type        = string
  description = "existing resource group that receives the managed image"
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "image_name" {
  type    = string
  default = "debian-12-azure-firstboot"
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

  managed_image_resource_group_name = var.resource_group
  managed_image_name                = var.image_name
}

build {
  sources = ["source.azure-arm.image"]

  provisioner "file" {
    source      = var.package
    destination = "/tmp/${basename(var.package)}"
  }

  # The last provisioner: installs the agent (which replaces waagent), purges
  # cloud-init and runs "azure-firstboot deprovision --user --yes", which also
  # removes the build user (the account that ran sudo). No
  # "waagent -deprovision" anywhere: waagent is gone by then.
  provisioner "shell" {
    execute_command  = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    environment_vars = ["PACKAGE=/tmp/${basename(var.package)}"]
    script           = "${path.root}/../generalize.sh"
    # the build user no longer exists afterwards; the script removes itself
    skip_clean = true
  }
}
