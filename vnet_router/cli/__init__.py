"""Command-line front ends: ``vnetctl`` (the lab's ``vnet-lab`` lives with the lab)."""
