"""azure-firstboot: first-boot provisioning for Azure Linux images without an agent."""

__version__ = "0.1.0"
