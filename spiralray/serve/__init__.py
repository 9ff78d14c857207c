"""Online inference: a Ray Serve application (``app``) over the batched engine (``batching``), with
pure request/response codecs (``codecs``), its configuration (``config``) and the
``spiralray serve`` command (``cli``). Ray is imported only by ``app`` and ``cli``."""
