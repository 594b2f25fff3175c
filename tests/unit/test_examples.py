"""The shipped example configurations stay valid."""
from pathlib import Path

import pytest

from vnet_router.model import config

ETC = Path(__file__).resolve().parents[2] / "etc"


@pytest.mark.parametrize("name", ["router.toml", "host.toml"])
def test_example_config_is_valid(name):
    cfg = config.load(ETC / name)
    assert cfg.substrate_links and cfg.vnets


def test_example_vbm_config_is_valid():
    cfg = config.load(ETC / "vbm.toml")
    assert cfg.vbm.link == "lan" and sum(s.share for s in cfg.vbm.shares) <= 1
