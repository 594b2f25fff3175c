"""vnet substrate router: wire codecs, tables, datapath, control and the lab."""
__version__ = "0.1.0"
