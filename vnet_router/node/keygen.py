"""``vnet-router keygen``: write the key file a substrate link's ``key_file`` names.

``vnet-router keygen FILE`` makes a new key file (one fresh 32-byte key, id 1, mode 0600) and
refuses to overwrite one without ``--force``; ``--add`` appends a fresh key to an existing file
(rotation, docs/operations.md); ``--signing`` makes the VBM's Ed25519 signing key instead and
prints the public key the nodes configure.  It prints the path and the lines to put in the
configuration.  The formats are ``model/keys.py``'s; nothing here touches the network.
"""
from __future__ import annotations

import argparse
import os
import sys

from vnet_router.model import keys
from vnet_router.wire import auth

# the shipped units run the daemon as user vnet, which must be able to read the file
OWNER = "under the shipped systemd units the daemon runs as user vnet: chown vnet: {}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="vnet-router keygen",
        description="Write a key file for the control plane's authentication (docs/security.md): "
                    "a new random key, mode 0600. Copy the same file to every node of the "
                    "substrate links it protects.")
    p.add_argument("file", metavar="FILE", help="the key file to write (e.g. /etc/vnet/lan.key)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--add", action="store_true",
                      help="append a fresh key (the next id) to the existing FILE: step 1 of a "
                           "rotation (accepted at once, signing once moved to the first line)")
    what.add_argument("--signing", action="store_true",
                      help="write the VBM's Ed25519 signing key ([vbm] signing_key_file) and "
                           "print its public key (the nodes' [tm] vbm_public_key)")
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    return p.parse_args(argv)


def _quoted(path: str) -> str:
    """``path`` as a TOML string, absolute (a relative key_file is the daemon's working
    directory's)."""
    path = os.path.abspath(path)
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.add:
            kid = keys.add_key(args.file)
            print(f"{args.file}: added key {kid} (accepted, not yet signing; mode 0600)")
            print(f"next: copy the file to every node with this key and reload each "
                  f"(`vnetctl reload`); then make key {kid} the first line on every node, "
                  f"reload; then remove the old key, reload (docs/operations.md)")
            return 0
        if args.signing:
            seed = keys.write_seed_file(args.file, force=args.force)
            public = auth.public_bytes(auth.signing_key(seed)).hex()
            print(f"wrote {args.file} (the VBM's signing key, mode 0600)")
            print(f"in the VBM's configuration:\n  [vbm]\n  signing_key_file = "
                  f"{_quoted(args.file)}")
            print(f"in every node's configuration on that LAN:\n  [tm]\n  vbm_public_key = "
                  f"\"{public}\"")
            print(OWNER.format(args.file))
            return 0
        ring = keys.write_key_file(args.file, force=args.force)
    except keys.KeyFileError as e:
        print(f"vnet-router keygen: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.file} (key {ring.send}, mode 0600)")
    print(f"in the configuration, on each substrate link it protects:\n  [[substrate_link]]\n"
          f"  key_file = {_quoted(args.file)}")
    print("copy the file (mode 0600) to every node on those links, then `vnetctl reload` "
          "each (or start them); `vnet-router -c CONFIG --check` reads it")
    print(OWNER.format(args.file))
    return 0

