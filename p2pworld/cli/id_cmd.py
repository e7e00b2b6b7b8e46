"""``p2pworld id``: show, create or import a node identity."""

from __future__ import annotations

import argparse
import json
import sys

from p2pworld.errors import IdentityError
from p2pworld.io.home import NodeHome, default_home


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="node home (default: $P2PWORLD_HOME or "
                   "~/.local/share/p2pworld)")
    p.add_argument("--import-mnemonic", metavar="WORDS", default=None,
                   help="create the identity from an existing BIP-39 mnemonic (NIP-06)")
    p.add_argument("--account", type=int, default=0, help="NIP-06 account index")
    p.add_argument("--show-mnemonic", action="store_true", help="print the mnemonic (secret!)")


def main(args: argparse.Namespace) -> int:
    home = NodeHome(args.home or default_home())
    try:
        if args.import_mnemonic:
            ident = home.create(mnemonic=args.import_mnemonic, account=args.account)
        else:
            ident = home.load_or_create()
    except IdentityError as e:
        print(f"p2pworld id: {e.code}: {e.message}", file=sys.stderr)
        return 1
    out = {"home": str(home.path), "node_id": ident.node_id.hex(),
           "node_key": ident.public_key.hex(), "nostr_pubkey": ident.nostr.public_hex,
           "npub": ident.nostr.npub}
    if args.show_mnemonic:
        out["mnemonic"] = home.mnemonic()
    print(json.dumps(out, indent=2))
    return 0
