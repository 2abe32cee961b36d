#!/usr/bin/env python3
"""Adds `irot` and `imir` properties to the primary item of a HEIF file.

Usage: heif-add-transform.py IN OUT ROT MIRROR
  ROT     anticlockwise quarter turns, 0-3 (irot angle)
  MIRROR  imir axis: 0 = vertical axis (left-right flip), 1 = horizontal, -1 = none

heif-enc writes neither box, and the thumbnail plugin's test needs a file with
both (scripts/heic-refs.sh). The properties are appended to `ipco` and
associated (essential) with the primary item after its other properties, as
HEIF orders them: irot, then imir. `iloc` file offsets after `meta` are moved
by the bytes added.
"""
import struct
import sys


def boxes(data, start, end):
    """(type, start, header_len, end) of each box in data[start:end]."""
    out = []
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - i
        out.append((kind.decode("latin1"), i, hdr, i + size))
        i += size
    return out


def box(kind, payload):
    return struct.pack(">I4s", 8 + len(payload), kind.encode()) + payload


def find(children, kind):
    for c in children:
        if c[0] == kind:
            return c
    raise SystemExit(f"error: no {kind} box")


def main():
    src, dst, rot, mirror = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = bytearray(open(src, "rb").read())
    top = boxes(data, 0, len(data))
    meta = find(top, "meta")
    kids = boxes(data, meta[1] + meta[2] + 4, meta[3])
    pitm = find(kids, "pitm")
    pv = data[pitm[1] + pitm[2]]
    p = pitm[1] + pitm[2] + 4
    primary = struct.unpack(">H" if pv == 0 else ">I", data[p : p + (2 if pv == 0 else 4)])[0]

    iprp = find(kids, "iprp")
    pkids = boxes(data, iprp[1] + iprp[2], iprp[3])
    ipco, ipma = find(pkids, "ipco"), find(pkids, "ipma")
    props = boxes(data, ipco[1] + ipco[2], ipco[3])
    new_props = []
    if rot:
        new_props.append(box("irot", bytes([rot & 3])))
    if mirror >= 0:
        new_props.append(box("imir", bytes([mirror & 1])))
    ipco_new = box("ipco", bytes(data[ipco[1] + ipco[2] : ipco[3]]) + b"".join(new_props))
    indices = [len(props) + 1 + k for k in range(len(new_props))]

    # ipma: rewrite the primary item's entry with the new associations.
    q = ipma[1] + ipma[2]
    version, flags = data[q], int.from_bytes(data[q + 1 : q + 4], "big")
    q += 4
    count = struct.unpack(">I", data[q : q + 4])[0]
    q += 4
    wide = flags & 1
    body = bytearray(struct.pack(">I", count))
    for _ in range(count):
        if version < 1:
            item = struct.unpack(">H", data[q : q + 2])[0]
            head = data[q : q + 2]
            q += 2
        else:
            item = struct.unpack(">I", data[q : q + 4])[0]
            head = data[q : q + 4]
            q += 4
        n = data[q]
        q += 1
        size = 2 if wide else 1
        assoc = bytes(data[q : q + n * size])
        q += n * size
        if item == primary:
            for idx in indices:
                assoc += struct.pack(">H", 0x8000 | idx) if wide else bytes([0x80 | idx])
            n += len(indices)
        body += head + bytes([n]) + assoc
    ipma_new = box("ipma", bytes([version]) + flags.to_bytes(3, "big") + bytes(body))

    iprp_payload = b""
    for c in pkids:
        if c[0] == "ipco":
            iprp_payload += ipco_new
        elif c[0] == "ipma":
            iprp_payload += ipma_new
        else:
            iprp_payload += bytes(data[c[1] : c[3]])
    iprp_new = box("iprp", iprp_payload)
    delta = len(iprp_new) - (iprp[3] - iprp[1])

    # iloc: move absolute offsets that point past meta.
    iloc = find(kids, "iloc")
    r = iloc[1] + iloc[2]
    v = data[r]
    r += 4
    off_size, len_size = data[r] >> 4, data[r] & 15
    base_size, idx_size = data[r + 1] >> 4, (data[r + 1] & 15) if v in (1, 2) else 0
    r += 2
    n_items = struct.unpack(">H" if v < 2 else ">I", data[r : r + (2 if v < 2 else 4)])[0]
    r += 2 if v < 2 else 4

    def bump(pos, size):
        if size == 0:
            return
        val = int.from_bytes(data[pos : pos + size], "big")
        if val >= meta[3]:
            data[pos : pos + size] = (val + delta).to_bytes(size, "big")

    for _ in range(n_items):
        r += 2 if v < 2 else 4
        method = 0
        if v in (1, 2):
            method = struct.unpack(">H", data[r : r + 2])[0] & 15
            r += 2
        r += 2  # data_reference_index
        base_pos = r
        r += base_size
        extents = struct.unpack(">H", data[r : r + 2])[0]
        r += 2
        if method == 0:
            bump(base_pos, base_size)
        for _ in range(extents):
            r += idx_size
            if method == 0 and base_size == 0:
                bump(r, off_size)
            r += off_size + len_size

    meta_payload = bytes(data[meta[1] + meta[2] : meta[1] + meta[2] + 4])
    for c in kids:
        meta_payload += iprp_new if c[0] == "iprp" else bytes(data[c[1] : c[3]])
    meta_new = box("meta", meta_payload)
    out = b""
    for c in top:
        out += meta_new if c[0] == "meta" else bytes(data[c[1] : c[3]])
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main()
