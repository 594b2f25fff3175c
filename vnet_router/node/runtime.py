"""Run-time changes of one thing: ``vnetctl vlink rate`` and ``vnetctl vbm share``.

Each verb changes the *running* configuration, never the file: the node's configuration
becomes the file's with the one value replaced, and is applied the way a reload applies a file
(``Node.apply``: only the difference; the Traffic Manager starts a changed managed range over).
So a later plain ``vnetctl reload`` (or SIGHUP) compares the file with what runs, finds the
value changed back, and restores it -- and says so in its list of changes.  The reply says that
the change is run-time only and names the file to edit to keep it (docs/operations.md);
``show`` lists the run-time changes in force (``config_state.runtime_changes``) until a
reload applies a file.

How work is split: ``commands.py`` declares the verbs, ``cli/vnetctl.py`` prints the replies,
``lifecycle.Node`` registers these functions as handlers (bound to itself); the VBM's shares
are set through ``control.vbm.VBM.set_shares`` (a reload sets them back the same way).
"""
from __future__ import annotations

import logging

from vnet_router.model.config import Rate, VBMShare
from vnet_router.model.units import format_rate, parse_rate
from vnet_router.node.api import CommandError
from vnet_router.control.vbm import AdmissionError

log = logging.getLogger("vnet_router")

NOTE = ("run-time only: a plain `vnetctl reload` (or SIGHUP, `systemctl reload`) sets it back "
        "to the value in {file}, the file in use; edit it to keep the change")


def _rate_text(r: Rate) -> str:
    if r.max is None:
        return "unlimited"
    return format_rate(r.max) if r.min == r.max else f"{format_rate(r.min)}..{format_rate(r.max)}"


async def vlink_rate(node, vnet: str, name: str, min=None, max=None,
                     direction: str = "out") -> dict:
    """Set the output (``direction`` "out": ``rate``) or input ("in": ``in_rate``) rate range of
    the configured logical interface ``vnet``/``name``; ``min``/``max`` as rate strings (a
    missing ``min`` keeps the current one, lowered to ``max``; a missing ``max`` keeps it)."""
    if direction not in ("in", "out"):
        raise CommandError(f"vlink rate: direction {direction!r}: want in or out")
    field = "rate" if direction == "out" else "in_rate"
    async with node._reload_lock:
        cfg = node.cfg
        li = next((x for x in cfg.interfaces if (x.vnet, x.name) == (vnet, name)), None)
        if li is None:
            if any((x.vnet, x.name) == (vnet, name) for x in node.tables.interfaces):
                raise CommandError(
                    f"vlink rate: {vnet}/{name} is a run-time virtual link negotiated with "
                    f"its neighbour; `vnetctl vlink del` it and `vlink add` it with the new "
                    f"--min/--max")
            known = ", ".join(f"{x.vnet}/{x.name}" for x in cfg.interfaces) or "none"
            raise CommandError(f"vlink rate: no logical interface {vnet}/{name} in the "
                               f"configuration (configured: {known})")
        old: Rate = getattr(li, field)
        try:
            hi = parse_rate(max) if max is not None else old.max
            if hi is None:
                raise ValueError("the link is unlimited: give --max")
            lo = parse_rate(min) if min is not None else _lower(old.min, hi)
            new = Rate(min=lo, max=hi, burst=old.burst)
        except ValueError as e:
            raise CommandError(f"vlink rate {vnet}/{name}: {e}") from None
        if hi <= 0:
            raise CommandError(f"vlink rate {vnet}/{name}: max must be above 0")
        interfaces = tuple(x.model_copy(update={field: new}) if x is li else x
                           for x in cfg.interfaces)
        kept = list(node.runtime_changes)       # apply() forgets them: it applies a file
        result = await node.apply(cfg.model_copy(update={"interfaces": interfaces}),
                                  f"vlink rate {vnet}/{name}")
        node.runtime_changes = kept + [f"vlink rate {vnet}/{name} {direction}: "
                                       f"{_rate_text(old)} -> {_rate_text(new)}"]
    log.warning("vlink rate %s/%s %s: %s -> %s (run-time only: a plain reload sets back what "
                "%s says)", vnet, name, direction, _rate_text(old), _rate_text(new), node.config_file)
    return {**result, "vnet": vnet, "name": name, "direction": direction,
            "rate": {"min": new.min, "max": new.max},
            "was": {"min": old.min, "max": old.max}, "file": node.config_file,
            "runtime_only": True, "note": NOTE.format(file=node.config_file)}


def _lower(a: int, b: int) -> int:
    """The smaller (``min`` is a parameter name above)."""
    return a if a < b else b


def vbm_share(node, vnet, share) -> dict:
    """Set the LAN share of vNet ``vnet`` (an id, or the name of a vNet the node configures) on
    this node's VBM; the shares must still sum to <= 1."""
    cfg, cp = node.cfg, node.cp
    if cp is None or cp.vbm is None or cfg.vbm is None:
        raise CommandError("vbm share: this node runs no VBM ([vbm] in its configuration)")
    vid = _vnet_id(cfg, vnet)
    try:
        share = float(share)
        entry = VBMShare(vnet=vid, share=share)
    except (TypeError, ValueError) as e:
        raise CommandError(f"vbm share {vnet}: {e}") from None
    shares = dict(cp.vbm.shares)
    was = shares.get(vid)
    shares[vid] = entry.share
    try:
        cp.vbm.set_shares(shares)
    except AdmissionError as e:
        raise CommandError(f"vbm share: {e}") from None
    kept = [s for s in cfg.vbm.shares if s.vnet != vid] + [entry]
    new = cfg.model_copy(update={"vbm": cfg.vbm.model_copy(update={"shares": tuple(kept)})})
    node.cfg = new
    cp.cfg = new
    node.runtime_changes.append(f"vbm share vNet {vid}: {'none' if was is None else f'{was:g}'}"
                                f" -> {entry.share:g}")
    log.warning("vbm share vNet %d: %s -> %g (run-time only: a plain reload sets back what "
                "%s says)", vid, "none" if was is None else f"{was:g}", entry.share, node.config_file)
    return {"vnet": vid, "share": entry.share, "was": was, "pool": cp.vbm.pool(vid),
            "changes": [f"vbm share changed: vNet {vid} "
                        f"{'none' if was is None else f'{was:g}'} -> {entry.share:g}"],
            "file": node.config_file, "runtime_only": True,
            "note": NOTE.format(file=node.config_file)}


def _vnet_id(cfg, vnet) -> int:
    if isinstance(vnet, int) or (isinstance(vnet, str) and vnet.isdigit()):
        return int(vnet)
    for v in cfg.vnets:
        if v.name == vnet:
            return v.id
    raise CommandError(f"vbm share: {vnet!r} is no vNet id, nor a vNet this node configures "
                       f"({', '.join(f'{v.name}={v.id}' for v in cfg.vnets) or 'none'})")
