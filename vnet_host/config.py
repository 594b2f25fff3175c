"""Who is who for ``vnet-hostd``: users, groups and the principals allowed to do something.

The host profile itself (the ``[host]`` table, the file plus the run-time state) is a schema of
the model, ``vnet_router.model.host``, so that the lab can validate host nodes without
depending on this package; this module keeps what only the daemon needs, looking users and
groups up on the system when a request arrives.
"""
from __future__ import annotations

import grp
import pwd


def resolve_uid(user: str | int) -> int:
    """A user name or numeric uid -> uid (ValueError if unknown)."""
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"no user {user!r}") from None


def resolve_gid(group: str | int) -> int | None:
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def allowed(principals, uid: int, groups: set[int]) -> bool:
    """Does a caller (uid, groups) match one of ``principals`` (user, uid or @group)?"""
    for p in principals:
        if p.startswith("@"):
            gid = resolve_gid(p[1:])
            if gid is not None and gid in groups:
                return True
        else:
            try:
                if resolve_uid(p) == uid:
                    return True
            except ValueError:
                continue
    return False
