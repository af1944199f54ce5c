"""Device arrays and the host-side views of them that lowering functions see.

``DeviceArray(alloc, offset, shape, strides, dtype)``: an array in device memory (an
executor's allocation, a byte offset, numpy-style byte strides). Lowering rules were written
for numpy arrays, so the backend hands them stand-ins:

* ``standin(d)``: a real numpy array with d's shape, strides and dtype over zeroed host memory
  (calloc: untouched pages cost nothing). A view function (``Lowered.view``, ``ArgView``)
  transforms it with numpy (reshape, transpose, broadcast_to, squeeze, slicing...);
  ``from_standin`` maps the result back to a DeviceArray over the same allocation. Inputs of
  at most ``SMALL`` elements are given as their real host values instead (sizes, shapes,
  index bounds are read by value).
* ``HostProxy(d, fetch)``: for output-shape functions, ``HostScalar``s, temp shapes and host
  outputs: ``shape``/``ndim``/``dtype``/``size`` are metadata; anything else (indexing,
  iteration, ``int()``, ``np.asarray``, ``.copy()``, ``.min()``...) downloads the array once
  (a device sync) and works on the host copy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: inputs of at most this many elements are passed to view functions by value
SMALL = 64


class DeviceArray:
    """An array in device memory; ``host``: a host copy known to be current, or None."""

    __slots__ = ("alloc", "offset", "shape", "strides", "dtype", "host", "__weakref__")

    def __init__(self, alloc, offset, shape, strides, dtype, host=None):
        self.alloc = alloc
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.strides = tuple(int(s) for s in strides)
        self.dtype = np.dtype(dtype)
        self.host = host

    @classmethod
    def contiguous(cls, alloc, shape, dtype, offset=0, host=None):
        dtype = np.dtype(dtype)
        strides, acc = [], dtype.itemsize
        for n in reversed(shape):
            strides.append(acc)
            acc *= max(int(n), 1)
        return cls(alloc, offset, shape, tuple(reversed(strides)), dtype, host)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self):
        return self.dtype.itemsize

    @property
    def nbytes(self):
        return self.size * self.itemsize

    @property
    def ptr(self):
        """The device address of element 0 (executor allocations have ``ptr``)."""
        return self.alloc.ptr + self.offset

    def elem_strides(self):
        """Strides in elements, 0 for every size-1 dim (the kernels' ABI)."""
        return tuple(0 if n == 1 else s // self.itemsize for n, s in zip(self.shape, self.strides))

    def is_contiguous(self):
        return self.strides == DeviceArray.contiguous(None, self.shape, self.dtype).strides or \
            self.size <= 1

    def extent(self):
        """(lowest, highest) byte offsets touched relative to ``offset`` (0, 0 when empty)."""
        if self.size == 0:
            return 0, 0
        lo = sum(s * (n - 1) for s, n in zip(self.strides, self.shape) if s < 0)
        hi = sum(s * (n - 1) for s, n in zip(self.strides, self.shape) if s > 0)
        return lo, hi

    def __repr__(self):
        return f"<DeviceArray {self.dtype}{list(self.shape)} @{self.offset}>"


# ----------------------------------------------------------------------------- stand-ins

class _Origin:
    __slots__ = ("dev", "base", "origin")

    def __init__(self, dev, base, origin):
        self.dev, self.base, self.origin = dev, base, origin


def standin(d, registry):
    """A host numpy array shaped like DeviceArray d over zeroed memory; registry (a dict)
    remembers it for ``from_standin``."""
    lo, hi = d.extent()
    isz = d.itemsize
    n = (hi - lo) // isz + 1
    base = np.zeros(max(n, 1), d.dtype)
    first = base[(-lo) // isz:] if lo else base
    arr = as_strided(first, d.shape, d.strides, writeable=False)
    registry[id(base)] = _Origin(d, base, first.ctypes.data)
    return arr


def from_standin(value, registry):
    """The DeviceArray a view function's result stands for, or None if it is a host value."""
    if not isinstance(value, np.ndarray):
        return None
    obj = value
    seen = 0
    while obj is not None and seen < 64:
        o = registry.get(id(obj))
        if o is not None and o.base is obj:
            d = o.dev
            return DeviceArray(d.alloc, d.offset + (value.ctypes.data - o.origin), value.shape,
                               value.strides, value.dtype)
        obj = getattr(obj, "base", None)
        seen += 1
    return None


# ----------------------------------------------------------------------------- host proxies

class HostProxy:
    """Metadata of a device array; its values (downloaded once) for anything else."""

    __slots__ = ("_dev", "_fetch", "_value")

    def __init__(self, dev, fetch):
        self._dev, self._fetch, self._value = dev, fetch, None

    def _host(self):
        if self._value is None:
            self._value = self._fetch(self._dev)
        return self._value

    shape = property(lambda self: self._dev.shape)
    ndim = property(lambda self: self._dev.ndim)
    dtype = property(lambda self: self._dev.dtype)
    size = property(lambda self: self._dev.size)
    itemsize = property(lambda self: self._dev.itemsize)
    nbytes = property(lambda self: self._dev.nbytes)

    def __array__(self, dtype=None, copy=None):
        a = self._host()
        return a if dtype is None else a.astype(dtype)

    def __getattr__(self, name):
        return getattr(self._host(), name)

    def __getitem__(self, key):
        return self._host()[key]

    def __iter__(self):
        return iter(self._host())

    def __len__(self):
        return len(self._host())

    def __int__(self):
        return int(self._host())

    def __float__(self):
        return float(self._host())

    def __index__(self):
        return int(self._host())

    def __bool__(self):
        return bool(self._host())

    def __repr__(self):
        return f"<HostProxy of {self._dev!r}>"
