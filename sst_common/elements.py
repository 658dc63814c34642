"""Batch-element bookkeeping shared by both backends, written against the backend's two primitives."""


def nan_in_nan_out(function, x, event_dim, out_event_dims, *, mask_nan_elements, fill_nan):
    """``function(x)`` computed with the NaN batch elements of ``x`` zeroed and set to NaN in every output.

    NaN in, NaN out, with a zero gradient for those elements (the zeroed inputs never reach the
    computation); ``out_event_dims`` is an int, or a tuple of ints when ``function`` returns a tuple.
    ``mask_nan_elements(x, event_dim) -> (x, mask)`` and ``fill_nan(out, mask, event_dim)`` are the
    backend's.
    """
    x, nan = mask_nan_elements(x, event_dim)
    out = function(x)
    if isinstance(out, tuple):
        return tuple(fill_nan(o, nan, dim) for o, dim in zip(out, out_event_dims, strict=True))
    return fill_nan(out, nan, out_event_dims)


def with_leading_axis(values, batch_ndim):
    """``values`` of shape ``(N, *event)`` reshaped to ``(N, 1, ..., 1, *event)``, with ``batch_ndim`` ones, so
    that they broadcast against a batch of distributions."""
    return values.reshape(values.shape[:1] + (1,) * batch_ndim + values.shape[1:])
