"""TOML fragments for the integration tests' lab topologies (see docs/lab.md).

Each function returns text; a node's router parts go under ``[node.router]``.  Peers are named
``"node:ifname"`` and become ``{mac:node:ifname}`` placeholders the lab fills in.
"""


def _kv(**kw) -> str:
    out = []
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = f'"{v}"'
        elif isinstance(v, (list, tuple)):
            v = "[" + ", ".join(f'"{x}"' for x in v) + "]"
        out.append(f"{k} = {v}")
    return "\n".join(out) + "\n"


def link(a: str, b: str, mtu: int | None = None) -> str:
    return "[[link]]\n" + _kv(a=a, b=b, mtu=mtu)


def switch_node(name: str) -> str:
    return "[[switch]]\n" + _kv(name=name)


def node(name: str, *parts: str, addresses: dict | None = None, settings: str = "",
         commands: tuple = ()) -> str:
    """``settings``: lines of the router's own [node] table (e.g. 'metrics = "..."')."""
    text = "[[node]]\n" + _kv(name=name)
    if addresses:
        text += "addresses = { " + ", ".join(
            f'{k} = [{", ".join(chr(34) + a + chr(34) for a in v)}]'
            for k, v in addresses.items()) + " }\n"
    if parts or settings:
        text += "[node.router]\n"
        if settings:
            text += "[node.router.node]\n" + settings.strip() + "\n"
        text += "".join(parts)
    for run, vnet in commands:
        text += "[[node.commands]]\n" + _kv(vnet=vnet, run=run)
    return text + "\n"


def p2p(lid: str, ifname: str, peer: str, vlan: int = 10, priority: int | None = None,
        mtu: int | None = None) -> str:
    return "[[node.router.substrate_link]]\n" + _kv(
        id=lid, kind="p2p", interface=ifname, peer_mac=f"{{mac:{peer}}}", vlan=vlan,
        priority=priority, mtu=mtu)


def multiaccess(lid: str, ifname: str, mtu: int | None = None) -> str:
    return "[[node.router.substrate_link]]\n" + _kv(id=lid, kind="multiaccess",
                                                     interface=ifname, mtu=mtu)


def udp(lid: str, local: str, remote: str) -> str:
    return "[[node.router.substrate_link]]\n" + _kv(id=lid, kind="udp", local=local,
                                                     remote=remote)


def vnet(name: str, vid: int, namespace: str | None = None) -> str:
    return "[[node.router.vnet]]\n" + _kv(name=name, id=vid, namespace=namespace)


def iface(vnet_name: str, name: str, lid: str, in_vli: int, out_vli: int | None = None,
          rate: str | None = None, addresses=()) -> str:
    """``rate``: TOML text, e.g. '"20Mbit"' or '{ min = "5Mbit", max = "20Mbit" }'."""
    text = "[[node.router.interface]]\n" + _kv(vnet=vnet_name, name=name, substrate_link=lid,
                                               in_vli=in_vli, out_vli=out_vli)
    if rate:
        text += f"rate = {rate}\n"
    if addresses:
        text += _kv(addresses=list(addresses))
    return text


def switch(vnet_name: str, in_link: str, in_vli: int, out_link: str, out_vli: int) -> str:
    return "[[node.router.switch]]\n" + _kv(vnet=vnet_name, in_link=in_link, in_vli=in_vli,
                                            out_link=out_link, out_vli=out_vli)
