"""Independent verification with ``nostr-sdk`` (rust-nostr), an implementation this project
did not write. Runs under asyncio in ``.relay-venv`` (never imported by the test process):

    .relay-venv/bin/python tests/tools/nostr_sdk_check.py RELAY_URL FILTER_JSON [NSEC_HEX]

Fetches the events matching the filter from the relay, checks each one's id and BIP-340
signature with nostr-sdk, and, when a secret key is given, decrypts NIP-44 contents addressed
to it. Prints one JSON list: ``{id, kind, pubkey, tags, content, verified, plaintext}``.
"""

import asyncio
import json
import sys
from datetime import timedelta

import nostr_sdk as n


async def main(url: str, filter_json: str, secret: str | None) -> None:
    client = n.Client()
    relay = n.RelayUrl.parse(url)
    await client.add_relay(relay)
    await client.connect()
    events = await client.fetch_events(
        n.ReqTarget.single(relay, [n.Filter.from_json(filter_json)]),
        timeout=timedelta(seconds=10))
    keys = n.Keys.parse(secret) if secret else None
    out = []
    for ev in events:
        again = n.Event.from_json(ev.as_json())
        plain = None
        if keys is not None:
            try:
                plain = n.nip44_decrypt(keys.secret_key(), again.author(), again.content())
            except Exception as e:  # noqa: BLE001 - reported, not raised
                plain = f"!{type(e).__name__}"
        out.append({"id": again.id().to_hex(), "kind": again.kind().as_u16(),
                    "pubkey": again.author().to_hex(), "tags": json.loads(again.as_json())["tags"],
                    "content": again.content(), "verified": again.verify(),
                    "plaintext": plain})
    await client.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
