"""A small CBOR decoder for the tests (definite lengths, the types crashgate writes)."""
import struct


def loads(b):
    v, off = _item(b, 0)
    if off != len(b):
        raise ValueError("trailing bytes")
    return v


def _arg(b, off, info):
    if info < 24:
        return info, off
    n = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return int.from_bytes(b[off:off + n], "big"), off + n


def _item(b, off):
    ib = b[off]
    major, info = ib >> 5, ib & 31
    off += 1
    if major == 7:
        if info == 20:
            return False, off
        if info == 21:
            return True, off
        if info == 22:
            return None, off
        if info == 27:
            return struct.unpack(">d", b[off:off + 8])[0], off + 8
        raise ValueError("simple %d" % info)
    n, off = _arg(b, off, info)
    if major == 0:
        return n, off
    if major == 1:
        return -1 - n, off
    if major == 2:
        return bytes(b[off:off + n]), off + n
    if major == 3:
        return b[off:off + n].decode(), off + n
    if major == 4:
        out = []
        for _ in range(n):
            v, off = _item(b, off)
            out.append(v)
        return out, off
    if major == 5:
        out = {}
        for _ in range(n):
            k, off = _item(b, off)
            v, off = _item(b, off)
            out[k] = v
        return out, off
    raise ValueError("major %d" % major)
