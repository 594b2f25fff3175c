"""Trunks, the links between two lab switches: their ports' names and the LAN segments they
join.  Plain functions of names, used by ``topology.py`` (validation, the path MTU check) and
``campus.py`` (the VBM's capacity); shaping a trunk's ports is ``switching.py``'s business."""
from __future__ import annotations


def port_names(a_sw: str, b_sw: str, i: int, ports: dict[str, list[str]]) -> tuple[str, str]:
    """The ports of trunk ``i`` from ``a_sw`` to ``b_sw``: on each switch, named after the other
    one (``p<i>a``/``p<i>b`` when that name is taken: two trunks between the same switches);
    recorded in ``ports`` (switch -> its port names so far)."""
    names = []
    for sw, other, tag in ((a_sw, b_sw, "a"), (b_sw, a_sw, "b")):
        port = other if other not in ports[sw] else f"p{i}{tag}"
        ports[sw].append(port)
        names.append(port)
    return names[0], names[1]


def segments(topo) -> dict[str, str]:
    """switch -> its LAN segment: the first switch (in file order) of those that ``topo``'s
    trunks join (``topo``: a ``topology.Topology``)."""
    switches = [sw.name for sw in topo.switches]
    root = {sw: sw for sw in switches}

    def find(x):
        while root[x] != x:
            x = root[x]
        return x
    for link in topo.links:
        if link.a.switch is not None and link.b.switch is not None:
            a, b = sorted((find(link.a.switch), find(link.b.switch)), key=switches.index)
            root[b] = a
    return {sw: find(sw) for sw in switches}
