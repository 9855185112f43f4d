"""Crafted cases for tests/wifi_estimate.rs, built on a real one-phone capture's timing.

  python3 twin_probes.py LABELLED_DIR SRC.pcap OUT.pcap
      one phone that sends two kinds of probe request in every scan: every probe request of
      SRC is kept and followed 30 ms later by its twin, from an address of its own (drawn anew
      for each scan) with one more vendor element (so another fingerprint); FCS recomputed.
  python3 twin_probes.py LABELLED_DIR SRC.pcap OUT.pcap --pause SECONDS
      the phone falls silent once, in the middle of its capture, for SECONDS (the scans after
      the middle are shifted later), as a phone whose screen went off for a while.
"""
import random, struct, sys, zlib

lab, src, out = sys.argv[1:4]
pause = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == '--pause' else None
sys.path.insert(0, lab)
from labelled import probes, radiotap_flags, read_pcap, write_pcap  # noqa: E402

hdr, recs = read_pcap(src)
recs = sorted(probes(recs), key=lambda r: r[0])
if pause is not None:
    # The scan boundary nearest the middle: shift everything from it on so that the silence
    # before it lasts `pause` seconds.
    mid = len(recs) // 2
    while 0 < mid < len(recs) - 1 and recs[mid][0] - recs[mid - 1][0] <= 1.0:
        mid += 1
    shift = pause - (recs[mid][0] - recs[mid - 1][0])
    write_pcap(out, hdr, [[ts + (shift if i >= mid else 0), pkt] for i, (ts, pkt) in enumerate(recs)])
    sys.exit(0)
rng = random.Random(7)
crafted, last, addr = [], None, None
for ts, pkt in recs:
    crafted.append([ts, pkt])
    if last is None or ts - last > 1.0:
        # A new scan: a new locally administered unicast address for the twin.
        addr = bytes([(rng.randrange(256) & 0xfc) | 0x02] + [rng.randrange(256) for _ in range(5)])
    last = ts
    rlen, flags = radiotap_flags(pkt)
    body = bytearray(pkt[rlen:])
    has_fcs = bool(flags & 0x10)
    if has_fcs:
        body = body[:-4]
    body[10:16] = addr
    # A vendor-specific element (OUI 00:11:22, type 1): part of the fingerprint.
    body += bytes([221, 7, 0x00, 0x11, 0x22, 0x01, 0x0a, 0x0b, 0x0c])
    if has_fcs:
        body += struct.pack('<I', zlib.crc32(bytes(body)) & 0xffffffff)
    crafted.append([ts + 0.03, bytes(pkt[:rlen]) + bytes(body)])
crafted.sort(key=lambda r: r[0])
write_pcap(out, hdr, crafted)
