"""Integration fixtures: throwaway labs of network namespaces running real vnet-router daemons."""
import pytest

from vnet_router.lab import topology
from vnet_router.lab.lab import Lab


@pytest.fixture
def make_lab(tmp_path):
    """make_lab(toml_text) -> a started Lab; every lab is stopped (and removed) afterwards."""
    labs = []

    def make(text: str) -> Lab:
        lab = Lab(topology.loads(text, str(tmp_path / "topology.toml")),
                  workdir=tmp_path / f"lab{len(labs)}")
        labs.append(lab)
        lab.start()
        return lab

    yield make
    for lab in reversed(labs):
        lab.stop()
