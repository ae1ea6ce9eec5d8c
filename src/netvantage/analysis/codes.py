"""Integer codes for string keys, and memory handed back: helpers of the analysis steps
that work on arrays of codes rather than frames of strings.

The analysis's frames hold their keys (trace ids, regions, addresses) as Arrow-backed
strings or as Categoricals, whichever the loader chose: these helpers accept both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow  # type: ignore[import-untyped]
import pyarrow.compute  # type: ignore[import-untyped]

from .load import _trim_heap

__all__ = ["give_back", "positions", "record_rows", "rows_of", "sorted_codes", "str_codes"]


def record_rows(column: pd.Series, ids: pd.Series) -> npt.NDArray[np.int32] | None:
    """Each of ``column``'s values' row in ``ids`` (the records' ids, ``measurements["id"]``),
    read off its codes when ``column`` is a Categorical whose categories are ``ids``'
    values in their row order — a child frame's id as the loader builds it
    (:func:`netvantage.analysis.load.record_ids`); ``None`` otherwise (the caller looks
    the strings up).

    The categories are compared with ``ids`` before their codes are trusted: a frame of
    measurements filtered, reordered or built anew no longer has the rows the codes
    count.  The same array is known equal at once; another is compared value by value
    (Arrow, some milliseconds for 1M ids).
    """
    if not isinstance(column.dtype, pd.CategoricalDtype):
        return None
    categories = column.cat.categories
    if len(categories) != len(ids) or not _same(categories.array, ids.array):
        return None
    return np.asarray(column.cat.codes.to_numpy(), dtype=np.int32)


def _same(a: pd.api.extensions.ExtensionArray | np.ndarray,
          b: pd.api.extensions.ExtensionArray | np.ndarray) -> bool:
    """Whether two columns of the same length hold the same strings, none missing."""
    if a is b:
        return not pd.isna(a).any()
    if not (pd.api.types.is_string_dtype(a.dtype) and pd.api.types.is_string_dtype(b.dtype)):
        return False
    equal = pyarrow.compute.equal(_arrow(pd.Series(a, copy=False)),
                                  _arrow(pd.Series(b, copy=False)))
    return bool(equal.null_count == 0 and equal.false_count == 0)


def sorted_codes(column: pd.Series) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.object_]]:
    """Integer codes of a column's values that sort as the values do (-1: missing), and
    the values (strings) they stand for — whether the column holds strings or is a
    Categorical (the loader may hand the children's ids either way).

    A Categorical's own codes follow its categories' order, which need not be sorted:
    its categories are factorised and the codes mapped through them, keeping only the
    values that occur.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Only the categories used are sorted: a child frame's id has every record's id
        # as a category (1M at 1M records) and uses a fraction of them (the hops' 150k).
        own = column.cat.codes.to_numpy()
        known = own >= 0
        used = np.flatnonzero(np.bincount(own[known], minlength=len(column.cat.categories)))
        values = _arrow(pd.Series(column.cat.categories.take(used)))
        order = np.asarray(pyarrow.compute.sort_indices(values), dtype=np.intp)
        rank = np.full(len(column.cat.categories), -1, dtype=np.intp)
        rank[used[order]] = np.arange(len(order), dtype=np.intp)
        codes = np.full(len(own), -1, dtype=np.intp)
        codes[known] = rank[own[known]]
        return codes, np.asarray(values.take(order).to_pylist(), dtype=object)
    codes, names = pd.factorize(column.astype("string"), sort=True)
    return codes, np.asarray(names, dtype=object)


def str_codes(column: pd.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """Codes of ``column.astype(str)``'s values numbered in sorted order, and those values
    (a missing key is ``"nan"``, as ``astype(str)`` writes it).  A Categorical's names are
    its categories, used or not (and "nan"), converted and sorted once: no string per row.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.array([str(c) for c in column.cat.categories] + ["nan"], dtype=object)
        distinct, inverse = np.unique(names, return_inverse=True)
        return (np.asarray(inverse, dtype=np.int64)[column.cat.codes.to_numpy()],
                np.asarray(distinct, dtype=object))
    codes, uniques = pd.factorize(np.asarray(column.astype(str).to_numpy(), dtype=object),
                                  sort=True)
    return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object)


def positions(column: pd.Series, names: npt.NDArray[np.object_]) -> npt.NDArray[np.intp]:
    """Where each of ``column``'s values is among ``names`` (distinct strings); -1: nowhere.

    Arrow's hash lookup (``index_in``): a million record ids against the traces' in
    0.04 s, where ``Index.get_indexer`` took 0.3 s.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        at = positions(pd.Series(column.cat.categories), names)
        own = column.cat.codes.to_numpy()
        out = np.full(len(own), -1, dtype=np.intp)
        out[own >= 0] = at[own[own >= 0]]
        return out
    values = _arrow(column)
    return _found(pyarrow.compute.index_in(
        values, value_set=pyarrow.array(names.tolist(), type=values.type)))


def rows_of(column: pd.Series, keys: pd.Series) -> npt.NDArray[np.int32] | None:
    """Where each of ``column``'s values is in ``keys`` (a column of strings, say the
    records' ids; -1: nowhere), or None when ``keys`` are not distinct (a value missing
    or found twice).  Neither column becomes Python strings: the samples' 4.7M ids of 1M
    records were looked up by ``Index.get_indexer`` in 1.7 s and some 580 MiB of
    temporaries, by Arrow's ``index_in`` in a fraction of both.

    One hash table answers both questions: ``keys`` are looked up among themselves in the
    same call, and they are distinct exactly when each is found at its own position.
    (A separate ``count_distinct`` of 1M ids built a second table: 0.2-0.6 s and some
    150 MiB more.)  The lookup's freed memory goes back to the system before returning:
    Arrow's allocator would keep it.
    """
    rows = record_rows(column, keys)
    if rows is not None:  # the codes are the rows: the keys are distinct categories
        return rows
    if isinstance(column.dtype, pd.CategoricalDtype):
        # the categories looked up (fewer than the rows), each row's found by its code
        at = rows_of(pd.Series(column.cat.categories), keys)
        if at is None:
            return None
        own = column.cat.codes.to_numpy()
        return np.where(own >= 0, at[own], -1).astype(np.int32)
    values = _arrow(column)
    own = _arrow(keys).cast(values.type)
    found = pyarrow.compute.index_in(pyarrow.chunked_array([values, own], type=values.type),
                                     value_set=own)
    rows = np.asarray(found.fill_null(-1).to_numpy(), dtype=np.int32)
    del found
    pyarrow.default_memory_pool().release_unused()
    if own.null_count or not np.array_equal(rows[len(values):],
                                             np.arange(len(own), dtype=np.int32)):
        return None
    return rows[:len(values)]


def _arrow(column: pd.Series) -> pyarrow.Array:
    """``column`` as one Arrow string array (its own buffers when it is Arrow-backed)."""
    values = pyarrow.array(column.astype("string").array)
    return values.combine_chunks() if isinstance(values, pyarrow.ChunkedArray) else values


def _found(found: pyarrow.Array) -> npt.NDArray[np.intp]:
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)


def give_back() -> None:
    """Return the memory a step freed to the system: the C heap's free pages (glibc's
    ``malloc_trim``, as the loader does) and Arrow's pool's unused memory.

    Both allocators keep freed memory for reuse.  After the detours of 1M records that
    was some 300 MiB of the process's RSS (measured: 1,132 MiB after the step, 904 MiB
    after both calls, 787 before it; the result itself holds about 100 MiB).
    """
    _trim_heap()
    pyarrow.default_memory_pool().release_unused()
