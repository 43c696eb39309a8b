"""Canonical Huffman coding of weight codes and relative indices (Deep Compression, step 3).

A :class:`HuffmanCode` is built from symbol frequencies; only the code *lengths* need to be
stored (canonical codes: symbols sorted by ``(length, symbol)`` get consecutive codes), so a
table costs :meth:`HuffmanCode.table_bits`: per used symbol its value and a ``LENGTH_BITS``-bit
length. Bits are written MSB first into bytes.

Used by :mod:`.report` on the packer's streams: the weight codes and the delta fields of the
relative-index entries (fillers included) of each layer get a code each.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable, Iterable

from ..errors import ZeroskipError

__all__ = ["HuffmanCode", "HuffmanError", "code_lengths", "LENGTH_BITS"]

LENGTH_BITS = 6          # a code length (1..63) in a stored table


class HuffmanError(ZeroskipError, ValueError):
    """A symbol has no code, or a bit stream does not decode."""


def code_lengths(freqs: dict[Hashable, int]) -> dict[Hashable, int]:
    """Optimal prefix-code lengths for ``{symbol: count}`` (counts > 0). One symbol: length 1."""
    items = [(int(c), s) for s, c in freqs.items() if int(c) > 0]
    if not items:
        return {}
    if len(items) == 1:
        return {items[0][1]: 1}
    # heap of (weight, tiebreak, symbols in the subtree)
    heap = [(c, i, [s]) for i, (c, s) in enumerate(sorted(items, key=lambda t: (t[0], repr(t[1]))))]
    heapq.heapify(heap)
    lengths = {s: 0 for _, s in items}
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def _sort_key(s):
    return (0, s) if isinstance(s, int) else (1, repr(s))


class HuffmanCode:
    """A canonical Huffman code over hashable symbols (ints in zeroskip)."""

    def __init__(self, lengths: dict[Hashable, int]):
        self.lengths = dict(lengths)
        self.codes: dict[Hashable, tuple[int, int]] = {}
        code, prev = 0, 0
        for s in sorted(self.lengths, key=lambda s: (self.lengths[s], _sort_key(s))):
            ln = self.lengths[s]
            if ln < 1:
                raise HuffmanError(f"symbol {s!r} has code length {ln}")
            code <<= ln - prev
            self.codes[s] = (code, ln)
            code += 1
            prev = ln
        self._decode = {(ln, c): s for s, (c, ln) in self.codes.items()}

    @classmethod
    def from_frequencies(cls, freqs: dict[Hashable, int]) -> HuffmanCode:
        return cls(code_lengths(freqs))

    @classmethod
    def from_symbols(cls, symbols: Iterable[Hashable]) -> HuffmanCode:
        return cls.from_frequencies(Counter(symbols))

    def encoded_bits(self, freqs: dict[Hashable, int]) -> int:
        """Length in bits of a message with these symbol counts."""
        try:
            return int(sum(int(c) * self.lengths[s] for s, c in freqs.items() if int(c) > 0))
        except KeyError as e:
            raise HuffmanError(f"symbol {e.args[0]!r} has no code") from None

    def table_bits(self, symbol_bits: int) -> int:
        """Bits to store the canonical table: per symbol its value and its length."""
        return len(self.lengths) * (int(symbol_bits) + LENGTH_BITS)

    def encode(self, symbols: Iterable[Hashable]) -> tuple[bytes, int]:
        """``(bytes, number of bits)``, MSB first, the last byte zero-padded."""
        acc, nbits = 0, 0
        out = bytearray()
        for s in symbols:
            try:
                c, ln = self.codes[s]
            except KeyError:
                raise HuffmanError(f"symbol {s!r} has no code") from None
            acc = (acc << ln) | c
            nbits += ln
            while nbits - 8 * len(out) >= 8:
                shift = nbits - 8 * len(out) - 8
                out.append((acc >> shift) & 0xFF)
                acc &= (1 << shift) - 1
        rem = nbits - 8 * len(out)
        if rem:
            out.append((acc << (8 - rem)) & 0xFF)
        return bytes(out), nbits

    def decode(self, data: bytes, count: int) -> list:
        """The first ``count`` symbols of ``data``."""
        out = []
        code = ln = 0
        maxlen = max(self.lengths.values(), default=0)
        for byte in data:
            for k in range(7, -1, -1):
                if len(out) == count:
                    return out
                code = (code << 1) | ((byte >> k) & 1)
                ln += 1
                s = self._decode.get((ln, code), _MISSING)
                if s is not _MISSING:
                    out.append(s)
                    code = ln = 0
                elif ln > maxlen:
                    raise HuffmanError(f"invalid code at symbol {len(out)}")
        if len(out) != count:
            raise HuffmanError(f"bit stream ends after {len(out)} of {count} symbols")
        return out


_MISSING = object()
