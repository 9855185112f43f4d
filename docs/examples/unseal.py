#!/usr/bin/env python3
"""Opens the sealed customer tokens of storegw events with pyhpke (docs/pos.md, "Sealed
customer identifiers"). Reads JSON lines (broker batches, `storegw tail --json` or
`storegw replay` lines with --store) on stdin; prints one {"id", "field", "value"} per token.

    python3 unseal.py platform.key [--store s042] < events.jsonl
"""
import base64, json, sys
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)


def unseal(sk, token, field, store):
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw[0] == 1, "token version"
    info = b"storegw/customer/v1\0" + field.encode() + b"\0" + store.encode()
    ctx = SUITE.create_recipient_context(raw[9:41], sk, info=info)
    padded = ctx.open(raw[41:], aad=raw[:9])
    return padded.rstrip(b"\0")[:-1].decode()  # strip the 0x80 0x00... padding


def main():
    key = open(sys.argv[1]).read().split()[0].removeprefix("x25519-private:")
    sk = SUITE.kem.deserialize_private_key(base64.b64decode(key))
    store_arg = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--store" else None
    for line in sys.stdin:
        doc = json.loads(line)
        store = doc.get("store", store_arg)
        for ev in doc.get("events", [doc]):
            for field, token in ev.get("customer", {}).items():
                if len(token) != 64:  # 64 hex characters: a keyed pseudonym, not a token
                    value = unseal(sk, token, field, store)
                    print(json.dumps({"id": ev["id"], "field": field, "value": value}))


if __name__ == "__main__":
    main()
