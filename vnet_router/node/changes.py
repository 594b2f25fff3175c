"""What a reload changes, in words, and what it may not change.

``Node.apply`` (``lifecycle.py``) reports :func:`table_diff` after its own lines (namespaces,
TAPs made and removed) and refuses a new ``[tm]``/``[vbm]`` whose :func:`fixed_part` differs;
the run-time verbs (``runtime.py``) go through the same ``apply``, so a later plain reload
lists what it sets back.
"""
from __future__ import annotations

from vnet_router.model.config import NodeConfig


def table_diff(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The tables ``new`` adds, removes and changes against ``old`` (and the VBM's shares),
    one line each, as a reload reports them."""
    out = []
    for what, a, b in (("substrate link", old.substrate_links, new.substrate_links),
                       ("vnet", old.vnets, new.vnets),
                       ("interface", old.interfaces, new.interfaces),
                       ("switch", old.switches, new.switches)):
        a, b = set(a), set(b)
        names_a, names_b = set(map(name_of, a)), set(map(name_of, b))
        out += [f"{what} added: {name_of(x)}" for x in b - a if name_of(x) not in names_a]
        out += [f"{what} removed: {name_of(x)}" for x in a - b if name_of(x) not in names_b]
        out += [f"{what} changed: {name_of(x)}" for x in b - a if name_of(x) in names_a]
    if old.vbm is not None and new.vbm is not None:
        was, now = ({s.vnet: s.share for s in c.vbm.shares} for c in (old, new))
        out += [f"vbm share changed: vNet {v} {_share(was.get(v))} -> {_share(now.get(v))}"
                for v in sorted(set(was) | set(now)) if was.get(v) != now.get(v)]
    return sorted(out)


def _share(x) -> str:
    return "none" if x is None else f"{x:g}"


def fixed_part(section):
    """What a reload may not change of ``[tm]``/``[vbm]``: all but the VBM's shares."""
    return section.model_dump(exclude={"shares"}) if section is not None else None


def name_of(x) -> str:
    """How a reload's changes name a table: a vNet and an interface by name, a substrate link
    by id, a switch by its virtual links."""
    if hasattr(x, "in_link"):
        return f"{x.vnet} {x.in_link}:{x.in_vli}->{x.out_link}:{x.out_vli}"
    if hasattr(x, "vnet"):
        return f"{x.vnet}/{x.name}"
    return x.name if hasattr(x, "name") else x.id
